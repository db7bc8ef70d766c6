package app_test

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// notesUpstream is a tool upstream with one side-effecting operation; it
// counts requests and distinct Idempotency-Keys.
type notesUpstream struct {
	*httptest.Server
	mu       sync.Mutex
	requests int
	keys     map[string]int
}

const notesDoc = `openapi: 3.0.3
info: {title: notes, version: "1"}
paths:
  /notes:
    post:
      operationId: createNote
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [text]
              properties: {text: {type: string}}
      responses:
        "200": {description: created}
`

func startNotes(t *testing.T) *notesUpstream {
	u := &notesUpstream{keys: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.requests++
		u.keys[r.Header.Get("Idempotency-Key")]++
		n := u.requests
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id": %d}`, n)
	}))
	t.Cleanup(u.Close)
	return u
}

func notesSource(url string) string {
	return `apiVersion: corral.dev/v1
kind: ToolSource
metadata: {name: notes}
spec:
  openapi:
    baseURL: ` + url + `
    document: |
      ` + strings.ReplaceAll(notesDoc, "\n", "\n      ") + `
`
}

// createTask starts a task and returns it.
func createTask(t *testing.T, srv *apptest.Server, token, agent string, input any, header http.Header) orchestrator.Task {
	t.Helper()
	status, body := srv.Call(t, token, "POST", "/v1/tasks", map[string]any{"agent": agent, "input": input}, header)
	if status != http.StatusCreated && status != http.StatusOK {
		t.Fatalf("POST /v1/tasks: HTTP %d %s", status, body)
	}
	var task orchestrator.Task
	if err := json.Unmarshal(body, &task); err != nil {
		t.Fatal(err)
	}
	return task
}

// waitTask polls a task until it is in a final state (or want), and returns it.
func waitTask(t *testing.T, srv *apptest.Server, id string, want ...orchestrator.State) orchestrator.Task {
	t.Helper()
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+id, nil, nil)
		if status != http.StatusOK {
			t.Fatalf("GET task: HTTP %d %s", status, body)
		}
		var task orchestrator.Task
		if err := json.Unmarshal(body, &task); err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if task.State == w {
				return task
			}
		}
		if len(want) == 0 && task.State.Final() {
			return task
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s still %s after %v: %s", id, task.State, apptest.Patience, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHostedAgentRunsItsLoop: a hosted agent's task calls a tool through
// the pipeline (audited, with a key derived from the step) and completes
// with the model's final answer; its events tell every step.
func TestHostedAgentRunsItsLoop(t *testing.T) {
	notes := startNotes(t)
	srv := apptest.Start(t)
	srv.Apply(t, notesSource(notes.URL)+`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: brain}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: notes__createNote, arguments: {text: "call the supplier"}}]
    - content: "I wrote the note."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: scribe}
spec: {model: brain, models: [brain], tools: ["notes.*"], instructions: "You keep notes."}
`)
	srv.WaitTool(t, "notes.createNote")
	task := createTask(t, srv, srv.Token, "scribe", "note that we must call the supplier", nil)
	done := waitTask(t, srv, task.ID)
	if done.State != orchestrator.Completed || string(done.Result) != `"I wrote the note."` {
		t.Fatalf("task = %s %s %s result %s", done.State, done.Reason, done.Detail, done.Result)
	}
	if done.Usage.ModelCalls != 2 || done.Usage.ToolCalls != 1 {
		t.Errorf("usage = %+v, want 2 model calls and 1 tool call", done.Usage)
	}
	if notes.requests != 1 || len(notes.keys) != 1 || notes.keys[""] != 0 {
		t.Errorf("upstream saw %d requests with keys %v, want one with an Idempotency-Key", notes.requests, notes.keys)
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+task.ID+"/events", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("events: HTTP %d %s", status, body)
	}
	for _, want := range []string{"event: model.call", "event: model.answer", "event: tool.call", "event: tool.result", `"state":"completed"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("events lack %q:\n%s", want, body)
		}
	}
	status, body = srv.Call(t, srv.Token, "GET", "/v1/audit?agent=scribe", nil, nil)
	var records struct {
		Records []struct{ Task, Step, Kind, Phase string }
	}
	if err := json.Unmarshal(body, &records); status != http.StatusOK || err != nil {
		t.Fatalf("audit: HTTP %d %v", status, err)
	}
	steps := map[string]bool{}
	for _, r := range records.Records {
		if r.Task == task.ID && r.Phase == "" {
			steps[r.Kind+" "+r.Step] = true
		}
	}
	if !steps["model 1"] || !steps["tool 2"] || !steps["model 3"] {
		t.Errorf("audit records of the task's steps = %v, want model 1, tool 2, model 3", steps)
	}
}

// TestHostedStepsWaitTheirTurn: under a RateLimit of 2 calls a second, a
// hosted agent's five tool calls are not refused but wait inside the task
// (waiting events), and the upstream never sees more than the limit lets
// through.
func TestHostedStepsWaitTheirTurn(t *testing.T) {
	notes := startNotes(t)
	srv := apptest.Start(t)
	var script strings.Builder
	for i := range 5 {
		fmt.Fprintf(&script, "    - toolCalls: [{name: notes__createNote, arguments: {text: \"note %d\"}}]\n", i)
	}
	srv.Apply(t, notesSource(notes.URL)+`---
apiVersion: corral.dev/v1
kind: RateLimit
metadata: {name: notes-writes}
spec:
  scope: {toolSource: notes}
  rate: {requests: 2, per: second, burst: 1}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: brain}
spec:
  provider: scripted
  script:
`+script.String()+`    - content: "five notes written"
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: scribe}
spec: {model: brain, models: [brain], tools: ["notes.*"]}
`)
	srv.WaitTool(t, "notes.createNote")
	start := time.Now()
	task := createTask(t, srv, srv.Token, "scribe", "write five notes", nil)
	done := waitTask(t, srv, task.ID)
	elapsed := time.Since(start)
	if done.State != orchestrator.Completed || done.Usage.ToolCalls != 5 {
		t.Fatalf("task = %s %s %s, usage %+v", done.State, done.Reason, done.Detail, done.Usage)
	}
	if notes.requests != 5 {
		t.Errorf("upstream saw %d requests, want 5", notes.requests)
	}
	// A burst of 1 at 2 a second: five calls take at least two seconds.
	if elapsed < 1900*time.Millisecond {
		t.Errorf("five rate-limited calls finished in %v: the limit let them through early", elapsed)
	}
	_, body := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+task.ID+"/events", nil, nil)
	if !strings.Contains(string(body), "event: waiting") || !strings.Contains(string(body), `"code":"rate_limited"`) {
		t.Errorf("events show no wait for the rate limit:\n%s", body)
	}
	if strings.Contains(string(body), "error rate_limited") {
		t.Error("a rate-limited call reached the model as an error result")
	}
}

// TestEscalationAndRaisedHand: an agent looping on a write tool reaches its
// turn limit and, with onExceeded: escalate, waits for a person instead of
// failing; extended, it goes on and meets its limit again. An agent that
// raises its hand (request_input) waits and continues with the answer.
func TestEscalationAndRaisedHand(t *testing.T) {
	notes := startNotes(t)
	srv := apptest.Start(t)
	var loop strings.Builder
	for i := range 8 {
		fmt.Fprintf(&loop, "    - toolCalls: [{name: notes__createNote, arguments: {text: \"comment %d\"}}]\n", i)
	}
	srv.Apply(t, notesSource(notes.URL)+`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: looper}
spec:
  provider: scripted
  script:
`+loop.String()+`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: careful}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: request_input, arguments: {question: "Refund 400 EUR to Ada?"}}]
    - content: "Refunded, as you confirmed."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: commenter}
spec: {model: looper, models: [looper], tools: ["notes.*"], limits: {maxTurns: 3, onExceeded: escalate, escalateTo: [support-leads]}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: refunds}
spec: {model: careful, models: [careful]}
`)
	srv.WaitTool(t, "notes.createNote")

	task := createTask(t, srv, srv.Token, "commenter", "comment on every ticket", nil)
	parked := waitTask(t, srv, task.ID, orchestrator.InputRequired, orchestrator.Failed)
	if parked.State != orchestrator.InputRequired || parked.Reason != orchestrator.ReasonMaxTurns || !strings.Contains(parked.Detail, "used so far: 3 turns") {
		t.Fatalf("at its turn limit the task is %s %s %q, want input-required max_turns with its usage", parked.State, parked.Reason, parked.Detail)
	}
	if notes.requests != 3 {
		t.Errorf("upstream saw %d writes before the escalation, want 3", notes.requests)
	}
	// An agent cannot extend itself; the admin can, once per escalation.
	key := srv.Key(t, "commenter")
	if status, body := srv.Call(t, key, "POST", "/v1/tasks/"+task.ID+"/extend", nil, nil); status != http.StatusForbidden && status != http.StatusNotFound {
		t.Errorf("the agent extends its own task: HTTP %d %s", status, body)
	}
	human := func(name, group string) string {
		status, body := srv.Call(t, srv.Token, "POST", "/v1/humans", map[string]any{"name": name, "groups": []string{group}}, nil)
		var created struct{ Key string }
		if status != http.StatusCreated || json.Unmarshal(body, &created) != nil {
			t.Fatalf("POST /v1/humans: HTTP %d %s", status, body)
		}
		return created.Key
	}
	if status, body := srv.Call(t, human("mallory", "sales"), "POST", "/v1/tasks/"+task.ID+"/extend", nil, nil); status != http.StatusForbidden {
		t.Errorf("a person outside escalateTo extends: HTTP %d %s", status, body)
	}
	status, body := srv.Call(t, human("lea", "support-leads"), "POST", "/v1/tasks/"+task.ID+"/extend", map[string]any{"turns": 2}, nil)
	if status != http.StatusOK {
		t.Fatalf("extend by a support lead: HTTP %d %s", status, body)
	}
	if status, _ := srv.Call(t, srv.Token, "POST", "/v1/tasks/"+task.ID+"/extend", nil, nil); status != http.StatusConflict {
		t.Errorf("a second extend of the same escalation: HTTP %d, want 409", status)
	}
	again := waitTask(t, srv, task.ID, orchestrator.InputRequired, orchestrator.Failed, orchestrator.Completed)
	if again.State != orchestrator.InputRequired || again.Reason != orchestrator.ReasonMaxTurns || again.Limits.MaxTurns != 5 || again.Usage.Turns != 5 {
		t.Fatalf("after an extension of 2 turns the task is %s %s, limits %+v, usage %+v", again.State, again.Reason, again.Limits, again.Usage)
	}
	if notes.requests != 5 {
		t.Errorf("upstream saw %d writes, want 5: each extension lets exactly its room through", notes.requests)
	}
	if status, body := srv.Call(t, srv.Token, "POST", "/v1/tasks/"+task.ID+"/cancel", map[string]any{"reason": "looping"}, nil); status != http.StatusOK {
		t.Fatalf("cancel: HTTP %d %s", status, body)
	}
	if done := waitTask(t, srv, task.ID); done.State != orchestrator.Canceled {
		t.Errorf("canceled while escalated: %s", done.State)
	}

	// The raised hand.
	task = createTask(t, srv, srv.Token, "refunds", "Ada wants her 400 EUR back", nil)
	parked = waitTask(t, srv, task.ID, orchestrator.InputRequired, orchestrator.Failed)
	if parked.Reason != orchestrator.ReasonAskedForInput || parked.Detail != "Refund 400 EUR to Ada?" {
		t.Fatalf("raised hand: %s %s %q", parked.State, parked.Reason, parked.Detail)
	}
	if status, body := srv.Call(t, srv.Token, "POST", "/v1/tasks/"+task.ID+"/messages", map[string]any{"message": "yes, go ahead"}, nil); status != http.StatusOK {
		t.Fatalf("answer: HTTP %d %s", status, body)
	}
	done := waitTask(t, srv, task.ID)
	if done.State != orchestrator.Completed || string(done.Result) != `"Refunded, as you confirmed."` {
		t.Fatalf("after the answer: %s %s %s", done.State, done.Reason, done.Result)
	}
	_, events := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+task.ID+"/events", nil, nil)
	if !strings.Contains(string(events), "yes, go ahead") {
		t.Errorf("the answer is not in the task's events:\n%s", events)
	}
}

// TestWaitingTasksAreServedInOrder: tasks whose steps wait on one rate
// limit get through in the order they began to wait.
func TestWaitingTasksAreServedInOrder(t *testing.T) {
	notes := startNotes(t)
	srv := apptest.Start(t)
	srv.Apply(t, notesSource(notes.URL)+`---
apiVersion: corral.dev/v1
kind: RateLimit
metadata: {name: one-at-a-time}
spec:
  scope: {toolSource: notes}
  rate: {requests: 5, per: second, burst: 1}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: brain}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: notes__createNote, arguments: {text: "a note"}}]
    - content: "done"
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: scribe}
spec: {model: brain, models: [brain], tools: ["notes.*"]}
`)
	srv.WaitTool(t, "notes.createNote")
	var ids []string
	for i := range 6 {
		ids = append(ids, createTask(t, srv, srv.Token, "scribe", fmt.Sprintf("note %d", i), nil).ID)
	}
	type times struct{ waited, through uint64 }
	var order []times
	for _, id := range ids {
		if done := waitTask(t, srv, id); done.State != orchestrator.Completed {
			t.Fatalf("task %s: %s %s", id, done.State, done.Detail)
		}
		_, body := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+id+"/events?follow=false", nil, nil)
		if !strings.Contains(string(body), "event: end\ndata: {\"last\":") {
			t.Errorf("events?follow=false of task %s does not end with the end event:\n%s", id, body)
		}
		var tm times
		for _, line := range strings.Split(string(body), "\n") {
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			var ev orchestrator.Event
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatal(err)
			}
			switch {
			case ev.Type == orchestrator.EvWaiting && tm.waited == 0:
				tm.waited = ev.Seq
			case ev.Type == orchestrator.EvToolResult:
				tm.through = ev.Seq
			}
		}
		if tm.waited != 0 {
			order = append(order, tm)
		}
	}
	if len(order) < 3 {
		t.Fatalf("only %d tasks waited; the limit did not hold them", len(order))
	}
	slices.SortFunc(order, func(a, b times) int { return cmp.Compare(a.waited, b.waited) })
	for i := 1; i < len(order); i++ {
		if order[i].through < order[i-1].through {
			t.Errorf("a task that began to wait later got through first: %+v", order)
			break
		}
	}
}
