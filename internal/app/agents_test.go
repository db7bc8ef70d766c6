package app_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/app/apptest"
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
	task := createTask(t, srv, srv.Token, "impact", "Order 42 is late: what now?", nil)
	done := waitTask(t, srv, task.ID)
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

// TestAgentDepthCapped: with limits.maxDepth 1, a task at depth 1 cannot
// open one at depth 2: agent_depth is its call's answer.
func TestAgentDepthCapped(t *testing.T) {
	srv := apptest.Start(t)
	limits := "  agents: [\"*\"]\n  limits: {maxDepth: 1}\n"
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
		t.Fatalf("a task at depth 1 opened %d tasks past maxDepth 1", len(kids))
	}
	events := taskEvents(t, srv, impact[0].ID)
	if !strings.Contains(events, `"code":"agent_depth"`) || !strings.Contains(events, "monitor → impact → executor") {
		t.Errorf("impact's events lack the agent_depth refusal:\n%s", events)
	}
}
