package app_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/deadletter"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// shopUpstream is a tool upstream with side effects and their undoing:
// it records every request in order, and the Idempotency-Keys per
// operation. failing makes an operation answer 500.
type shopUpstream struct {
	*httptest.Server
	mu      sync.Mutex
	calls   []string                  // operations, in order
	keys    map[string]map[string]int // operation -> key -> requests
	failing map[string]bool
	answers map[string]string // operation -> JSON body
}

func startShop(t *testing.T) *shopUpstream {
	u := &shopUpstream{keys: map[string]map[string]int{}, failing: map[string]bool{}, answers: map[string]string{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := strings.TrimPrefix(r.URL.Path, "/")
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.calls = append(u.calls, op)
		if u.keys[op] == nil {
			u.keys[op] = map[string]int{}
		}
		u.keys[op][r.Header.Get("Idempotency-Key")]++
		n, failing, answer := len(u.calls), u.failing[op], u.answers[op]
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if failing {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"error": "out of stock"}`)
			return
		}
		if answer != "" {
			fmt.Fprint(w, answer)
			return
		}
		fmt.Fprintf(w, `{"id": "%s-%d", "got": %s}`, op, n, orNull(body))
	}))
	t.Cleanup(u.Close)
	return u
}

func orNull(b []byte) string {
	if len(b) == 0 {
		return "null"
	}
	return string(b)
}

func (u *shopUpstream) set(op string, failing bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.failing[op] = failing
}

func (u *shopUpstream) answer(op, body string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.answers[op] = body
}

func (u *shopUpstream) count(op string) (requests, keys int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, n := range u.keys[op] {
		requests += n
	}
	return requests, len(u.keys[op])
}

func (u *shopUpstream) order() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.calls)
}

// shopSource declares one tool per operation (shop.reserve, ...), each a
// POST /{op} with a free-form body.
func shopSource(url string, ops ...string) string {
	var paths strings.Builder
	for _, op := range ops {
		fmt.Fprintf(&paths, `  /%s:
    post:
      operationId: %s
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties: {sku: {}, qty: {}, reservation: {}, amount: {}, payment: {}, claim: {}, text: {}}
      responses:
        "200": {description: ok}
`, op, op)
	}
	doc := "openapi: 3.0.3\ninfo: {title: shop, version: \"1\"}\npaths:\n" + paths.String()
	return `apiVersion: corral.dev/v1
kind: ToolSource
metadata: {name: shop}
spec:
  openapi:
    baseURL: ` + url + `
    document: |
      ` + strings.ReplaceAll(doc, "\n", "\n      ") + `
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: clerk}
spec: {tools: ["shop.*"]}
`
}

// orderWorkflow is three steps, each with a compensation; onFailure as given.
func orderWorkflow(onFailure string) string {
	return `apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: order}
spec:
  agent: clerk
  onFailure: ` + onFailure + `
  steps:
    - name: reserve
      tool: shop.reserve
      arguments: {sku: "input.sku", qty: "input.qty"}
      compensate: {tool: shop.release, arguments: {reservation: "output.id"}}
    - name: charge
      needs: [reserve]
      tool: shop.charge
      arguments: {reservation: "steps.reserve.output.id", amount: "input.qty * 10"}
      compensate: {tool: shop.refund, arguments: {payment: "output.id"}}
    - name: ship
      needs: [charge]
      tool: shop.ship
      arguments: {payment: "steps.charge.output.id"}
      retry: {attempts: 3, backoff: 10ms}
`
}

func startRun(t *testing.T, srv *apptest.Server, workflow string, input any) orchestrator.Task {
	t.Helper()
	status, body := srv.Call(t, srv.Token, "POST", "/v1/tasks", map[string]any{"workflow": workflow, "input": input}, nil)
	if status != http.StatusCreated {
		t.Fatalf("POST /v1/tasks workflow: HTTP %d %s", status, body)
	}
	var task orchestrator.Task
	if err := json.Unmarshal(body, &task); err != nil {
		t.Fatal(err)
	}
	return task
}

// runEvents returns a run's journal entries.
func runEvents(t *testing.T, srv *apptest.Server, id string) []orchestrator.Event {
	t.Helper()
	status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+id+"/events", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("events: HTTP %d %s", status, body)
	}
	var out []orchestrator.Event
	for _, line := range strings.Split(string(body), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev orchestrator.Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event %s: %v", data, err)
		}
		out = append(out, ev)
	}
	return out
}

// TestWorkflowSagaCompensatesInReverse: the third step fails past its
// retries; the second and first are compensated, in that order, once each;
// the run fails naming them, and the failure is in the dead-letter queue.
func TestWorkflowSagaCompensatesInReverse(t *testing.T) {
	shop := startShop(t)
	shop.set("ship", true)
	srv := apptest.Start(t)
	srv.Apply(t, shopSource(shop.URL, "reserve", "release", "charge", "refund", "ship")+"---\n"+orderWorkflow("compensate"))
	srv.WaitTool(t, "shop.ship")
	run := startRun(t, srv, "order", map[string]any{"sku": "ÄPFEL-42", "qty": 3})
	if run.Workflow != "order" || run.Agent != "clerk" {
		t.Fatalf("run = workflow %q agent %q, want order and clerk", run.Workflow, run.Agent)
	}
	done := waitTask(t, srv, run.ID)
	if done.State != orchestrator.Failed || done.Reason != orchestrator.ReasonStepFailed || !strings.Contains(done.Detail, "compensated: charge, reserve") {
		t.Fatalf("run = %s %s %q, want failed step_failed, compensated: charge, reserve", done.State, done.Reason, done.Detail)
	}
	for op, want := range map[string][2]int{"reserve": {1, 1}, "charge": {1, 1}, "ship": {3, 3}, "refund": {1, 1}, "release": {1, 1}} {
		if req, keys := shop.count(op); req != want[0] || keys != want[1] {
			t.Errorf("%s: %d requests with %d keys, want %d with %d", op, req, keys, want[0], want[1])
		}
	}
	if got, want := shop.order(), []string{"reserve", "charge", "ship", "ship", "ship", "refund", "release"}; !slices.Equal(got, want) {
		t.Errorf("upstream saw %v, want %v", got, want)
	}
	var comps []string
	for _, ev := range runEvents(t, srv, run.ID) {
		if ev.Type == orchestrator.EvCompensateDone && !ev.IsError {
			comps = append(comps, ev.Workflow.Step)
		}
	}
	if !slices.Equal(comps, []string{"charge", "reserve"}) {
		t.Errorf("compensate.done events for %v, want charge then reserve", comps)
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/dlq?task="+run.ID, nil, nil)
	var list struct{ Items []deadletter.Entry }
	if err := json.Unmarshal(body, &list); status != http.StatusOK || err != nil || len(list.Items) != 1 {
		t.Fatalf("GET /v1/dlq: HTTP %d %s", status, body)
	}
	if e := list.Items[0]; e.Step != "ship" || e.Attempts != 3 || e.Resumable || e.Code != "upstream_error" || !strings.Contains(string(e.Payload), "payment") {
		t.Errorf("dead letter = %+v, want step ship, 3 attempts, not resumable, upstream_error, its arguments", e)
	}
	status, body = srv.Call(t, srv.Token, "POST", "/v1/dlq/"+list.Items[0].ID+"/retry", nil, nil)
	if status != http.StatusConflict {
		t.Errorf("retry of a compensated run's dead letter: HTTP %d %s, want 409", status, body)
	}
}

// TestWorkflowDeadLetterRetryResumes: with onFailure: deadletter, a step
// failing past its retries parks the run and lands in the dead-letter
// queue; once the upstream is fixed, retry completes the run from the
// failed step, without repeating the steps that had succeeded.
func TestWorkflowDeadLetterRetryResumes(t *testing.T) {
	shop := startShop(t)
	shop.set("ship", true)
	srv := apptest.Start(t)
	srv.Apply(t, shopSource(shop.URL, "reserve", "release", "charge", "refund", "ship")+"---\n"+orderWorkflow("deadletter"))
	srv.WaitTool(t, "shop.ship")
	run := startRun(t, srv, "order", map[string]any{"sku": "X1", "qty": 1})
	parked := waitTask(t, srv, run.ID, orchestrator.InputRequired)
	if parked.Reason != orchestrator.ReasonDeadLettered {
		t.Fatalf("run = %s %s, want input-required dead_lettered", parked.State, parked.Reason)
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/dlq?source=workflow&state=pending", nil, nil)
	var list struct{ Items []deadletter.Entry }
	if err := json.Unmarshal(body, &list); status != http.StatusOK || err != nil || len(list.Items) != 1 {
		t.Fatalf("GET /v1/dlq: HTTP %d %s", status, body)
	}
	e := list.Items[0]
	if e.Task != run.ID || e.Step != "ship" || !e.Resumable || e.Attempts != 3 || e.Name != "order" {
		t.Fatalf("dead letter = %+v", e)
	}
	if status, body := srv.Call(t, "not-the-admin", "POST", "/v1/dlq/"+e.ID+"/retry", nil, nil); status != http.StatusUnauthorized {
		t.Errorf("retry without the admin token: HTTP %d %s, want 401", status, body)
	}
	shop.set("ship", false)
	status, body = srv.Call(t, srv.Token, "POST", "/v1/dlq/"+e.ID+"/retry", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("retry: HTTP %d %s", status, body)
	}
	done := waitTask(t, srv, run.ID)
	if done.State != orchestrator.Completed {
		t.Fatalf("run after retry = %s %s %s", done.State, done.Reason, done.Detail)
	}
	for op, want := range map[string]int{"reserve": 1, "charge": 1, "ship": 4, "refund": 0, "release": 0} {
		if req, _ := shop.count(op); req != want {
			t.Errorf("%s: %d requests, want %d", op, req, want)
		}
	}
	if status, body := srv.Call(t, srv.Token, "POST", "/v1/dlq/"+e.ID+"/retry", nil, nil); status != http.StatusConflict {
		t.Errorf("second retry: HTTP %d %s, want 409", status, body)
	}
	if status, _ := srv.Call(t, srv.Token, "DELETE", "/v1/dlq/"+e.ID, nil, nil); status != http.StatusOK {
		t.Errorf("discard: HTTP %d", status)
	}
	if status, _ := srv.Call(t, srv.Token, "GET", "/v1/dlq/"+e.ID, nil, nil); status != http.StatusNotFound {
		t.Errorf("GET a discarded dead letter: HTTP %d, want 404", status)
	}
	for _, bad := range []string{"/v1/dlq/nope", "/v1/dlq/dlq_" + strings.Repeat("z", 200), "/v1/dlq/..%2f..%2fetc"} {
		if status, _ := srv.Call(t, srv.Token, "GET", bad, nil, nil); status != http.StatusNotFound {
			t.Errorf("GET %s: HTTP %d, want 404", bad, status)
		}
	}
}

// TestWorkflowRoutingSlip: a step's slip chooses among the steps that
// follow it (the others are skipped, a join still runs); a slip naming a
// step outside them fails the step with routing_slip_invalid.
func TestWorkflowRoutingSlip(t *testing.T) {
	shop := startShop(t)
	srv := apptest.Start(t)
	srv.Apply(t, shopSource(shop.URL, "triage", "refund", "replace", "notify")+`---
apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: claim}
spec:
  agent: clerk
  output: "{'notified': steps.notify.output.id, 'refund': steps.refund.status, 'replace': steps.replace.status}"
  steps:
    - name: triage
      tool: shop.triage
      arguments: {claim: "input"}
    - {name: refund, needs: [triage], tool: shop.refund, arguments: {claim: "input"}}
    - {name: replace, needs: [triage], tool: shop.replace, arguments: {claim: "input"}}
    - {name: notify, needs: [refund, replace], tool: shop.notify, arguments: {text: "'done'"}}
`)
	srv.WaitTool(t, "shop.notify")
	shop.answer("triage", `{"next": ["replace"], "why": "item broken"}`)
	done := waitTask(t, srv, startRun(t, srv, "claim", "my kettle broke").ID)
	var result map[string]string
	_ = json.Unmarshal(done.Result, &result)
	if done.State != orchestrator.Completed || result["refund"] != "skipped" || result["replace"] != "done" || result["notified"] == "" {
		t.Fatalf("run = %s %s %s result %s", done.State, done.Reason, done.Detail, done.Result)
	}
	if n, _ := shop.count("refund"); n != 0 {
		t.Errorf("refund called %d times, want 0 (the slip chose replace)", n)
	}
	for _, slip := range []string{`{"next": ["teleport"]}`, `{"next": ["triage"]}`, `{"next": "replace"}`} {
		shop.answer("triage", slip)
		done := waitTask(t, srv, startRun(t, srv, "claim", "again").ID)
		if done.State != orchestrator.Failed || !strings.Contains(done.Detail, "routing_slip_invalid") {
			t.Errorf("slip %s: run = %s %s %q, want failed with routing_slip_invalid", slip, done.State, done.Reason, done.Detail)
		}
	}
}

// TestWorkflowApplyRefusesBadCEL: a Workflow with an expression that does
// not compile, or names a step it does not need, is refused at apply with
// the step and the field named.
func TestWorkflowApplyRefusesBadCEL(t *testing.T) {
	srv := apptest.Start(t)
	for _, tt := range []struct{ spec, want string }{
		{`{"agent": "clerk", "steps": [{"name": "a", "tool": "shop.x", "arguments": {"q": "input.qty +"}}]}`, `spec.steps[0].arguments.q`},
		{`{"agent": "clerk", "steps": [{"name": "a", "tool": "shop.x", "when": "steps.b.output > 1"}, {"name": "b", "tool": "shop.y"}]}`, `steps.b`},
		{`{"agent": "clerk", "steps": [{"name": "a", "agent": "clerk", "input": "nope(1)"}]}`, `step \"a\"`},
	} {
		var spec any
		if err := json.Unmarshal([]byte(tt.spec), &spec); err != nil {
			t.Fatal(err)
		}
		status, body := srv.Call(t, srv.Token, "POST", "/v1/apply", map[string]any{"resources": []any{map[string]any{
			"apiVersion": "corral.dev/v1", "kind": "Workflow", "metadata": map[string]any{"name": "bad"}, "spec": spec}}}, nil)
		if status != http.StatusUnprocessableEntity || !strings.Contains(string(body), tt.want) {
			t.Errorf("apply %s: HTTP %d %s, want 422 naming %s", tt.spec, status, body, tt.want)
		}
	}
}

// TestWorkflowAgentStep: an agent step is a child task of the run; the
// run waits for it (parked) and the next step reads its result.
func TestWorkflowAgentStep(t *testing.T) {
	shop := startShop(t)
	srv := apptest.Start(t)
	srv.Apply(t, shopSource(shop.URL, "notify")+`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: brain}
spec:
  provider: scripted
  script:
    - content: "Rotterdam is late by two days."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: analyst}
spec: {model: brain, models: [brain]}
---
apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: report}
spec:
  agent: clerk
  steps:
    - {name: analyse, agent: analyst, input: "'Which port is late? ' + input"}
    - {name: notify, needs: [analyse], tool: shop.notify, arguments: {text: "steps.analyse.output"}}
`)
	srv.WaitTool(t, "shop.notify")
	run := startRun(t, srv, "report", "today")
	done := waitTask(t, srv, run.ID)
	if done.State != orchestrator.Completed || !strings.Contains(string(done.Result), "Rotterdam is late") {
		t.Fatalf("run = %s %s %s result %s", done.State, done.Reason, done.Detail, done.Result)
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks?agent=analyst", nil, nil)
	var list struct{ Items []orchestrator.Task }
	if err := json.Unmarshal(body, &list); status != http.StatusOK || err != nil || len(list.Items) != 1 || list.Items[0].Parent != run.ID {
		t.Fatalf("analyst's tasks: HTTP %d %s, want one whose parent is the run", status, body)
	}
}

// TestWorkflowReadsSharedState: a run's expressions see the task tree's
// shared state (docs/workflows.md). The agent of the first step writes its
// finding there with update_shared_state; the next step's arguments read it
// as state.port, so agents and the process manager share one document.
func TestWorkflowReadsSharedState(t *testing.T) {
	shop := startShop(t)
	srv := apptest.Start(t)
	srv.Apply(t, shopSource(shop.URL, "notify")+`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: brain}
spec:
  provider: scripted
  script:
    - toolCalls:
        - {name: update_shared_state, arguments: {patch: {port: Rotterdam, delay_days: 2}}}
    - content: "Noted in the shared state."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: analyst}
spec: {model: brain, models: [brain]}
---
apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: report}
spec:
  agent: clerk
  steps:
    - {name: analyse, agent: analyst, input: "'Which port is late? ' + input"}
    - name: notify
      needs: [analyse]
      when: "has(state.port)"
      tool: shop.notify
      arguments: {text: "state.port + ', ' + string(int(state.delay_days)) + ' days'"}
`)
	srv.WaitTool(t, "shop.notify")
	run := startRun(t, srv, "report", "today")
	done := waitTask(t, srv, run.ID)
	if done.State != orchestrator.Completed || !strings.Contains(string(done.Result), "Rotterdam, 2 days") {
		t.Fatalf("run = %s %s %s result %s, want notify sent with the state's port", done.State, done.Reason, done.Detail, done.Result)
	}
}
