package policy

import (
	"testing"
)

// TestDecidesPerTool: an engine keeps decisions only for a policy that can
// read nothing but what the decisions' key holds.
func TestDecidesPerTool(t *testing.T) {
	tests := []struct {
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
	for _, tt := range tests {
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
// evaluation with the default bundle (it took ~150 allocations at d7dc022),
// and what the key does not hold is never answered from it.
func TestDecideKeptDecisions(t *testing.T) {
	e, err := Compile(t.Context(), Bundle{Modules: append(DefaultModules(), modules(`package corral.authz
deny contains "not for mallory" if input.principal.sub == "mallory"`)...)}, Options{})
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
}
