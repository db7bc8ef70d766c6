package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/deadletter"
	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/problem"
)

// slowpoke is an external agent: nothing acts in its tasks, so they never
// end by themselves.
const slowpoke = `---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: slowpoke}
spec: {}
`

// stepEvents returns the journal entries of a run's step, as they are now
// (the run may still be live).
func stepEvents(t *testing.T, srv *apptest.Server, run, step string) []orchestrator.Event {
	t.Helper()
	status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+run+"/events?follow=false", nil, nil)
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
		if ev.Workflow != nil && ev.Workflow.Step == step {
			out = append(out, ev)
		}
	}
	return out
}

// tasksOf returns an agent's tasks.
func tasksOf(t *testing.T, srv *apptest.Server, agent string) []orchestrator.Task {
	t.Helper()
	status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks?agent="+agent, nil, nil)
	var list struct{ Items []orchestrator.Task }
	if err := json.Unmarshal(body, &list); status != http.StatusOK || err != nil {
		t.Fatalf("%s's tasks: HTTP %d %s", agent, status, body)
	}
	return list.Items
}

// TestWorkflowAgentStepTimesOut: an agent step whose task never ends is
// canceled at the step's timeout and fails like any failed step: with
// upstream_timeout, tried again by its retry policy, then, past its
// attempts, the completed steps are compensated, the run fails and the
// failure is a dead letter.
func TestWorkflowAgentStepTimesOut(t *testing.T) {
	shop := startShop(t)
	srv := apptest.Start(t)
	srv.Apply(t, shopSource(shop.URL, "reserve", "release")+slowpoke+`---
apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: asks}
spec:
  agent: clerk
  steps:
    - name: reserve
      tool: shop.reserve
      arguments: {sku: "'Q'"}
      compensate: {tool: shop.release, arguments: {reservation: "output.id"}}
    - {name: ask, needs: [reserve], agent: slowpoke, input: "input", timeout: 500ms, retry: {attempts: 2, backoff: 10ms}}
`)
	srv.WaitTool(t, "shop.release")
	run := startRun(t, srv, "asks", "anyone there?")
	done := waitTask(t, srv, run.ID)
	if done.State != orchestrator.Failed || done.Reason != orchestrator.ReasonStepFailed ||
		!strings.Contains(done.Detail, "step ask failed after 2 attempt(s): upstream_timeout") || !strings.Contains(done.Detail, "compensated: reserve") {
		t.Fatalf("run = %s %s %q, want failed after 2 timed-out attempts, reserve compensated", done.State, done.Reason, done.Detail)
	}
	if n, _ := shop.count("release"); n != 1 {
		t.Errorf("release: %d requests, want 1", n)
	}
	var failed []string
	for _, ev := range stepEvents(t, srv, run.ID, "ask") {
		switch ev.Type {
		case orchestrator.EvStepStart:
			if ev.Workflow.Deadline == nil || !ev.Workflow.Deadline.After(ev.Time) {
				t.Errorf("step.start %d records deadline %v, want one after its time %v", ev.Workflow.Attempt, ev.Workflow.Deadline, ev.Time)
			}
		case orchestrator.EvStepFailed:
			failed = append(failed, ev.Code+" "+ev.Reason)
		}
	}
	if want := []string{problem.UpstreamTimeout + " ", problem.UpstreamTimeout + " exhausted"}; strings.Join(failed, ",") != strings.Join(want, ",") {
		t.Errorf("step.failed events = %q, want %q", failed, want)
	}
	children := tasksOf(t, srv, "slowpoke")
	if len(children) != 2 {
		t.Fatalf("slowpoke has %d tasks, want one per attempt", len(children))
	}
	for _, c := range children {
		if c.State != orchestrator.Canceled || c.Reason != orchestrator.ReasonStepTimeout {
			t.Errorf("step task %s = %s %s, want canceled step_timeout", c.ID, c.State, c.Reason)
		}
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/dlq?task="+run.ID, nil, nil)
	var list struct{ Items []deadletter.Entry }
	if err := json.Unmarshal(body, &list); status != http.StatusOK || err != nil || len(list.Items) != 1 || list.Items[0].Code != problem.UpstreamTimeout {
		t.Errorf("GET /v1/dlq?task=: HTTP %d %s, want the step's entry with code upstream_timeout", status, body)
	}
}

// TestWorkflowStepTimeoutSurvivesRestart: the deadline of an agent step is
// recorded with its start; corral restarts while the run is parked on the
// step's task, and the step times out at the deadline recorded before the
// restart (not one counted again from it): the parked run is woken though
// no task ended, the task is canceled, and the step fails into the
// dead-letter queue, as the workflow's onFailure says.
func TestWorkflowStepTimeoutSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	srv := apptest.StartWith(t, app.Config{DataDir: dir})
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: clerk}
spec: {}
`+slowpoke+`---
apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: asks}
spec:
  agent: clerk
  onFailure: deadletter
  steps:
    - {name: ask, agent: slowpoke, input: "input", timeout: 5s, retry: {attempts: 1}}
`)
	run := startRun(t, srv, "asks", "anyone there?")
	parked := waitTask(t, srv, run.ID, orchestrator.InputRequired)
	if parked.Reason != orchestrator.ReasonAwaitingTask {
		t.Fatalf("run = %s %s, want parked on its step's task", parked.State, parked.Reason)
	}
	starts := stepEvents(t, srv, run.ID, "ask")
	if len(starts) != 1 || starts[0].Type != orchestrator.EvStepStart || starts[0].Workflow.Deadline == nil {
		t.Fatalf("the step's events before the restart = %+v, want its start with a deadline", starts)
	}
	deadline := *starts[0].Workflow.Deadline
	if parked.WakeAt == nil || !parked.WakeAt.Equal(deadline) {
		t.Errorf("the parked run wakes at %v, want the step's deadline %v", parked.WakeAt, deadline)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	srv = apptest.StartWith(t, app.Config{DataDir: dir})
	var done orchestrator.Task
	for until := time.Now().Add(20 * time.Second); ; {
		done = waitTask(t, srv, run.ID, orchestrator.InputRequired, orchestrator.Failed, orchestrator.Completed, orchestrator.Canceled)
		if done.Reason != orchestrator.ReasonAwaitingTask || time.Now().After(until) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if done.State != orchestrator.InputRequired || done.Reason != orchestrator.ReasonDeadLettered {
		t.Fatalf("run after the restart = %s %s %q, want input-required dead_lettered", done.State, done.Reason, done.Detail)
	}
	events := stepEvents(t, srv, run.ID, "ask")
	var failure *orchestrator.Event
	nStarts := 0
	for i, ev := range events {
		switch ev.Type {
		case orchestrator.EvStepStart:
			nStarts++
		case orchestrator.EvStepFailed:
			failure = &events[i]
		}
	}
	if nStarts != 1 || failure == nil || failure.Code != problem.UpstreamTimeout ||
		!strings.Contains(failure.Detail, deadline.UTC().Format(time.RFC3339)) {
		t.Fatalf("the step's events after the restart = %+v, want one start and its failure with upstream_timeout naming the deadline %s", events, deadline.UTC().Format(time.RFC3339))
	}
	children := tasksOf(t, srv, "slowpoke")
	if len(children) != 1 || children[0].State != orchestrator.Canceled || children[0].Reason != orchestrator.ReasonStepTimeout {
		t.Errorf("slowpoke's tasks = %+v, want one, canceled step_timeout", children)
	}
}

// TestWorkflowAgentStepFailureFailsRun: an agent step whose task fails
// past the step's attempts fails the run (it once completed it, with the
// output of the steps that were done).
func TestWorkflowAgentStepFailureFailsRun(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: clerk}
spec: {}
`+slowpoke+`---
apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: asks}
spec:
  agent: clerk
  steps:
    - {name: ask, agent: slowpoke, input: "input", retry: {attempts: 1}}
`)
	run := startRun(t, srv, "asks", "anyone there?")
	waitTask(t, srv, run.ID, orchestrator.InputRequired)
	children := tasksOf(t, srv, "slowpoke")
	if len(children) != 1 {
		t.Fatalf("slowpoke has %d tasks, want 1", len(children))
	}
	if status, body := srv.Call(t, srv.Token, "POST", "/v1/tasks/"+children[0].ID+"/cancel", nil, nil); status != http.StatusOK {
		t.Fatalf("cancel the step's task: HTTP %d %s", status, body)
	}
	done := waitTask(t, srv, run.ID)
	if done.State != orchestrator.Failed || done.Reason != orchestrator.ReasonStepFailed || !strings.Contains(done.Detail, "task_failed") {
		t.Fatalf("run = %s %s %q, want failed step_failed with task_failed", done.State, done.Reason, done.Detail)
	}
}
