package app_test

import (
	"encoding/json"
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
	deadline := time.Now().Add(5 * time.Second)
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
