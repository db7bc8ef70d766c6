package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/app"
	mcpedge "github.com/corral-dev/corral/internal/edge/mcp"
)

// bearer adds an agent's key to every request of an MCP client.
type bearer struct{ key string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return http.DefaultTransport.RoundTrip(r)
}

func mcpClient(t *testing.T, base, key string) *mcp.ClientSession {
	t.Helper()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "plain-client", Version: "1"}, nil).Connect(t.Context(),
		&mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: &http.Client{Transport: bearer{key}}}, nil)
	if err != nil {
		t.Fatalf("connect to %s/mcp: %v", base, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// mcpAnswer is a tools/call result as a plain client reads it.
type mcpAnswer struct {
	IsError           bool `json:"isError"`
	Content           []struct{ Type, Text string }
	StructuredContent json.RawMessage
	Meta              map[string]json.RawMessage `json:"_meta"`
}

func (a mcpAnswer) text() string {
	var parts []string
	for _, c := range a.Content {
		parts = append(parts, c.Text)
	}
	return strings.Join(parts, "\n")
}

func (a mcpAnswer) problem() mcpedge.Problem {
	var p mcpedge.Problem
	_ = json.Unmarshal(a.Meta[mcpedge.MetaProblem], &p)
	return p
}

func (a mcpAnswer) status(t *testing.T) mcpedge.ApprovalStatus {
	t.Helper()
	var s mcpedge.ApprovalStatus
	if err := json.Unmarshal(a.StructuredContent, &s); err != nil {
		t.Fatalf("structuredContent %s: %v", a.StructuredContent, err)
	}
	return s
}

func mcpCall(t *testing.T, cs *mcp.ClientSession, name string, args any) mcpAnswer {
	t.Helper()
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("tools/call %s = %v", name, err)
	}
	b, _ := json.Marshal(res)
	var a mcpAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestMCPApprovalStatus: a plain MCP client whose call is parked learns
// the approval's id from the tool error, follows it with
// corral.approval_status (listed among its tools) until a human approves,
// makes the call again, and reads the executed call's result from the
// approval; another agent cannot read it.
func TestMCPApprovalStatus(t *testing.T) {
	w := startApprovals(t, app.Config{}, "1h")
	w.srv.Apply(t, `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: intruder}
spec:
  tools: [banking.*]
`)
	cs := mcpClient(t, w.srv.URL, w.key)
	list, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var listed bool
	for _, tl := range list.Tools {
		listed = listed || tl.Name == mcpedge.ApprovalStatusTool && tl.Annotations != nil && tl.Annotations.ReadOnlyHint
	}
	if !listed {
		t.Fatalf("tools/list does not offer %s as a read-only tool", mcpedge.ApprovalStatusTool)
	}

	args := map[string]any{"to_iban": "DE89 3704 0044 0532 0130 00", "amount": 2000, "currency": "EUR", "reference": "invoice 7"}
	parked := mcpCall(t, cs, "banking.send_money", args)
	id := parked.problem().ApprovalID
	if !parked.IsError || parked.problem().Code != "approval_pending" || id == "" || !strings.Contains(parked.text(), mcpedge.ApprovalStatusTool) {
		t.Fatalf("parked call = %+v %s, want an approval_pending tool error naming its approval and %s", parked.problem(), parked.text(), mcpedge.ApprovalStatusTool)
	}

	st := mcpCall(t, cs, mcpedge.ApprovalStatusTool, map[string]any{"approval_id": id})
	if s := st.status(t); st.IsError || s.State != "pending" || s.ApprovalID != id || s.Tool != "banking.send_money" || len(s.Reasons) == 0 {
		t.Fatalf("status while pending = %+v %s", s, st.text())
	}

	// Another agent, a made-up id and bad arguments are refused, naming the field.
	other := mcpClient(t, w.srv.URL, w.srv.Key(t, "intruder"))
	for _, c := range []struct {
		cs   *mcp.ClientSession
		args any
		code string
	}{
		{other, map[string]any{"approval_id": id}, "approval_not_found"},
		{cs, map[string]any{"approval_id": "nope"}, "approval_not_found"},
		{cs, map[string]any{"approval_id": "../../x"}, "approval_not_found"},
		{cs, map[string]any{}, "invalid_arguments"},
		{cs, map[string]any{"approval_id": id, "wait": 61}, "invalid_arguments"},
		{cs, map[string]any{"approval_id": id, "wait": "soon"}, "invalid_arguments"},
		{cs, map[string]any{"approval_id": id, "extra": true}, "invalid_arguments"},
	} {
		a := mcpCall(t, c.cs, mcpedge.ApprovalStatusTool, c.args)
		if !a.IsError || a.problem().Code != c.code || strings.Contains(a.text(), "DE89") {
			t.Errorf("status %v = %v %+v %s, want a tool error %s", c.args, a.IsError, a.problem(), a.text(), c.code)
		}
	}

	// Waiting sees the decision made meanwhile.
	alice := w.human(t, "alice", "payments-oncall")
	decided := make(chan int, 1)
	go func() {
		status, _, _ := w.decide(t, alice, id, "approve", map[string]string{"comment": "invoice checked"})
		decided <- status
	}()
	st = mcpCall(t, cs, mcpedge.ApprovalStatusTool, map[string]any{"approval_id": id, "wait": 30})
	if status := <-decided; status != http.StatusOK {
		t.Fatalf("approve = %d", status)
	}
	if s := st.status(t); s.State != "approved" || len(s.Decisions) != 1 || s.Decisions[0].Name != "alice" || s.Decisions[0].Comment != "invoice checked" {
		t.Fatalf("status after waiting = %+v %s, want approved by alice", s, st.text())
	}

	ran := mcpCall(t, cs, "banking.send_money", args)
	if ran.IsError {
		t.Fatalf("the approved call again = %+v %s", ran.problem(), ran.text())
	}
	st = mcpCall(t, cs, mcpedge.ApprovalStatusTool, map[string]any{"approval_id": id})
	if s := st.status(t); s.State != "executed" || s.Execution == nil || s.Execution.Status != "ok" || !strings.Contains(st.text(), `"sent"`) {
		t.Fatalf("status after the call ran = %+v %s, want executed with the bank's answer", s, st.text())
	}
	again := mcpCall(t, cs, "banking.send_money", args)
	if again.problem().Code != "approval_used" || !strings.Contains(again.text(), mcpedge.ApprovalStatusTool) {
		t.Fatalf("the call a third time = %+v %s, want approval_used pointing at %s", again.problem(), again.text(), mcpedge.ApprovalStatusTool)
	}
	if got := w.bank.received(); len(got) != 1 {
		t.Fatalf("the bank saw %d payments, want 1", len(got))
	}
}
