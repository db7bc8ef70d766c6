package expr

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

var evalTests = []struct {
	name, src string
	vars      string // JSON object of the variables
	want      string // JSON, or "error"
}{
	{"field", "input.sku", `{"input": {"sku": "A-42"}}`, `"A-42"`},
	{"int arithmetic on JSON numbers", "input.qty * 10", `{"input": {"qty": 3}}`, `30`},
	{"double stays double", "input.price * 2.0", `{"input": {"price": 1.25}}`, `2.5`},
	{"mixed comparison", "input.qty > 2.5", `{"input": {"qty": 3}}`, `true`},
	{"a step's output", "steps.reserve.output.id + '/x'", `{"steps": {"reserve": {"output": {"id": "r-1"}, "status": "done"}}}`, `"r-1/x"`},
	{"a map", "{'a': input, 'n': [1, 2]}", `{"input": "日本語"}`, `{"a":"日本語","n":[1,2]}`},
	{"output in a compensation", "output.id", `{"output": {"id": 7}}`, `7`},
	{"missing key", "input.nope", `{"input": {}}`, "error"},
	{"division by zero", "1 / input.zero", `{"input": {"zero": 0}}`, "error"},
	{"state is null for now", "state == null", `{}`, `true`},
	{"huge number stays a double", "input.n", `{"input": {"n": 1e300}}`, `1e+300`},
}

func TestEval(t *testing.T) {
	for _, tt := range evalTests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(tt.src, false)
			if err != nil {
				t.Fatalf("Compile(%q) = %v", tt.src, err)
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal([]byte(tt.vars), &raw); err != nil {
				t.Fatal(err)
			}
			vars := Vars{}
			for k, v := range raw {
				vars[k] = Decode(v)
			}
			got, err := p.Eval(context.Background(), vars)
			if tt.want == "error" {
				if err == nil {
					t.Errorf("Eval(%q) = %s, want an error", tt.src, got)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Errorf("Eval(%q) = %s, %v; want %s", tt.src, got, err, tt.want)
			}
		})
	}
}

func TestCompile(t *testing.T) {
	for _, tt := range []struct {
		src      string
		wantBool bool
		refs     string
		err      string
	}{
		{"steps.a.output.x + steps.b.output.y", false, "a,b", ""},
		{"input.qty +", false, "", "Syntax error"},
		{"inptu.qty", false, "", "undeclared reference to 'inptu'"},
		{"'yes'", true, "", "a condition must be a bool"},
		{"input.qty > 1", true, "", ""},
		{"", false, "", "empty expression"},
		{strings.Repeat("1+", 3000) + "1", false, "", "over the limit"},
	} {
		p, err := Compile(tt.src, tt.wantBool)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Compile(%.40q) = %v, want an error with %q", tt.src, err, tt.err)
			}
			continue
		}
		if err != nil || strings.Join(p.Refs(), ",") != tt.refs {
			t.Errorf("Compile(%q) = refs %v, %v; want %q", tt.src, p.Refs(), err, tt.refs)
		}
	}
}

// TestEvalBounded: an expression that would run long is stopped by its
// cost limit, not left to hang a workflow.
func TestEvalBounded(t *testing.T) {
	p, err := Compile("[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, [1,2,3,4,5,6,7,8,9,10].all(f, true))))))", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Bool(context.Background(), nil); err == nil {
		t.Errorf("a million-step expression ran to its end; want it stopped")
	}
}

// FuzzCompile: any source compiles or is refused without a panic, and a
// compiled expression evaluates (to a value or an error) without one.
func FuzzCompile(f *testing.F) {
	for _, tt := range evalTests {
		f.Add(tt.src, tt.vars)
	}
	f.Add("steps.x.output", `{"steps": {"x": {"output": [1, {"a": null}]}}}`)
	f.Fuzz(func(t *testing.T, src, vars string) {
		p, err := Compile(src, false)
		if err != nil {
			return
		}
		var raw map[string]json.RawMessage
		v := Vars{}
		if json.Unmarshal([]byte(vars), &raw) == nil {
			for k, r := range raw {
				v[k] = Decode(r)
			}
		}
		if _, ok := v[Steps].(map[string]any); !ok {
			delete(v, Steps)
		}
		out, err := p.Eval(context.Background(), v)
		if err == nil && !json.Valid(out) {
			t.Fatalf("Eval(%q) = %s, not JSON", src, out)
		}
	})
}

// TestUsesState: a run reads the shared state (a round trip to the
// bucket's leader) only for expressions that name it.
func TestUsesState(t *testing.T) {
	for src, want := range map[string]bool{
		`state.port`:                       true,
		`has(state.port) && input == "x"`:  true,
		`steps.a.output.state`:             false, // a field called state, not the variable
		`input + ' state'`:                 false,
		`[1, 2].exists(s, s == 2)`:         false,
		`{'state': input}.state == 'ok'`:   false,
		`steps.a.output.x + string(state)`: true,
	} {
		p, err := Compile(src, false)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if got := p.UsesState(); got != want {
			t.Errorf("UsesState(%s) = %v, want %v", src, got, want)
		}
	}
}
