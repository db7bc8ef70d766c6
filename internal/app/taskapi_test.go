package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/problem"
)

// TestTaskAPIRefusesCarelessAndHostileCallers: every task endpoint answers
// a missing credential, a malformed id, a bad body or parameter and
// another agent's task with its problem code, and stores nothing.
func TestTaskAPIRefusesCarelessAndHostileCallers(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Model
metadata: {name: quiet}
spec: {provider: scripted, script: [{content: "done"}]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: worker}
spec: {model: quiet, models: [quiet]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: outsider}
spec: {}
`)
	task := createTask(t, srv, srv.Token, "worker", "hello", nil)
	done := waitTask(t, srv, task.ID)
	outsider := srv.Key(t, "outsider")
	type call struct {
		name, token, method, path string
		body                      any
		header                    http.Header
		status                    int
		code                      string
	}
	taskPath := "/v1/tasks/" + task.ID
	big := strings.Repeat("x", orchestrator.MaxInput+1)
	calls := []call{
		{"create, no credential", "", "POST", "/v1/tasks", map[string]any{"agent": "worker", "input": "x"}, nil, 401, problem.Unauthenticated},
		{"list, forged key", "corral_ak_forged", "GET", "/v1/tasks", nil, nil, 401, problem.Unauthenticated},
		{"get, no credential", "", "GET", taskPath, nil, nil, 401, problem.Unauthenticated},
		{"unknown field", srv.Token, "POST", "/v1/tasks", map[string]any{"agent": "worker", "input": "x", "priority": 9}, nil, 400, problem.InvalidRequest},
		{"admin without agent", srv.Token, "POST", "/v1/tasks", map[string]any{"input": "x"}, nil, 400, problem.InvalidRequest},
		{"agent name with a path", srv.Token, "POST", "/v1/tasks", map[string]any{"agent": "../worker", "input": "x"}, nil, 400, problem.InvalidRequest},
		{"no such agent", srv.Token, "POST", "/v1/tasks", map[string]any{"agent": "ghost", "input": "x"}, nil, 404, problem.ResourceNotFound},
		{"null input", srv.Token, "POST", "/v1/tasks", map[string]any{"agent": "worker", "input": nil}, nil, 400, problem.InvalidRequest},
		{"input too large", srv.Token, "POST", "/v1/tasks", map[string]any{"agent": "worker", "input": big}, nil, 413, problem.RequestTooLarge},
		{"two Idempotency-Keys", srv.Token, "POST", "/v1/tasks", map[string]any{"agent": "worker", "input": "x"}, http.Header{"Idempotency-Key": {"a", "b"}}, 400, problem.InvalidRequest},
		{"an agent starting another's work", outsider, "POST", "/v1/tasks", map[string]any{"agent": "worker", "input": "x"}, nil, 403, problem.PolicyDenied},
		{"bad state filter", srv.Token, "GET", "/v1/tasks?state=sleeping", nil, nil, 400, problem.InvalidRequest},
		{"limit zero", srv.Token, "GET", "/v1/tasks?limit=0", nil, nil, 400, problem.InvalidRequest},
		{"limit too high", srv.Token, "GET", "/v1/tasks?limit=5000", nil, nil, 400, problem.InvalidRequest},
		{"since not a time", srv.Token, "GET", "/v1/tasks?since=yesterday", nil, nil, 400, problem.InvalidRequest},
		{"listing another agent's tasks", outsider, "GET", "/v1/tasks?agent=worker", nil, nil, 403, problem.PolicyDenied},
		{"malformed id", srv.Token, "GET", "/v1/tasks/..%2F..%2Fetc", nil, nil, 404, problem.TaskNotFound},
		{"id of the wrong shape", srv.Token, "GET", "/v1/tasks/task_" + strings.Repeat("Z", 26), nil, nil, 404, problem.TaskNotFound},
		{"very long id", srv.Token, "GET", "/v1/tasks/task_" + strings.Repeat("a", 4000), nil, nil, 404, problem.TaskNotFound},
		{"another agent's task", outsider, "GET", taskPath, nil, nil, 404, problem.TaskNotFound},
		{"another agent's events", outsider, "GET", taskPath + "/events", nil, nil, 404, problem.TaskNotFound},
		{"another agent's cancel", outsider, "POST", taskPath + "/cancel", nil, nil, 404, problem.TaskNotFound},
		{"Last-Event-ID not a number", srv.Token, "GET", taskPath + "/events", nil, http.Header{"Last-Event-Id": {"abc"}}, 400, problem.InvalidRequest},
		{"follow neither true nor false", srv.Token, "GET", taskPath + "/events?follow=maybe", nil, nil, 400, problem.InvalidRequest},
		{"answer to a task that waits for nothing", srv.Token, "POST", taskPath + "/messages", map[string]any{"message": "yes"}, nil, 409, problem.Conflict},
		{"empty answer", srv.Token, "POST", taskPath + "/messages", map[string]any{"message": "  "}, nil, 400, problem.InvalidRequest},
		{"extend by an agent", outsider, "POST", taskPath + "/extend", nil, nil, 403, problem.PolicyDenied},
		{"extend a task that did not escalate", srv.Token, "POST", taskPath + "/extend", nil, nil, 409, problem.Conflict},
		{"extend by less", srv.Token, "POST", taskPath + "/extend", map[string]any{"turns": -5}, nil, 400, problem.InvalidRequest},
		{"result of a hosted task", srv.Token, "POST", taskPath + "/result", map[string]any{"state": "completed"}, nil, 409, problem.Conflict},
		{"cancel with a huge reason", srv.Token, "POST", taskPath + "/cancel", map[string]any{"reason": strings.Repeat("r", 5000)}, nil, 400, problem.InvalidRequest},
		{"wrong method", srv.Token, "DELETE", taskPath, nil, nil, 405, problem.MethodNotAllowed},
	}
	for _, c := range calls {
		status, body := srv.Call(t, c.token, c.method, c.path, c.body, c.header)
		var d problem.Details
		_ = json.Unmarshal(body, &d)
		if status != c.status || d.Code != c.code {
			t.Errorf("%s: HTTP %d %s, want %d %s", c.name, status, d.Code, c.status, c.code)
		}
	}
	// Nothing the refused calls sent was stored, and the task is as it was.
	status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks", nil, nil)
	var list struct{ Items []orchestrator.Task }
	if status != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list.Items) != 1 {
		t.Errorf("tasks after the refusals: HTTP %d %s, want only the one task", status, body)
	}
	if again := waitTask(t, srv, task.ID); again.State != done.State || again.Updated != done.Updated {
		t.Errorf("the task changed under refused calls: %+v", again)
	}
}
