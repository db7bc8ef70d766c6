package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKillDuringDelegation: hosted agents delegate to another hosted agent
// while the binary is killed with SIGKILL (inside the helper's model call,
// when the children exist and their parents are parked, and at a random
// moment after tasks are created) and restarted on the same data. Every
// parent completes with the helper's work in hand, and each has exactly
// one child: a delegation whose step was begun before a crash opens the
// same child (its id is derived from the parent and the step), never a
// second one.
func TestKillDuringDelegation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the corral binary and kills it; -short skips it")
	}
	const parents = 6
	var (
		calls atomic.Int64
		mu    sync.Mutex
		hook  func(n int64)
	)
	helperModel := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		mu.Lock()
		h := hook
		mu.Unlock()
		if h != nil {
			h(n)
		}
		time.Sleep(30 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"helper","choices":[{"index":0,"message":{"role":"assistant","content":"helped"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`)
	}))
	t.Cleanup(helperModel.Close)

	p := startCorral(t)
	data := p.Data
	apply(t, p, `apiVersion: corral.dev/v1
kind: Model
metadata: {name: boss-brain}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: delegate_to_helper, arguments: {input: "count the pallets in Łódź"}}]
    - content: "boss done"
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: helper-brain}
spec: {provider: openai, baseURL: `+helperModel.URL+`/v1, model: helper, redact: "off"}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: boss}
spec: {model: boss-brain, models: [boss-brain], agents: [helper]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: helper}
spec: {model: helper-brain, models: [helper-brain]}
`)
	killOn := func(p *proc, want int64) <-chan struct{} {
		killed := make(chan struct{})
		var once sync.Once
		kill := func() {
			once.Do(func() {
				_ = p.cmd.Process.Kill()
				close(killed)
			})
		}
		mu.Lock()
		hook = func(n int64) {
			if n >= want {
				kill()
			}
		}
		mu.Unlock()
		time.AfterFunc(10*time.Second, kill)
		return killed
	}
	var ids []string
	for i := range parents / 2 {
		ids = append(ids, createTaskOn(t, p, "boss", fmt.Sprintf("order %d is late", i)).ID)
	}
	// Kill 1: inside the helper's first model call.
	<-killOn(p, 1)
	p.wait(t)
	p = startCorral(t, "--data", data)
	// Kill 2: a moment after more parents were created.
	mu.Lock()
	hook = nil
	mu.Unlock()
	for i := parents / 2; i < parents; i++ {
		ids = append(ids, createTaskOn(t, p, "boss", fmt.Sprintf("order %d is late", i)).ID)
	}
	time.Sleep(time.Duration(20+time.Now().UnixNano()%80) * time.Millisecond)
	_ = p.cmd.Process.Kill()
	p.wait(t)
	// Kill 3: inside a helper's model call again.
	p = startCorral(t, "--data", data)
	<-killOn(p, calls.Load()+1)
	p.wait(t)
	mu.Lock()
	hook = nil
	mu.Unlock()
	p = startCorral(t, "--data", data)

	type task struct {
		ID, Agent, State, Reason, Detail, Parent string
		Result                                   json.RawMessage
	}
	var all []task
	if !waitFor(60*time.Second, func() bool {
		r := request(t, "GET", p.URL+"/v1/tasks?limit=1000", p.Token, "")
		var list struct{ Items []task }
		if r.status != http.StatusOK || json.Unmarshal(r.body, &list) != nil {
			return false
		}
		all = list.Items
		for _, tk := range all {
			switch tk.State {
			case "completed", "failed", "canceled", "rejected":
			default:
				return false
			}
		}
		return len(all) >= 2*parents
	}) {
		t.Fatalf("tasks not all ended 60s after the last restart: %+v", all)
	}
	children := map[string][]task{}
	for _, tk := range all {
		if tk.Agent == "helper" {
			children[tk.Parent] = append(children[tk.Parent], tk)
		}
	}
	for _, id := range ids {
		var parent *task
		for i := range all {
			if all[i].ID == id {
				parent = &all[i]
			}
		}
		if parent == nil {
			t.Errorf("parent %s is lost", id)
			continue
		}
		if parent.State != "completed" || string(parent.Result) != `"boss done"` {
			t.Errorf("parent %s = %s %s %s %s", id, parent.State, parent.Reason, parent.Detail, parent.Result)
		}
		kids := children[id]
		if len(kids) != 1 {
			t.Errorf("parent %s has %d children, want exactly 1", id, len(kids))
			continue
		}
		if kids[0].State != "completed" || string(kids[0].Result) != `"helped"` {
			t.Errorf("child %s = %s %s %s", kids[0].ID, kids[0].State, kids[0].Reason, kids[0].Detail)
		}
		// The parent got the child's result as its call's answer.
		found := false
		for _, ev := range taskEventsOn(t, p, id) {
			if ev.Type == "tool.result" && ev.Tool == "agent:helper" && !ev.IsError {
				found = true
			}
		}
		if !found {
			t.Errorf("parent %s has no answer from its child in its events", id)
		}
	}
	if len(children) != parents {
		t.Errorf("%d parents have children, want %d", len(children), parents)
	}
	t.Logf("helper model called %d times for %d children", calls.Load(), parents)
}
