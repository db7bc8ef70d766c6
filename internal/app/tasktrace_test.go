package app_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// TestTaskTraceID: a task carries the trace its tree is traced in
// (trace_id, in GET /v1/tasks/{id} and the list), a delegated child the
// same as its parent, and that trace holds the spans of both tasks'
// actions.
func TestTaskTraceID(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, scriptedAgent("impact", "  agents: [negotiator]\n",
		`toolCalls: [{name: delegate_to_negotiator, arguments: {input: "Friday?"}}]`, `content: "settled"`)+
		scriptedAgent("negotiator", "", `content: "Friday it is"`))
	root := createTask(t, srv, srv.Token, "impact", "order 42", nil)
	want := orchestrator.TraceID(root.ID).String()
	if root.TraceID != want {
		t.Errorf("POST /v1/tasks answered trace_id %q, want %s", root.TraceID, want)
	}
	done := waitTask(t, srv, root.ID, orchestrator.Completed)
	if done.TraceID != want {
		t.Errorf("GET /v1/tasks/%s: trace_id %q, want %s", root.ID, done.TraceID, want)
	}
	children := childrenOf(t, srv, root.ID)
	if len(children) != 1 || children[0].TraceID != want {
		t.Fatalf("children %+v, want one carrying the parent's trace_id %s", children, want)
	}
	child := children[0].ID

	// The trace holds the actions of both tasks (spans are stored about a
	// second after their action ends).
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, body := srv.Call(t, srv.Token, "GET", "/v1/traces/"+want, nil, nil)
		var tr api.TraceResponse
		if status == http.StatusOK && json.Unmarshal(body, &tr) == nil {
			tasks := map[string]bool{}
			for _, sp := range tr.Spans {
				if id, ok := sp.Attributes["corral.task"].(string); ok {
					tasks[id] = true
				}
			}
			if tasks[root.ID] && tasks[child] {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /v1/traces/%s: HTTP %d %.2000s; want spans of tasks %s and %s", want, status, body, root.ID, child)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
