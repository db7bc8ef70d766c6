package app_test

import (
	"net/http"
	"strings"
	"testing"

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
