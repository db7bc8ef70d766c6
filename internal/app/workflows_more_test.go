package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/deadletter"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// TestWorkflowDeadLetterDiscardCompensates: discarding the dead letter of
// a run waiting on it compensates its completed steps and fails it; the
// metric counts pending dead letters and the audit has the put and the
// discard.
func TestWorkflowDeadLetterDiscardCompensates(t *testing.T) {
	shop := startShop(t)
	shop.set("ship", true)
	srv := apptest.Start(t)
	srv.Apply(t, shopSource(shop.URL, "reserve", "release", "charge", "refund", "ship")+"---\n"+orderWorkflow("deadletter"))
	srv.WaitTool(t, "shop.ship")
	run := startRun(t, srv, "order", map[string]any{"sku": "B-7", "qty": 2})
	waitTask(t, srv, run.ID, orchestrator.InputRequired)
	if n := metric(t, srv, `corral_dead_letters{source="workflow"}`); n != "1" {
		t.Errorf("corral_dead_letters{source=workflow} = %q, want 1", n)
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/dlq?task="+run.ID, nil, nil)
	var list struct{ Items []deadletter.Entry }
	if err := json.Unmarshal(body, &list); status != http.StatusOK || err != nil || len(list.Items) != 1 {
		t.Fatalf("GET /v1/dlq: HTTP %d %s", status, body)
	}
	id := list.Items[0].ID
	if status, body := srv.Call(t, srv.Token, "DELETE", "/v1/dlq/"+id, nil, nil); status != http.StatusOK {
		t.Fatalf("discard: HTTP %d %s", status, body)
	}
	done := waitTask(t, srv, run.ID)
	if done.State != orchestrator.Failed || !strings.Contains(done.Detail, "compensated: charge, reserve") {
		t.Fatalf("run after discard = %s %s %q, want failed, compensated: charge, reserve", done.State, done.Reason, done.Detail)
	}
	for op, want := range map[string]int{"reserve": 1, "charge": 1, "ship": 3, "refund": 1, "release": 1} {
		if n, _ := shop.count(op); n != want {
			t.Errorf("%s: %d requests, want %d", op, n, want)
		}
	}
	if n := metric(t, srv, `corral_dead_letters{source="workflow"}`); n != "0" {
		t.Errorf("corral_dead_letters{source=workflow} after discard = %q, want 0", n)
	}
	status, body = srv.Call(t, srv.Token, "GET", "/v1/audit?limit=1000", nil, nil)
	for _, ev := range []string{"dead_letter.put", "dead_letter.discard"} {
		if status != http.StatusOK || !strings.Contains(string(body), `"`+ev+`"`) {
			t.Errorf("the audit has no %s record (HTTP %d)", ev, status)
		}
	}
}

// metric returns one sample's value from /metrics, or "".
func metric(t *testing.T, srv *apptest.Server, name string) string {
	t.Helper()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// TestWorkflowParallelJoinAndConditions: steps without needs run, a join
// waits for both, a false condition skips a step, and the default result
// holds every completed step's output.
func TestWorkflowParallelJoinAndConditions(t *testing.T) {
	shop := startShop(t)
	srv := apptest.Start(t)
	srv.Apply(t, shopSource(shop.URL, "reserve", "charge", "notify", "refund")+`---
apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: fanout}
spec:
  agent: clerk
  steps:
    - {name: left, tool: shop.reserve, arguments: {sku: "'L'"}}
    - {name: right, tool: shop.charge, arguments: {amount: "input.amount"}}
    - {name: join, needs: [left, right], tool: shop.notify, arguments: {text: "steps.left.output.id + ' ' + steps.right.output.id"}}
    - {name: big, needs: [join], when: "input.amount > 1000", tool: shop.refund, arguments: {amount: "input.amount"}}
`)
	srv.WaitTool(t, "shop.notify")
	done := waitTask(t, srv, startRun(t, srv, "fanout", map[string]any{"amount": 250}).ID)
	var result map[string]map[string]any
	if err := json.Unmarshal(done.Result, &result); done.State != orchestrator.Completed || err != nil {
		t.Fatalf("run = %s %s %s result %s", done.State, done.Reason, done.Detail, done.Result)
	}
	if _, ok := result["big"]; ok || len(result) != 3 {
		t.Errorf("result = %s, want left, right and join (big skipped)", done.Result)
	}
	if got, _ := result["join"]["got"].(map[string]any); !strings.Contains(got["text"].(string), "reserve-") || !strings.Contains(got["text"].(string), "charge-") {
		t.Errorf("join got %v, want both outputs", result["join"]["got"])
	}
	if n, _ := shop.count("refund"); n != 0 {
		t.Errorf("the skipped step called refund %d times", n)
	}
}

// TestWorkflowHostileStarts: what careless and hostile callers send to
// start a run, and ask of the dead-letter queue, is refused with a clear
// problem and starts nothing.
func TestWorkflowHostileStarts(t *testing.T) {
	shop := startShop(t)
	srv := apptest.Start(t)
	srv.Apply(t, shopSource(shop.URL, "reserve", "release", "charge", "refund", "ship")+"---\n"+orderWorkflow("compensate")+`---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: outsider}
spec: {tools: ["shop.*"]}
`)
	outsider := srv.Key(t, "outsider")
	clerk := srv.Key(t, "clerk")
	for _, tt := range []struct {
		name   string
		token  string
		body   any
		status int
	}{
		{"no such workflow", srv.Token, map[string]any{"workflow": "nope", "input": "x"}, http.StatusNotFound},
		{"bad name", srv.Token, map[string]any{"workflow": "../order", "input": "x"}, http.StatusBadRequest},
		{"huge name", srv.Token, map[string]any{"workflow": strings.Repeat("a", 5000), "input": "x"}, http.StatusBadRequest},
		{"no input", srv.Token, map[string]any{"workflow": "order"}, http.StatusBadRequest},
		{"wrong type", srv.Token, map[string]any{"workflow": 42, "input": "x"}, http.StatusBadRequest},
		{"another agent's workflow", outsider, map[string]any{"workflow": "order", "input": "x"}, http.StatusForbidden},
		{"naming another agent", clerk, map[string]any{"workflow": "order", "agent": "outsider", "input": "x"}, http.StatusForbidden},
		{"no credential", "", map[string]any{"workflow": "order", "input": "x"}, http.StatusUnauthorized},
	} {
		status, body := srv.Call(t, tt.token, "POST", "/v1/tasks", tt.body, nil)
		if status != tt.status || !strings.Contains(string(body), `"code"`) {
			t.Errorf("%s: HTTP %d %s, want %d with a problem", tt.name, status, body, tt.status)
		}
	}
	// The agent the workflow acts as may start it; it sees its run.
	status, body := srv.Call(t, clerk, "POST", "/v1/tasks", map[string]any{"workflow": "order", "input": map[string]any{"sku": "S", "qty": 1}}, nil)
	if status != http.StatusCreated {
		t.Fatalf("clerk starts order: HTTP %d %s", status, body)
	}
	if n, _ := shop.count("reserve"); n > 1 {
		t.Errorf("the refused starts reserved %d times", n)
	}
	for _, tt := range []struct {
		method, path, token string
		status              int
	}{
		{"GET", "/v1/dlq", "", http.StatusUnauthorized},
		{"GET", "/v1/dlq", clerk, http.StatusUnauthorized},
		{"DELETE", "/v1/dlq/dlq_0000000000000000000000000a", clerk, http.StatusUnauthorized},
		{"GET", "/v1/dlq?source=martians", srv.Token, http.StatusBadRequest},
		{"GET", "/v1/dlq?state=gone", srv.Token, http.StatusBadRequest},
		{"GET", "/v1/dlq?limit=0", srv.Token, http.StatusBadRequest},
		{"GET", "/v1/dlq?limit=1e9", srv.Token, http.StatusBadRequest},
		{"GET", "/v1/dlq?task=" + strings.Repeat("t", 500), srv.Token, http.StatusBadRequest},
		{"POST", "/v1/dlq/dlq_0000000000000000000000000a/retry", srv.Token, http.StatusNotFound},
		{"DELETE", "/v1/dlq/nope", srv.Token, http.StatusNotFound},
		{"PUT", "/v1/dlq/dlq_0000000000000000000000000a", srv.Token, http.StatusMethodNotAllowed},
	} {
		if status, body := srv.Call(t, tt.token, tt.method, tt.path, nil, nil); status != tt.status {
			t.Errorf("%s %.60s: HTTP %d %s, want %d", tt.method, tt.path, status, body, tt.status)
		}
	}
}

// TestWorkflowApprovalStep: a step whose call policy sends for approval
// parks the run; once approved, the payment is made once and the run
// completes.
func TestWorkflowApprovalStep(t *testing.T) {
	w := startApprovals(t, app.Config{}, "4h")
	w.srv.Apply(t, `apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: payout}
spec:
  agent: treasurer
  steps:
    - name: pay
      tool: banking.send_money
      arguments: {to_iban: "'DE89 3704 0044 0532 0130 00'", amount: "input.amount", currency: "'EUR'", reference: "input.ref"}
`)
	run := startRun(t, w.srv, "payout", map[string]any{"amount": 2000, "ref": "invoice 9"})
	parked := waitTask(t, w.srv, run.ID, orchestrator.InputRequired, orchestrator.Failed, orchestrator.Completed)
	if parked.State != orchestrator.InputRequired || parked.Reason != orchestrator.ReasonAwaitingApproval {
		t.Fatalf("run = %s %s %q, want input-required awaiting_approval", parked.State, parked.Reason, parked.Detail)
	}
	id, _, _ := strings.Cut(strings.TrimPrefix(parked.Detail, "approval "), ":")
	alice := w.human(t, "alice", "payments-oncall")
	if status, d, _ := w.decide(t, alice, id, "approve", map[string]string{"comment": "ok"}); status != http.StatusOK {
		t.Fatalf("approve %s: %d %+v", id, status, d)
	}
	done := waitTask(t, w.srv, run.ID)
	if done.State != orchestrator.Completed {
		t.Fatalf("run after approval = %s %s %s", done.State, done.Reason, done.Detail)
	}
	if n := len(w.bank.received()); n != 1 {
		t.Errorf("the bank received %d payments, want 1", n)
	}
}

// TestWorkflowAgentCompensationAndCancel: a compensation may be an agent
// task; and canceling a run parked on its step's task cancels that task.
func TestWorkflowAgentCompensationAndCancel(t *testing.T) {
	shop := startShop(t)
	shop.set("ship", true)
	srv := apptest.Start(t)
	srv.Apply(t, shopSource(shop.URL, "reserve", "ship")+`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: brain}
spec:
  provider: scripted
  script:
    - content: "I apologised to the customer."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: apologist}
spec: {model: brain, models: [brain]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: slowpoke}
spec: {}
---
apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: sorry}
spec:
  agent: clerk
  steps:
    - name: reserve
      tool: shop.reserve
      arguments: {sku: "'Z'"}
      compensate: {agent: apologist, input: "'Reservation ' + output.id + ' is cancelled; tell the customer.'"}
    - {name: ship, needs: [reserve], tool: shop.ship, arguments: {reservation: "steps.reserve.output.id"}, retry: {attempts: 1}}
---
apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: waits}
spec:
  agent: clerk
  steps:
    - {name: ask, agent: slowpoke, input: "input"}
`)
	srv.WaitTool(t, "shop.ship")
	done := waitTask(t, srv, startRun(t, srv, "sorry", "x").ID)
	if done.State != orchestrator.Failed || !strings.Contains(done.Detail, "compensated: reserve") {
		t.Fatalf("run = %s %s %q, want failed, compensated: reserve", done.State, done.Reason, done.Detail)
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks?agent=apologist", nil, nil)
	var list struct{ Items []orchestrator.Task }
	if err := json.Unmarshal(body, &list); status != http.StatusOK || err != nil || len(list.Items) != 1 || list.Items[0].State != orchestrator.Completed {
		t.Fatalf("apologist's tasks: HTTP %d %s, want one, completed", status, body)
	}
	// slowpoke is external: its task waits until it acts, and the run on it.
	run := startRun(t, srv, "waits", "anyone there?")
	parked := waitTask(t, srv, run.ID, orchestrator.InputRequired)
	if parked.Reason != orchestrator.ReasonAwaitingTask {
		t.Fatalf("run = %s %s, want input-required awaiting_task", parked.State, parked.Reason)
	}
	if status, body := srv.Call(t, srv.Token, "POST", "/v1/tasks/"+run.ID+"/messages", map[string]any{"message": "hello?"}, nil); status != http.StatusConflict {
		t.Errorf("a message to a run: HTTP %d %s, want 409", status, body)
	}
	if status, body := srv.Call(t, srv.Token, "POST", "/v1/tasks/"+run.ID+"/cancel", nil, nil); status != http.StatusOK {
		t.Fatalf("cancel: HTTP %d %s", status, body)
	}
	if c := waitTask(t, srv, run.ID); c.State != orchestrator.Canceled {
		t.Fatalf("run after cancel = %s", c.State)
	}
	status, body = srv.Call(t, srv.Token, "GET", "/v1/tasks?agent=slowpoke", nil, nil)
	if err := json.Unmarshal(body, &list); status != http.StatusOK || err != nil || len(list.Items) != 1 {
		t.Fatalf("slowpoke's tasks: HTTP %d %s", status, body)
	}
	if c := waitTask(t, srv, list.Items[0].ID); c.State != orchestrator.Canceled {
		t.Errorf("the step's task after its run was canceled = %s, want canceled", c.State)
	}
}

// TestWorkflowKillSwitchStopsRun: a kill switch over the agent a run acts
// as stops the run while a step waits out its backoff, without
// compensating it; the step is not tried again.
func TestWorkflowKillSwitchStopsRun(t *testing.T) {
	shop := startShop(t)
	shop.set("ship", true)
	srv := apptest.Start(t)
	srv.Apply(t, shopSource(shop.URL, "reserve", "release", "charge", "refund", "ship")+"---\n"+
		strings.Replace(orderWorkflow("compensate"), "retry: {attempts: 3, backoff: 10ms}", "retry: {attempts: 5, backoff: 1h}", 1))
	srv.WaitTool(t, "shop.ship")
	run := startRun(t, srv, "order", map[string]any{"sku": "K", "qty": 1})
	for deadline := time.Now().Add(apptest.Patience); ; {
		if n, _ := shop.count("ship"); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ship step was never tried")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if status, body := srv.Call(t, srv.Token, "POST", "/v1/killswitches", map[string]any{"agent": "clerk", "reason": "runaway orders"}, nil); status != http.StatusOK && status != http.StatusCreated {
		t.Fatalf("kill: HTTP %d %s", status, body)
	}
	done := waitTask(t, srv, run.ID)
	if done.State != orchestrator.Canceled || done.Reason != orchestrator.ReasonKilled {
		t.Fatalf("run = %s %s %q, want canceled killed", done.State, done.Reason, done.Detail)
	}
	if n, _ := shop.count("ship"); n != 1 {
		t.Errorf("ship tried %d times, want 1 (the backoff was cut short by the kill)", n)
	}
	if n, _ := shop.count("refund"); n != 0 {
		t.Errorf("a killed run was compensated (%d refunds)", n)
	}
}

// TestWorkflowParallelAgentSteps: two agent steps run as two child tasks
// at once; the run waits for both (parked, holding no worker) and the
// join reads both results.
func TestWorkflowParallelAgentSteps(t *testing.T) {
	shop := startShop(t)
	srv := apptest.Start(t)
	srv.Apply(t, shopSource(shop.URL, "notify")+`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: north}
spec:
  provider: scripted
  script:
    - content: "Hamburg: on time."
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: south}
spec:
  provider: scripted
  script:
    - content: "Genoa: two days late."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: north-desk}
spec: {model: north, models: [north]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: south-desk}
spec: {model: south, models: [south]}
---
apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: ports}
spec:
  agent: clerk
  output: "steps.report.output.got.text"
  steps:
    - {name: north, agent: north-desk, input: "'Northern ports on ' + input.day"}
    - {name: south, agent: south-desk, input: "'Southern ports on ' + input.day"}
    - {name: report, needs: [north, south], tool: shop.notify, arguments: {text: "steps.north.output + ' / ' + steps.south.output"}}
`)
	srv.WaitTool(t, "shop.notify")
	run := startRun(t, srv, "ports", map[string]any{"day": "Montag"})
	done := waitTask(t, srv, run.ID)
	if done.State != orchestrator.Completed || string(done.Result) != `"Hamburg: on time. / Genoa: two days late."` {
		t.Fatalf("run = %s %s %s result %s", done.State, done.Reason, done.Detail, done.Result)
	}
	var starts []string
	for _, ev := range runEvents(t, srv, run.ID) {
		if ev.Type == orchestrator.EvStepStart {
			starts = append(starts, ev.Workflow.Step)
		}
		if ev.Type == orchestrator.EvStepDone && len(starts) < 2 {
			t.Errorf("a step ended before both agent steps had started: %v", starts)
		}
	}
	if n, _ := shop.count("notify"); n != 1 {
		t.Errorf("report called notify %d times, want 1", n)
	}
}

// TestTriggerStartsWorkflow: a Trigger whose start is a workflow starts
// runs (its CloudEvent is the input: data is input.data); a trigger that
// names a workflow that does not exist dead-letters its events, which
// GET /v1/dlq lists with source trigger.
func TestTriggerStartsWorkflow(t *testing.T) {
	shop := startShop(t)
	srv := apptest.Start(t)
	srv.Apply(t, shopSource(shop.URL, "notify")+`---
apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: tick}
spec:
  agent: clerk
  steps:
    - {name: note, tool: shop.notify, arguments: {text: "input.data.check + ' at ' + input.time"}}
---
apiVersion: corral.dev/v1
kind: Trigger
metadata: {name: ticker}
spec:
  start: {workflow: tick}
  schedule: {cron: "@every 1s", data: {check: berths}}
---
apiVersion: corral.dev/v1
kind: Trigger
metadata: {name: lost}
spec:
  start: {workflow: nowhere}
  schedule: {cron: "@every 1s"}
`)
	srv.WaitTool(t, "shop.notify")
	var run orchestrator.Task
	for deadline := time.Now().Add(apptest.Patience); ; {
		status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks?agent=clerk&state=completed", nil, nil)
		var list struct{ Items []orchestrator.Task }
		if status == http.StatusOK && json.Unmarshal(body, &list) == nil && len(list.Items) > 0 {
			run = list.Items[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no completed run of workflow tick after %v: HTTP %d %s", apptest.Patience, status, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if run.Workflow != "tick" || !strings.Contains(string(run.Result), "berths at ") {
		t.Errorf("run = workflow %q result %s, want tick's note about berths", run.Workflow, run.Result)
	}
	for deadline := time.Now().Add(apptest.Patience); ; {
		status, body := srv.Call(t, srv.Token, "GET", "/v1/dlq?source=trigger", nil, nil)
		var list struct{ Items []deadletter.Entry }
		if status == http.StatusOK && json.Unmarshal(body, &list) == nil && len(list.Items) > 0 {
			if e := list.Items[0]; e.Name != "lost" || !strings.Contains(e.Reason, "nowhere") || e.Resumable {
				t.Errorf("dead letter = %+v, want trigger lost's, naming the missing workflow, not resumable", e)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter of trigger lost after %v: HTTP %d %s", apptest.Patience, status, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
