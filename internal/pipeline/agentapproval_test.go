package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/approval"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/problem"
)

// fakeApprovals answers Gate as if the call's approval were in state.
type fakeApprovals struct {
	state    approval.State
	reqs     []approval.Request
	finished []approval.Execution
	released int
}

func (f *fakeApprovals) Gate(_ context.Context, req approval.Request) (approval.Approval, error) {
	f.reqs = append(f.reqs, req)
	ap := approval.Approval{ID: "ap1", State: f.state, Action: req.Action, Reasons: req.Reasons}
	switch f.state {
	case approval.Pending:
		return ap, approval.ErrPending
	case approval.Approved:
		return ap, nil
	case approval.Denied:
		ap.Decisions = []approval.Decision{{Name: "alice", Verdict: approval.Deny, Comment: "ask the analyst instead"}}
		return ap, approval.ErrDenied
	case approval.Expired:
		return ap, approval.ErrExpired
	}
	return ap, approval.ErrUsed
}

func (f *fakeApprovals) Finish(_ context.Context, _ string, ex approval.Execution) error {
	f.finished = append(f.finished, ex)
	return nil
}

func (f *fakeApprovals) Release(context.Context, string) error {
	f.released++
	return nil
}

const agentApprovalPolicy = `package corral.authz

require_approval contains "calls of the negotiator need ops" if {
	allow
	input.action.kind == "agent"
	input.action.target == "negotiator"
}
`

// TestAgentCallsWaitForApproval: an agent call policy wants approved is
// parked like a tool call (approval_pending with the approval's id, the
// callee's task not made), bound to the caller, its task and step, the
// callee, the arguments' digest and the Idempotency-Key, with the input
// shown masked; approved, it is made once and the approval records the
// task it made; denied or expired, it is refused and nothing is made; a
// Run the task store did not answer gives the approval back.
func TestAgentCallsWaitForApproval(t *testing.T) {
	for _, tt := range []struct {
		name     string
		state    approval.State
		runErr   error
		status   int
		code     string
		runs     int
		finished string // the execution's status recorded, "" for none
		released int
	}{
		{"pending", approval.Pending, nil, http.StatusAccepted, problem.ApprovalPending, 0, "", 0},
		{"approved", approval.Approved, nil, http.StatusOK, "", 1, "ok", 0},
		{"denied", approval.Denied, nil, http.StatusForbidden, problem.ApprovalDenied, 0, "", 0},
		{"expired", approval.Expired, nil, http.StatusForbidden, problem.ApprovalExpired, 0, "", 0},
		{"used", approval.Executed, nil, http.StatusConflict, problem.ApprovalUsed, 0, "", 0},
		{"approved, the task store down", approval.Approved, problem.New(http.StatusServiceUnavailable, problem.SubstrateUnavailable, "retry"), http.StatusServiceUnavailable, problem.SubstrateUnavailable, 1, "", 1},
		{"approved, the callee gone meanwhile", approval.Approved, problem.New(http.StatusNotFound, problem.ResourceNotFound, "no agent"), http.StatusNotFound, problem.ResourceNotFound, 1, "failed", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			aud := &fakeAudit{}
			approvals := &fakeApprovals{state: tt.state}
			p := New(slog.New(slog.DiscardHandler), Deps{
				Keys: fakeKeys{},
				Resources: fakeResources{
					"Agent/impact":     {Spec: json.RawMessage(`{"agents": ["negotiator"], "owners": ["bob"]}`)},
					"Agent/negotiator": {Metadata: config.Metadata{Revision: 7}, Spec: json.RawMessage(`{}`)},
				},
				Tokens:    fakeTokens{"t-task": {ClientID: "impact", Subject: "impact", ID: "j1", Task: "task_parent"}},
				Policy:    compilePolicy(t, agentApprovalPolicy),
				Kill:      fakeKill{},
				Catalog:   fakeCatalog{},
				Audit:     aud,
				Approvals: approvals,
			})
			runs := 0
			out, err := p.CallAgent(t.Context(), AgentCall{
				Action: Action{Credential: "t-task", Kind: "agent", Target: "negotiator", Step: "3", IdempotencyKey: "task_parent/step/3",
					Arguments: json.RawMessage(`{"input": "Offer ada@example.com 3% more"}`), Edge: "task"},
				Chain: []string{"impact"},
				Run: func(context.Context) (string, error) {
					runs++
					return "task_child", tt.runErr
				},
			})
			status, code := http.StatusOK, ""
			var pe *problem.Error
			if errors.As(err, &pe) {
				status, code = pe.Status, pe.Code
			} else if err != nil {
				t.Fatalf("CallAgent: %v, want a *problem.Error", err)
			}
			if status != tt.status || code != tt.code {
				t.Errorf("CallAgent = %d %s, want %d %s", status, code, tt.status, tt.code)
			}
			if runs != tt.runs {
				t.Errorf("Run made the callee's task %d times, want %d", runs, tt.runs)
			}
			if tt.code != "" && tt.runs == 0 && pe.ApprovalID != "ap1" {
				t.Errorf("the refusal names approval %q, want ap1", pe.ApprovalID)
			}
			if len(approvals.reqs) != 1 {
				t.Fatalf("Gate called %d times, want 1", len(approvals.reqs))
			}
			act := approvals.reqs[0].Action
			if act.Kind != "agent" || act.Target != "negotiator" || act.Agent != "impact" || act.Task != "task_parent" || act.Step != "3" ||
				act.IdempotencyKey != "task_parent/step/3" || act.Revision != "7" || !strings.HasPrefix(act.ArgsDigest, "sha256:") ||
				len(act.Owners) != 1 || act.Owners[0] != "bob" {
				t.Errorf("the approval's action = %+v", act)
			}
			if shown := string(act.Arguments); strings.Contains(shown, "ada@example.com") || !strings.Contains(shown, "3% more") {
				t.Errorf("the approval shows the arguments as %s, want the e-mail address masked", shown)
			}
			if len(aud.records) != 1 || aud.records[0].Kind != "agent" || aud.records[0].Code != tt.code {
				t.Fatalf("audit records = %+v, want one of kind agent with code %q", aud.records, tt.code)
			}
			rec := aud.records[0]
			switch {
			case tt.finished == "" && len(approvals.finished) != 0:
				t.Errorf("executions recorded: %+v, want none", approvals.finished)
			case tt.finished != "" && (len(approvals.finished) != 1 || approvals.finished[0].Status != tt.finished):
				t.Errorf("executions recorded: %+v, want one %s", approvals.finished, tt.finished)
			case tt.finished == "ok":
				if ex := approvals.finished[0]; string(ex.Result) != `{"task":"task_child"}` || ex.AuditID != rec.ID {
					t.Errorf("execution = %+v, want the task made and the call's audit record %s", ex, rec.ID)
				}
				if out == nil || out.Task != "task_child" {
					t.Errorf("CallAgent = %+v, want task_child", out)
				}
			}
			if approvals.released != tt.released {
				t.Errorf("approval released %d times, want %d", approvals.released, tt.released)
			}
		})
	}
}

// TestAgentCallBindingIgnoresSpelling: the same arguments written another
// way are the same call, bound to the same approval.
func TestAgentCallBindingIgnoresSpelling(t *testing.T) {
	approvals := &fakeApprovals{state: approval.Pending}
	p := New(slog.New(slog.DiscardHandler), Deps{
		Keys: fakeKeys{"corral_ak_impact": "impact"},
		Resources: fakeResources{
			"Agent/impact":     {Spec: json.RawMessage(`{"agents": ["negotiator"]}`)},
			"Agent/negotiator": {Spec: json.RawMessage(`{}`)},
		},
		Tokens: fakeTokens{}, Policy: compilePolicy(t, agentApprovalPolicy), Kill: fakeKill{}, Catalog: fakeCatalog{},
		Audit: &fakeAudit{}, Approvals: approvals,
	})
	for _, args := range []string{`{"input": "go", "x": {"b": 1, "a": 2}}`, `{"x":{"a":2,"b":1},"input":"go"}`} {
		_, err := p.CallAgent(t.Context(), AgentCall{
			Action: Action{Credential: "corral_ak_impact", Kind: "agent", Target: "negotiator", Arguments: json.RawMessage(args)},
			Run:    func(context.Context) (string, error) { t.Fatal("Run of a pending call"); return "", nil },
		})
		if pe := (*problem.Error)(nil); !errors.As(err, &pe) || pe.Code != problem.ApprovalPending {
			t.Fatalf("CallAgent(%s) = %v, want approval_pending", args, err)
		}
	}
	if a, b := approvals.reqs[0].Action.Binding(), approvals.reqs[1].Action.Binding(); a != b {
		t.Errorf("bindings %s and %s of the same arguments written differently, want equal", a, b)
	}
}
