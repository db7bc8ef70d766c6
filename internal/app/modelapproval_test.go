package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/problem"
)

// TestModelCallsWaitForApproval: a chat call policy wants approved is
// parked (202 approval_pending) and runs once approved, for an agent calling
// the model gateway and for a hosted agent's task, which waits in
// input-required meanwhile.
func TestModelCallsWaitForApproval(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Model
metadata: {name: oracle}
spec:
  provider: scripted
  script: [{content: "The forecast is grim."}]
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: analyst}
spec: {models: [oracle]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: forecaster}
spec: {model: oracle, models: [oracle]}
---
apiVersion: corral.dev/v1
kind: Policy
metadata: {name: reviewed-models}
spec:
  rego: |
    package corral.authz
    require_approval contains "the oracle's forecasts are reviewed" if {
      allow
      input.action.kind == "model"
      input.action.target == "oracle"
    }
    obligations.approvers := ["analysts"] if input.action.target == "oracle"
`)
	key := srv.Key(t, "analyst")
	chat := func() (int, problem.Details, []byte) {
		status, body := srv.Call(t, key, "POST", "/openai/v1/chat/completions",
			map[string]any{"model": "oracle", "messages": []map[string]any{{"role": "user", "content": "forecast Q3"}}}, nil)
		var d problem.Details
		_ = json.Unmarshal(body, &d)
		return status, d, body
	}
	var parked problem.Details
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, d, body := chat()
		if status == http.StatusAccepted && d.Code == problem.ApprovalPending && d.ApprovalID != "" {
			parked = d
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a reviewed model call: HTTP %d %s, want 202 approval_pending", status, body)
		}
		time.Sleep(20 * time.Millisecond) // the policy loads in the background
	}
	status, body := srv.Call(t, srv.Token, "POST", "/v1/humans", map[string]any{"name": "ana", "groups": []string{"analysts"}}, nil)
	var ana struct{ Key string }
	if status != http.StatusCreated || json.Unmarshal(body, &ana) != nil {
		t.Fatalf("POST /v1/humans: %d %s", status, body)
	}
	if status, body := srv.Call(t, ana.Key, "POST", "/v1/approvals/"+parked.ApprovalID+"/approve", map[string]any{}, nil); status != http.StatusOK {
		t.Fatalf("approve: %d %s", status, body)
	}
	if status, _, body := chat(); status != http.StatusOK || !strings.Contains(string(body), "The forecast is grim.") {
		t.Fatalf("the approved call: HTTP %d %s", status, body)
	}
	if status, d, _ := chat(); status != http.StatusConflict || d.Code != problem.ApprovalUsed {
		t.Errorf("the same call again: HTTP %d %s, want 409 approval_used: an approval runs its call once", status, d.Code)
	}

	task := createTask(t, srv, srv.Token, "forecaster", "forecast Q3", nil)
	waiting := waitTask(t, srv, task.ID, orchestrator.InputRequired, orchestrator.Failed, orchestrator.Completed)
	if waiting.State != orchestrator.InputRequired || waiting.Reason != orchestrator.ReasonAwaitingApproval {
		t.Fatalf("the hosted agent's task: %s %s %q, want input-required awaiting_approval", waiting.State, waiting.Reason, waiting.Detail)
	}
	id, _, _ := strings.Cut(strings.TrimPrefix(waiting.Detail, "approval "), ":")
	if status, body := srv.Call(t, ana.Key, "POST", "/v1/approvals/"+id+"/approve", map[string]any{}, nil); status != http.StatusOK {
		t.Fatalf("approve the task's call: %d %s", status, body)
	}
	done := waitTask(t, srv, task.ID)
	if done.State != orchestrator.Completed || string(done.Result) != `"The forecast is grim."` {
		t.Fatalf("after the approval the task is %s %s %s", done.State, done.Reason, done.Detail)
	}
}
