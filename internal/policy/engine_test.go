package policy

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func toolInput(target string, args map[string]any) *Input {
	return &Input{
		Action: Action{Kind: KindTool, Target: target, Arguments: args},
		Agent:  Agent{Name: "impact", Tools: []string{"crm.*"}},
		Tool:   &Tool{Name: target, Source: "crm", Method: "GET"},
		Time:   "2026-03-02T10:00:00Z",
	}
}

func TestDecideContract(t *testing.T) {
	tests := []struct {
		name   string
		module string
		want   Decision
	}{
		{"nothing allows", `package corral.authz`,
			Decision{Effect: Deny, Reasons: []string{NotAllowed}}},
		{"allow", `package corral.authz
allow := true`,
			Decision{Effect: Allow, Reasons: []string{}}},
		{"allow false", `package corral.authz
allow := false`,
			Decision{Effect: Deny, Reasons: []string{NotAllowed}}},
		{"deny wins over approval and allow", `package corral.authz
allow := true
deny contains "b"
deny contains "a"
require_approval contains "c"`,
			Decision{Effect: Deny, Reasons: []string{"a", "b"}}},
		{"approval wins over allow", `package corral.authz
allow := true
require_approval contains "z"
require_approval contains "y"`,
			Decision{Effect: Approval, Reasons: []string{"y", "z"}}},
		{"approval without allow", `package corral.authz
require_approval contains "y"`,
			Decision{Effect: Approval, Reasons: []string{"y"}}},
		{"empty sets are no reasons", `package corral.authz
deny := set()
require_approval := set()
allow := true`,
			Decision{Effect: Allow, Reasons: []string{}}},
		{"obligations as written", `package corral.authz
allow := true
obligations := {"redact": ["email"], "rate_class": "slow", "limit": 3}`,
			Decision{Effect: Allow, Reasons: []string{}, Obligations: map[string]any{
				"redact": []any{"email"}, "rate_class": "slow", "limit": json.Number("3")}}},
		{"obligations by key", `package corral.authz
allow := true
obligations.approvers := ["oncall"] if input.action.target == "crm.find"
obligations.rate_class := "slow" if input.action.target == "other"`,
			Decision{Effect: Allow, Reasons: []string{}, Obligations: map[string]any{"approvers": []any{"oncall"}}}},
		{"reads the input", `package corral.authz
allow if input.action.arguments.limit < 10
deny contains "big" if input.action.arguments.limit >= 10`,
			Decision{Effect: Allow, Reasons: []string{}}},
		{"reads data", `package corral.authz
import data.crm
allow if input.agent.name in crm.agents`,
			Decision{Effect: Allow, Reasons: []string{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Compile(t.Context(), Bundle{
				Modules: modules(tt.module),
				Data:    map[string]any{"crm": map[string]any{"agents": []any{"impact"}}},
			}, slowMachine)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.Decide(t.Context(), toolInput("crm.find", map[string]any{"limit": json.Number("3")}))
			if err != nil {
				t.Fatalf("Decide() error %v", err)
			}
			tt.want.Revision = e.Revision()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decide() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecideFailsClosed: every way a policy can break the contract is an
// ErrEvaluation, never a decision.
func TestDecideFailsClosed(t *testing.T) {
	tests := []struct {
		name   string
		module string
		want   string
	}{
		{"deny not a set", `package corral.authz
allow := true
deny := ["x"]`, "deny is array, want a set of strings"},
		{"deny is a string", `package corral.authz
allow := true
deny := "x"`, "deny is string, want a set of strings"},
		{"deny member not a string", `package corral.authz
allow := true
deny contains 42`, "deny holds number 42, want only strings"},
		{"approval member not a string", `package corral.authz
allow := true
require_approval contains {"why": "x"}`, "require_approval holds object"},
		{"allow not a boolean", `package corral.authz
allow := "yes"`, "allow is string, want a boolean"},
		{"allow conflict", `package corral.authz
allow := true if input.action.kind == "tool"
allow := false if input.agent.name == "impact"`, "eval_conflict_error: rule data.corral.authz.allow produced conflicting values"},
		{"obligations not an object", `package corral.authz
allow := true
obligations := ["redact"]`, "obligations is array, want an object"},
		{"obligations conflict", `package corral.authz
allow := true
obligations := {"a": 1}
obligations := {"a": 2} if true`, "eval_conflict_error"},
		{"function error", `package corral.authz
allow if to_number("ten") > 1`, "to_number"},
		{"division by zero", `package corral.authz
allow if 1 / count(input.agent.tools) == 0
deny contains "x" if 1 / 0 > 1`, "divide by zero"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := mustCompile(t, tt.module)
			got, err := e.Decide(t.Context(), toolInput("crm.find", nil))
			if !errors.Is(err, ErrEvaluation) {
				t.Fatalf("Decide() = %+v, %v; want an ErrEvaluation", got, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Decide() error %q, want it to say %q", err, tt.want)
			}
			if got.Effect == Allow {
				t.Errorf("Decide() effect %q with an error", got.Effect)
			}
		})
	}
}

func TestDecideTimeout(t *testing.T) {
	slow := `package corral.authz
# 10^8 steps, each of which checks for cancellation; little memory.
allow if {
	some i in numbers.range(1, 10000)
	some j in numbers.range(1, 10000)
	i * j == -1
}`
	e, err := Compile(t.Context(), Bundle{Modules: modules(slow)}, Options{Timeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Decide(t.Context(), toolInput("crm.find", nil))
	if !errors.Is(err, ErrEvaluation) || !strings.Contains(err.Error(), "not decided within 1ms") {
		t.Errorf("Decide() of a slow policy error %v, want ErrEvaluation naming the time-out", err)
	}

	e, err = Compile(t.Context(), Bundle{Modules: modules(slow)}, Options{Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = e.Decide(ctx, toolInput("crm.find", nil))
	if !errors.Is(err, ErrEvaluation) || !errors.Is(err, context.Canceled) {
		t.Errorf("Decide() with a canceled context error %v, want ErrEvaluation and context.Canceled", err)
	}
}

func TestDecideBadInput(t *testing.T) {
	e := mustCompile(t, "package corral.authz\nallow := true")
	for _, args := range []any{
		map[string]any{"n": json.Number("1e")},
		map[string]any{"n": math.NaN()},
		map[string]any{"n": math.Inf(1)},
		map[string]any{"c": make(chan int)},
		[]any{struct{}{}},
	} {
		in := toolInput("crm.find", nil)
		in.Action.Arguments = args
		if d, err := e.Decide(t.Context(), in); !errors.Is(err, ErrEvaluation) {
			t.Errorf("Decide(arguments %v) = %+v, %v; want an ErrEvaluation", args, d, err)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name    string
		bundle  Bundle
		want    []string
		notWant string
	}{
		{"parse error names module and line", Bundle{Modules: []Module{{Name: "payments/0.rego", Source: "package corral.authz\n\nallow if {\n  input.x ==\n}\n"}}},
			[]string{"payments/0.rego:5: rego_parse_error"}, ""},
		{"wrong package", Bundle{Modules: []Module{{Name: "p/0.rego", Source: "package payments\nallow := true"}}},
			[]string{"p/0.rego:1: package is payments, want package corral.authz"}, ""},
		{"rego v0 syntax", Bundle{Modules: []Module{{Name: "p/0.rego", Source: "package corral.authz\ndeny[msg] { msg := \"x\" }"}}},
			[]string{"p/0.rego:2: rego_parse_error"}, ""},
		{"unknown function", Bundle{Modules: []Module{{Name: "p/0.rego", Source: "package corral.authz\nallow if corral.nope(1)"}}},
			[]string{"p/0.rego:2: rego_type_error: undefined function corral.nope"}, ""},
		{"type error", Bundle{Modules: []Module{{Name: "p/0.rego", Source: "package corral.authz\nallow if corral.iban.valid(1)"}}},
			[]string{"p/0.rego:2: rego_type_error"}, ""},
		{"network refused", Bundle{Modules: []Module{{Name: "p/0.rego", Source: "package corral.authz\nallow if http.send({\"method\": \"get\", \"url\": \"http://x\"}).status_code == 200"}}},
			[]string{"p/0.rego:2:", "http.send"}, ""},
		{"unsafe variable", Bundle{Modules: []Module{{Name: "p/0.rego", Source: "package corral.authz\ndeny contains x if x != 1"}}},
			[]string{"p/0.rego:2: rego_unsafe_var_error"}, ""},
		{"two errors in two modules", Bundle{Modules: []Module{
			{Name: "a/0.rego", Source: "package corral.authz\nallow if {"},
			{Name: "b/0.rego", Source: "package other"},
		}}, []string{"a/0.rego:2:", "b/0.rego:1: package is other"}, ""},
		{"duplicate module name", Bundle{Modules: []Module{
			{Name: "a/0.rego", Source: "package corral.authz"},
			{Name: "a/0.rego", Source: "package corral.authz"},
		}}, []string{"a/0.rego: two modules have this name"}, ""},
		{"data conflicts with a rule", Bundle{
			Modules: []Module{{Name: "a/0.rego", Source: "package corral.authz\nallow := true"}},
			Data:    map[string]any{"corral": map[string]any{"authz": map[string]any{"allow": false}}},
		}, []string{"conflict"}, ""},
		{"conflicting rule kinds", Bundle{Modules: []Module{
			{Name: "a/0.rego", Source: "package corral.authz\ndeny contains \"x\""},
			{Name: "b/0.rego", Source: "package corral.authz\ndeny := {\"y\"}"},
		}}, []string{"rego_type_error: conflicting rules data.corral.authz.deny"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Compile(t.Context(), tt.bundle, Options{})
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("Compile() = %v, %v; want a *CompileError", e, err)
			}
			all := strings.Join(ce.Errors, "\n")
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("Compile() errors:\n%s\nwant one containing %q", all, w)
				}
			}
		})
	}
}

func TestRevision(t *testing.T) {
	a := Module{Name: "a/0.rego", Source: "package corral.authz\nallow := true"}
	b := Module{Name: "b/0.rego", Source: "package corral.authz\ndeny contains \"x\" if false"}
	data := map[string]any{"k": []any{"v"}}
	rev := func(bundle Bundle) string {
		t.Helper()
		e, err := Compile(t.Context(), bundle, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return e.Revision()
	}
	base := rev(Bundle{Modules: []Module{a, b}, Data: data})
	if !strings.HasPrefix(base, "sha256:") || len(base) != len("sha256:")+12 {
		t.Errorf("Revision() = %q, want sha256: and 12 hex digits", base)
	}
	if got := rev(Bundle{Modules: []Module{b, a}, Data: map[string]any{"k": []any{"v"}}}); got != base {
		t.Errorf("Revision() of the same modules in another order = %q, want %q", got, base)
	}
	changed := []Bundle{
		{Modules: []Module{a}, Data: data},
		{Modules: []Module{a, b}},
		{Modules: []Module{a, b}, Data: map[string]any{"k": []any{"w"}}},
		{Modules: []Module{a, {Name: "b/0.rego", Source: b.Source + "\n"}}, Data: data},
		{Modules: []Module{a, {Name: "c/0.rego", Source: b.Source}}, Data: data},
	}
	for i, bundle := range changed {
		if got := rev(bundle); got == base {
			t.Errorf("Revision() of changed bundle %d = %q, the same as before the change", i, got)
		}
	}
}

func TestVisible(t *testing.T) {
	e := mustCompile(t, defaultRego, `package corral.authz
deny contains "blocked agent" if input.agent.name == "blocked"
deny contains "too many" if input.action.arguments.limit > 100
allow if {
	input.action.target == "erp.report"
	"finance" in input.principal.groups
}`)
	finance := &Principal{Sub: "alice", Groups: []string{"finance"}}
	sales := &Principal{Sub: "bob", Groups: []string{"sales"}}
	tests := []struct {
		name      string
		agent     string
		tools     []string
		kind      string
		tgt       string
		principal *Principal
		want      bool
	}{
		{"listed tool", "impact", []string{"crm.*"}, KindTool, "crm.find", nil, true},
		{"unlisted tool", "impact", []string{"crm.*"}, KindTool, "mail.send", nil, false},
		{"allowed for some principals", "impact", nil, KindTool, "erp.report", nil, true},
		{"allowed for this principal", "impact", nil, KindTool, "erp.report", finance, true},
		{"not for this principal", "impact", nil, KindTool, "erp.report", sales, false},
		{"denied whatever the arguments", "blocked", []string{"crm.*"}, KindTool, "crm.find", nil, false},
		{"listed model", "impact", nil, KindModel, "gpt-4o", nil, true},
		{"unlisted model", "impact", nil, KindModel, "claude", nil, false},
		{"agent not listed", "impact", []string{"*"}, KindAgent, "mailer", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &Input{
				// Arguments, task and time are unknown to Visible, whatever in says.
				Action:    Action{Kind: tt.kind, Target: tt.tgt, Arguments: map[string]any{"limit": 500}},
				Agent:     Agent{Name: tt.agent, Tools: tt.tools, Models: []string{"gpt-*"}},
				Principal: tt.principal,
				Task:      &Task{ID: "t"},
			}
			got, err := e.Visible(t.Context(), in)
			if err != nil || got != tt.want {
				t.Errorf("Visible(%s %s for %s) = %v, %v; want %v", tt.kind, tt.tgt, tt.agent, got, err, tt.want)
			}
		})
	}
}

func TestInputValue(t *testing.T) {
	in := &Input{
		Action:    Action{Kind: KindTool, Target: "crm.find", Arguments: map[string]any{"n": json.Number("1.5"), "f": 2.0, "i": 3, "l": []any{true, nil, "s"}}},
		Agent:     Agent{Name: "impact", Labels: map[string]string{"team": "x"}},
		Principal: &Principal{Sub: "alice", Claims: map[string]any{"tenant": "acme"}},
		Task:      &Task{ID: "t1", Depth: 2, Turns: 5},
		Tool: &Tool{Name: "crm.find", Annotations: Annotations{Destructive: true},
			AnnotationsSource: AnnotationsSource{ReadOnly: "pinned", Destructive: "override", Idempotent: "pinned"}},
		Time: "2026-03-02T10:00:00Z",
	}
	v, err := in.value()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"action": {"arguments": {"f": 2, "i": 3, "l": [true, null, "s"], "n": 1.5}, "kind": "tool", "target": "crm.find"}, ` +
		`"agent": {"agents": [], "labels": {"team": "x"}, "models": [], "name": "impact", "tools": []}, ` +
		`"principal": {"claims": {"tenant": "acme"}, "groups": [], "issuer": "", "roles": [], "sub": "alice"}, ` +
		`"task": {"chain": [], "depth": 2, "id": "t1", "turns": 5}, "time": "2026-03-02T10:00:00Z", ` +
		`"tool": {"annotations": {"destructive": true, "idempotent": false, "readOnly": false}, ` +
		`"annotations_source": {"destructive": "override", "idempotent": "pinned", "readOnly": "pinned"}, "method": "", "name": "crm.find", "path": "", "source": ""}}`
	if got := v.String(); got != want {
		t.Errorf("value() =\n%s\nwant\n%s", got, want)
	}
}

// TestConcurrentDecide: one engine serves many goroutines (run with -race).
func TestConcurrentDecide(t *testing.T) {
	e := benchEngine(t)
	want, err := e.Decide(t.Context(), transferInput())
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for range 50 {
				got, err := e.Decide(t.Context(), transferInput())
				if err == nil && !cmp.Equal(got, want) {
					err = errors.New(cmp.Diff(want, got))
				}
				if err == nil {
					_, err = e.Visible(t.Context(), transferInput())
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Decide() = %v", err)
		}
	}
}
