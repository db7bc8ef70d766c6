package app_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// taskToken asks /oauth2/token for a client_credentials token of agent,
// bound to task when it is set.
func taskToken(t *testing.T, srv *apptest.Server, agent, key, task string) (int, string, []byte) {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {agent}, "client_secret": {key}}
	if task != "" {
		form.Set("task", task)
	}
	req, err := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&body)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.Unmarshal(body, &tok)
	return resp.StatusCode, tok.AccessToken, body
}

// problemCode reads the code of a problem answer.
func problemCode(body []byte) string {
	var p struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(body, &p)
	return p.Code
}

// TestExternalAgentWorksInItsTask: an agent corral does not host creates a
// task for itself with its key, trades the key for a token bound to the
// task, and calls a model and a tool with it: the calls count on the
// task's usage and appear as its call events, a tool call past
// maxToolCalls is refused with task_limit, and the agent ends the task
// with POST /v1/tasks/{id}/result. Another agent can neither see the task
// nor get a token bound to it, and an ended task takes no more calls.
func TestExternalAgentWorksInItsTask(t *testing.T) {
	notes := startNotes(t)
	srv := apptest.Start(t)
	srv.Apply(t, notesSource(notes.URL)+`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: helper}
spec: {provider: scripted, script: [{content: "write two notes"}]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: outside}
spec: {tools: ["notes.*"], models: [helper], limits: {maxToolCalls: 2}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: stranger}
spec: {tools: ["notes.*"]}
`)
	srv.WaitTool(t, "notes.createNote")
	key, strangerKey := srv.Key(t, "outside"), srv.Key(t, "stranger")

	// The agent starts work of its own, not another's.
	task := createTask(t, srv, key, "outside", map[string]any{"order": 42}, nil)
	if task.Hosted || task.State != orchestrator.Submitted || task.CreatedBy != "agent:outside" {
		t.Fatalf("task = hosted %v, %s, created by %q; want an external task, submitted, by agent:outside", task.Hosted, task.State, task.CreatedBy)
	}
	if status, body := srv.Call(t, strangerKey, "POST", "/v1/tasks", map[string]any{"agent": "outside", "input": "x"}, nil); status != http.StatusForbidden {
		t.Errorf("stranger starting outside's task: HTTP %d %s, want 403", status, body)
	}
	if status, body := srv.Call(t, strangerKey, "GET", "/v1/tasks/"+task.ID, nil, nil); status != http.StatusNotFound {
		t.Errorf("stranger reading outside's task: HTTP %d %s, want 404", status, body)
	}

	// A token bound to the task, for this agent only, for a real task only.
	status, token, body := taskToken(t, srv, "outside", key, task.ID)
	if status != http.StatusOK || token == "" {
		t.Fatalf("/oauth2/token with task: HTTP %d %s", status, body)
	}
	if status, _, body := taskToken(t, srv, "stranger", strangerKey, task.ID); status != http.StatusBadRequest {
		t.Errorf("a token of stranger bound to outside's task: HTTP %d %s, want 400", status, body)
	}
	if status, _, body := taskToken(t, srv, "outside", key, "task_0000000000000000000000000z"); status != http.StatusBadRequest {
		t.Errorf("a token bound to no task: HTTP %d %s, want 400", status, body)
	}

	// A model call and two tool calls count on the task.
	status, body = srv.Call(t, token, "POST", "/openai/v1/chat/completions",
		map[string]any{"model": "helper", "messages": []any{map[string]string{"role": "user", "content": "plan"}}}, nil)
	if status != http.StatusOK {
		t.Fatalf("model call in the task: HTTP %d %s", status, body)
	}
	for _, text := range []string{"first", "second"} {
		status, body := srv.Call(t, token, "POST", "/v1/tools/notes.createNote/invoke", map[string]any{"arguments": map[string]string{"text": text}}, nil)
		if status != http.StatusOK {
			t.Fatalf("tool call %q in the task: HTTP %d %s", text, status, body)
		}
	}
	working := waitTask(t, srv, task.ID, orchestrator.Working)
	if working.Usage.ToolCalls != 2 || working.Usage.ModelCalls != 1 {
		t.Errorf("usage = %+v, want 1 model call and 2 tool calls", working.Usage)
	}

	// Past maxToolCalls: refused, and the upstream never sees it.
	status, body = srv.Call(t, token, "POST", "/v1/tools/notes.createNote/invoke", map[string]any{"arguments": map[string]string{"text": "third"}}, nil)
	if status != http.StatusTooManyRequests || problemCode(body) != "task_limit" {
		t.Errorf("a third tool call with maxToolCalls 2: HTTP %d %s, want 429 task_limit", status, body)
	}
	notes.mu.Lock()
	if notes.requests != 2 {
		t.Errorf("the upstream got %d calls, want 2", notes.requests)
	}
	notes.mu.Unlock()

	// The agent ends its task with a result.
	status, body = srv.Call(t, token, "POST", "/v1/tasks/"+task.ID+"/result", map[string]any{"state": "completed", "result": map[string]int{"notes": 2}}, nil)
	var done orchestrator.Task
	if status != http.StatusOK || json.Unmarshal(body, &done) != nil {
		t.Fatalf("POST result: HTTP %d %s", status, body)
	}
	var result struct{ Notes int }
	if done.State != orchestrator.Completed || json.Unmarshal(done.Result, &result) != nil || result.Notes != 2 {
		t.Errorf("task = %s result %s, want completed with {\"notes\":2}", done.State, done.Result)
	}

	// Its events tell the calls.
	status, body = srv.Call(t, srv.Token, "GET", "/v1/tasks/"+task.ID+"/events", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("events: HTTP %d %s", status, body)
	}
	var tools, models int
	for _, line := range strings.Split(string(body), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev orchestrator.Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event %s: %v", data, err)
		}
		if ev.Type != orchestrator.EvCall || ev.Usage == nil {
			continue
		}
		if ev.Tool == "notes.createNote" && ev.Usage.ToolCalls == 1 {
			tools++
		}
		if ev.Model == "helper" && ev.Usage.ModelCalls == 1 {
			models++
		}
	}
	if tools != 2 || models != 1 {
		t.Errorf("call events counting usage: %d tool calls and %d model calls, want 2 and 1:\n%s", tools, models, body)
	}

	// An ended task takes no more calls, tokens or results.
	status, body = srv.Call(t, token, "POST", "/v1/tools/notes.createNote/invoke", map[string]any{"arguments": map[string]string{"text": "late"}}, nil)
	if status != http.StatusConflict || problemCode(body) != "task_ended" {
		t.Errorf("a tool call in an ended task: HTTP %d %s, want 409 task_ended", status, body)
	}
	if status, _, body := taskToken(t, srv, "outside", key, task.ID); status != http.StatusBadRequest {
		t.Errorf("a token bound to an ended task: HTTP %d %s, want 400", status, body)
	}
	status, body = srv.Call(t, token, "POST", "/v1/tasks/"+task.ID+"/result", map[string]any{"state": "failed"}, nil)
	if status != http.StatusConflict || problemCode(body) != "task_ended" {
		t.Errorf("a second result: HTTP %d %s, want 409 task_ended", status, body)
	}
}
