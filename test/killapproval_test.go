package test

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// approvalPolicyYAML parks every ledger entry for a person in
// payments-oncall.
const approvalPolicyYAML = `apiVersion: corral.dev/v1
kind: Policy
metadata: {name: ledger-approval}
spec:
  rego: |
    package corral.authz
    ledger if input.action.target == "ledger.record"
    require_approval contains "ledger entries need payments-oncall" if {
      allow
      ledger
    }
    obligations.approvers := ["payments-oncall"] if ledger
    obligations.ttl := "4h" if ledger
`

// TestKillWhileTaskAwaitsApproval: a hosted agent's tool call is parked
// for a human's approval and its task waits in input-required. corral is
// killed with SIGKILL while it waits and restarted on the same data: the
// task still waits on the same approval. A person in payments-oncall
// approves; corral is killed again the moment the approved call has made
// its side effect upstream (corral never hears the answer), and restarted.
// The task completes with the model's final answer and the upstream made
// the side effect exactly once.
func TestKillWhileTaskAwaitsApproval(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the corral binary and kills it twice; -short skips it")
	}
	model := startCountingModel(t, 1, 5*time.Millisecond)
	ledger := startCountingTool(t, 5*time.Millisecond)
	p := startCorral(t)
	data := p.Data
	apply(t, p, toolSourceYAML("ledger", ledger.URL, ledgerDoc)+`---
`+approvalPolicyYAML+`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: counter}
spec: {provider: openai, baseURL: `+model.URL+`/v1, model: counting, redact: "off"}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: bookkeeper}
spec:
  model: counter
  models: [counter]
  tools: ["ledger.*"]
  instructions: Record the step in the ledger, then say you are done.
`)
	// The policy loads in the background: a task before it would run the
	// call unapproved.
	eval := `{"action": {"kind": "tool", "target": "ledger.record", "arguments": {"text": "x"}},
	  "agent": {"name": "bookkeeper", "tools": ["ledger.*"]}, "tool": {"name": "ledger.record", "source": "ledger"}}`
	if !waitFor(startTimeout, func() bool {
		r := request(t, "POST", p.URL+"/v1/policy/eval", p.Token, eval)
		var d struct{ Effect string }
		return r.status == http.StatusOK && json.Unmarshal(r.body, &d) == nil && d.Effect == "approval"
	}) {
		t.Fatal("the approval policy is not in force")
	}
	r := request(t, "POST", p.URL+"/v1/humans", p.Token, `{"name": "alice", "groups": ["payments-oncall"]}`)
	var alice struct{ Key string }
	if r.status != http.StatusCreated || json.Unmarshal(r.body, &alice) != nil || alice.Key == "" {
		t.Fatalf("POST /v1/humans: HTTP %d %s", r.status, r.body)
	}

	task := createTaskOn(t, p, "bookkeeper", "entry-1")
	parkedOn := func(p *proc) string {
		t.Helper()
		var tk taskJSON
		if !waitFor(startTimeout, func() bool {
			var ok bool
			tk, ok = getTaskOn(t, p, task.ID)
			return ok && (tk.State == "input-required" || tk.final())
		}) || tk.State != "input-required" || tk.Reason != "awaiting_approval" || !strings.HasPrefix(tk.Detail, "approval ") {
			t.Fatalf("task = %s %s %q, want input-required awaiting_approval naming the approval", tk.State, tk.Reason, tk.Detail)
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(tk.Detail, "approval "), ":")
		return id
	}
	id := parkedOn(p)
	if n := ledger.counts().requests; n != 0 {
		t.Fatalf("the ledger got %d requests before any approval", n)
	}

	// Kill while the task waits; after the restart it waits on the same
	// approval, which is still pending.
	_ = p.cmd.Process.Kill()
	p.wait(t)
	p = startCorral(t, "--data", data)
	if again := parkedOn(p); again != id {
		t.Fatalf("after kill -9 the task waits on %q, before on %q", again, id)
	}
	if state := approvalState(t, p, alice.Key, id); state != "pending" {
		t.Fatalf("approval %s after the restart is %q, want pending", id, state)
	}

	// Approve; kill corral the moment the approved call made its side effect.
	var once sync.Once
	killed := make(chan struct{})
	ledger.setHook(func() {
		once.Do(func() {
			_ = p.cmd.Process.Kill()
			close(killed)
		})
	})
	r = request(t, "POST", p.URL+"/v1/approvals/"+id+"/approve", alice.Key, `{"comment": "checked"}`)
	if r.status != http.StatusOK {
		t.Fatalf("approve: HTTP %d %s", r.status, r.body)
	}
	select {
	case <-killed:
	case <-time.After(startTimeout):
		t.Fatal("the approved call never reached the ledger")
	}
	p.wait(t)
	ledger.setHook(nil)
	p = startCorral(t, "--data", data)

	var tk taskJSON
	if !waitFor(60*time.Second, func() bool {
		var ok bool
		tk, ok = getTaskOn(t, p, task.ID)
		return ok && tk.final()
	}) {
		t.Fatalf("task = %s %s %q 60s after the restart, want completed", tk.State, tk.Reason, tk.Detail)
	}
	if want, _ := json.Marshal("done entry-1"); tk.State != "completed" || string(tk.Result) != string(want) {
		t.Fatalf("task = %s %s %q result %s, want completed with %s", tk.State, tk.Reason, tk.Detail, tk.Result, want)
	}
	tc := ledger.counts()
	if tc.effects["entry-1 turn 0"] != 1 || len(tc.effects) != 1 {
		t.Errorf("the ledger made side effects %v, want entry-1 turn 0 exactly once", tc.effects)
	}
	if state := approvalState(t, p, alice.Key, id); state != "executed" {
		t.Errorf("approval %s at the end is %q, want executed", id, state)
	}
	for _, ev := range taskEventsOn(t, p, task.ID) {
		if ev.Type == "tool.result" && ev.IsError && ev.Code != "approval_pending" {
			t.Errorf("step %d: the tool call failed with %s: %s", ev.Step, ev.Code, ev.Content)
		}
	}
	t.Logf("ledger: %d requests (%d answered from its record), %d side effects; model %d requests", tc.requests, tc.repeats, len(tc.effects), model.counts().total)
}

// approvalState reads the state of approval id from p as the holder of key.
func approvalState(t *testing.T, p *proc, key, id string) string {
	t.Helper()
	r := request(t, "GET", p.URL+"/v1/approvals/"+id, key, "")
	var a struct{ State string }
	if r.status != http.StatusOK || json.Unmarshal(r.body, &a) != nil {
		t.Fatalf("GET /v1/approvals/%s: HTTP %d %s", id, r.status, r.body)
	}
	return a.State
}
