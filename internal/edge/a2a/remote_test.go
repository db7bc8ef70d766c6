package a2a_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/orchestrator"
)

func createTask(t *testing.T, srv *apptest.Server, agent string, input any) orchestrator.Task {
	t.Helper()
	status, body := srv.Call(t, srv.Token, "POST", "/v1/tasks", map[string]any{"agent": agent, "input": input}, nil)
	var task orchestrator.Task
	if (status != http.StatusCreated && status != http.StatusOK) || json.Unmarshal(body, &task) != nil {
		t.Fatalf("POST /v1/tasks: HTTP %d %s", status, body)
	}
	return task
}

func waitState(t *testing.T, srv *apptest.Server, id string, want ...orchestrator.State) orchestrator.Task {
	t.Helper()
	deadline := time.Now().Add(apptest.Patience)
	for {
		_, body := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+id, nil, nil)
		var task orchestrator.Task
		_ = json.Unmarshal(body, &task)
		for _, w := range want {
			if task.State == w {
				return task
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s still %s after %v: %s", id, task.State, apptest.Patience, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// remoteAgents are Agents of the calling corral that are the called
// corral's hosted agents, reached over A2A with a key kept in a Secret.
func remoteAgents(url, impactKey, refundsKey string) string {
	return `apiVersion: corral.dev/v1
kind: Secret
metadata: {name: impact-key}
spec: {value: "` + impactKey + `"}
---
apiVersion: corral.dev/v1
kind: Secret
metadata: {name: refunds-key}
spec: {value: "` + refundsKey + `"}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: far-impact}
spec:
  description: "impact, on the other corral"
  a2a: {url: "` + url + `/a2a/impact", auth: {bearer: {secretRef: impact-key}}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: far-refunds}
spec:
  a2a: {url: "` + url + `/a2a/refunds", auth: {bearer: {secretRef: refunds-key}}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec:
  description: "impact, named here as there"
  a2a: {url: "` + url + `/a2a/impact", auth: {bearer: {secretRef: impact-key}}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: far-nobody}
spec:
  a2a: {url: "` + url + `/a2a/impact", auth: {bearer: {secretRef: refunds-key}}}
`
}

// TestRemoteAgentTasks: a task for an Agent with spec.a2a is sent to the
// remote agent (here another corral), whose task is mirrored: its answer
// becomes the result, its question the task's input-required, the answer
// given here goes there; the remote task carries the chain; a refusal
// there fails the task here with the remote's problem code; each message
// is audited.
func TestRemoteAgentTasks(t *testing.T) {
	far := apptest.Start(t)
	far.Apply(t, agents)
	near := apptest.Start(t)
	near.Apply(t, remoteAgents(far.URL, far.Key(t, "impact"), far.Key(t, "refunds")))

	done := waitState(t, near, createTask(t, near, "far-impact", "Which orders ship through Rotterdam?").ID, orchestrator.Completed, orchestrator.Failed)
	if done.State != orchestrator.Completed || string(done.Result) != `"Rotterdam: 3 orders this week."` {
		t.Fatalf("task = %s %s %s result %s", done.State, done.Reason, done.Detail, done.Result)
	}
	_, body := near.Call(t, near.Token, "GET", "/v1/tasks/"+done.ID+"/events?follow=false", nil, nil)
	call, answer := strings.Index(string(body), "event: agent.call"), strings.Index(string(body), "event: agent.task")
	if call < 0 || answer < call || !strings.Contains(string(body), done.ID+"/step/1") {
		t.Errorf("the task's journal lacks agent.call (the intent, with its message id) before agent.task:\n%s", body)
	}
	_, body = far.Call(t, far.Token, "GET", "/v1/tasks?agent=impact", nil, nil)
	var list struct{ Items []orchestrator.Task }
	if json.Unmarshal(body, &list) != nil || len(list.Items) != 1 || strings.Join(list.Items[0].Chain, ",") != "far-impact" || !strings.HasPrefix(list.Items[0].CreatedBy, "agent:impact") {
		t.Errorf("the remote corral's tasks: %s", body)
	}

	// The same agent named alike on both corrals: the chain it is sent
	// ([impact]) ends with itself, and is no cycle.
	same := waitState(t, near, createTask(t, near, "impact", "Rotterdam again?").ID, orchestrator.Completed, orchestrator.Failed)
	if same.State != orchestrator.Completed {
		t.Errorf("impact → impact across corrals = %s %s %s", same.State, same.Reason, same.Detail)
	}

	asked := waitState(t, near, createTask(t, near, "far-refunds", "refund order 42").ID, orchestrator.InputRequired, orchestrator.Failed)
	if asked.State != orchestrator.InputRequired || asked.Detail != "Refund 400 EUR to Ada?" {
		t.Fatalf("task = %s %s %q", asked.State, asked.Reason, asked.Detail)
	}
	status, body := near.Call(t, near.Token, "POST", "/v1/tasks/"+asked.ID+"/messages", map[string]any{"message": "yes, refund it"}, nil)
	if status != http.StatusOK {
		t.Fatalf("answer: HTTP %d %s", status, body)
	}
	done = waitState(t, near, asked.ID, orchestrator.Completed, orchestrator.Failed)
	if done.State != orchestrator.Completed || string(done.Result) != `"Refunded, as you confirmed."` {
		t.Fatalf("answered task = %s %s %s %s", done.State, done.Reason, done.Detail, done.Result)
	}

	refused := waitState(t, near, createTask(t, near, "far-nobody", "do impact's work").ID, orchestrator.Completed, orchestrator.Failed)
	if refused.State != orchestrator.Failed || refused.Reason != orchestrator.ReasonRemote || !strings.Contains(refused.Detail, "policy_denied") {
		t.Errorf("refused task = %s %s %q", refused.State, refused.Reason, refused.Detail)
	}

	_, body = near.Call(t, near.Token, "GET", "/v1/audit?agent=far-impact", nil, nil)
	var records struct {
		Records []struct{ Kind, Edge, Task, Decision string }
	}
	if json.Unmarshal(body, &records) != nil || len(records.Records) == 0 || records.Records[0].Kind != "agent" || records.Records[0].Edge != "a2a" {
		t.Errorf("audit of far-impact: %s", body)
	}
}

// TestRemoteStepIsResentNotRepeated: corral stops while a message to a
// remote agent is in flight (the remote received it, its answer never
// came back); the corral that starts again on the same data sends the
// same message, with the same id, and no other: the remote agent can tell
// a retry from new work.
func TestRemoteStepIsResentNotRepeated(t *testing.T) {
	var mu sync.Mutex
	var ids []string
	first := make(chan struct{})
	release := make(chan struct{})
	remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Message struct{ MessageID string }
			} `json:"params"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req.Method == "SendMessage" {
			mu.Lock()
			ids = append(ids, req.Params.Message.MessageID)
			n := len(ids)
			mu.Unlock()
			if n == 1 {
				close(first)
				select { // the answer that never comes back
				case <-release:
				case <-r.Context().Done():
				}
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		task := map[string]any{"id": "remote-1", "contextId": "c-1", "status": map[string]any{"state": "TASK_STATE_COMPLETED"},
			"artifacts": []any{map[string]any{"artifactId": "a", "parts": []any{map[string]any{"text": "done once"}}}}}
		result := any(task)
		if req.Method == "SendMessage" {
			result = map[string]any{"task": task}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": result})
	}))
	t.Cleanup(remote.Close)
	t.Cleanup(func() { close(release) })

	dir := t.TempDir()
	before := apptest.StartWith(t, app.Config{DataDir: dir})
	before.Apply(t, `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: far}
spec: {a2a: {url: "`+remote.URL+`"}}
`)
	task := createTask(t, before, "far", "ship order 42")
	select {
	case <-first:
	case <-time.After(20 * time.Second):
		t.Fatal("the remote agent got no message")
	}
	if err := before.Stop(); err != nil {
		t.Fatal(err)
	}

	after := apptest.StartWith(t, app.Config{DataDir: dir})
	done := waitState(t, after, task.ID, orchestrator.Completed, orchestrator.Failed)
	if done.State != orchestrator.Completed || string(done.Result) != `"done once"` {
		t.Fatalf("task = %s %s %s %s", done.State, done.Reason, done.Detail, done.Result)
	}
	mu.Lock()
	defer mu.Unlock()
	want := task.ID + "/step/1"
	t.Logf("message ids the remote agent got: %v", ids)
	if len(ids) < 2 || slices.ContainsFunc(ids, func(id string) bool { return id != want }) {
		t.Errorf("the remote agent got message ids %v, want %s at least twice and nothing else", ids, want)
	}
}

// TestRemoteTaskCanceled: canceling a task whose remote agent is still
// working ends it here and sends CancelTask there.
func TestRemoteTaskCanceled(t *testing.T) {
	canceled := make(chan string, 4)
	polled := make(chan struct{}, 1)
	remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct{ ID string }
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		state := "TASK_STATE_WORKING"
		switch req.Method {
		case "CancelTask":
			canceled <- req.Params.ID
			state = "TASK_STATE_CANCELED"
		case "GetTask": // the message went, and its answer was journaled
			select {
			case polled <- struct{}{}:
			default:
			}
		}
		task := map[string]any{"id": "remote-9", "contextId": "c-9", "status": map[string]any{"state": state}}
		result := any(task)
		if req.Method == "SendMessage" {
			result = map[string]any{"task": task}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": result})
	}))
	t.Cleanup(remote.Close)
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: slow}
spec: {a2a: {url: "`+remote.URL+`"}}
`)
	task := createTask(t, srv, "slow", "take your time")
	select {
	case <-polled:
	case <-time.After(20 * time.Second):
		t.Fatal("the remote task was never read")
	}
	if status, body := srv.Call(t, srv.Token, "POST", "/v1/tasks/"+task.ID+"/cancel", map[string]any{"reason": "not needed"}, nil); status != http.StatusOK {
		t.Fatalf("cancel: HTTP %d %s", status, body)
	}
	done := waitState(t, srv, task.ID, orchestrator.Canceled, orchestrator.Completed, orchestrator.Failed)
	if done.State != orchestrator.Canceled {
		t.Fatalf("task = %s %s %s", done.State, done.Reason, done.Detail)
	}
	select {
	case id := <-canceled:
		if id != "remote-9" {
			t.Errorf("CancelTask for %q, want remote-9", id)
		}
	case <-time.After(apptest.Patience):
		t.Error("the remote agent got no CancelTask")
	}
}
