package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// remoteAgent is an A2A agent outside corral that counts, by message id,
// the messages it receives. The first copy of each message is held open
// (its answer never leaves) until the connection drops; later copies are
// answered at once, with one remote task per message id, as an agent that
// dedupes by message id would.
type remoteAgent struct {
	mu   sync.Mutex
	ids  map[string]int
	held chan string
}

func (a *remoteAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			ID      string
			Message struct{ MessageID string }
		} `json:"params"`
	}
	_ = json.NewDecoder(r.Body).Decode(&req)
	remoteID := req.Params.ID
	if req.Method == "SendMessage" {
		id := req.Params.Message.MessageID
		a.mu.Lock()
		a.ids[id]++
		first := a.ids[id] == 1
		a.mu.Unlock()
		if first {
			a.held <- id
			<-r.Context().Done() // corral dies with the request in flight
			return
		}
		remoteID = "remote-" + id
	}
	task := map[string]any{"id": remoteID, "contextId": "ctx", "status": map[string]any{"state": "TASK_STATE_COMPLETED"},
		"artifacts": []any{map[string]any{"artifactId": "a", "parts": []any{map[string]any{"text": "shipped " + strings.TrimPrefix(remoteID, "remote-")}}}}}
	result := any(task)
	if req.Method == "SendMessage" {
		result = map[string]any{"task": task}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": result})
}

// TestKillRemoteAgentResendsTheSameMessage: tasks of a remote A2A agent
// whose messages reached it, but whose answers never came back because
// corral was killed (SIGKILL) in between. The corral that starts again on
// the same data completes every task, and, counted at the far side, sent
// each task's message under one id only (<task>/step/1), at most twice:
// the remote agent sees retries it can recognise, never new work.
func TestKillRemoteAgentResendsTheSameMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the corral binary and kills it; -short skips it")
	}
	const tasks = 5
	agent := &remoteAgent{ids: map[string]int{}, held: make(chan string, tasks)}
	remote := httptest.NewServer(agent)
	t.Cleanup(remote.Close)

	p := startCorral(t)
	apply(t, p, `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: shipper}
spec: {a2a: {url: "`+remote.URL+`"}}
`)
	var ids []string
	for i := range tasks {
		r := request(t, "POST", p.URL+"/v1/tasks", p.Token, fmt.Sprintf(`{"agent": "shipper", "input": "ship order %d"}`, i))
		var tk taskJSON
		if r.status != http.StatusCreated || json.Unmarshal(r.body, &tk) != nil {
			t.Fatalf("POST /v1/tasks: HTTP %d %s", r.status, r.body)
		}
		ids = append(ids, tk.ID)
	}
	for range tasks {
		select {
		case <-agent.held:
		case <-time.After(30 * time.Second):
			t.Fatal("the remote agent did not receive every task's message")
		}
	}
	p.stop(t, syscall.SIGKILL)
	p = startCorral(t, "--data", p.Data)

	for _, id := range ids {
		var tk taskJSON
		if !waitFor(30*time.Second, func() bool {
			r := request(t, "GET", p.URL+"/v1/tasks/"+id, p.Token, "")
			return json.Unmarshal(r.body, &tk) == nil && tk.final()
		}) {
			t.Fatalf("task %s not ended 30s after the restart: %+v", id, tk)
		}
		if tk.State != "completed" || string(tk.Result) != fmt.Sprintf("%q", "shipped "+id+"/step/1") {
			t.Errorf("task %s = %s %s %s result %s", id, tk.State, tk.Reason, tk.Detail, tk.Result)
		}
	}
	agent.mu.Lock()
	defer agent.mu.Unlock()
	t.Logf("message ids at the remote agent: %v", agent.ids)
	if len(agent.ids) != tasks {
		t.Errorf("the remote agent got %d distinct message ids for %d tasks", len(agent.ids), tasks)
	}
	for _, id := range ids {
		if n := agent.ids[id+"/step/1"]; n < 2 || n > 3 {
			t.Errorf("message %s/step/1 arrived %d times, want the first and its resend", id, n)
		}
	}
}
