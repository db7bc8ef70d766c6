package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"github.com/nats-io/nuid"

	"github.com/corral-dev/corral/internal/approval"
	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/policy"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/telemetry"
)

// AgentCall is an agent calling another agent (kind "agent"): a hosted
// agent's delegate or handoff, or an external agent starting a task of
// another agent through the API. The pipeline decides whether it may
// happen; the orchestrator does it (Run).
type AgentCall struct {
	// Action's Credential, Edge, Step, IdempotencyKey and RequestID are
	// used; Target is the callee's name; Arguments are recorded in the
	// audit only by digest, and given to policy.
	Action
	// Chain is the agents from the root task down to the caller,
	// inclusive: input.task.chain; its length less one is
	// input.task.depth.
	Chain []string
	// Check refuses the call before policy (cycles, depth:
	// orchestrator.CheckChain); nil checks nothing.
	Check func() error
	// Run makes the call (creates the callee's task) once everything
	// allowed it, and returns what the audit should name: the task made.
	Run func(ctx context.Context) (string, error)
}

// AgentOutcome is what an allowed agent call made.
type AgentOutcome struct {
	AuditID string
	// Task is the callee's task, as Run returned it.
	Task string
}

// CallAgent runs an agent-to-agent call through the stages tools and
// models pass: authentication, the task stage, kill switches (the
// caller's, its chain's and the callee's), the caller's spec, Check,
// policy and the audit. Every call, allowed or refused, leaves a record
// of kind agent.
func (p *Pipeline) CallAgent(ctx context.Context, call AgentCall) (out *AgentOutcome, err error) {
	a := call.Action
	start := p.now()
	ctx, span := p.startAction(ctx, telemetry.OpInvokeAgent, a.Target, a)
	rec := &audit.Record{
		Time: start.UTC(), Kind: policy.KindAgent, Target: truncate(a.Target, 256), Edge: a.Edge,
		RequestID: a.RequestID, IdempotencyKey: a.IdempotencyKey, Remote: a.RemoteAddr,
	}
	defer func() {
		id, ferr := p.finishRecord(ctx, rec, start, err)
		if ferr != nil {
			out, err = nil, ferr
		} else if out != nil {
			out.AuditID = id
		}
		endAction(span, rec, err)
	}()

	caller, err := p.Authenticate(a.Credential)
	if err != nil {
		return nil, err
	}
	noteCaller(rec, caller)
	rec.Step = a.Step
	if err := p.taskContext(ctx, rec, caller); err != nil {
		return nil, err
	}
	if err := p.checkKill(caller); err != nil {
		return nil, err
	}
	for _, above := range call.Chain {
		if sw, on := p.Kill.Killed(above); on && !sw.All && above != caller.Agent {
			return nil, problem.New(http.StatusLocked, problem.Killed, "agent "+above+", which handed this work to "+caller.Agent+", is stopped by a kill switch")
		}
	}
	agent, err := p.agent(caller)
	if err != nil {
		return nil, err
	}
	if _, ok := p.Resources.Get("Agent", a.Target); !ok {
		return nil, problem.New(http.StatusNotFound, problem.AgentNotFound, "no agent named "+truncate(a.Target, 64))
	}
	if sw, on := p.Kill.Killed(a.Target); on && !sw.All {
		return nil, problem.New(http.StatusLocked, problem.Killed, "agent "+a.Target+" is stopped by a kill switch")
	}
	if err := inScope(caller, "agent", a.Target); err != nil && caller.Scopes != nil && slices.ContainsFunc(caller.Scopes, isAgentScope) {
		return nil, err // a token that names agents bounds them; one that names none leaves them to policy
	}
	value, err := parseArguments(a.Arguments)
	if err != nil {
		return nil, err
	}
	if len(a.Arguments) > 0 {
		rec.ArgsDigest = digestOf(a.Arguments)
	}
	if call.Check != nil {
		if err := call.Check(); err != nil {
			return nil, err
		}
	}
	in := &policy.Input{
		Action: policy.Action{Kind: policy.KindAgent, Target: a.Target, Arguments: value},
		Agent: policy.Agent{Name: caller.Agent, Labels: agent.labels, Tools: agent.spec.Tools, Models: agent.spec.Models,
			Agents: agent.spec.Agents},
	}
	p.noteInput(in, caller)
	if in.Task == nil && rec.Task != "" {
		in.Task = &policy.Task{ID: rec.Task}
	}
	if in.Task != nil {
		in.Task.Chain = call.Chain
		in.Task.Depth = max(len(call.Chain)-1, 0)
	}
	decision, err := p.decide(ctx, rec, in)
	parked := p.parked(err)
	if err != nil && !parked {
		return nil, err
	}
	if parked { // approval gate: park the call, or make it once approved
		id, gerr := p.agentApprovalGate(ctx, rec, caller, a, decision, value)
		if gerr != nil {
			return nil, gerr
		}
		// The record's id is fixed now, so that the approval can name it.
		rec.ID = nuid.Next()
		defer func() { p.finishAgentApproval(ctx, id, rec, out, err) }() // out and err: CallAgent's results
	}
	if err := p.auditAvailable(); err != nil {
		return nil, err
	}
	task, err := call.Run(ctx)
	if err != nil {
		return nil, err
	}
	rec.Reason = "task " + task
	return &AgentOutcome{Task: task}, nil
}

// agentApprovalGate parks an agent call policy wants approved, as
// approvalGate does a tool call: bound to the caller, its task, the callee,
// the digest of the arguments and the Idempotency-Key (a hosted agent's
// step key); approvers see the arguments (the callee's input), masked.
func (p *Pipeline) agentApprovalGate(ctx context.Context, rec *audit.Record, c Caller, a Action, d policy.Decision, value any) (string, error) {
	ctx, span := p.stage(ctx, telemetry.StageApproval)
	id, err := p.agentGateOnce(ctx, rec, c, a, d, value)
	p.endStage(span, err)
	return id, err
}

func (p *Pipeline) agentGateOnce(ctx context.Context, rec *audit.Record, c Caller, a Action, d policy.Decision, value any) (string, error) {
	rules, err := approval.ParseRules(d.Obligations)
	if err != nil {
		return "", problem.Wrap(http.StatusForbidden, problem.PolicyError, "policy's approval obligations are invalid, so the call is denied: "+err.Error(), err)
	}
	canonical, err := json.Marshal(value)
	if err != nil {
		return "", problem.New(http.StatusUnprocessableEntity, problem.InvalidArguments, "the arguments cannot be encoded")
	}
	sum := sha256.Sum256(canonical)
	act := approval.Action{
		Agent: c.Agent, AgentUID: c.AgentUID, Task: rec.Task, Step: a.Step, Kind: policy.KindAgent, Target: a.Target,
		ArgsDigest: "sha256:" + hex.EncodeToString(sum[:]), Arguments: p.displayArguments(canonical), IdempotencyKey: a.IdempotencyKey,
	}
	if c.Principal != nil {
		act.Principal, act.PrincipalIssuer = c.Principal.Subject, c.Principal.Issuer
	}
	act.Owners = p.owners(c)
	if res, ok := p.Resources.Get("Agent", a.Target); ok {
		act.Revision = strconv.FormatUint(res.Metadata.Revision, 10)
	}
	ap, err := p.Approvals.Gate(ctx, approval.Request{
		Action: act, Requester: "agent:" + c.Agent, Reasons: slices.Clone(d.Reasons), PolicyRevision: d.Revision,
		Rules: rules, RequestID: a.RequestID, Resume: a.Resume,
	})
	if err == nil {
		return ap.ID, nil
	}
	return "", approvalProblem("calling agent "+a.Target, ap, err)
}

// finishAgentApproval records the outcome of an approved agent call on its
// approval: the task it made. A call whose Run failed in a way a repeat may
// cure (the task store did not answer) gives the approval back, like one
// refused after the claim: the callee's task is named after the call
// (a hosted agent's step, an Idempotency-Key), so a repeat that finds it
// made does not make a second.
func (p *Pipeline) finishAgentApproval(ctx context.Context, id string, rec *audit.Record, out *AgentOutcome, err error) {
	var pe *problem.Error
	if err != nil && (!errors.As(err, &pe) || pe.Status >= http.StatusInternalServerError) {
		if rerr := p.Approvals.Release(context.WithoutCancel(ctx), id); rerr != nil {
			p.logger.ErrorContext(ctx, "releasing an approved agent call that did not run", "approval", id, "err", rerr)
		}
		return
	}
	var result json.RawMessage
	if err == nil && out != nil {
		result, _ = json.Marshal(map[string]string{"task": out.Task})
	}
	p.recordExecution(ctx, id, rec, result, false, err)
}

func isAgentScope(s string) bool { return len(s) > 6 && s[:6] == "agent:" }

// digestOf is the digest of a call's arguments as the audit keeps it.
func digestOf(raw json.RawMessage) string {
	value, err := parseArguments(raw)
	if err != nil {
		return ""
	}
	canonical, err := json.Marshal(value)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(canonical)
	return "sha256:" + hex.EncodeToString(sum[:])
}
