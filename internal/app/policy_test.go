package app_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
)

// TestPolicyLifecycle drives policy through the API as an operator would:
// a Policy that does not compile is refused with its line, one that does
// decides through POST /v1/policy/eval at once, and deleting a Policy that
// another one depends on is refused.
func TestPolicyLifecycle(t *testing.T) {
	srv := apptest.Start(t)
	bad := map[string]any{"apiVersion": "corral.dev/v1", "kind": "Policy", "metadata": map[string]any{"name": "bad"},
		"spec": map[string]any{"rego": "package corral.authz\n\ndeny contains if"}}
	status, body := srv.Call(t, srv.Token, "POST", "/v1/apply", map[string]any{"resources": []any{bad}}, nil)
	if status != http.StatusUnprocessableEntity || !strings.Contains(string(body), "bad/0.rego:3") {
		t.Errorf("apply of a Policy that does not compile: HTTP %d %s, want 422 naming bad/0.rego:3", status, body)
	}

	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Policy
metadata: {name: hours}
spec:
  rego: |
    package corral.authz
    office_hours if input.time >= "2026-01-01T09"
`)
	// Each Policy is checked against those already stored: one that uses
	// another's rule is applied after it.
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Policy
metadata: {name: uses-hours}
spec:
  rego: |
    package corral.authz
    deny contains "outside office hours" if not office_hours
`)
	input := map[string]any{
		"action": map[string]any{"kind": "tool", "target": "erp.get"},
		"agent":  map[string]any{"name": "impact", "tools": []string{"erp.*"}},
		"tool":   map[string]any{"name": "erp.get", "source": "erp", "annotations": map[string]any{"readOnly": true}},
		"time":   "2025-06-01T08:00:00Z",
	}
	var d struct {
		Effect   string
		Reasons  []string
		Revision string
	}
	// The store reloads on the registry's change: poll until it has.
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, body = srv.Call(t, srv.Token, "POST", "/v1/policy/eval", input, nil)
		if status == http.StatusOK && json.Unmarshal(body, &d) == nil && d.Effect == "deny" || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(d.Reasons) != 1 || d.Reasons[0] != "outside office hours" || d.Revision == "" {
		t.Errorf("eval = %+v, want deny outside office hours with a revision", d)
	}

	status, body = srv.Call(t, srv.Token, "DELETE", "/v1/resources/policies/hours", nil, nil)
	if status != http.StatusConflict || !strings.Contains(string(body), "office_hours") {
		t.Errorf("delete of a Policy another one uses: HTTP %d %s, want 409 naming the missing rule", status, body)
	}
	status, _ = srv.Call(t, srv.Token, "DELETE", "/v1/resources/policies/uses-hours", nil, nil)
	if status != http.StatusOK {
		t.Errorf("delete of a Policy nothing uses: HTTP %d, want 200", status)
	}
}

// TestAppliedPolicyDecidesTheNextCall: once `corral apply` of a Policy has
// answered, the next call to the same replica is decided by it. The policy
// used to be compiled only when the registry's watch fired, a moment after
// the answer, so a call sent right after could still be decided by the
// policy before it: under load, a 5,000 EUR transfer that the new policy
// refuses reached the bank (TestPolicyReadsFlatBodyArguments, in `make
// test`). Each round changes the policy and evaluates at once, no polling;
// deleting it is in force at once too.
func TestAppliedPolicyDecidesTheNextCall(t *testing.T) {
	srv := apptest.Start(t)
	input := map[string]any{
		"action": map[string]any{"kind": "tool", "target": "erp.get"},
		"agent":  map[string]any{"name": "impact", "tools": []string{"erp.*"}},
		"tool":   map[string]any{"name": "erp.get", "source": "erp", "annotations": map[string]any{"readOnly": true}},
	}
	eval := func() (effect string, reasons []string) {
		t.Helper()
		var d struct {
			Effect  string
			Reasons []string
		}
		status, body := srv.Call(t, srv.Token, "POST", "/v1/policy/eval", input, nil)
		if status != http.StatusOK || json.Unmarshal(body, &d) != nil {
			t.Fatalf("eval: HTTP %d %s", status, body)
		}
		return d.Effect, d.Reasons
	}
	for round := range 12 {
		reason := fmt.Sprintf("round %d says no", round)
		srv.Apply(t, `apiVersion: corral.dev/v1
kind: Policy
metadata: {name: changing}
spec:
  rego: |
    package corral.authz
    deny contains "`+reason+`" if input.action.target == "erp.get"
`)
		if effect, reasons := eval(); effect != "deny" || len(reasons) != 1 || reasons[0] != reason {
			t.Fatalf("round %d: right after the apply, eval = %s %q, want deny %q", round, effect, reasons, reason)
		}
	}
	if status, body := srv.Call(t, srv.Token, "DELETE", "/v1/resources/policies/changing", nil, nil); status != http.StatusOK {
		t.Fatalf("delete: HTTP %d %s", status, body)
	}
	if effect, reasons := eval(); effect != "allow" {
		t.Errorf("right after the delete, eval = %s %q, want allow (read-only tool, default policy)", effect, reasons)
	}
}
