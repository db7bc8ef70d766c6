package policy

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// decidesPerToolTests are modules added to the default bundle and whether
// the engine keeps decisions; FuzzKeptDecisions starts from them too.
var decidesPerToolTests = []struct {
	name   string
	module string // added to the default bundle; "" for the bundle alone
	want   bool
}{
	{"default bundle", "", true},
	{"labels and principal", `package corral.authz
allow if input.agent.labels[_] == "x"
deny contains "no" if input.principal.sub == "mallory"`, true},
	{"an argument", `package corral.authz
deny contains "big" if input.action.arguments.amount > 10`, false},
	{"the time", `package corral.authz
deny contains "late" if input.time > "2026-12-31"`, false},
	{"the whole input", `package corral.authz
deny contains "odd" if { x := input; x.action.arguments.n == 1 }`, false},
	{"the whole action", `package corral.authz
deny contains "odd" if { some k, v in input.action; k == "arguments"; v.n == 1 }`, false},
	{"an action key from a variable", `package corral.authz
deny contains "odd" if { some k; input.action[k].n == 1 }`, false},
	{"through a function", `package corral.authz
args(a) := a.arguments
deny contains "odd" if args(input.action).n == 1`, false},
	{"through an import", `package corral.authz
import input.action.arguments as args
deny contains "odd" if args.n == 1`, false},
	{"with replaces the arguments", `package corral.authz
probe if input.action.kind == "tool"
deny contains "odd" if probe with input.action.arguments as {}`, false},
	{"the clock", `package corral.authz
deny contains "late" if time.now_ns() > 0`, false},
	{"randomness", `package corral.authz
deny contains "unlucky" if rand.intn("x", 2) == 0`, false},
	{"a token checked against the clock", `package corral.authz
deny contains "bad token" if { [ok, _, _] := io.jwt.decode_verify(input.agent.name, {"secret": "s"}); not ok }`, false},
	{"a pure function of the tool", `package corral.authz
deny contains "mutation" if corral.sql.is_mutation(input.tool.path)`, true},
}

// TestDecidesPerTool: an engine keeps decisions only for a policy that can
// read nothing but what the decisions' key holds.
func TestDecidesPerTool(t *testing.T) {
	for _, tt := range decidesPerToolTests {
		t.Run(tt.name, func(t *testing.T) {
			mods := DefaultModules()
			if tt.module != "" {
				mods = append(mods, modules(tt.module)...)
			}
			e, err := Compile(t.Context(), Bundle{Modules: mods}, Options{})
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if got := e.decided != nil; got != tt.want {
				t.Errorf("keeps decisions = %v, want %v", got, tt.want)
			}
		})
	}
	if e := benchEngine(t); e.decided != nil {
		t.Errorf("the payments example reads arguments, yet its engine keeps decisions")
	}
}

// TestDecideKeptDecisions: the second call of a tool by an agent costs no
// evaluation with the default bundle (it took ~240 allocations at d7dc022),
// and what the key does not hold is never answered from it.
func TestDecideKeptDecisions(t *testing.T) {
	e, err := Compile(t.Context(), Bundle{Modules: append(DefaultModules(), modules(`package corral.authz
deny contains "not for mallory" if input.principal.sub == "mallory"`)...)}, slowMachine)
	if err != nil {
		t.Fatal(err)
	}
	in := toolInput("crm.find", map[string]any{"q": "x"})
	decide := func(step string, in *Input, want string) {
		t.Helper()
		d, err := e.Decide(t.Context(), in)
		if err != nil || d.Effect != want {
			t.Fatalf("%s: Decide() = %+v, %v; want effect %s", step, d, err, want)
		}
	}
	decide("first", in, Allow)
	if testing.CoverMode() == "" && !raceEnabled {
		if n := testing.AllocsPerRun(100, func() { decide("again", in, Allow) }); n > 5 {
			t.Errorf("a kept decision allocates %.0f times, want at most 5", n)
		}
	}
	d, _ := e.Decide(t.Context(), in)
	d.Reasons = append(d.Reasons, "changed by the caller")
	decide("after a caller changed its copy", in, Allow)
	if d, _ := e.Decide(t.Context(), in); len(d.Reasons) != 0 {
		t.Errorf("Reasons = %q, want none: a caller's change reached the kept decision", d.Reasons)
	}

	in.Agent.Tools = []string{"mail.*"}
	decide("the agent's tools changed", in, Deny)
	in.Agent.Tools = []string{"crm.*"}
	decide("restored", in, Allow)
	in.Tool.Annotations.Destructive = true
	decide("the tool became destructive", in, Approval)
	in.Tool.Annotations.Destructive = false
	in.Action.Target = "mail.send"
	decide("another target", in, Deny)
	in.Action.Target = "crm.find"
	in.Principal = &Principal{Sub: "mallory"}
	decide("for mallory", in, Deny)
	in.Principal = &Principal{Sub: "alice"}
	decide("for alice", in, Allow)
	in.Principal = nil
	decide("for itself again", in, Allow)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if d, err := e.Decide(ctx, in); !errors.Is(err, ErrEvaluation) || d.Effect != "" {
		t.Errorf("Decide(ended request) = %+v, %v; want ErrEvaluation, as an evaluation gives, not the kept decision", d, err)
	}
}

// TestKeptDecisionsAgreeWithEvaluation: over many agents, tools, targets
// and annotations, asked in a random order and each more than once, a
// kept decision is the decision an evaluation makes.
func TestKeptDecisionsAgreeWithEvaluation(t *testing.T) {
	kept, err := Compile(t.Context(), Bundle{Modules: append(DefaultModules(), modules(`package corral.authz
deny contains "no mail for interns" if { input.agent.labels.role == "intern"; startswith(input.tool.name, "mail.") }
require_approval contains "writes need a look" if { allow; input.tool.method != "GET"; not input.tool.annotations.idempotent }`)...)}, slowMachine)
	if err != nil {
		t.Fatal(err)
	}
	if kept.decided == nil {
		t.Fatal("the policy reads no arguments, yet its engine keeps no decisions")
	}
	evaluated := *kept
	evaluated.decided = nil
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	for i := range 2000 {
		in := &Input{
			Action: Action{Kind: KindTool, Target: pick("crm.find", "mail.send", "crm.delete")},
			Agent: Agent{Name: pick("a", "b"), Labels: map[string]string{"role": pick("intern", "staff")},
				Tools: []string{pick("crm.*", "mail.*", "*")}},
			Tool: &Tool{Name: pick("crm.find", "mail.send", "crm.delete"), Method: pick("GET", "POST"),
				Annotations: Annotations{Destructive: r.IntN(2) == 0, Idempotent: r.IntN(2) == 0}},
		}
		got, err1 := kept.Decide(t.Context(), in)
		want, err2 := evaluated.Decide(t.Context(), in)
		if err1 != nil || err2 != nil || !cmp.Equal(got, want) {
			t.Fatalf("call %d, %+v: kept Decide() = %+v, %v; evaluated %+v, %v", i, in, got, err1, want, err2)
		}
	}
}

// TestKeptDecisionsForUsersTasksAndModels: with the default bundle, which
// reads no principal and no task, a call for a user or in a task is kept
// as well, and so is a model call; a policy that reads the principal keeps
// none for calls that have one.
func TestKeptDecisionsForUsersTasksAndModels(t *testing.T) {
	e, err := Compile(t.Context(), Bundle{Modules: DefaultModules()}, slowMachine)
	if err != nil {
		t.Fatal(err)
	}
	if e.decided.reads.principal || e.decided.reads.task {
		t.Errorf("the default bundle reads principal %v, task %v; want neither", e.decided.reads.principal, e.decided.reads.task)
	}
	tool := toolInput("crm.find", nil)
	tool.Principal = &Principal{Sub: "alice", Groups: []string{"sales"}}
	tool.Task = &Task{ID: "t-1"}
	model := &Input{
		Action: Action{Kind: KindModel, Target: "smart", Arguments: map[string]any{"max_tokens": 10}},
		Agent:  Agent{Name: "impact", Models: []string{"smart"}},
		Model:  &Model{Name: "smart", Targets: []Model{{Name: "gpt", Provider: "openai", Region: "eu"}}},
		Time:   "2026-03-02T10:00:00Z",
	}
	for _, in := range []*Input{tool, model} {
		if d, err := e.Decide(t.Context(), in); err != nil || d.Effect != Allow {
			t.Fatalf("Decide(%s) = %+v, %v; want allow", in.Action.Target, d, err)
		}
		if _, keep := e.decided.key(in); !keep {
			t.Errorf("%s: not kept", in.Action.Target)
		}
		if testing.CoverMode() == "" && !raceEnabled {
			if n := testing.AllocsPerRun(50, func() { _, _ = e.Decide(t.Context(), in) }); n > 5 {
				t.Errorf("%s: a kept decision allocates %.0f times, want at most 5", in.Action.Target, n)
			}
		}
	}
	model.Agent.Models = []string{"cheap"}
	if d, _ := e.Decide(t.Context(), model); d.Effect != Deny {
		t.Errorf("after the agent lost the model: %s, want deny", d.Effect)
	}
	model.Agent.Models = []string{"smart"}
	model.Model.Targets[0].Region = "us"
	if d, _ := e.Decide(t.Context(), model); d.Effect != Allow {
		t.Errorf("after the route changed: %s, want allow", d.Effect)
	}
	k1, _ := e.decided.key(model)
	model.Model.Targets[0].Region = "eu"
	if k2, _ := e.decided.key(model); k1 == k2 {
		t.Errorf("a changed route target has the same key as before")
	}

	reader := mustCompile(t, `package corral.authz
allow if input.principal.sub == "alice"`)
	if _, keep := reader.decided.key(tool); keep {
		t.Errorf("a policy that reads the principal keeps the decision of a call that has one")
	}
	tool.Principal = nil
	if _, keep := reader.decided.key(tool); !keep {
		t.Errorf("a call with no principal is not kept, though the policy reads nothing else")
	}
}

// FuzzKeptDecisions: whatever module is added to the default bundle, an
// engine that keeps decisions answers every input as an evaluation does,
// across inputs that differ only in what a kept decision's key leaves out
// (arguments, time, and principal and task when no rule reads them).
func FuzzKeptDecisions(f *testing.F) {
	for _, tt := range decidesPerToolTests {
		f.Add(tt.module)
	}
	f.Fuzz(func(t *testing.T, src string) {
		src = strings.ToValidUTF8(src, "\uFFFD")
		kept, err := Compile(t.Context(), Bundle{Modules: append(DefaultModules(), Module{Name: "fuzz/0.rego", Source: src})}, Options{Timeout: 10 * time.Second})
		if err != nil || kept.decided == nil {
			return
		}
		evaluated := *kept
		evaluated.decided = nil
		for i, in := range []*Input{
			{Action: Action{Kind: KindTool, Target: "crm.find", Arguments: map[string]any{"n": 1, "amount": 5}}, Time: "2026-01-01T00:00:00Z"},
			{Action: Action{Kind: KindTool, Target: "crm.find", Arguments: map[string]any{"n": 2, "amount": 50, "q": "x"}}, Time: "2027-06-01T00:00:00Z",
				Principal: &Principal{Sub: "mallory"}, Task: &Task{ID: "t", Chain: []string{"a", "b"}}},
			{Action: Action{Kind: KindTool, Target: "crm.find"}, Principal: &Principal{Sub: "alice"}, Task: &Task{ID: "u"}},
		} {
			in.Agent = Agent{Name: "impact", Labels: map[string]string{"k": "x"}, Tools: []string{"crm.*"}}
			in.Tool = &Tool{Name: "crm.find", Source: "crm", Method: "GET", Path: "DELETE FROM t"}
			got, err1 := kept.Decide(t.Context(), in)
			want, err2 := evaluated.Decide(t.Context(), in)
			if (err1 == nil) != (err2 == nil) || !cmp.Equal(got, want) {
				t.Fatalf("input %d: kept Decide() = %+v, %v; evaluated %+v, %v", i, got, err1, want, err2)
			}
		}
	})
}
