package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// TestRunWorkflowAndDLQ: corral run workflow/NAME shows a run's steps and
// its result; a failing step lands in the dead-letter queue, which
// corral dlq lists, shows and retries.
func TestRunWorkflowAndDLQ(t *testing.T) {
	var failing atomic.Bool
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error": "down"}`)
			return
		}
		fmt.Fprint(w, `{"id": 7}`)
	}))
	t.Cleanup(up.Close)
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: ToolSource
metadata: {name: notes}
spec:
  openapi:
    baseURL: `+up.URL+`
    document: |
      `+strings.ReplaceAll(notesDoc, "\n", "\n      ")+`
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: clerk}
spec: {tools: ["notes.*"]}
---
apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: jot}
spec:
  agent: clerk
  onFailure: deadletter
  output: "steps.second.output.id"
  steps:
    - {name: first, tool: notes.createNote, arguments: {text: "input"}}
    - {name: second, needs: [first], tool: notes.createNote, arguments: {text: "'after ' + string(steps.first.output.id)"}, retry: {attempts: 2, backoff: 1ms}}
`)
	srv.WaitTool(t, "notes.createNote")
	t.Chdir(t.TempDir())
	conn := []string{"--server", srv.URL, "--token", srv.Token}
	out, errOut, code := run(t, "", append([]string{"run", "workflow/jot", "call the supplier"}, conn...)...)
	if code != 0 || out != "7\n" {
		t.Fatalf("run workflow/jot = %d stdout %q stderr\n%s", code, out, errOut)
	}
	got := regexp.MustCompile(`task_[0-9a-z]{26}`).ReplaceAllString(errOut, "task_ID")
	for _, want := range []string{"task task_ID: Workflow/jot as Agent/clerk", "✓ step first done", "✓ step second done", "✓ completed"} {
		if !strings.Contains(got, want) {
			t.Errorf("run's steps lack %q:\n%s", want, got)
		}
	}

	failing.Store(true)
	out, _, code = run(t, "", append([]string{"run", "workflow/jot", "again", "--detach"}, conn...)...)
	if code != 0 {
		t.Fatalf("run --detach = %d", code)
	}
	id := strings.TrimSpace(out)
	waitState(t, srv, id, orchestrator.InputRequired)
	out, errOut, code = run(t, "", append([]string{"dlq", "list", "--task", id, "-o", "json"}, conn...)...)
	var list api.DeadLetterList
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list.Items) != 1 {
		t.Fatalf("dlq list -o json = %d %q %q", code, out, errOut)
	}
	e := list.Items[0]
	if e.Step != "first" || e.Code != "upstream_error" || e.Attempts != 3 {
		t.Errorf("dead letter = %+v, want step first, upstream_error, 3 attempts (its default)", e)
	}
	out, _, code = run(t, "", append([]string{"dlq", "list"}, conn...)...)
	if code != 0 || !strings.Contains(out, e.ID) || !strings.Contains(out, "STEP") {
		t.Errorf("dlq list = %d %q", code, out)
	}
	out, _, code = run(t, "", append([]string{"dlq", "show", e.ID}, conn...)...)
	if code != 0 || !strings.Contains(out, "step:      first") || !strings.Contains(out, `payload:   {"text":"again"}`) {
		t.Errorf("dlq show = %d %q", code, out)
	}
	if _, errOut, code := run(t, "", append([]string{"dlq", "show", "not-an-id"}, conn...)...); code == 0 || !strings.Contains(errOut, "dlq_") {
		t.Errorf("dlq show not-an-id = %d %q, want a usage error", code, errOut)
	}
	failing.Store(false)
	out, _, code = run(t, "", append([]string{"dlq", "retry", e.ID}, conn...)...)
	if code != 0 || !strings.Contains(out, "resumes at step first") {
		t.Fatalf("dlq retry = %d %q", code, out)
	}
	waitState(t, srv, id, orchestrator.Completed)
}
