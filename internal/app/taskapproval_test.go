package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// TestTaskWaitsForApproval: a hosted agent's payment that policy parks for
// payments-oncall parks its task (input-required, awaiting_approval) and
// holds no worker; the task survives a restart of corral while it waits;
// once a person approves, the task goes on, the bank receives the payment
// exactly once, and the model is told the result. A second task's parked
// payment is denied: the model is told, and the bank receives nothing.
func TestTaskWaitsForApproval(t *testing.T) {
	dir := t.TempDir()
	w := startApprovals(t, app.Config{DataDir: dir}, "4h")
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
	waitParked := func(srv *apptest.Server, id string) orchestrator.Task {
		t.Helper()
		task := waitTask(t, srv, id, orchestrator.InputRequired, orchestrator.Failed, orchestrator.Completed)
		if task.State != orchestrator.InputRequired || task.Reason != orchestrator.ReasonAwaitingApproval || !strings.HasPrefix(task.Detail, "approval ") {
			t.Fatalf("task = %s %s %q, want input-required awaiting_approval naming the approval", task.State, task.Reason, task.Detail)
		}
		return task
	}
	approvalOf := func(task orchestrator.Task) string {
		id, _, _ := strings.Cut(strings.TrimPrefix(task.Detail, "approval "), ":")
		return id
	}

	paid := createTask(t, w.srv, w.srv.Token, "payer", "pay invoice 7", nil)
	parked := waitParked(w.srv, paid.ID)
	if n := len(w.bank.received()); n != 0 {
		t.Fatalf("the bank received %d payments before any approval", n)
	}

	// corral restarts while the task waits: the task and the approval stay.
	if err := w.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	w.srv = apptest.StartWith(t, app.Config{DataDir: dir})
	if again := waitParked(w.srv, paid.ID); approvalOf(again) != approvalOf(parked) {
		t.Fatalf("after the restart the task waits on %q, before on %q", approvalOf(again), approvalOf(parked))
	}
	alice, bob := w.human(t, "alice", "payments-oncall"), w.human(t, "bob", "payments-oncall")
	if status, d, _ := w.decide(t, alice, approvalOf(parked), "approve", map[string]string{"comment": "invoice checked"}); status != http.StatusOK {
		t.Fatalf("approve: %d %+v", status, d)
	}
	done := waitTask(t, w.srv, paid.ID)
	if done.State != orchestrator.Completed || string(done.Result) != `"Paid invoice 7."` {
		t.Fatalf("after the approval the task is %s %s %s", done.State, done.Reason, done.Detail)
	}
	if n := len(w.bank.received()); n != 1 {
		t.Errorf("the bank received %d payments, want exactly 1", n)
	}

	refused := createTask(t, w.srv, w.srv.Token, "payer", "pay invoice 7 again", nil)
	parked = waitParked(w.srv, refused.ID)
	if status, d, _ := w.decide(t, bob, approvalOf(parked), "deny", map[string]string{"comment": "paid already"}); status != http.StatusOK {
		t.Fatalf("deny: %d %+v", status, d)
	}
	done = waitTask(t, w.srv, refused.ID)
	if done.State != orchestrator.Completed {
		t.Fatalf("after the denial the task is %s %s %s", done.State, done.Reason, done.Detail)
	}
	_, events := w.srv.Call(t, w.srv.Token, "GET", "/v1/tasks/"+refused.ID+"/events", nil, nil)
	if !strings.Contains(string(events), "approval_denied") {
		t.Errorf("the model was not told of the denial:\n%s", events)
	}
	if n := len(w.bank.received()); n != 1 {
		t.Errorf("the bank received %d payments after a denial, want still 1", n)
	}
}

// TestCanceledTaskWithdrawsItsApproval: a task canceled while it waits for
// an approval withdraws it (canceled), so nobody decides a call nobody
// waits for, and a late approval runs nothing.
func TestCanceledTaskWithdrawsItsApproval(t *testing.T) {
	w := startApprovals(t, app.Config{}, "4h")
	w.srv.Apply(t, `apiVersion: corral.dev/v1
kind: Model
metadata: {name: payer-model}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: banking__send_money, arguments: {to_iban: "DE89 3704 0044 0532 0130 00", amount: 2000, currency: EUR, reference: "invoice 8"}}]
    - content: "Paid invoice 8."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: payer}
spec: {model: payer-model, models: [payer-model], tools: ["banking.*"]}
`)
	task := createTask(t, w.srv, w.srv.Token, "payer", "pay invoice 8", nil)
	parked := waitTask(t, w.srv, task.ID, orchestrator.InputRequired, orchestrator.Failed, orchestrator.Completed)
	if parked.Reason != orchestrator.ReasonAwaitingApproval {
		t.Fatalf("task = %s %s %q", parked.State, parked.Reason, parked.Detail)
	}
	id, _, _ := strings.Cut(strings.TrimPrefix(parked.Detail, "approval "), ":")
	if status, body := w.srv.Call(t, w.srv.Token, "POST", "/v1/tasks/"+task.ID+"/cancel", map[string]any{"reason": "wrong invoice"}, nil); status != http.StatusOK {
		t.Fatalf("cancel: %d %s", status, body)
	}
	waitWithdrawn(t, w, id, "the approval of a canceled task")
	alice := w.human(t, "alice", "payments-oncall")
	if status, _, _ := w.decide(t, alice, id, "approve", map[string]string{}); status == http.StatusOK {
		t.Error("a withdrawn approval was approved")
	}
	if n := len(w.bank.received()); n != 0 {
		t.Errorf("the bank received %d payments for a canceled task", n)
	}
}

// TestParkedTaskEndsAtItsDeadline: a task's time in input-required counts
// towards its deadline, so a task parked on an approval nobody decides, or
// on a question nobody answers, ends by itself once its 2 s deadline has
// passed, as a running task does (failed, deadline), with no call made; the
// approval it waited on is withdrawn.
func TestParkedTaskEndsAtItsDeadline(t *testing.T) {
	w := startApprovals(t, app.Config{}, "4h")
	w.srv.Apply(t, `apiVersion: corral.dev/v1
kind: Model
metadata: {name: payer-model}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: banking__send_money, arguments: {to_iban: "DE89 3704 0044 0532 0130 00", amount: 2000, currency: EUR, reference: "invoice 9"}}]
    - content: "Paid invoice 9."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: payer}
spec:
  model: payer-model
  models: [payer-model]
  tools: ["banking.*"]
  limits: {deadline: 2s}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: asker-model}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: request_input, arguments: {question: "Refund 400 EUR to Ada?"}}]
    - content: "Refunded."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: asker}
spec:
  model: asker-model
  models: [asker-model]
  limits: {deadline: 2s}
`)
	ended := func(t *testing.T, id string) {
		t.Helper()
		done := waitTask(t, w.srv, id) // polls for 20 s: ten times the deadline
		if done.State != orchestrator.Failed || done.Reason != orchestrator.ReasonDeadline || !strings.Contains(done.Detail, "past its deadline") {
			t.Errorf("task %s = %s %s %q, want failed deadline", id, done.State, done.Reason, done.Detail)
		}
	}

	t.Run("awaiting an approval", func(t *testing.T) {
		task := createTask(t, w.srv, w.srv.Token, "payer", "pay invoice 9", nil)
		parked := waitTask(t, w.srv, task.ID, orchestrator.InputRequired, orchestrator.Failed, orchestrator.Completed)
		if parked.Reason != orchestrator.ReasonAwaitingApproval || parked.WakeAt == nil {
			t.Fatalf("task = %s %s %q (wake_at %v), want input-required awaiting_approval with a wake time", parked.State, parked.Reason, parked.Detail, parked.WakeAt)
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(parked.Detail, "approval "), ":")
		ended(t, task.ID)
		waitWithdrawn(t, w, id, "the approval of a task past its deadline")
		alice := w.human(t, "alice", "payments-oncall")
		if status, _, _ := w.decide(t, alice, id, "approve", map[string]string{}); status == http.StatusOK {
			t.Error("the withdrawn approval of an ended task was approved")
		}
		if n := len(w.bank.received()); n != 0 {
			t.Errorf("the bank received %d payments for a task past its deadline", n)
		}
	})

	t.Run("asked for input", func(t *testing.T) {
		task := createTask(t, w.srv, w.srv.Token, "asker", "refund Ada", nil)
		parked := waitTask(t, w.srv, task.ID, orchestrator.InputRequired, orchestrator.Failed, orchestrator.Completed)
		if parked.Reason != orchestrator.ReasonAskedForInput {
			t.Fatalf("task = %s %s %q, want input-required asked_for_input", parked.State, parked.Reason, parked.Detail)
		}
		ended(t, task.ID)
		if status, body := w.srv.Call(t, w.srv.Token, "POST", "/v1/tasks/"+task.ID+"/messages", map[string]any{"message": "yes"}, nil); status != http.StatusConflict {
			t.Errorf("answering a task that ended at its deadline: %d %s, want 409", status, body)
		}
	})
}

// waitWithdrawn waits until approval id is canceled (withdrawn with its
// task), failing with what after apptest.Patience.
func waitWithdrawn(t *testing.T, w *approvalWorld, id, what string) {
	t.Helper()
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, body := w.srv.Call(t, w.srv.Token, "GET", "/v1/approvals/"+id, nil, nil)
		var got struct{ State string }
		if status == http.StatusOK && json.Unmarshal(body, &got) == nil && got.State == "canceled" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d %s, want canceled", what, status, body)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}
