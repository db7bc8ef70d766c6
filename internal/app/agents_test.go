package app_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/llm/llmtest"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// scriptedAgent is a hosted agent with a scripted model of its own: turns
// are the model's answers, in YAML flow form.
func scriptedAgent(name, extra string, turns ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "---\napiVersion: corral.dev/v1\nkind: Model\nmetadata: {name: %s-brain}\nspec:\n  provider: scripted\n  script:\n", name)
	for _, turn := range turns {
		fmt.Fprintf(&b, "    - %s\n", turn)
	}
	fmt.Fprintf(&b, "---\napiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: %s}\nspec:\n  model: %s-brain\n  models: [%s-brain]\n%s", name, name, name, extra)
	return b.String()
}

// taskEvents reads a task's events as they are now.
func taskEvents(t *testing.T, srv *apptest.Server, id string) string {
	t.Helper()
	status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+id+"/events", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("events of %s: HTTP %d %s", id, status, body)
	}
	return string(body)
}

// childrenOf lists the tasks whose parent is id.
func childrenOf(t *testing.T, srv *apptest.Server, id string) []orchestrator.Task {
	t.Helper()
	status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks?limit=1000", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("list tasks: HTTP %d %s", status, body)
	}
	var list struct{ Items []orchestrator.Task }
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	var out []orchestrator.Task
	for _, task := range list.Items {
		if task.Parent == id {
			out = append(out, task)
		}
	}
	return out
}

type agentAuditRecord struct {
	Kind, Agent, Target, Task, Decision, Code, Reason string
}

// agentRecords returns an agent's audit records of kind agent.
func agentRecords(t *testing.T, srv *apptest.Server, agent string) []agentAuditRecord {
	t.Helper()
	status, body := srv.Call(t, srv.Token, "GET", "/v1/audit?agent="+agent, nil, nil)
	var page struct{ Records []agentAuditRecord }
	if err := json.Unmarshal(body, &page); status != http.StatusOK || err != nil {
		t.Fatalf("audit: HTTP %d %v", status, err)
	}
	var out []agentAuditRecord
	for _, r := range page.Records {
		if r.Kind == "agent" {
			out = append(out, r)
		}
	}
	return out
}

// TestDelegateReturnsChildResult: a hosted agent delegates to another; the
// child task runs with the parent's chain, the parent waits (parked, not
// holding a worker) and gets the child's result as the call's answer; the
// call is an audited action of kind agent.
func TestDelegateReturnsChildResult(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, scriptedAgent("impact", "  agents: [negoti*]\n",
		`toolCalls: [{name: delegate_to_negotiator, arguments: {input: "Get supplier Ada to deliver by Friday."}}]`,
		`content: "Ada delivers Friday, for 3% more."`)+
		scriptedAgent("negotiator", "  description: Negotiates with suppliers.\n",
			`content: "Agreed: Friday, +3%."`))
	began := time.Now()
	task := createTask(t, srv, srv.Token, "impact", "Order 42 is late: what now?", nil)
	done := waitTask(t, srv, task.ID)
	t.Logf("a delegation (parent: 2 model calls, child: 1) done in %v", time.Since(began).Round(time.Millisecond))
	if done.State != orchestrator.Completed || string(done.Result) != `"Ada delivers Friday, for 3% more."` {
		t.Fatalf("parent = %s %s %s result %s", done.State, done.Reason, done.Detail, done.Result)
	}
	kids := childrenOf(t, srv, task.ID)
	if len(kids) != 1 {
		t.Fatalf("parent has %d children, want 1", len(kids))
	}
	kid := kids[0]
	if kid.Agent != "negotiator" || kid.State != orchestrator.Completed || strings.Join(kid.Chain, ",") != "impact" || kid.Root != task.ID {
		t.Errorf("child = agent %s %s chain %v root %s", kid.Agent, kid.State, kid.Chain, kid.Root)
	}
	if string(kid.Input) != `"Get supplier Ada to deliver by Friday."` {
		t.Errorf("child input = %s", kid.Input)
	}
	events := taskEvents(t, srv, task.ID)
	for _, want := range []string{`"tool":"agent:negotiator"`, `"reason":"awaiting_agent"`, `Agreed: Friday, +3%.`, kid.ID} {
		if !strings.Contains(events, want) {
			t.Errorf("parent's events lack %q:\n%s", want, events)
		}
	}
	if recs := agentRecords(t, srv, "impact"); len(recs) != 1 || recs[0].Target != "negotiator" || recs[0].Decision != "allowed" || recs[0].Task != task.ID {
		t.Errorf("audit records of kind agent = %+v, want one allowed call to negotiator", recs)
	}
}

// TestAgentCycleRefused: impact → negotiator → executor → impact is
// refused at the third call with agent_cycle naming the chain; the agent
// that tried gets the refusal as its call's answer and finishes another
// way, and so do the ones above it.
func TestAgentCycleRefused(t *testing.T) {
	srv := apptest.Start(t)
	call := func(agent string) string {
		return fmt.Sprintf(`toolCalls: [{name: delegate_to_%s, arguments: {input: "handle order 42"}}]`, agent)
	}
	srv.Apply(t, scriptedAgent("impact", "  agents: [\"*\"]\n", call("negotiator"), `content: "impact done"`)+
		scriptedAgent("negotiator", "  agents: [\"*\"]\n", call("executor"), `content: "negotiator done"`)+
		scriptedAgent("executor", "  agents: [\"*\"]\n", call("impact"), `content: "executor done alone"`))
	task := createTask(t, srv, srv.Token, "impact", "order 42", nil)
	done := waitTask(t, srv, task.ID)
	if done.State != orchestrator.Completed || string(done.Result) != `"impact done"` {
		t.Fatalf("root = %s %s %s result %s", done.State, done.Reason, done.Detail, done.Result)
	}
	neg := childrenOf(t, srv, task.ID)
	if len(neg) != 1 {
		t.Fatalf("root has %d children, want 1", len(neg))
	}
	exe := childrenOf(t, srv, neg[0].ID)
	if len(exe) != 1 || exe[0].Agent != "executor" || exe[0].State != orchestrator.Completed {
		t.Fatalf("negotiator's children = %+v", exe)
	}
	if kids := childrenOf(t, srv, exe[0].ID); len(kids) != 0 {
		t.Fatalf("executor opened %d tasks: the cycle was not refused", len(kids))
	}
	events := taskEvents(t, srv, exe[0].ID)
	for _, want := range []string{`"code":"agent_cycle"`, "impact → negotiator → executor → impact"} {
		if !strings.Contains(events, want) {
			t.Errorf("executor's events lack %q:\n%s", want, events)
		}
	}
	if recs := agentRecords(t, srv, "executor"); len(recs) != 1 || recs[0].Code != "agent_cycle" || recs[0].Decision != "denied" {
		t.Errorf("audit records of kind agent = %+v, want one refused with agent_cycle", recs)
	}
}

// TestAgentDepthCapped: with limits.maxDepth 2, a chain holds two agents
// at most: the root's child cannot open a third level, agent_depth is its
// call's answer.
func TestAgentDepthCapped(t *testing.T) {
	srv := apptest.Start(t)
	limits := "  agents: [\"*\"]\n  limits: {maxDepth: 2}\n"
	srv.Apply(t, scriptedAgent("monitor", limits, `toolCalls: [{name: delegate_to_impact, arguments: {input: "assess"}}]`, `content: "monitor done"`)+
		scriptedAgent("impact", limits, `toolCalls: [{name: delegate_to_executor, arguments: {input: "act"}}]`, `content: "impact done"`)+
		scriptedAgent("executor", limits, `content: "executed"`))
	task := createTask(t, srv, srv.Token, "monitor", "watch order 42", nil)
	done := waitTask(t, srv, task.ID)
	if done.State != orchestrator.Completed {
		t.Fatalf("root = %s %s %s", done.State, done.Reason, done.Detail)
	}
	impact := childrenOf(t, srv, task.ID)
	if len(impact) != 1 {
		t.Fatalf("root has %d children, want 1", len(impact))
	}
	if kids := childrenOf(t, srv, impact[0].ID); len(kids) != 0 {
		t.Fatalf("a task at depth 1 opened %d tasks past maxDepth 2", len(kids))
	}
	events := taskEvents(t, srv, impact[0].ID)
	if !strings.Contains(events, `"code":"agent_depth"`) || !strings.Contains(events, "monitor → impact → executor") {
		t.Errorf("impact's events lack the agent_depth refusal:\n%s", events)
	}
}

// TestHandoffCarriesSharedState: an agent writes what it found into the
// tree's shared state and hands the work off; the receiving agent's first
// model call sees the state, and the tree shows the handoff (the first
// task completed handed_off, naming the task that goes on).
func TestHandoffCarriesSharedState(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithContent("Deal closed with Ada."))
	srv := apptest.Start(t)
	srv.Apply(t, scriptedAgent("impact", "  agents: [negotiator]\n",
		`toolCalls: [{name: update_shared_state, arguments: {patch: {supplier: {name: "Ada Lovelace GmbH", eta: "Freitag"}, delay_days: 3}}}]`,
		`toolCalls: [{name: handoff_to_negotiator, arguments: {input: "Negotiate a faster delivery."}}]`)+fmt.Sprintf(`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: talker}
spec: {provider: openai, baseURL: %q, redact: "off"}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: negotiator}
spec: {model: talker, models: [talker]}
`, up.URL()))
	task := createTask(t, srv, srv.Token, "impact", "Order 42 is late.", nil)
	done := waitTask(t, srv, task.ID)
	if done.State != orchestrator.Completed || done.Reason != orchestrator.ReasonHandedOff {
		t.Fatalf("first task = %s %s %s", done.State, done.Reason, done.Detail)
	}
	kids := childrenOf(t, srv, task.ID)
	if len(kids) != 1 || !kids[0].Handoff || kids[0].Agent != "negotiator" || !strings.Contains(string(done.Result), kids[0].ID) {
		t.Fatalf("children = %+v, result %s", kids, done.Result)
	}
	next := waitTask(t, srv, kids[0].ID)
	if next.State != orchestrator.Completed || string(next.Result) != `"Deal closed with Ada."` {
		t.Fatalf("handed-off task = %s %s %s %s", next.State, next.Reason, next.Detail, next.Result)
	}
	reqs := up.ChatRequests()
	if len(reqs) == 0 {
		t.Fatal("the receiving agent's model was never called")
	}
	var first strings.Builder
	for _, m := range reqs[0].Messages {
		first.WriteString(m.Content.String() + "\n")
	}
	for _, want := range []string{"Negotiate a faster delivery.", "Ada Lovelace GmbH", "Freitag", `"delay_days":3`, "agent impact handed this work over"} {
		if !strings.Contains(first.String(), want) {
			t.Errorf("the receiving agent's first model call lacks %q:\n%s", want, first.String())
		}
	}
	events := taskEvents(t, srv, task.ID)
	if !strings.Contains(events, "event: state.changed") {
		t.Error("the state change is not an event of the task that made it")
	}
	// The change's event is journaled by the task's own run: the run is not
	// fenced off its task by it and taken over again.
	if n := strings.Count(events, "event: started"); n != 1 {
		t.Errorf("the task was started %d times, want once:\n%s", n, events)
	}
}

// TestSharedStateAPI: GET and PATCH /v1/tasks/{id}/state with ETag and
// If-Match: a PATCH without If-Match is 428, with a stale one 412; the
// state is the tree's, read the same from a child; another agent cannot
// read it; oversized and malformed patches are refused.
func TestSharedStateAPI(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: scout}
spec: {}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: stranger}
spec: {}
`)
	task := createTask(t, srv, srv.Token, "scout", "find suppliers", nil)
	path := "/v1/tasks/" + task.ID + "/state"
	do := func(token, method string, body string, header http.Header) (int, string, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header.Clone()
		if req.Header == nil {
			req.Header = http.Header{}
		}
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/merge-patch+json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("ETag"), string(b)
	}
	status, tag, body := do(srv.Token, "GET", "", nil)
	if status != http.StatusOK || tag != `"0"` || body != `{}` {
		t.Fatalf("GET empty state = %d %s %s", status, tag, body)
	}
	if status, _, body = do(srv.Token, "PATCH", `{"a":1}`, nil); status != http.StatusPreconditionRequired || !strings.Contains(body, "state_version_required") {
		t.Errorf("PATCH without If-Match = %d %s, want 428", status, body)
	}
	status, tag, body = do(srv.Token, "PATCH", `{"suppliers":{"ada":{"city":"Zürich","score":0.93}},"note":"日本語も"}`, http.Header{"If-Match": {`"0"`}})
	if status != http.StatusOK || tag == `"0"` || !strings.Contains(body, "Zürich") {
		t.Fatalf("PATCH = %d %s %s", status, tag, body)
	}
	if status, _, body = do(srv.Token, "PATCH", `{"note":null}`, http.Header{"If-Match": {`"0"`}}); status != http.StatusPreconditionFailed || !strings.Contains(body, "state_version_mismatch") {
		t.Errorf("PATCH with a stale If-Match = %d %s, want 412", status, body)
	}
	status, _, body = do(srv.Token, "PATCH", `{"note":null,"suppliers":{"bob":{"city":"Lyon"}}}`, http.Header{"If-Match": {tag}})
	if status != http.StatusOK || strings.Contains(body, "note") || !strings.Contains(body, "Lyon") || !strings.Contains(body, "Zürich") {
		t.Errorf("merge patch = %d %s", status, body)
	}
	for _, bad := range []struct{ name, body, ifMatch string }{
		{"not an object", `[1,2]`, "*"},
		{"not JSON", `{"a":`, "*"},
		{"too large", `{"blob":"` + strings.Repeat("x", 70<<10) + `"}`, "*"},
		{"bad If-Match", `{"a":1}`, "seven"},
	} {
		if status, _, body := do(srv.Token, "PATCH", bad.body, http.Header{"If-Match": {bad.ifMatch}}); status < 400 || status >= 500 {
			t.Errorf("%s: HTTP %d %s, want a 4xx", bad.name, status, body)
		}
	}
	if status, _, _ := do(srv.Key(t, "stranger"), "GET", "", nil); status != http.StatusNotFound {
		t.Errorf("another agent reads the state: HTTP %d, want 404", status)
	}
	if status, _, body := do(srv.Key(t, "scout"), "GET", "", nil); status != http.StatusOK || !strings.Contains(body, "Lyon") {
		t.Errorf("the task's agent reads the state: HTTP %d %s", status, body)
	}
}

// TestDeadlockBroken: two external agents, each acting in its task, wait
// on each other's task (GET /v1/tasks/{id}?wait=): corral finds the cycle
// and fails the younger task with reason deadlock within a second, naming
// the cycle in its events and the audit, and counting it.
func TestDeadlockBroken(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: buyer}
spec: {agents: [seller]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: seller}
spec: {}
`)
	buyerKey, sellerKey := srv.Key(t, "buyer"), srv.Key(t, "seller")
	root := createTask(t, srv, srv.Token, "buyer", "buy 40 pallets", nil)
	_, buyerTok, body := taskToken(t, srv, "buyer", buyerKey, root.ID)
	if buyerTok == "" {
		t.Fatalf("buyer's task token: %s", body)
	}
	// The buyer delegates through the API: a child task of seller's, with
	// the buyer's chain.
	child := createTask(t, srv, buyerTok, "seller", map[string]any{"pallets": 40, "city": "Łódź"}, nil)
	if child.Parent != root.ID || strings.Join(child.Chain, ",") != "buyer" || child.Root != root.ID {
		t.Fatalf("delegated task = parent %s chain %v root %s", child.Parent, child.Chain, child.Root)
	}
	_, sellerTok, body := taskToken(t, srv, "seller", sellerKey, child.ID)
	if sellerTok == "" {
		t.Fatalf("seller's task token: %s", body)
	}
	type answer struct {
		task orchestrator.Task
		at   time.Time
	}
	wait := func(token, id string, out chan<- answer) {
		status, body := srv.Call(t, token, "GET", "/v1/tasks/"+id+"?wait=20s", nil, nil)
		var task orchestrator.Task
		if status != http.StatusOK || json.Unmarshal(body, &task) != nil {
			t.Errorf("wait on %s: HTTP %d %s", id, status, body)
		}
		out <- answer{task, time.Now()}
	}
	buyerWaits, sellerWaits := make(chan answer, 1), make(chan answer, 1)
	go wait(buyerTok, child.ID, buyerWaits)
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	go wait(sellerTok, root.ID, sellerWaits)
	got := <-buyerWaits
	<-sellerWaits
	took := got.at.Sub(start)
	t.Logf("deadlock broken %v after the second wait began", took)
	if got.task.State != orchestrator.Failed || got.task.Reason != orchestrator.ReasonDeadlock {
		t.Fatalf("the younger task = %s %s %s, want failed deadlock", got.task.State, got.task.Reason, got.task.Detail)
	}
	// No bound on took: the wait's own 20 s would have answered a task
	// still working, which the state check above refuses; how fast corral
	// breaks it on a loaded machine is not this test's to say.
	if older := waitTask(t, srv, root.ID, orchestrator.Working, orchestrator.Submitted); older.State.Final() {
		t.Errorf("the older task ended too: %s %s", older.State, older.Reason)
	}
	for _, want := range []string{root.ID + " (agent buyer) waits for " + child.ID + " (agent seller) waits for " + root.ID} {
		if !strings.Contains(got.task.Detail, want) || !strings.Contains(taskEvents(t, srv, child.ID), want) {
			t.Errorf("the deadlock's detail and events lack %q: %s", want, got.task.Detail)
		}
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/audit?agent=seller", nil, nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"event": "deadlock"`) {
		t.Errorf("no audit record of the deadlock: %s", body)
	}
	status, body = srv.Call(t, "", "GET", "/metrics", nil, nil)
	if status != http.StatusOK || !strings.Contains(string(body), "corral_deadlocks_total 1") {
		t.Errorf("corral_deadlocks_total is not 1")
	}
}

// TestTreeTurnsCapped: maxTreeTurns on the root's agent bounds the model
// calls of the root and every task under it together: the child stops at
// the tree's limit, and so does the parent when it tries to go on.
func TestTreeTurnsCapped(t *testing.T) {
	srv := apptest.Start(t)
	var turns []string
	for i := range 4 {
		turns = append(turns, fmt.Sprintf(`toolCalls: [{name: update_shared_state, arguments: {patch: {counted: %d}}}]`, i))
	}
	srv.Apply(t, scriptedAgent("planner", "  agents: [worker]\n  limits: {maxTreeTurns: 3}\n",
		`toolCalls: [{name: delegate_to_worker, arguments: {input: "count"}}]`, `content: "planned"`)+
		scriptedAgent("worker", "", append(turns, `content: "counted"`)...))
	task := createTask(t, srv, srv.Token, "planner", "plan the week", nil)
	done := waitTask(t, srv, task.ID)
	kids := childrenOf(t, srv, task.ID)
	if len(kids) != 1 {
		t.Fatalf("planner has %d children", len(kids))
	}
	if kids[0].State != orchestrator.Failed || kids[0].Reason != orchestrator.ReasonMaxTreeTurns {
		t.Errorf("worker = %s %s %s, want failed max_tree_turns", kids[0].State, kids[0].Reason, kids[0].Detail)
	}
	if done.State != orchestrator.Failed || done.Reason != orchestrator.ReasonMaxTreeTurns {
		t.Errorf("planner = %s %s %s, want failed max_tree_turns", done.State, done.Reason, done.Detail)
	}
	if total := done.Usage.ModelCalls + kids[0].Usage.ModelCalls; total != 3 {
		t.Errorf("the tree made %d model calls, want its limit of 3", total)
	}
}

// TestDelegationExample: examples/supply-chain-agents.yaml, as docs/agents.md
// walks through it, applies and runs: the monitor delegates, the analyst
// hands off with the shared state, the negotiator's agreement reaches the
// monitor's answer and the state.
func TestDelegationExample(t *testing.T) {
	doc, err := os.ReadFile("../../examples/supply-chain-agents.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := apptest.Start(t)
	srv.Apply(t, string(doc))
	task := createTask(t, srv, srv.Token, "delay-monitor", "Shipment SH-7 from Łódź is 3 days late", nil)
	done := waitTask(t, srv, task.ID)
	if done.State != orchestrator.Completed || !strings.Contains(string(done.Result), "Friday") {
		t.Fatalf("monitor = %s %s %s %s", done.State, done.Reason, done.Detail, done.Result)
	}
	analyst := childrenOf(t, srv, task.ID)
	if len(analyst) != 1 || analyst[0].Reason != orchestrator.ReasonHandedOff {
		t.Fatalf("monitor's children = %+v", analyst)
	}
	negotiator := childrenOf(t, srv, analyst[0].ID)
	if len(negotiator) != 1 || negotiator[0].Agent != "supplier-negotiator" || negotiator[0].State != orchestrator.Completed {
		t.Fatalf("analyst's children = %+v", negotiator)
	}
	if !strings.Contains(taskEvents(t, srv, task.ID), "Ada Lovelace GmbH delivers order 42 on Friday") {
		t.Error("the monitor's delegation was not answered with the negotiator's result, through the handoff")
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks?root="+task.ID, nil, nil)
	var tree struct{ Items []orchestrator.Task }
	if err := json.Unmarshal(body, &tree); status != http.StatusOK || err != nil || len(tree.Items) != 3 {
		t.Errorf("GET /v1/tasks?root= = HTTP %d, %d tasks, want the tree's 3", status, len(tree.Items))
	}
	if status, _ = srv.Call(t, srv.Token, "GET", "/v1/tasks?root=../x", nil, nil); status != http.StatusBadRequest {
		t.Errorf("root=../x: HTTP %d, want 400", status)
	}
	status, body = srv.Call(t, srv.Token, "GET", "/v1/tasks/"+negotiator[0].ID+"/state", nil, nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"surcharge_percent":3`) || !strings.Contains(string(body), "Łódź") {
		t.Errorf("tree state = HTTP %d %s", status, body)
	}
}

// TestExternalDelegationBoundaries: what careless and hostile external
// agents send the delegation door: no task-bound token, an agent not in
// spec.agents, no such agent, a cycle back up the chain, an oversized
// input, a task of another tree. Each is refused with its code, and no
// task is made.
func TestExternalDelegationBoundaries(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: buyer}
spec: {agents: [seller]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: seller}
spec: {agents: ["*"]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: auditor}
spec: {}
`)
	buyerKey, sellerKey := srv.Key(t, "buyer"), srv.Key(t, "seller")
	root := createTask(t, srv, srv.Token, "buyer", "buy", nil)
	other := createTask(t, srv, srv.Token, "seller", "another tree", nil)
	_, buyerTok, _ := taskToken(t, srv, "buyer", buyerKey, root.ID)
	child := createTask(t, srv, buyerTok, "seller", "sell", nil)
	_, sellerTok, _ := taskToken(t, srv, "seller", sellerKey, child.ID)
	count := func() int {
		_, body := srv.Call(t, srv.Token, "GET", "/v1/tasks?limit=1000", nil, nil)
		var list struct{ Items []orchestrator.Task }
		_ = json.Unmarshal(body, &list)
		return len(list.Items)
	}
	before := count()
	for _, tt := range []struct {
		name, token, agent string
		input              any
		status             int
		code               string
	}{
		{"an agent key, no task", buyerKey, "seller", "x", http.StatusForbidden, "policy_denied"},
		{"not in spec.agents", buyerTok, "auditor", "x", http.StatusForbidden, "policy_denied"},
		{"no such agent", buyerTok, "ghost", "x", http.StatusNotFound, "agent_not_found"},
		{"a cycle back to the buyer", sellerTok, "buyer", "x", http.StatusConflict, "agent_cycle"},
		{"oversized input", buyerTok, "seller", strings.Repeat("ü", 200<<10), http.StatusRequestEntityTooLarge, ""},
	} {
		status, body := srv.Call(t, tt.token, "POST", "/v1/tasks", map[string]any{"agent": tt.agent, "input": tt.input}, nil)
		if status != tt.status || (tt.code != "" && !strings.Contains(string(body), `"code":"`+tt.code+`"`)) {
			t.Errorf("%s: HTTP %d %.300s, want %d %s", tt.name, status, body, tt.status, tt.code)
		}
	}
	if n := count(); n != before {
		t.Errorf("refused delegations made %d tasks", n-before)
	}
	if status, _ := srv.Call(t, buyerTok, "GET", "/v1/tasks/"+other.ID, nil, nil); status != http.StatusNotFound {
		t.Errorf("a task token reads a task of another tree: HTTP %d", status)
	}
	if status, _ := srv.Call(t, sellerTok, "GET", "/v1/tasks/"+root.ID, nil, nil); status != http.StatusOK {
		t.Errorf("a task token cannot read its tree's root: HTTP %d", status)
	}
	if status, _ := srv.Call(t, sellerTok, "POST", "/v1/tasks/"+root.ID+"/cancel", nil, nil); status != http.StatusNotFound {
		t.Errorf("a child's agent cancels its parent: HTTP %d", status)
	}
	if status, _ := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+root.ID+"?wait=2h", nil, nil); status != http.StatusBadRequest {
		t.Errorf("wait=2h: HTTP %d, want 400", status)
	}
}

// TestKillSwitchStopsDelegatedWork: a kill switch over an agent stops the
// work it delegated: the child task, of another agent, is canceled with
// reason killed, naming the agent above it.
func TestKillSwitchStopsDelegatedWork(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithContent("too late"), llmtest.WithDelay(30*time.Second))
	srv := apptest.Start(t)
	srv.Apply(t, scriptedAgent("dispatcher", "  agents: [courier]\n",
		`toolCalls: [{name: delegate_to_courier, arguments: {input: "drive to Gdańsk"}}]`, `content: "dispatched"`)+fmt.Sprintf(`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: slow}
spec: {provider: openai, baseURL: %q, redact: "off", timeout: 60s}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: courier}
spec: {model: slow, models: [slow]}
`, up.URL()))
	task := createTask(t, srv, srv.Token, "dispatcher", "ship order 42", nil)
	var kid orchestrator.Task
	deadline := time.Now().Add(apptest.Patience)
	for {
		if kids := childrenOf(t, srv, task.ID); len(kids) == 1 && kids[0].State == orchestrator.Working {
			kid = kids[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the courier's task never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status, body := srv.Call(t, srv.Token, "POST", "/v1/killswitches", map[string]string{"agent": "dispatcher", "reason": "wrong depot"}, nil); status >= 300 {
		t.Fatalf("kill switch: HTTP %d %s", status, body)
	}
	ended := waitTask(t, srv, kid.ID)
	if ended.State != orchestrator.Canceled || ended.Reason != orchestrator.ReasonKilled || !strings.Contains(ended.Detail, "dispatcher") {
		t.Errorf("the courier's task = %s %s %s, want canceled killed naming the dispatcher", ended.State, ended.Reason, ended.Detail)
	}
}

// TestCancelReachesDelegatedWork: canceling a task cancels the work it
// delegated, down the tree, since nobody waits for it any more. The child
// here waits for a person's answer; the grandchild-less tree ends whole.
func TestCancelReachesDelegatedWork(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, scriptedAgent("impact", "  agents: [negotiator]\n",
		`toolCalls: [{name: delegate_to_negotiator, arguments: {input: "Get supplier Ada to deliver by Friday."}}]`,
		`content: "never reached"`)+
		scriptedAgent("negotiator", "",
			`toolCalls: [{name: request_input, arguments: {question: "May I offer Ada 3% more?"}}]`,
			`content: "never reached either"`))
	task := createTask(t, srv, srv.Token, "impact", "Order 42 is late: what now?", nil)
	var kid orchestrator.Task
	deadline := time.Now().Add(apptest.Patience)
	for {
		if kids := childrenOf(t, srv, task.ID); len(kids) == 1 && kids[0].State == orchestrator.InputRequired {
			kid = kids[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the negotiator's task never waited for its answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status, body := srv.Call(t, srv.Token, "POST", "/v1/tasks/"+task.ID+"/cancel", map[string]string{"reason": "the order was withdrawn"}, nil); status != http.StatusOK {
		t.Fatalf("cancel: HTTP %d %s", status, body)
	}
	if done := waitTask(t, srv, task.ID); done.State != orchestrator.Canceled {
		t.Errorf("parent = %s %s", done.State, done.Detail)
	}
	done := waitTask(t, srv, kid.ID)
	if done.State != orchestrator.Canceled || !strings.Contains(done.Detail, task.ID) {
		t.Errorf("the delegated task = %s %q, want canceled naming its parent %s", done.State, done.Detail, task.ID)
	}
}
