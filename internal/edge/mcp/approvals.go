package mcpedge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/approval"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/tools"
)

// ApprovalStatusTool is the tool corral itself offers on every MCP
// endpoint when approvals are on: an agent whose call was parked for a
// human's approval (a tool error with code approval_pending and
// _meta["dev.corral/problem"].approval_id) reads where the approval stands
// and, once the approved call ran, its result, with no knowledge of
// corral's REST API. It shadows a source tool of the same name.
const ApprovalStatusTool = "corral.approval_status"

// MaxApprovalWait bounds the wait argument of corral.approval_status, as
// MaxWait bounds the REST edge's Prefer: wait.
const MaxApprovalWait = 60

// Approvals reads the approvals parked calls wait on (approval.Store).
type Approvals interface {
	Get(id string) (approval.Approval, bool)
	Wait(ctx context.Context, id string) (approval.Approval, error)
}

// WithApprovals offers corral.approval_status, answered from a.
func (e *Edge) WithApprovals(a Approvals) *Edge {
	e.approvals = a
	b, err := json.Marshal(approvalStatusTool())
	if err != nil {
		panic(fmt.Sprintf("mcpedge: encoding %s: %v", ApprovalStatusTool, err)) // a constant; cannot fail
	}
	e.statusTool = b
	return e
}

func approvalStatusTool() *mcp.Tool {
	no := false
	return &mcp.Tool{
		Name:  ApprovalStatusTool,
		Title: "Approval status",
		Description: "Reads the state of an approval one of your calls awaits (the approval_id of an approval_pending answer): " +
			"pending, approved, denied, expired, executed or canceled, who decided and why, and once the approved call ran, its result. " +
			"An approved call runs when you make the same call again (same arguments); wait (seconds, at most 60) waits for a decision first.",
		InputSchema: json.RawMessage(`{"type":"object","properties":{` +
			`"approval_id":{"type":"string","description":"the approval_id of the approval_pending answer"},` +
			`"wait":{"type":"integer","minimum":0,"maximum":60,"description":"seconds to wait while it is pending"}},` +
			`"required":["approval_id"],"additionalProperties":false}`),
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, DestructiveHint: &no, IdempotentHint: true, OpenWorldHint: &no},
	}
}

// ApprovalStatus is the structuredContent of corral.approval_status.
type ApprovalStatus struct {
	ApprovalID string              `json:"approval_id"`
	State      approval.State      `json:"state"`
	Tool       string              `json:"tool"`
	Reasons    []string            `json:"reasons"`
	Expires    time.Time           `json:"expires"`
	Decisions  []StatusDecision    `json:"decisions"`
	Execution  *approval.Execution `json:"execution,omitempty"`
}

// StatusDecision is one person's decision as the agent sees it.
type StatusDecision struct {
	Name     string           `json:"name"`
	Decision approval.Verdict `json:"decision"`
	Comment  string           `json:"comment,omitempty"`
	At       time.Time        `json:"at"`
}

type statusArgs struct {
	ApprovalID string `json:"approval_id"`
	Wait       *int   `json:"wait"`
}

// approvalStatus answers corral.approval_status. An approval that is not
// the caller's own (another agent's, or another incarnation's of the same
// name) is answered as missing, as the REST API answers it.
func (e *Edge) approvalStatus(ctx context.Context, r *request, raw json.RawMessage) *callResult {
	var args statusArgs
	if len(raw) > 0 && string(raw) != "null" {
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&args); err != nil {
			return refusal(problem.New(http.StatusBadRequest, problem.InvalidArguments, "arguments: want {\"approval_id\": string, \"wait\": seconds}: "+err.Error()))
		}
	}
	switch {
	case args.ApprovalID == "":
		return refusal(problem.New(http.StatusBadRequest, problem.InvalidArguments, "approval_id: required: the approval_id of an approval_pending answer"))
	case args.Wait != nil && (*args.Wait < 0 || *args.Wait > MaxApprovalWait):
		return refusal(problem.New(http.StatusBadRequest, problem.InvalidArguments, fmt.Sprintf("wait: seconds from 0 to %d", MaxApprovalWait)))
	}
	ap, ok := e.ownApproval(r.caller, args.ApprovalID)
	if !ok {
		return refusal(problem.New(http.StatusNotFound, problem.ApprovalNotFound, fmt.Sprintf("approval_id: no such approval %.64q", args.ApprovalID)))
	}
	if ap.State == approval.Pending && args.Wait != nil && *args.Wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, time.Duration(*args.Wait)*time.Second)
		got, err := e.approvals.Wait(wctx, ap.ID)
		cancel()
		switch {
		case err == nil || errors.Is(err, context.DeadlineExceeded):
			ap = got
		case errors.Is(err, approval.ErrNotFound):
			return refusal(problem.New(http.StatusNotFound, problem.ApprovalNotFound, fmt.Sprintf("approval_id: no such approval %.64q", args.ApprovalID)))
		default:
			return refusal(ctx.Err())
		}
	}
	return statusResult(ap)
}

// ownApproval returns approval id if the caller's call parked it.
func (e *Edge) ownApproval(c pipeline.Caller, id string) (approval.Approval, bool) {
	if !approval.ValidID(id) {
		return approval.Approval{}, false
	}
	ap, ok := e.approvals.Get(id)
	if !ok || ap.Action.Agent != c.Agent || (ap.Action.AgentUID != "" && ap.Action.AgentUID != c.AgentUID) {
		return approval.Approval{}, false
	}
	return ap, true
}

// statusResult renders an approval for its agent: a sentence and, once the
// call ran, the call's own content; the details as structuredContent.
func statusResult(ap approval.Approval) *callResult {
	st := ApprovalStatus{ApprovalID: ap.ID, State: ap.State, Tool: ap.Action.Target, Reasons: ap.Reasons, Expires: ap.Expires,
		Decisions: make([]StatusDecision, 0, len(ap.Decisions)), Execution: ap.Execution}
	if st.Reasons == nil {
		st.Reasons = []string{}
	}
	for _, d := range ap.Decisions {
		st.Decisions = append(st.Decisions, StatusDecision{Name: d.Name, Decision: d.Verdict, Comment: d.Comment, At: d.At})
	}
	structured, _ := json.Marshal(st)
	r := &callResult{StructuredContent: structured, Content: []json.RawMessage{textBlock(statusSentence(ap))}}
	if ap.State == approval.Executed && ap.Execution != nil && len(ap.Execution.Result) > 0 {
		var res tools.Result
		if json.Unmarshal(ap.Execution.Result, &res) == nil {
			if len(res.Content) > 0 {
				r.Content = append(r.Content, res.Content...)
			} else if len(res.Structured) > 0 {
				r.Content = append(r.Content, textBlock(asText(res.Structured)))
			}
		}
	}
	return r
}

func statusSentence(ap approval.Approval) string {
	s := fmt.Sprintf("approval %s of %s is %s", ap.ID, ap.Action.Target, ap.State)
	switch ap.State {
	case approval.Pending:
		s += fmt.Sprintf(" (%d of %d approvals; expires %s)", approvals(ap), max(ap.Quorum, 1), ap.Expires.UTC().Format(time.RFC3339))
	case approval.Approved:
		s += ": make the same call again (same arguments) to run it"
	case approval.Denied:
		for _, d := range ap.Decisions {
			if d.Verdict == approval.Deny {
				s += " by " + d.Name
				if d.Comment != "" {
					s += ": " + d.Comment
				}
				break
			}
		}
	case approval.Executed:
		if ap.Execution != nil && ap.Execution.Status != "" {
			s += "; the call's outcome: " + ap.Execution.Status
			if ap.Execution.Code != "" {
				s += " (" + ap.Execution.Code + ")"
			}
		}
	}
	return s
}

func approvals(ap approval.Approval) int {
	n := 0
	for _, d := range ap.Decisions {
		if d.Verdict == approval.Approve {
			n++
		}
	}
	return n
}

// withStatusHint tells the agent of a parked call (or of one whose approval
// already ran) how to learn the outcome without leaving MCP.
func withStatusHint(res *callResult) *callResult {
	pr, ok := res.Meta[MetaProblem].(Problem)
	if !ok || pr.ApprovalID == "" || (pr.Code != problem.ApprovalPending && pr.Code != problem.ApprovalUsed) {
		return res
	}
	res.Content = append(res.Content, textBlock(fmt.Sprintf(`call the tool %s with {"approval_id": %q} to see where the approval stands and, once the call ran, its result`, ApprovalStatusTool, pr.ApprovalID)))
	return res
}
