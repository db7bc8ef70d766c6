package orchestrator

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/config"
)

var slipTests = []struct {
	name, output string
	next         []string
	has, bad     bool
}{
	{"no slip", `{"id": 4}`, nil, false, false},
	{"not an object", `[1,2]`, nil, false, false},
	{"a slip", `{"next": ["refund"], "why": "broken"}`, []string{"refund"}, true, false},
	{"two", `{"next": ["refund", "notify"]}`, []string{"refund", "notify"}, true, false},
	{"empty: nothing follows", `{"next": []}`, []string{}, true, false},
	{"an agent's text", `"{\"next\": [\"replace\"]}"`, []string{"replace"}, true, false},
	{"text that is no slip", `"next: refund"`, nil, false, false},
	{"not a list", `{"next": "refund"}`, nil, true, true},
	{"null", `{"next": null}`, nil, true, true},
	{"numbers", `{"next": [1, 2]}`, nil, true, true},
	{"too many", `{"next": [` + strings.TrimSuffix(strings.Repeat(`"a",`, MaxSlip+1), ",") + `]}`, nil, true, true},
}

func TestParseSlip(t *testing.T) {
	for _, tt := range slipTests {
		t.Run(tt.name, func(t *testing.T) {
			next, has, err := ParseSlip(json.RawMessage(tt.output))
			if has != tt.has || (err != nil) != tt.bad || (!tt.bad && !slices.Equal(next, tt.next)) {
				t.Errorf("ParseSlip(%s) = %q, %v, %v; want %q, %v, error %v", tt.output, next, has, err, tt.next, tt.has, tt.bad)
			}
		})
	}
}

// TestCheckSlip: a slip chooses among the steps that need its step; a name
// outside them fails with the choices named.
func TestCheckSlip(t *testing.T) {
	spec := &config.WorkflowSpec{Steps: []config.WorkflowStep{
		{Name: "triage"}, {Name: "refund", Needs: []string{"triage"}}, {Name: "replace", Needs: []string{"triage"}}, {Name: "audit"},
	}}
	if err := checkSlip(spec, "triage", []string{"replace", "refund"}); err != nil {
		t.Errorf("checkSlip(replace, refund) = %v", err)
	}
	for _, bad := range [][]string{{"teleport"}, {"audit"}, {"triage"}, {"refund", strings.Repeat("x", 500)}} {
		err := checkSlip(spec, "triage", bad)
		if err == nil || !strings.Contains(err.Error(), "refund, replace") {
			t.Errorf("checkSlip(%.40q) = %v, want a refusal naming refund, replace", bad, err)
		}
	}
}

// FuzzParseSlip: any output is read without a panic, and an accepted
// slip holds at most MaxSlip names.
func FuzzParseSlip(f *testing.F) {
	for _, tt := range slipTests {
		f.Add([]byte(tt.output))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		next, has, err := ParseSlip(data)
		if err == nil && len(next) > MaxSlip {
			t.Fatalf("ParseSlip accepted %d names", len(next))
		}
		if !has && next != nil {
			t.Fatalf("ParseSlip returned names %q without a slip", next)
		}
	})
}
