package app_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/approval"
	"github.com/corral-dev/corral/internal/llm/llmtest"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// agentApprovalPolicy sends every call of the negotiator or the seller, by
// any agent, to ops for approval.
const agentApprovalPolicy = `apiVersion: corral.dev/v1
kind: Policy
metadata: {name: agent-calls-approval}
spec:
  rego: |
    package corral.authz
    guarded if {
      input.action.kind == "agent"
      input.action.target in {"negotiator", "seller"}
    }
    require_approval contains "calls of the negotiator need ops" if {
      allow
      guarded
    }
    obligations.approvers := ["ops"] if guarded
`

// agentApprovals is corral with agentApprovalPolicy in force, and its
// approvers.
type agentApprovals struct {
	srv *apptest.Server
	w   *approvalWorld // for human and decide
}

func startAgentApprovals(t *testing.T, cfg app.Config, resources string) *agentApprovals {
	t.Helper()
	srv := apptest.StartWith(t, cfg)
	srv.Apply(t, agentApprovalPolicy+resources)
	// The policy loads in the background: a call before it would be let
	// through by the default bundle alone.
	input := map[string]any{
		"action": map[string]any{"kind": "agent", "target": "negotiator", "arguments": map[string]any{"input": "x"}},
		"agent":  map[string]any{"name": "impact", "agents": []string{"negotiator"}},
	}
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, body := srv.Call(t, srv.Token, "POST", "/v1/policy/eval", input, nil)
		var d struct{ Effect string }
		if status == http.StatusOK && json.Unmarshal(body, &d) == nil && d.Effect == "approval" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the approval policy is not in force within %v: %d %s", apptest.Patience, status, body)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	return &agentApprovals{srv: srv, w: &approvalWorld{srv: srv}}
}

// waitAwaitingApproval waits for a task to park on an approval, and
// returns the approval's id.
func waitAwaitingApproval(t *testing.T, srv *apptest.Server, id string) string {
	t.Helper()
	task := waitTask(t, srv, id, orchestrator.InputRequired, orchestrator.Failed, orchestrator.Completed)
	if task.State != orchestrator.InputRequired || task.Reason != orchestrator.ReasonAwaitingApproval || !strings.HasPrefix(task.Detail, "approval ") {
		t.Fatalf("task = %s %s %q, want input-required awaiting_approval naming the approval", task.State, task.Reason, task.Detail)
	}
	approvalID, _, _ := strings.Cut(strings.TrimPrefix(task.Detail, "approval "), ":")
	return approvalID
}

func getApproval(t *testing.T, srv *apptest.Server, id string) approval.Approval {
	t.Helper()
	status, body := srv.Call(t, srv.Token, "GET", "/v1/approvals/"+id, nil, nil)
	var a approval.Approval
	if status != http.StatusOK || json.Unmarshal(body, &a) != nil {
		t.Fatalf("GET /v1/approvals/%s: HTTP %d %s", id, status, body)
	}
	return a
}

// TestDelegationWaitsForApproval: a hosted agent's delegation that policy
// sends to ops parks its task (input-required, awaiting_approval) and
// opens no child; the approval shows caller, callee and the input, masked.
// corral restarts while it waits. Once approved, the delegation happens:
// one child, whose model is asked once, and the parent gets its answer. A
// second task's delegation is denied: the model is told as the call's
// answer and finishes another way, and no child is opened.
func TestDelegationWaitsForApproval(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithContent("Ada agrees: Friday, +3%."))
	dir := t.TempDir()
	a := startAgentApprovals(t, app.Config{DataDir: dir}, scriptedAgent("impact", "  agents: [negotiator]\n",
		`toolCalls: [{name: delegate_to_negotiator, arguments: {input: "Offer ada@lovelace.example 3% more for Friday."}}]`,
		`content: "impact done"`)+fmt.Sprintf(`---
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

	task := createTask(t, a.srv, a.srv.Token, "impact", "Order 42 is late.", nil)
	id := waitAwaitingApproval(t, a.srv, task.ID)
	if kids := childrenOf(t, a.srv, task.ID); len(kids) != 0 {
		t.Fatalf("the parked delegation opened %d tasks", len(kids))
	}
	ap := getApproval(t, a.srv, id)
	shown := string(ap.Action.Arguments)
	if ap.State != approval.Pending || ap.Action.Kind != "agent" || ap.Action.Agent != "impact" || ap.Action.Target != "negotiator" ||
		ap.Action.Task != task.ID || !strings.Contains(shown, "3% more for Friday") || strings.Contains(shown, "ada@lovelace.example") {
		t.Fatalf("approval = %s %+v, want pending, impact calling negotiator in %s, the input shown with the e-mail masked", ap.State, ap.Action, task.ID)
	}
	status, body := a.srv.Call(t, a.srv.Token, "GET", "/v1/approvals?state=pending", nil, nil)
	if status != http.StatusOK || !strings.Contains(string(body), id) {
		t.Errorf("pending approvals: HTTP %d, lists %s: %v", status, id, strings.Contains(string(body), id))
	}

	// corral restarts while the task waits: the task and the approval stay.
	if err := a.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	a.srv = apptest.StartWith(t, app.Config{DataDir: dir})
	a.w.srv = a.srv
	if again := waitAwaitingApproval(t, a.srv, task.ID); again != id {
		t.Fatalf("after the restart the task waits on %q, before on %q", again, id)
	}
	if kids := childrenOf(t, a.srv, task.ID); len(kids) != 0 {
		t.Fatalf("the restart opened %d tasks for a delegation still awaiting approval", len(kids))
	}
	alice, bob := a.w.human(t, "alice", "ops"), a.w.human(t, "bob", "ops")
	if status, d, _ := a.w.decide(t, alice, id, "approve", map[string]string{"comment": "fine"}); status != http.StatusOK {
		t.Fatalf("approve: %d %+v", status, d)
	}
	done := waitTask(t, a.srv, task.ID)
	if done.State != orchestrator.Completed || string(done.Result) != `"impact done"` {
		t.Fatalf("after the approval the parent is %s %s %s", done.State, done.Reason, done.Detail)
	}
	kids := childrenOf(t, a.srv, task.ID)
	if len(kids) != 1 || kids[0].Agent != "negotiator" || kids[0].State != orchestrator.Completed {
		t.Fatalf("children = %+v, want one completed negotiator task", kids)
	}
	if n := len(up.ChatRequests()); n != 1 {
		t.Errorf("the negotiator's model was asked %d times, want once", n)
	}
	if !strings.Contains(taskEvents(t, a.srv, task.ID), "Ada agrees: Friday, +3%.") {
		t.Error("the parent was not given the child's answer")
	}
	if ap := getApproval(t, a.srv, id); ap.State != approval.Executed || ap.Execution == nil || ap.Execution.Status != "ok" || !strings.Contains(string(ap.Execution.Result), kids[0].ID) {
		t.Errorf("approval after the delegation = %s %+v, want executed naming task %s", ap.State, ap.Execution, kids[0].ID)
	}

	refused := createTask(t, a.srv, a.srv.Token, "impact", "Order 43 is late.", nil)
	id = waitAwaitingApproval(t, a.srv, refused.ID)
	if status, d, _ := a.w.decide(t, bob, id, "deny", map[string]string{"comment": "ask the analyst"}); status != http.StatusOK {
		t.Fatalf("deny: %d %+v", status, d)
	}
	done = waitTask(t, a.srv, refused.ID)
	if done.State != orchestrator.Completed || string(done.Result) != `"impact done"` {
		t.Fatalf("after the denial the parent is %s %s %s", done.State, done.Reason, done.Detail)
	}
	events := taskEvents(t, a.srv, refused.ID)
	for _, want := range []string{`"code":"approval_denied"`, "ask the analyst"} {
		if !strings.Contains(events, want) {
			t.Errorf("the model was not told of the denial (%q):\n%s", want, events)
		}
	}
	if kids := childrenOf(t, a.srv, refused.ID); len(kids) != 0 {
		t.Errorf("a denied delegation opened %d tasks", len(kids))
	}
	if n := len(up.ChatRequests()); n != 1 {
		t.Errorf("the negotiator's model was asked %d times in all, want still once", n)
	}
}

// TestExternalDelegationWaitsForApproval: an external agent's POST
// /v1/tasks for another agent that policy sends to ops is answered 202
// approval_pending with the approval's id, again with the same id when
// repeated, and makes no task; its own task shows awaiting_approval. Once
// approved, the same request makes the child, once; the one after that is
// approval_used, and the approval names the child.
func TestExternalDelegationWaitsForApproval(t *testing.T) {
	a := startAgentApprovals(t, app.Config{}, `---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: buyer}
spec: {agents: [seller]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: seller}
spec: {}
`)
	key := a.srv.Key(t, "buyer")
	root := createTask(t, a.srv, key, "buyer", "buy", nil)
	_, tok, _ := taskToken(t, a.srv, "buyer", key, root.ID)
	send := func() (int, []byte) {
		return a.srv.Call(t, tok, "POST", "/v1/tasks", map[string]any{"agent": "seller", "input": "sell 3 crates"}, http.Header{"Idempotency-Key": {"crates-3"}})
	}
	var ids []string
	for range 2 {
		status, body := send()
		var p struct {
			Code       string `json:"code"`
			ApprovalID string `json:"approval_id"`
		}
		if status != http.StatusAccepted || json.Unmarshal(body, &p) != nil || p.Code != "approval_pending" || p.ApprovalID == "" {
			t.Fatalf("POST /v1/tasks: HTTP %d %s, want 202 approval_pending", status, body)
		}
		ids = append(ids, p.ApprovalID)
	}
	if ids[0] != ids[1] {
		t.Errorf("the same request parked twice: approvals %s and %s", ids[0], ids[1])
	}
	if kids := childrenOf(t, a.srv, root.ID); len(kids) != 0 {
		t.Fatalf("a parked delegation made %d tasks", len(kids))
	}
	if parked := waitTask(t, a.srv, root.ID, orchestrator.InputRequired); parked.Reason != orchestrator.ReasonAwaitingApproval {
		t.Errorf("the buyer's task = %s %s, want input-required awaiting_approval", parked.State, parked.Reason)
	}
	if ap := getApproval(t, a.srv, ids[0]); ap.Action.Kind != "agent" || ap.Action.Agent != "buyer" || ap.Action.Target != "seller" || ap.Action.Task != root.ID {
		t.Errorf("approval's action = %+v, want buyer calling seller in %s", ap.Action, root.ID)
	}
	alice := a.w.human(t, "alice", "ops")
	if status, d, _ := a.w.decide(t, alice, ids[0], "approve", map[string]string{}); status != http.StatusOK {
		t.Fatalf("approve: %d %+v", status, d)
	}
	status, body := send()
	var child orchestrator.Task
	if status != http.StatusCreated || json.Unmarshal(body, &child) != nil || child.Agent != "seller" || child.Parent != root.ID {
		t.Fatalf("POST /v1/tasks after the approval: HTTP %d %s, want 201 with the seller's task", status, body)
	}
	if status, body = send(); status != http.StatusConflict || problemCode(body) != "approval_used" {
		t.Errorf("the request once more: HTTP %d %s, want 409 approval_used", status, body)
	}
	if kids := childrenOf(t, a.srv, root.ID); len(kids) != 1 || kids[0].ID != child.ID {
		t.Errorf("children = %+v, want only %s", kids, child.ID)
	}
	if ap := getApproval(t, a.srv, ids[0]); ap.State != approval.Executed || ap.Execution == nil || !strings.Contains(string(ap.Execution.Result), child.ID) {
		t.Errorf("approval = %s %+v, want executed naming %s", ap.State, ap.Execution, child.ID)
	}
}
