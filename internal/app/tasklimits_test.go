package app_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// stallUpstream is a tool upstream whose calls wait until the test lets
// them go (or their caller goes away): a running task's tool call is in
// flight for as long as the test needs it to be.
type stallUpstream struct {
	*httptest.Server
	arrived chan struct{} // receives one value per call that reached it
	let     chan struct{} // each value lets one call answer
}

func startStall(t *testing.T) *stallUpstream {
	t.Helper()
	u := &stallUpstream{arrived: make(chan struct{}, 100), let: make(chan struct{}, 100)}
	closing := make(chan struct{})
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.arrived <- struct{}{}
		select {
		case <-r.Context().Done():
			return
		case <-closing:
			return
		case <-u.let:
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id": 1}`)
	}))
	t.Cleanup(u.Close)
	t.Cleanup(func() { close(closing) }) // runs first: lets Close finish
	return u
}

// waitArrived waits for a call to reach the stalling upstream.
func (u *stallUpstream) waitArrived(t *testing.T) {
	t.Helper()
	select {
	case <-u.arrived:
	case <-time.After(apptest.Patience):
		t.Fatalf("no tool call reached the upstream within %v", apptest.Patience)
	}
}

// answer lets one waiting call answer.
func (u *stallUpstream) answer() { u.let <- struct{}{} }

// stallSource is a ToolSource "stall" with the notes document over url.
func stallSource(url string) string {
	return strings.Replace(notesSource(url), "metadata: {name: notes}", "metadata: {name: stall}", 1)
}

// TestTaskLimitsEndTasks: each limit of a hosted agent's task ends it
// with its reason: max turns, the deadline, a loop of the same call, a
// cancel and a kill switch of the agent while a tool call is in flight.
func TestTaskLimitsEndTasks(t *testing.T) {
	notes := startNotes(t)
	stall := startStall(t)
	srv := apptest.Start(t)
	srv.Apply(t, notesSource(notes.URL)+"---\n"+stallSource(stall.URL)+`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: chatty}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: notes__createNote, arguments: {text: "one"}}]
    - toolCalls: [{name: notes__createNote, arguments: {text: "two"}}]
    - toolCalls: [{name: notes__createNote, arguments: {text: "three"}}]
    - content: "three notes"
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: stuck}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: notes__createNote, arguments: {text: "again"}}]
    - toolCalls: [{name: notes__createNote, arguments: {text: "again"}}]
    - toolCalls: [{name: notes__createNote, arguments: {text: "again"}}]
    - toolCalls: [{name: notes__createNote, arguments: {text: "again"}}]
    - content: "gave up"
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: waiter}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: stall__createNote, arguments: {text: "wait"}}]
    - content: "waited"
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: brief}
spec: {model: chatty, models: [chatty], tools: ["notes.*"], limits: {maxTurns: 2}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: looper}
spec: {model: stuck, models: [stuck], tools: ["notes.*"]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: hurried}
spec: {model: waiter, models: [waiter], tools: ["stall.*"], limits: {deadline: 1s}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: patient}
spec: {model: waiter, models: [waiter], tools: ["stall.*"]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: rogue}
spec: {model: waiter, models: [waiter], tools: ["stall.*"]}
`)
	srv.WaitTool(t, "notes.createNote")
	srv.WaitTool(t, "stall.createNote")

	// ended checks a task's end, and that its last event says the same.
	ended := func(t *testing.T, id string, state orchestrator.State, reason, detail string) orchestrator.Task {
		t.Helper()
		done := waitTask(t, srv, id)
		if done.State != state || done.Reason != reason || !strings.Contains(done.Detail, detail) {
			t.Errorf("task = %s %s %q, want %s %s with detail containing %q", done.State, done.Reason, done.Detail, state, reason, detail)
		}
		status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+id+"/events", nil, nil)
		last := fmt.Sprintf(`"state":%q,"reason":%q`, state, reason)
		if status != http.StatusOK || !strings.Contains(string(body), last) {
			t.Errorf("events of the task: HTTP %d, want a final event with %s:\n%s", status, last, body)
		}
		return done
	}

	t.Run("max turns", func(t *testing.T) {
		task := createTask(t, srv, srv.Token, "brief", "take notes", nil)
		done := ended(t, task.ID, orchestrator.Failed, orchestrator.ReasonMaxTurns, "2 turns")
		if done.Usage.ModelCalls != 2 || done.Usage.ToolCalls != 2 {
			t.Errorf("usage = %+v, want the 2 model calls and 2 tool calls of 2 turns", done.Usage)
		}
	})

	t.Run("loop detection", func(t *testing.T) {
		notes.mu.Lock()
		before := notes.requests
		notes.mu.Unlock()
		task := createTask(t, srv, srv.Token, "looper", "take a note", nil)
		done := ended(t, task.ID, orchestrator.Failed, orchestrator.ReasonLoopDetected, "notes.createNote")
		notes.mu.Lock()
		made := notes.requests - before
		notes.mu.Unlock()
		// The third call in a row with the same arguments is not made.
		if made != 2 || done.Usage.ToolCalls != 2 {
			t.Errorf("the upstream got %d calls and the task counts %d; want 2 (the third same call is stopped)", made, done.Usage.ToolCalls)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		task := createTask(t, srv, srv.Token, "hurried", "wait for it", nil)
		stall.waitArrived(t)
		running := waitTask(t, srv, task.ID, orchestrator.Working)
		if running.Deadline == nil {
			t.Fatalf("a running task has no deadline: %+v", running)
		}
		time.Sleep(time.Until(*running.Deadline)) // the call answers after the deadline
		stall.answer()
		done := ended(t, task.ID, orchestrator.Failed, orchestrator.ReasonDeadline, "deadline")
		if done.Usage.ModelCalls != 1 {
			t.Errorf("usage = %+v, want the one model call made before the deadline", done.Usage)
		}
	})

	t.Run("cancel while running", func(t *testing.T) {
		task := createTask(t, srv, srv.Token, "patient", "wait for it", nil)
		stall.waitArrived(t)
		status, body := srv.Call(t, srv.Token, "POST", "/v1/tasks/"+task.ID+"/cancel", map[string]string{"reason": "not needed any more"}, nil)
		if status != http.StatusOK {
			t.Fatalf("cancel: HTTP %d %s", status, body)
		}
		stall.answer()
		ended(t, task.ID, orchestrator.Canceled, orchestrator.ReasonCanceled, "not needed any more")
		// Canceling an ended task answers it as it is.
		status, body = srv.Call(t, srv.Token, "POST", "/v1/tasks/"+task.ID+"/cancel", nil, nil)
		var again orchestrator.Task
		if status != http.StatusOK || json.Unmarshal(body, &again) != nil || again.Reason != orchestrator.ReasonCanceled {
			t.Errorf("cancel of a canceled task: HTTP %d %s", status, body)
		}
	})

	t.Run("agent kill switch while running", func(t *testing.T) {
		task := createTask(t, srv, srv.Token, "rogue", "wait for it", nil)
		stall.waitArrived(t)
		status, body := srv.Call(t, srv.Token, "POST", "/v1/killswitches", map[string]string{"agent": "rogue", "reason": "runaway"}, nil)
		if status != http.StatusOK && status != http.StatusCreated {
			t.Fatalf("kill switch: HTTP %d %s", status, body)
		}
		stall.answer()
		ended(t, task.ID, orchestrator.Canceled, orchestrator.ReasonKilled, "runaway")
		// Another agent's running work is untouched by the switch.
		other := createTask(t, srv, srv.Token, "patient", "wait again", nil)
		stall.waitArrived(t)
		if got := waitTask(t, srv, other.ID, orchestrator.Working); got.State != orchestrator.Working {
			t.Errorf("patient's task = %s, want working", got.State)
		}
		srv.Call(t, srv.Token, "POST", "/v1/tasks/"+other.ID+"/cancel", nil, nil)
		stall.answer()
		waitTask(t, srv, other.ID)
	})
}

// TestTaskStopsWhileAToolCallHangs: a cancel and a kill switch stop a
// running task within a second (issue 13: "Kill switches (agent, task,
// all) stop running tasks on every replica within a second") even when
// its tool call hangs: the run does not wait out the call, which the
// pipeline still lets finish to record its outcome. The bound checked is
// five seconds, generous for a loaded machine; the tool's timeout is 30s.
func TestTaskStopsWhileAToolCallHangs(t *testing.T) {
	stall := startStall(t)
	srv := apptest.Start(t)
	srv.Apply(t, stallSource(stall.URL)+`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: waiter}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: stall__createNote, arguments: {text: "wait"}}]
    - content: "waited"
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: patient}
spec: {model: waiter, models: [waiter], tools: ["stall.*"]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: rogue}
spec: {model: waiter, models: [waiter], tools: ["stall.*"]}
`)
	srv.WaitTool(t, "stall.createNote")
	// Far below the call's 30 s timeout, which would end the task by
	// itself, and far above the moment a cancel takes on a loaded machine.
	const bound = 15 * time.Second
	for _, tc := range []struct {
		name, agent, reason string
		stop                func(id string) (int, []byte)
	}{
		{"cancel", "patient", orchestrator.ReasonCanceled, func(id string) (int, []byte) {
			return srv.Call(t, srv.Token, "POST", "/v1/tasks/"+id+"/cancel", nil, nil)
		}},
		{"kill switch", "rogue", orchestrator.ReasonKilled, func(string) (int, []byte) {
			return srv.Call(t, srv.Token, "POST", "/v1/killswitches", map[string]string{"agent": "rogue"}, nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task := createTask(t, srv, srv.Token, tc.agent, "wait for it", nil)
			stall.waitArrived(t)
			defer stall.answer() // else shutting corral down waits out the call
			stopped := time.Now()
			if status, body := tc.stop(task.ID); status >= 300 {
				t.Fatalf("stop: HTTP %d %s", status, body)
			}
			var got orchestrator.Task
			for time.Since(stopped) < bound {
				status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+task.ID, nil, nil)
				if status != http.StatusOK || json.Unmarshal(body, &got) != nil {
					t.Fatalf("GET task: HTTP %d %s", status, body)
				}
				if got.State.Final() {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !got.State.Final() {
				t.Fatalf("task still %s %v after the %s while its tool call hangs; want it ended long before the call could time out (the run waits for the call, which the pipeline runs to its answer or its 30s timeout)",
					got.State, bound, tc.name)
			}
			if got.State != orchestrator.Canceled || got.Reason != tc.reason {
				t.Errorf("task = %s %s, want canceled %s", got.State, got.Reason, tc.reason)
			}
			t.Logf("%s: the task ended %v after it", tc.name, time.Since(stopped).Round(time.Millisecond))
		})
	}
}
