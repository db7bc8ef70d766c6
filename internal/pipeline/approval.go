package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"github.com/corral-dev/corral/internal/llm"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/corral-dev/corral/internal/approval"
	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/policy"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/redact"
	"github.com/corral-dev/corral/internal/telemetry"
	"github.com/corral-dev/corral/internal/tools"
)

// Approvals parks the calls policy wants a human to approve
// (approval.Store).
type Approvals interface {
	Gate(ctx context.Context, req approval.Request) (approval.Approval, error)
	Finish(ctx context.Context, id string, ex approval.Execution) error
	Release(ctx context.Context, id string) error
}

// maxDisplayArguments bounds the arguments an approval shows.
const maxDisplayArguments = 16 << 10

// parked reports whether err is policy asking for approval and the
// pipeline can park the call instead of refusing it.
func (p *Pipeline) parked(err error) bool {
	var pe *problem.Error
	return p.Approvals != nil && errors.As(err, &pe) && pe.Code == problem.ApprovalRequired
}

// approvalGate finds or creates the approval of a call policy wants
// approved: it returns the approval's id when the call was approved and
// may run now (once; report its outcome with finishApproval), else the
// refusal the caller sees: approval_pending (202, with the id), denied,
// expired or already used.
func (p *Pipeline) approvalGate(ctx context.Context, rec *audit.Record, c Caller, a Action, e *tools.Entry, d policy.Decision, args json.RawMessage, digest string) (string, error) {
	ctx, span := p.stage(ctx, telemetry.StageApproval)
	id, err := p.gateOnce(ctx, rec, c, a, e, d, args, digest)
	p.endStage(span, err)
	return id, err
}

func (p *Pipeline) gateOnce(ctx context.Context, rec *audit.Record, c Caller, a Action, e *tools.Entry, d policy.Decision, args json.RawMessage, digest string) (string, error) {
	rules, err := approval.ParseRules(d.Obligations)
	if err != nil {
		return "", problem.Wrap(http.StatusForbidden, problem.PolicyError, "policy's approval obligations are invalid, so the call is denied: "+err.Error(), err)
	}
	act := approval.Action{
		Agent: c.Agent, AgentUID: c.AgentUID, Task: rec.Task, Step: a.Step, Kind: "tool",
		Target: e.Tool.Name, Source: e.Tool.Source, ArgsDigest: digest,
		Arguments: p.displayArguments(args), IdempotencyKey: a.IdempotencyKey,
	}
	if c.Principal != nil {
		act.Principal, act.PrincipalIssuer = c.Principal.Subject, c.Principal.Issuer
	}
	act.Owners = p.owners(c)
	if res, ok := p.Resources.Get("ToolSource", e.Tool.Source); ok {
		act.Revision = strconv.FormatUint(res.Metadata.Revision, 10)
	}
	ap, err := p.Approvals.Gate(ctx, approval.Request{
		Action: act, Requester: "agent:" + c.Agent, Reasons: slices.Clone(d.Reasons), PolicyRevision: d.Revision,
		Rules: rules, RequestID: a.RequestID, Resume: a.Resume,
	})
	if err == nil {
		return ap.ID, nil
	}
	return "", approvalProblem(e.Tool.Name, ap, err)
}

// approvalProblem is the answer to a call whose approval does not let it
// run now.
func approvalProblem(target string, ap approval.Approval, err error) error {
	var pe *problem.Error
	switch {
	case errors.Is(err, approval.ErrPending):
		pe = problem.New(http.StatusAccepted, problem.ApprovalPending,
			target+" awaits a human's approval ("+strings.Join(ap.Reasons, "; ")+"); once approved, the same call (same arguments, Idempotency-Key and task) runs it; GET /v1/approvals/"+ap.ID+" shows where it stands")
	case errors.Is(err, approval.ErrDenied):
		pe = problem.New(http.StatusForbidden, problem.ApprovalDenied, target+": approval "+ap.ID+" was denied"+denial(ap))
	case errors.Is(err, approval.ErrExpired):
		pe = problem.New(http.StatusForbidden, problem.ApprovalExpired, target+": approval "+ap.ID+" expired before enough people approved it")
	case errors.Is(err, approval.ErrUsed):
		pe = problem.New(http.StatusConflict, problem.ApprovalUsed, target+": approval "+ap.ID+" was executed already; an approval runs its call once (GET /v1/approvals/"+ap.ID+" shows the result)")
	default:
		return problem.Wrap(http.StatusServiceUnavailable, problem.SubstrateUnavailable, "approvals cannot be read or written now; retry", err)
	}
	pe.ApprovalID = ap.ID
	return pe
}

// denial quotes who denied and why.
func denial(ap approval.Approval) string {
	for _, d := range ap.Decisions {
		if d.Verdict == approval.Deny {
			s := " by " + d.Name
			if d.Comment != "" {
				s += ": " + truncate(d.Comment, 200)
			}
			return s
		}
	}
	return ""
}

// displayArguments are the arguments as approvers see them: what the
// built-in detectors find masked, bounded.
func (p *Pipeline) displayArguments(args json.RawMessage) json.RawMessage {
	masked := p.masker.NewSession(redact.Mask).Redact(string(args))
	if len(masked) <= maxDisplayArguments && json.Valid([]byte(masked)) {
		return json.RawMessage(masked)
	}
	b, _ := json.Marshal(truncate(masked, maxDisplayArguments) + " (cut)")
	return b
}

// modelApprovalGate parks a chat call policy wants approved, as
// approvalGate does a tool call: bound to the model and the digest of the
// whole request; approvers see its messages, masked.
func (p *Pipeline) modelApprovalGate(ctx context.Context, rec *audit.Record, c Caller, a Action, m *llm.Model, d policy.Decision, req *llm.ChatRequest) (string, error) {
	ctx, span := p.stage(ctx, telemetry.StageApproval)
	id, err := p.modelGateOnce(ctx, rec, c, a, m, d, req)
	p.endStage(span, err)
	return id, err
}

func (p *Pipeline) modelGateOnce(ctx context.Context, rec *audit.Record, c Caller, a Action, m *llm.Model, d policy.Decision, req *llm.ChatRequest) (string, error) {
	rules, err := approval.ParseRules(d.Obligations)
	if err != nil {
		return "", problem.Wrap(http.StatusForbidden, problem.PolicyError, "policy's approval obligations are invalid, so the call is denied: "+err.Error(), err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return "", problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "the request cannot be encoded", err)
	}
	sum := sha256.Sum256(body)
	shown, _ := json.Marshal(req.Messages)
	act := approval.Action{
		Agent: c.Agent, AgentUID: c.AgentUID, Task: rec.Task, Step: a.Step, Kind: "model", Target: m.Name, Source: m.Name,
		ArgsDigest: "sha256:" + hex.EncodeToString(sum[:]), Arguments: p.displayArguments(shown), IdempotencyKey: a.IdempotencyKey,
		Revision: strconv.FormatUint(m.Revision, 10),
	}
	if c.Principal != nil {
		act.Principal, act.PrincipalIssuer = c.Principal.Subject, c.Principal.Issuer
	}
	act.Owners = p.owners(c)
	ap, err := p.Approvals.Gate(ctx, approval.Request{
		Action: act, Requester: "agent:" + c.Agent, Reasons: slices.Clone(d.Reasons), PolicyRevision: d.Revision,
		Rules: rules, RequestID: a.RequestID, Resume: a.Resume,
	})
	if err == nil {
		return ap.ID, nil
	}
	return "", approvalProblem(m.Name, ap, err)
}

// owners are the caller's agent's owners, who may not approve its calls.
func (p *Pipeline) owners(c Caller) []string {
	ac, err := p.agent(c)
	if err != nil || ac.spec == nil {
		return nil
	}
	return slices.Clone(ac.spec.Owners)
}

// finishModelApproval records the outcome of an approved model call: the
// answer (a stream's, when it has ended, is not kept: its record is).
func (p *Pipeline) finishModelApproval(ctx context.Context, mc *modelCall, rec *audit.Record, out *ChatOutcome, err error) {
	var res *tools.Result
	if out != nil && out.Response != nil {
		if b, merr := json.Marshal(out.Response); merr == nil {
			res = &tools.Result{Structured: b, Size: len(b)}
		}
	}
	var o *Outcome
	if err == nil {
		o = &Outcome{Result: res}
	}
	p.finishApproval(ctx, mc.approval, rec, o, err)
}

// finishApproval records the outcome of an approved call on its approval.
func (p *Pipeline) finishApproval(ctx context.Context, id string, rec *audit.Record, out *Outcome, err error) {
	var (
		result  json.RawMessage
		isError bool
	)
	if err == nil && out != nil && out.Result != nil {
		isError = out.Result.IsError
		if b, merr := json.Marshal(out.Result); merr == nil {
			result = b
		}
	}
	p.recordExecution(ctx, id, rec, result, isError, err)
}

// recordExecution records on its approval the outcome of an approved
// call: its result (kept when small enough) or its failure. A call refused
// after the claim, or never sent, gives the approval back instead.
func (p *Pipeline) recordExecution(ctx context.Context, id string, rec *audit.Record, result json.RawMessage, isError bool, err error) {
	ex := approval.Execution{AuditID: rec.ID, RequestID: rec.RequestID, Status: "ok"}
	var pe *problem.Error
	if err != nil && (notSent(err) || errors.As(err, &pe) && refusal(pe.Code)) {
		// Refused after the claim (a rate limit, a budget) or never sent:
		// the approval is not used up, and the same call may run later.
		if rerr := p.Approvals.Release(context.WithoutCancel(ctx), id); rerr != nil {
			p.logger.ErrorContext(ctx, "releasing an approved call that did not run", "approval", id, "err", rerr)
		}
		return
	}
	switch {
	case err != nil && errors.As(err, &pe):
		ex.Status, ex.Code = "failed", pe.Code
	case err != nil:
		ex.Status, ex.Code = "failed", problem.Internal
	default:
		if isError {
			ex.Status = "error"
		}
		if len(result) <= approval.MaxResult {
			ex.Result = result
		}
	}
	if ferr := p.Approvals.Finish(context.WithoutCancel(ctx), id, ex); ferr != nil {
		p.logger.ErrorContext(ctx, "recording the outcome of an approved call", "approval", id, "err", ferr)
	}
}
