package mcpedge_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/approval"
	mcpedge "github.com/corral-dev/corral/internal/edge/mcp"
	"github.com/corral-dev/corral/internal/tools"
)

type fakeApprovals map[string]approval.Approval

func (f fakeApprovals) Get(id string) (approval.Approval, bool) { a, ok := f[id]; return a, ok }

func (f fakeApprovals) Wait(ctx context.Context, id string) (approval.Approval, error) {
	<-ctx.Done()
	return f[id], ctx.Err()
}

// TestApprovalStatusIsTheAgentsOwn: the status tool answers only the
// incarnation of the agent whose call was parked, on every endpoint, and
// shadows a source tool of the same name in tools/list.
func TestApprovalStatusIsTheAgentsOwn(t *testing.T) {
	gw := newGateway()
	gw.allowed["clerk"] = append(gw.allowed["clerk"], "corral.*")
	gw.entries = append(gw.entries, entry(tools.Tool{Name: "corral.approval_status", Source: "corral"}))
	now := time.Now()
	aps := fakeApprovals{
		"ap1": {ID: "ap1", State: approval.Pending, Action: approval.Action{Agent: "clerk", Target: "erp.delete_order"}, Expires: now.Add(time.Hour), Quorum: 1},
		"ap2": {ID: "ap2", State: approval.Pending, Action: approval.Action{Agent: "clerk", AgentUID: "an-earlier-clerk", Target: "erp.delete_order"}, Expires: now.Add(time.Hour)},
		"ap3": {ID: "ap3", State: approval.Denied, Action: approval.Action{Agent: "auditor", Target: "erp.delete_order"},
			Decisions: []approval.Decision{{Name: "bob", Verdict: approval.Deny, Comment: "no"}}},
	}
	mux := http.NewServeMux()
	mcpedge.New(slog.New(slog.DiscardHandler), gw).WithApprovals(aps).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	for _, path := range []string{"/mcp", "/mcp/erp", "/mcp/nosuch"} {
		cs := connect(t, srv.URL+path, "clerk-key", nil)
		n := 0
		for _, tl := range listTools(t, cs) {
			if tl.Name == mcpedge.ApprovalStatusTool {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s lists %s %d times, want once", path, mcpedge.ApprovalStatusTool, n)
		}
		for id, want := range map[string]string{"ap1": "", "ap2": "approval_not_found", "ap3": "approval_not_found"} {
			got := callTool(t, cs, &mcp.CallToolParams{Name: mcpedge.ApprovalStatusTool, Arguments: map[string]any{"approval_id": id}})
			code := ""
			if got.IsError {
				b, _ := json.Marshal(got.Meta[mcpedge.MetaProblem])
				var p mcpedge.Problem
				_ = json.Unmarshal(b, &p)
				code = p.Code
			}
			if code != want {
				t.Errorf("%s: status of %s = %v %q, want %q", path, id, got.Content, code, want)
			}
		}
	}
	// A wait that ends without a decision answers the state as it is.
	cs := connect(t, srv.URL+"/mcp", "auditor-key", nil)
	got := callTool(t, cs, &mcp.CallToolParams{Name: mcpedge.ApprovalStatusTool, Arguments: map[string]any{"approval_id": "ap3", "wait": 1}})
	if got.IsError {
		t.Fatalf("auditor's own denied approval = %v", got.Content)
	}
	if s := got.Structured.(map[string]any); s["state"] != "denied" {
		t.Fatalf("state = %v, want denied", s["state"])
	}
	if len(gw.actions) != 0 {
		t.Fatalf("the status tool reached the pipeline: %v", gw.actions)
	}
}
