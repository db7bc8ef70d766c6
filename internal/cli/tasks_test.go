package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// notesDoc is a tool upstream with one operation, createNote.
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

// startTaskServer starts corral with a notes upstream and three hosted
// agents on scripted models: scribe writes a note and answers, asker asks
// a question first, and looper runs out of turns.
func startTaskServer(t *testing.T) (*apptest.Server, *atomic.Int64) {
	t.Helper()
	var notes atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := notes.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id": %d}`, n)
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
kind: Model
metadata: {name: brain}
spec:
  provider: scripted
  script:
    - content: "Let me write that down.\nFirst the note, then the answer."
      toolCalls: [{name: notes__createNote, arguments: {text: "call the supplier"}}]
    - content: "I wrote the note."
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: curious}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: request_input, arguments: {question: "Which supplier?"}}]
    - content: "Noted."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: scribe}
spec: {model: brain, models: [brain], tools: ["notes.*"], instructions: "You keep notes."}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: asker}
spec: {model: curious, models: [curious], instructions: "Ask first."}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: looper}
spec: {model: brain, models: [brain], tools: ["notes.*"], limits: {maxTurns: 1}}
`)
	srv.WaitTool(t, "notes.createNote")
	t.Chdir(t.TempDir()) // no ./.corral/admin.token to fall back on
	return srv, &notes
}

func TestRunWaitJSON(t *testing.T) {
	srv, notes := startTaskServer(t)
	conn := []string{"--server", srv.URL, "--token", srv.Token}
	out, errOut, code := run(t, "", append([]string{"run", "scribe", "note that we must call the supplier", "--wait", "-o", "json"}, conn...)...)
	if code != 0 {
		t.Fatalf("run --wait -o json = %d %q %q", code, out, errOut)
	}
	if errOut != "" {
		t.Errorf("run --wait -o json wrote to stderr: %q", errOut)
	}
	var task orchestrator.Task
	if err := json.Unmarshal([]byte(out), &task); err != nil {
		t.Fatalf("run --wait -o json printed %q: %v", out, err)
	}
	if task.State != orchestrator.Completed || string(task.Result) != `"I wrote the note."` || task.Usage.ToolCalls != 1 {
		t.Errorf("task = %s %s result %s usage %+v, want completed with the note", task.State, task.Reason, task.Result, task.Usage)
	}
	if n := notes.Load(); n != 1 {
		t.Errorf("the notes upstream got %d requests, want 1", n)
	}
}

func TestRunLive(t *testing.T) {
	srv, _ := startTaskServer(t)
	conn := []string{"--server", srv.URL, "--token", srv.Token}
	out, errOut, code := run(t, "", append([]string{"run", "scribe", "note that we must call the supplier"}, conn...)...)
	if code != 0 || out != "I wrote the note.\n" {
		t.Fatalf("run = %d stdout %q stderr\n%s", code, out, errOut)
	}
	// The steps, in order, one line each (the task id varies).
	got := regexp.MustCompile(`task_[0-9a-z]{26}`).ReplaceAllString(errOut, "task_ID")
	got = regexp.MustCompile(`worker \S+`).ReplaceAllString(got, "worker W")
	want := `task task_ID: Agent/scribe
● submitted
● started on worker W
  brain, turn 1: Let me write that down. …
  ✓ notes.createNote {"text":"call the supplier"}
  brain, turn 2: I wrote the note.
✓ completed
`
	if got != want {
		t.Errorf("run's steps =\n%s\nwant\n%s", got, want)
	}
}

func TestRunFailedExitsNonZero(t *testing.T) {
	srv, _ := startTaskServer(t)
	conn := []string{"--server", srv.URL, "--token", srv.Token}
	out, errOut, code := run(t, "", append([]string{"run", "looper", "loop"}, conn...)...)
	if code != exitFailed || out != "" || !strings.Contains(errOut, "✗ failed (max_turns)") ||
		!regexp.MustCompile(`corral: task task_\w+ failed \(max_turns\)`).MatchString(errOut) {
		t.Errorf("run of a task past its turns = %d stdout %q stderr\n%s\nwant exit %d and the reason", code, out, errOut, exitFailed)
	}
	out, errOut, code = run(t, "", append([]string{"run", "looper", "loop", "--wait", "-o", "json"}, conn...)...)
	var task orchestrator.Task
	if err := json.Unmarshal([]byte(out), &task); code != exitFailed || err != nil || task.Reason != orchestrator.ReasonMaxTurns {
		t.Errorf("run --wait -o json of a failing task = %d %q %q, want exit %d and the task", code, out, errOut, exitFailed)
	}
}

func TestRunInputRequired(t *testing.T) {
	srv, _ := startTaskServer(t)
	conn := []string{"--server", srv.URL, "--token", srv.Token}
	// No terminal to ask on: run stops and says how to answer.
	out, errOut, code := run(t, "", append([]string{"run", "asker", "order paper"}, conn...)...)
	m := regexp.MustCompile(`task (task_\w+) waits for input: Which supplier\?\nanswer with: corral tasks answer task_\w+ "..."`).FindStringSubmatch(errOut)
	if code != exitInputRequired || out != "" || m == nil || !strings.Contains(errOut, "? input-required (asked_for_input): Which supplier?") {
		t.Fatalf("run of a task that asks = %d stdout %q stderr\n%s\nwant exit %d and the question", code, out, errOut, exitInputRequired)
	}
	id := m[1]
	if out, errOut, code = run(t, "", append([]string{"tasks", "answer", id, "ACME"}, conn...)...); code != 0 || !strings.Contains(out, "answered") {
		t.Fatalf("tasks answer = %d %q %q", code, out, errOut)
	}
	out, errOut, code = run(t, "", append([]string{"tasks", "events", id, "--follow"}, conn...)...)
	if code != 0 || !strings.Contains(out, "  ↳ answer: ACME\n") || !strings.HasSuffix(out, "  curious, turn 2: Noted.\n✓ completed\n") {
		t.Errorf("tasks events --follow = %d\n%s\n%s", code, out, errOut)
	}
	if _, errOut, code = run(t, "", append([]string{"tasks", "answer", id, "again"}, conn...)...); code != 1 || !strings.Contains(errOut, "code conflict") {
		t.Errorf("tasks answer of an ended task = %d %q, want a conflict", code, errOut)
	}
}

// TestFollowAsks: on a terminal, the question is asked and the answer
// sent; the task goes on to its end.
func TestFollowAsks(t *testing.T) {
	srv, _ := startTaskServer(t)
	c := newClient(srv.URL, srv.Token)
	task, err := createTask(t.Context(), c, api.TaskRequest{Agent: "asker", Input: json.RawMessage(`"order paper"`)}, "k1")
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	var lines strings.Builder
	view := &liveView{w: &lines, r: newRenderer(100)}
	f := &follower{c: c.untimed(), id: task.ID, onEvent: view.show, retryWait: time.Millisecond, poll: 10 * time.Millisecond,
		ask: func(_ context.Context, q string) (string, error) {
			asked = append(asked, q)
			return "ACME", nil
		}}
	end, err := f.follow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if end.State != orchestrator.Completed || string(end.Result) != `"Noted."` || len(asked) != 1 || asked[0] != "Which supplier?" {
		t.Errorf("follow = %s %s, asked %q; want completed after one question\n%s", end.State, end.Result, asked, lines.String())
	}
	if !strings.Contains(lines.String(), "↳ answer: ACME") {
		t.Errorf("the view lacks the answer:\n%s", lines.String())
	}
}

func TestTasksCommands(t *testing.T) {
	srv, _ := startTaskServer(t)
	conn := []string{"--server", srv.URL, "--token", srv.Token}
	cmd := func(args ...string) (string, string, int) {
		t.Helper()
		return run(t, "", append(args, conn...)...)
	}
	if _, errOut, code := cmd("tasks", "list"); code != 0 || !strings.Contains(errOut, "no tasks") {
		t.Errorf("tasks list with none = %d %q", code, errOut)
	}
	// --detach prints the id; the same --idempotency-key starts no second task.
	out, errOut, code := cmd("run", "asker", "order paper", "--detach", "--idempotency-key", "order-paper-1")
	id := strings.TrimSpace(out)
	if code != 0 || !orchestrator.ValidID(id) {
		t.Fatalf("run --detach = %d %q %q", code, out, errOut)
	}
	if out, _, _ = cmd("run", "asker", "order paper", "--detach", "--idempotency-key", "order-paper-1"); strings.TrimSpace(out) != id {
		t.Errorf("run --detach again with the same key = %q, want %s", out, id)
	}
	// -o json without --wait prints the task as created.
	out, _, code = cmd("run", "scribe", "note it", "-o", "json")
	var created orchestrator.Task
	if err := json.Unmarshal([]byte(out), &created); code != 0 || err != nil || created.Agent != "scribe" || created.State.Final() {
		t.Errorf("run -o json = %d %q, want the task as created", code, out)
	}
	waitState(t, srv, id, orchestrator.InputRequired)
	waitState(t, srv, created.ID, orchestrator.Completed)

	out, _, code = cmd("tasks", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !regexp.MustCompile(`^ID\s+AGENT\s+STATE\s+REASON\s+TURNS\s+TOOLS\s+AGE$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^`+created.ID+`\s+scribe\s+completed\s+-\s+2\s+1\s+\d+s$`).MatchString(lines[1]) ||
		!regexp.MustCompile(`^`+id+`\s+asker\s+input-required\s+asked_for_input\s+1\s+0\s+\d+s$`).MatchString(lines[2]) {
		t.Errorf("tasks list = %d\n%s", code, out)
	}
	out, _, _ = cmd("tasks", "list", "--state", "input-required", "--agent", "asker", "--since", "1h", "-o", "json")
	var list struct{ Items []orchestrator.Task }
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Items) != 1 || list.Items[0].ID != id {
		t.Errorf("tasks list --state input-required -o json = %s, want %s alone", out, id)
	}
	out, errOut, code = cmd("tasks", "list", "--limit", "1")
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(errOut, "showing the newest 1") {
		t.Errorf("tasks list --limit 1 = %d %q %q", code, out, errOut)
	}

	out, _, code = cmd("tasks", "get", id)
	for _, want := range []string{"ID:", id, "State:       input-required (asked_for_input): Which supplier?", `Input:       "order paper"`, "Turns:       1 of 10", "by admin"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("tasks get = %d, lacks %q:\n%s", code, want, out)
		}
	}
	if out, _, _ = cmd("tasks", "get", created.ID, "-o", "json"); !strings.Contains(out, `"result": "I wrote the note."`) {
		t.Errorf("tasks get -o json = %s", out)
	}

	// events without --follow prints what is stored and returns, even
	// while the task waits.
	out, errOut, code = cmd("tasks", "events", id)
	if code != 0 || !strings.HasSuffix(out, "? input-required (asked_for_input): Which supplier?\n") {
		t.Errorf("tasks events of a waiting task = %d %q %q", code, out, errOut)
	}
	out, _, code = cmd("tasks", "events", created.ID, "-o", "json")
	evs := strings.Split(strings.TrimSpace(out), "\n")
	var last orchestrator.Event
	if err := json.Unmarshal([]byte(evs[len(evs)-1]), &last); code != 0 || err != nil || last.State != orchestrator.Completed || len(evs) < 6 {
		t.Errorf("tasks events -o json = %d\n%s", code, out)
	}

	out, errOut, code = cmd("tasks", "cancel", id, "--reason", "wrong supplier")
	if code != 0 || out != "task "+id+" canceled\n" {
		t.Errorf("tasks cancel = %d %q %q", code, out, errOut)
	}
	if out, _, _ = cmd("tasks", "get", id, "-o", "json"); !strings.Contains(out, "wrong supplier") {
		t.Errorf("the canceled task lacks the reason: %s", out)
	}
	if out, errOut, code = cmd("tasks", "cancel", id); code != 0 || out != "task "+id+" canceled\n" {
		t.Errorf("tasks cancel again = %d %q %q, want the same answer", code, out, errOut)
	}
	if out, errOut, code = cmd("tasks", "cancel", created.ID); code != 0 || out != "task "+created.ID+" had already ended: completed\n" {
		t.Errorf("tasks cancel of a completed task = %d %q %q", code, out, errOut)
	}
	out, errOut, code = cmd("tasks", "events", id, "--follow")
	if code != exitCanceled || !strings.Contains(out, "■ canceled (canceled): canceled by admin: wrong supplier") {
		t.Errorf("tasks events --follow of a canceled task = %d %q %q, want exit %d", code, out, errOut, exitCanceled)
	}
}

func TestTaskCommandErrors(t *testing.T) {
	srv := apptest.Start(t)
	t.Chdir(t.TempDir())
	conn := []string{"--server", srv.URL, "--token", srv.Token}
	missing := "task_0000000000000000000000000z"
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"run without input", "", []string{"run", "scribe"}, "accepts 2 arg(s), received 1"},
		{"run empty input", "", []string{"run", "scribe", "  "}, "INPUT is empty"},
		{"run empty stdin", "", []string{"run", "scribe", "-"}, "INPUT is empty"},
		{"run bad json", "", []string{"run", "scribe", "{order: 42", "--json-input"}, "--json-input: INPUT is not JSON"},
		{"run json null", "", []string{"run", "scribe", "null", "--json-input"}, "--json-input: INPUT is null"},
		{"run wait and detach", "", []string{"run", "scribe", "x", "--wait", "--detach"}, "--wait and --detach: give one, not both"},
		{"run bad key", "", []string{"run", "scribe", "x", "--idempotency-key", "a b"}, "--idempotency-key: at most 255 printable ASCII"},
		{"run bad output", "", []string{"run", "scribe", "x", "-o", "yaml"}, `invalid argument "yaml" for "-o, --output" flag: want one of text, json`},
		{"run unknown agent", "", []string{"run", "ghost", "x"}, "ghost"},
		{"run bad agent name", "", []string{"run", "Not_Valid", "x"}, "code invalid_request"},
		{"run huge stdin", strings.Repeat("x", orchestrator.MaxInput+1), []string{"run", "scribe", "-"}, "INPUT: over the limit"},
		{"get bad id", "", []string{"tasks", "get", "../admin"}, `"../admin" is not a task id`},
		{"get missing", "", []string{"tasks", "get", missing}, "code task_not_found"},
		{"events missing", "", []string{"tasks", "events", missing}, "code task_not_found"},
		{"cancel missing", "", []string{"tasks", "cancel", missing}, "code task_not_found"},
		{"answer missing", "", []string{"tasks", "answer", missing, "yes"}, "code task_not_found"},
		{"answer empty", "", []string{"tasks", "answer", missing, " "}, "MESSAGE is empty"},
		{"list bad state", "", []string{"tasks", "list", "--state", "sleeping"}, `--state: "sleeping" is not a task state`},
		{"list bad limit", "", []string{"tasks", "list", "--limit", "0"}, "--limit 0: want 1 to 1000"},
		{"list bad since", "", []string{"tasks", "list", "--since", "yesterday"}, `--since "yesterday": want a duration`},
		{"wrong token", "", []string{"tasks", "list", "--token", "corral_admin_x"}, "code unauthenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if !strings.Contains(strings.Join(args, " "), "--token") {
				args = append(args, conn...)
			} else {
				args = append(args, "--server", srv.URL)
			}
			_, errOut, code := run(t, tt.stdin, args...)
			if code != 1 || !strings.Contains(errOut, tt.want) {
				t.Errorf("corral %v = %d %q, want exit 1 and %q", tt.args, code, errOut, tt.want)
			}
		})
	}
}

// waitState polls a task until it is in state want.
func waitState(t *testing.T, srv *apptest.Server, id string, want orchestrator.State) {
	t.Helper()
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+id, nil, nil)
		var task orchestrator.Task
		if err := json.Unmarshal(body, &task); status == http.StatusOK && err == nil && task.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not %s after %v: %s", id, want, apptest.Patience, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRunRetriesStartOnce: the answer to the first start is lost on the
// way back; corral run sends the request again with the same
// Idempotency-Key, and the server makes one task, not two.
func TestRunRetriesStartOnce(t *testing.T) {
	srv, _ := startTaskServer(t)
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var (
		mu   sync.Mutex
		keys []string
	)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" && r.URL.Path == "/v1/tasks" {
			mu.Lock()
			keys = append(keys, r.Header.Get("Idempotency-Key"))
			first := len(keys) == 1
			mu.Unlock()
			if first {
				// The server makes the task; its answer never arrives.
				proxy.ServeHTTP(httptest.NewRecorder(), r)
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					conn.Close()
				}
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	out, errOut, code := run(t, "", "run", "scribe", "note it", "--wait", "-o", "json", "--server", front.URL, "--token", srv.Token)
	var task orchestrator.Task
	if err := json.Unmarshal([]byte(out), &task); code != 0 || err != nil || task.State != orchestrator.Completed {
		t.Fatalf("run through a proxy that drops the first answer = %d %q %q", code, out, errOut)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 2 || keys[0] != keys[1] || !strings.HasPrefix(keys[0], "corral-run-") {
		t.Errorf("Idempotency-Keys of the start requests = %q, want the same generated key twice", keys)
	}
	_, body := srv.Call(t, srv.Token, "GET", "/v1/tasks", nil, nil)
	var list struct{ Items []orchestrator.Task }
	if err := json.Unmarshal(body, &list); err != nil || len(list.Items) != 1 || list.Items[0].ID != task.ID {
		t.Errorf("tasks after a retried start = %s, want %s alone", body, task.ID)
	}
}

// TestRunWithAgentKey: an agent's own key starts and follows its own
// tasks, and no other agent's.
func TestRunWithAgentKey(t *testing.T) {
	srv, _ := startTaskServer(t)
	key := srv.Key(t, "scribe")
	out, errOut, code := run(t, "", "run", "scribe", "note it", "--server", srv.URL, "--token", key)
	if code != 0 || out != "I wrote the note.\n" {
		t.Errorf("run with the agent's own key = %d %q %q", code, out, errOut)
	}
	if _, errOut, code = run(t, "", "run", "asker", "x", "--server", srv.URL, "--token", key); code != 1 || !strings.Contains(errOut, "cannot start work for asker") {
		t.Errorf("run of another agent with scribe's key = %d %q, want a refusal", code, errOut)
	}
	if _, errOut, code = run(t, "", "tasks", "list", "--agent", "asker", "--server", srv.URL, "--token", key); code != 1 || !strings.Contains(errOut, "lists its own tasks only") {
		t.Errorf("tasks list --agent asker with scribe's key = %d %q, want a refusal", code, errOut)
	}
}
