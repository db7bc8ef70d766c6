package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// TestA2ATaskAwaitingApproval: a hosted agent's payment parked for
// people's approval shows over A2A as TASK_STATE_AUTH_REQUIRED with the
// approval's id; a message cannot answer it (-32004 approval_pending);
// once approved, the task completes and the bank is paid once.
func TestA2ATaskAwaitingApproval(t *testing.T) {
	w := startApprovals(t, app.Config{}, "4h")
	w.srv.Apply(t, `apiVersion: corral.dev/v1
kind: Model
metadata: {name: payer-model}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: banking__send_money, arguments: {to_iban: "DE89 3704 0044 0532 0130 00", amount: 2000, currency: EUR, reference: "invoice 7"}}]
    - content: "Paid invoice 7."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: payer}
spec: {model: payer-model, models: [payer-model], tools: ["banking.*"]}
`)
	rpc := func(method string, params any) (result json.RawMessage, code int, reason string) {
		t.Helper()
		status, body := w.srv.Call(t, w.srv.Token, "POST", "/a2a/payer", map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, http.Header{"A2A-Version": {"1.0"}})
		var r struct {
			Result json.RawMessage
			Error  *struct {
				Code int
				Data []struct{ Reason string }
			}
		}
		if status != http.StatusOK || json.Unmarshal(body, &r) != nil {
			t.Fatalf("%s: HTTP %d %s", method, status, body)
		}
		if r.Error != nil {
			return nil, r.Error.Code, r.Error.Data[0].Reason
		}
		return r.Result, 0, ""
	}
	type a2aTask struct {
		ID     string
		Status struct {
			State   string
			Message struct{ Parts []struct{ Text string } }
		}
		Metadata map[string]any
	}
	res, code, reason := rpc("SendMessage", map[string]any{"message": map[string]any{"messageId": "pay-7", "role": "ROLE_USER", "parts": []any{map[string]any{"text": "pay invoice 7"}}}})
	var sent struct{ Task a2aTask }
	if code != 0 || json.Unmarshal(res, &sent) != nil {
		t.Fatalf("SendMessage: %d %s %s", code, reason, res)
	}
	task := sent.Task
	approvalID, _ := task.Metadata["corral.dev/approvalId"].(string)
	if task.Status.State != "TASK_STATE_AUTH_REQUIRED" || len(approvalID) < 8 || !strings.Contains(task.Status.Message.Parts[0].Text, approvalID) {
		t.Fatalf("task = %s", res)
	}
	if _, code, reason := rpc("SendMessage", map[string]any{"message": map[string]any{"messageId": "pay-7-yes", "taskId": task.ID, "role": "ROLE_USER", "parts": []any{map[string]any{"text": "yes"}}}}); code != -32004 || reason != "approval_pending" {
		t.Errorf("a message to the parked task: %d %s, want -32004 approval_pending", code, reason)
	}
	for state, want := range map[string]bool{"TASK_STATE_AUTH_REQUIRED": true, "TASK_STATE_INPUT_REQUIRED": false} {
		res, code, _ := rpc("ListTasks", map[string]any{"status": state})
		if listed := strings.Contains(string(res), task.ID); code != 0 || listed != want {
			t.Errorf("ListTasks %s: code %d, lists the parked task %v, want %v", state, code, listed, want)
		}
	}
	alice := w.human(t, "alice", "payments-oncall")
	if status, d, _ := w.decide(t, alice, approvalID, "approve", map[string]string{"comment": "invoice checked"}); status != http.StatusOK {
		t.Fatalf("approve: %d %+v", status, d)
	}
	done := waitTask(t, w.srv, task.ID)
	if done.State != orchestrator.Completed || len(w.bank.received()) != 1 {
		t.Errorf("after the approval: %s %s, the bank got %d payments", done.State, done.Detail, len(w.bank.received()))
	}
}
