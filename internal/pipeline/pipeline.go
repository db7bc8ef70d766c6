// Package pipeline is the one place where governance happens: every action
// an agent attempts, whichever edge it came through (REST, MCP, and later
// the OpenAI-compatible and A2A edges), passes the same ordered stages.
// Each stage is a small function of its own that may end the action with a
// *problem.Error carrying the stage's stable code.
//
// Stages today, in order: authenticate (agent key or corral token), kill
// switch, token scope, policy (OPA), validate arguments, idempotency,
// invoke (with an identity token for the upstream), inspect, audit. The
// stages later issues add have their places marked in Invoke: task context,
// rate and budget, approval, redaction, accounting and tracing.
package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/budget"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/idempotency"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/killswitch"
	"github.com/corral-dev/corral/internal/policy"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/redact"
	"github.com/corral-dev/corral/internal/telemetry"
	"github.com/corral-dev/corral/internal/tools"
)

// Action is one attempted call, as an edge hands it over.
type Action struct {
	// Credential is the bearer token the caller presented.
	Credential string
	// Kind is "tool" (models and agents come with later issues).
	Kind string
	// Target is the tool's full name.
	Target string
	// Arguments is the arguments object as the caller sent it.
	Arguments json.RawMessage
	// IdempotencyKey, when set, makes a retry return the recorded answer.
	IdempotencyKey string
	// Request is a model call's body as the caller sent it, set by an edge
	// along with IdempotencyKey: the key is bound to its canonical form
	// (RequestDigest), which says more than the chat request it becomes
	// (a Responses API call's). Unset, the key is bound to the request
	// the pipeline is handed.
	Request json.RawMessage
	// Edge names the entry point, for the audit: "rest" or "mcp".
	Edge      string
	RequestID string
	// RemoteAddr is the caller's address as the edge saw it (host:port; the
	// client a trusted proxy names, as ip:0, once forwarded.Proxies resolved it):
	// unauthenticated refusals reach the audit at a bounded rate per address.
	RemoteAddr string
	// Step is set by the orchestrator alone, on the calls a hosted agent's
	// loop makes: the task's journal already holds the step, and the task
	// its limits, so the task stage only notes it. Edges never set it.
	Step string
	// Resume, set by the orchestrator alone, repeats a step whose earlier
	// attempt may have left while its worker died: an unfinished claim on
	// its Idempotency-Key is taken over instead of waited for, and the same
	// key goes upstream again.
	Resume bool
}

// Outcome is what an allowed action produced.
type Outcome struct {
	AuditID string
	Tool    *tools.Tool
	Result  *tools.Result
	// Replayed is set when Result is the recorded answer to an earlier call
	// with the same Idempotency-Key.
	Replayed bool
}

// Keys verifies agent API keys.
type Keys interface {
	VerifyKey(secret string) (identity.Key, bool)
}

// Tokens verifies corral's tokens and mints the identity tokens sent to
// upstreams.
type Tokens interface {
	Issuer() string
	Verify(token, audience string) (*identity.Claims, error)
	IdentityToken(audience string, c identity.Claims, ttl time.Duration) (string, error)
}

// Policy holds the live policy engine.
type Policy interface {
	Engine() *policy.Engine
}

// Resources reads Agent resources.
type Resources interface {
	Get(kind, name string) (config.Resource, bool)
}

// KillSwitches says whether an agent is stopped.
type KillSwitches interface {
	Killed(agent string) (killswitch.Switch, bool)
}

// Catalog finds tools.
type Catalog interface {
	Lookup(name string) (*tools.Entry, bool)
	List() []*tools.Entry
}

// Idempotency records answers to calls made with an Idempotency-Key.
type Idempotency interface {
	Begin(ctx context.Context, key, digest string, lease time.Duration) (*idempotency.Record, *idempotency.Claim, error)
	Finish(ctx context.Context, c *idempotency.Claim, result json.RawMessage, auditID string) error
	Abandon(ctx context.Context, c *idempotency.Claim) error
}

// Auditor appends audit records.
type Auditor interface {
	Append(ctx context.Context, r *audit.Record) (string, error)
}

// Deps are the pipeline's collaborators.
type Deps struct {
	Keys        Keys
	Tokens      Tokens // nil: agent keys only
	Policy      Policy
	Resources   Resources
	Kill        KillSwitches
	Catalog     Catalog
	Idempotency Idempotency
	Audit       Auditor
	Models      Models       // nil: no model gateway
	Budgets     Budgets      // nil: no budgets
	Limits      Limits       // nil: no rate limits
	Metrics     *Metrics     // nil: not measured
	Tracer      trace.Tracer // nil: no spans
	// Refusals bounds the audit records of unauthenticated refusals per
	// source address; share it with other edges that refuse strangers.
	// nil: the pipeline's own.
	Refusals *audit.Refusals
	// Tasks holds durable tasks; nil: a token's task claim is only a label
	// (budgets with a task scope still match it).
	Tasks Tasks
	// Approvals parks the calls policy wants approved; nil: they are
	// refused with approval_required.
	Approvals Approvals
}

// Tasks is what the pipeline needs of durable tasks: whether a call made
// with a token bound to a task may act in it, and a note of each such call
// once it is done, for the task's usage and events.
type Tasks interface {
	// Admit fails with a *problem.Error when the task is unknown, has
	// ended, is not the caller's to act in, or is at one of its limits.
	Admit(ctx context.Context, c TaskCall) error
	// Done reports a finished call; it must not block for long.
	Done(ctx context.Context, c TaskCall, r *audit.Record)
}

// TaskCall is a call bound to a task.
type TaskCall struct {
	Task, Agent, AgentUID string
	// Kind is "tool" or "model"; Target the tool or model named.
	Kind, Target string
}

// Pipeline runs actions through the stages.
type Pipeline struct {
	Deps
	logger *slog.Logger
	now    func() time.Time

	agents  sync.Map                        // agent name -> *agentCache: the decoded spec per revision
	visible atomic.Pointer[visibilityCache] // Visible's answers under the live policy

	// auditDown is set while appending to the audit fails: calls are then
	// refused before they act, so that nothing happens unrecorded for long.
	// Refusals still try to append, and the first that succeeds clears it.
	auditDown atomic.Bool
	// auditFull is set with auditDown when the audit stream is full.
	auditFull atomic.Bool
	lost      lossLog

	// shadows are the copies of model calls sent to a route's shadow
	// targets: bounded, and waited for by Close.
	shadows       sync.WaitGroup
	shadowSlot    chan struct{}
	redactors     sync.Map     // redactorKey -> *redact.Redactor
	redactorCount atomic.Int64 // entries stored since the last Clear

	tracer trace.Tracer
	masker *redact.Redactor // the built-in detectors, for captured content
}

// New returns a pipeline over deps.
func New(logger *slog.Logger, deps Deps) *Pipeline {
	p := &Pipeline{Deps: deps, logger: logger, now: time.Now, shadowSlot: make(chan struct{}, maxShadows), tracer: deps.Tracer}
	if p.Refusals == nil {
		p.Refusals = &audit.Refusals{}
	}
	if p.tracer == nil {
		p.tracer = noop.NewTracerProvider().Tracer("")
	}
	var err error
	if p.masker, err = redact.New(nil); err != nil {
		panic("pipeline: the built-in detectors do not compile: " + err.Error()) // a bug, found by every test
	}
	return p
}

// Close waits for the shadow calls still running.
func (p *Pipeline) Close() { p.shadows.Wait() }

// Invoke runs one action through every stage. It returns the outcome, or a
// *problem.Error saying which stage refused it and why. Every action,
// allowed or refused, leaves an audit record.
func (p *Pipeline) Invoke(ctx context.Context, a Action) (out *Outcome, err error) {
	start := p.now()
	ctx, span := p.startAction(ctx, telemetry.OpExecuteTool, a.Target, a)
	rec := &audit.Record{
		Time: start.UTC(), Kind: "tool", Target: truncate(a.Target, 256), Edge: a.Edge,
		RequestID: a.RequestID, IdempotencyKey: a.IdempotencyKey, Remote: a.RemoteAddr,
	}
	defer func() {
		out, err = p.finish(ctx, rec, start, out, err)
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
	agent, err := p.agent(caller)
	if err != nil {
		return nil, err
	}
	entry, err := p.lookup(a.Target)
	if err != nil {
		return nil, err
	}
	rec.Source = entry.Tool.Source
	if err := inScope(caller, "tool", entry.Tool.Name); err != nil {
		return nil, err
	}
	value, err := parseArguments(a.Arguments)
	if err != nil {
		return nil, err
	}
	if err := checkIdempotencyKey(a.IdempotencyKey); err != nil {
		return nil, err
	}
	decision, err := p.decide(ctx, rec, p.input(caller, agent, entry, value))
	parked := p.parked(err)
	if err != nil && !parked {
		return nil, err
	}
	_, vspan := p.stage(ctx, telemetry.StageValidate)
	args, digest, err := validate(entry, value)
	p.endStage(vspan, err)
	if err != nil {
		return nil, err
	}
	capture := agent.spec.CaptureContent || entry.Spec != nil && entry.Spec.CaptureContent
	p.capture(span, capture, telemetry.AttrGenAIToolCallArguments, []byte(args))
	rec.ArgsDigest = digest
	if entry.Spec != nil && entry.Spec.AuditArguments {
		p.keepArguments(rec, args)
	}
	if parked { // approval gate: park the call, or run it once approved
		id, gerr := p.approvalGate(ctx, rec, caller, a, entry, decision, args, digest)
		if gerr != nil {
			return nil, gerr
		}
		defer func() { p.finishApproval(ctx, id, rec, out, err) }() // out and err: Invoke's results
	}
	// redact egress: later issues, here.
	if err := p.auditAvailable(); err != nil {
		return nil, err
	}
	ident, err := p.identityToken(caller, entry)
	if err != nil {
		return nil, problem.Wrap(http.StatusInternalServerError, problem.Internal, "corral cannot sign the identity token for the upstream", err)
	}
	// A replay is answered before the rate limits and budgets, as a model
	// call's is: it sends nothing, so a budget the first call spent does
	// not refuse it.
	claim, replay, err := p.beginTool(ctx, caller, entry, a.IdempotencyKey, digest, a.Resume)
	if err != nil || replay != nil {
		return replay, err
	}
	done, err := p.admitTool(ctx, caller, rec, entry)
	if err != nil {
		p.abandon(ctx, claim)
		return nil, err
	}
	defer func() { done(out) }()
	res, err := p.reserveTool(ctx, caller, rec)
	if err != nil {
		p.abandon(ctx, claim)
		return nil, err
	}
	call := tools.Call{Tool: &entry.Tool, Arguments: args, Value: value, IdempotencyKey: a.IdempotencyKey, Identity: ident}
	out, err = p.invokeClaimed(ctx, rec, caller, entry, call, claim)
	if out != nil && out.Result != nil {
		p.capture(span, capture, telemetry.AttrGenAIToolCallResult, out.Result)
	}
	// A call that never left, or a replayed answer, costs nothing.
	var pe *problem.Error
	if (err != nil && (notSent(err) || errors.As(err, &pe) && refusal(pe.Code))) || (out != nil && out.Replayed) {
		err2 := res.Release(context.WithoutCancel(ctx))
		if err2 != nil {
			p.logger.ErrorContext(ctx, "releasing a budget reservation; the call stays counted", "err", err2)
		}
	} else if err2 := res.Settle(context.WithoutCancel(ctx), budget.Usage{Calls: 1}); err2 != nil {
		p.logger.ErrorContext(ctx, "settling budgets", "err", err2)
	}
	return out, err
}

// reserveTool counts a tool call on the budgets with a calls limit that
// cover it, so one budget caps a runaway agent whatever it spends on.
func (p *Pipeline) reserveTool(ctx context.Context, c Caller, rec *audit.Record) (*budget.Reservation, error) {
	if p.Budgets == nil {
		return nil, nil
	}
	s := budget.Subject{Kind: "tool", Agent: c.Agent, Task: rec.Task}
	if c.Principal != nil {
		s.Principal = c.Principal.Subject
	}
	t0 := p.now()
	res, err := p.Budgets.Reserve(ctx, s, budget.Usage{Calls: 1})
	if err != nil {
		p.stageDone(ctx, telemetry.StageBudget, t0, telemetry.AttrBudgetExceeded.Bool(true))
		return nil, budgetProblem(err)
	}
	if res != nil {
		p.stageDone(ctx, telemetry.StageBudget, t0)
	}
	return res, nil
}

// auditAvailable refuses an action while the audit cannot be written:
// nothing happens unrecorded for long.
func (p *Pipeline) auditAvailable() error {
	if !p.auditDown.Load() {
		return nil
	}
	err := audit.ErrUnavailable
	if p.auditFull.Load() {
		err = audit.ErrFull
	}
	return p.auditProblem(err, "the audit log cannot be written; corral acts on nothing it cannot record")
}

// auditProbeTimeout bounds the append of a record while the audit is down.
const auditProbeTimeout = time.Second

// finish completes the audit record and appends it. The audit append is
// synchronous: an answered action is never missing from the audit.
func (p *Pipeline) finish(ctx context.Context, rec *audit.Record, start time.Time, out *Outcome, err error) (*Outcome, error) {
	if err == nil {
		if out.Result != nil {
			rec.UpstreamStatus = out.Result.Status
			if out.Result.IsError {
				rec.Status = "error"
			}
		}
		rec.Replayed = out.Replayed
	}
	id, err := p.finishRecord(ctx, rec, start, err)
	if err != nil {
		return nil, err
	}
	out.AuditID = id
	return out, nil
}

// finishRecord completes any action's audit record and appends it; it
// returns the record's id and err, made a *problem.Error naming the record.
// A Status already set on success ("error": the upstream answered with an
// error) is kept.
func (p *Pipeline) finishRecord(ctx context.Context, rec *audit.Record, start time.Time, err error) (string, error) {
	rec.DurationMS = float64(p.now().Sub(start).Microseconds()) / 1000
	var pe *problem.Error
	switch {
	case err == nil:
		rec.Decision = "allowed"
		if rec.Status == "" {
			rec.Status = "ok"
		}
	case errors.As(err, &pe) && refusal(pe.Code):
		rec.Decision, rec.Status, rec.Code, rec.Reason = "denied", "refused", pe.Code, pe.Detail
		if v, ok := pe.Errors.([]tools.Violation); ok {
			// The messages may quote argument values, and the pointers are
			// the caller's keys: the audit keeps such values only where the
			// tool source asks for them.
			rec.Reason = "the arguments break the input schema at " + p.maskedPointers(v)
		}
	default:
		if !errors.As(err, &pe) {
			pe = problem.Wrap(http.StatusInternalServerError, problem.Internal, "the call failed inside corral", err)
			err = pe
		}
		rec.Decision, rec.Status, rec.Code, rec.Reason = "allowed", "error", pe.Code, pe.Detail
	}
	if rec.Code == problem.Unauthenticated {
		// A credential that verified but whose agent is gone (deleted, or
		// deleted and created again) is refused like any other: bounded
		// per address, and not filed under the live agent of that name.
		rec.ClaimedAgent, rec.Agent = rec.Agent, ""
	}
	p.Metrics.observe(rec)
	p.taskDone(ctx, rec)
	if rec.Code == problem.Unauthenticated {
		store, n := p.Refusals.Admit(rec.Remote, p.now())
		if !store {
			// Counted, and stood for by the next record from this address.
			return "", err
		}
		if n > 1 {
			rec.Sampled = n
		}
	}
	_, aspan := p.stage(ctx, telemetry.StageAudit)
	actx := context.WithoutCancel(ctx)
	if p.auditDown.Load() {
		// While the audit is down, a record only probes whether it is back:
		// answers must not wait the whole append deadline each.
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(actx, auditProbeTimeout)
		defer cancel()
	}
	id, aerr := p.Audit.Append(actx, rec)
	p.endStage(aspan, aerr)
	if aerr != nil {
		// The action has happened (or was refused). An answer never claims
		// success without its record: the caller gets audit_unavailable,
		// and the audit id of the call's intent, whose outcome the audit
		// shows as unknown. Refusals keep their own answer. The next calls
		// are refused until the audit can be written again.
		p.auditFailed(ctx, rec, aerr)
		id = rec.Intent
		if pe == nil {
			pe = p.auditProblem(aerr, "the call was made, but the record of its outcome could not be stored")
			if id != "" {
				pe.Detail += "; the audit holds its intent " + id + ", outcome unknown"
			}
			err = pe
		}
	} else {
		p.auditDown.Store(false)
		if p.auditFull.Swap(false) {
			p.Metrics.auditStored()
		}
	}
	if pe != nil {
		pe.AuditID = id
	}
	return id, err
}

// refusal reports whether a code is a stage saying no (as opposed to a
// failure after the action was allowed).
func refusal(code string) bool {
	switch code {
	case problem.Unauthenticated, problem.Killed, problem.ToolNotFound, problem.PolicyDenied,
		problem.ApprovalRequired, problem.PolicyError, problem.InvalidArguments, problem.InvalidRequest, problem.IdempotencyConflict,
		problem.AuditUnavailable, problem.AuditFull,
		problem.ModelNotFound, problem.BudgetExceeded, problem.OutputLimitTooHigh,
		problem.TaskNotFound, problem.TaskEnded, problem.TaskLimit,
		problem.AgentCycle, problem.AgentDepth, problem.AgentNotFound,
		problem.RateLimited, problem.UpstreamThrottled,
		problem.ApprovalPending, problem.ApprovalDenied, problem.ApprovalExpired, problem.ApprovalUsed:
		return true
	}
	return false
}

// checkKill refuses an agent whose kill switch, or the global one, is on;
// for a delegated token, also one any earlier agent in its chain is under:
// stopping an agent stops the work it handed on.
func (p *Pipeline) checkKill(c Caller) error {
	agents := []string{c.Agent}
	if c.Token != nil {
		for a := c.Token.Act; a != nil; a = a.Act {
			if a.Subject != c.Agent {
				agents = append(agents, a.Subject)
			}
		}
	}
	for _, agent := range agents {
		sw, on := p.Kill.Killed(agent)
		if !on {
			continue
		}
		detail := "agent " + agent + " is stopped by a kill switch"
		switch {
		case sw.All:
			detail = "every agent is stopped by the global kill switch"
		case agent != c.Agent:
			detail = "agent " + agent + ", which handed this work to " + c.Agent + ", is stopped by a kill switch"
		}
		if sw.Reason != "" {
			detail += ": " + sw.Reason
		}
		return problem.New(http.StatusLocked, problem.Killed, detail)
	}
	return nil
}

type agentCache struct {
	rev    uint64
	spec   *config.AgentSpec
	labels map[string]string
}

// agent returns the caller's Agent spec, decoded once per revision.
func (p *Pipeline) agent(c Caller) (*agentCache, error) {
	res, ok := p.Resources.Get("Agent", c.Agent)
	if !ok {
		return nil, problem.New(http.StatusUnauthorized, problem.Unauthenticated, string(identity.ReasonUnknownAgent)+": the credential's agent "+c.Agent+" does not exist")
	}
	if res.Metadata.UID != c.AgentUID {
		return nil, problem.New(http.StatusUnauthorized, problem.Unauthenticated, string(identity.ReasonUnknownAgent)+": the credential was issued to an earlier agent "+c.Agent+", since deleted")
	}
	var ac *agentCache
	if v, ok := p.agents.Load(c.Agent); ok && v.(*agentCache).rev == res.Metadata.Revision {
		ac = v.(*agentCache)
	} else {
		var spec config.AgentSpec
		if err := json.Unmarshal(res.Spec, &spec); err != nil {
			return nil, problem.Wrap(http.StatusInternalServerError, problem.Internal, "the agent's resource is unreadable", err)
		}
		ac = &agentCache{rev: res.Metadata.Revision, spec: &spec, labels: res.Metadata.Labels}
		p.agents.Store(c.Agent, ac)
	}
	if c.KeyID != "" && ac.spec.KeysDisabled() {
		return nil, problem.New(http.StatusUnauthorized, problem.Unauthenticated, string(identity.ReasonKeysDisabled)+": agent "+c.Agent+" accepts no API keys (keys: disabled); get a token with its workload identity")
	}
	return ac, nil
}

// lookup finds the tool.
func (p *Pipeline) lookup(name string) (*tools.Entry, error) {
	e, ok := p.Catalog.Lookup(name)
	if !ok {
		return nil, NoSuchTool(name)
	}
	return e, nil
}

// Lister lists the tools a caller may see.
type Lister interface {
	Tools(ctx context.Context, c Caller) ([]*tools.Entry, error)
}

// Hide answers a policy refusal of a tool the caller may not see as if the
// tool did not exist: an agent must not learn from the answer what else is
// there. The audit keeps the real reason, and the answer its audit id. Any
// other error, and a refusal of a visible tool, is returned as it is.
func Hide(ctx context.Context, l Lister, c Caller, target string, err error) error {
	var pe *problem.Error
	if !errors.As(err, &pe) || pe.Code != problem.PolicyDenied {
		return err
	}
	visible, lerr := l.Tools(ctx, c)
	if lerr != nil || slices.ContainsFunc(visible, func(en *tools.Entry) bool { return en.Tool.Name == target }) {
		return err
	}
	hidden := NoSuchTool(target)
	hidden.AuditID = pe.AuditID
	return hidden
}

// NoSuchTool is the refusal of a name that is no tool. The MCP edge gives
// it for a tool the agent may not see too, so that an agent cannot tell a
// hidden tool from a missing one.
func NoSuchTool(name string) *problem.Error {
	return problem.New(http.StatusNotFound, problem.ToolNotFound, "no tool named "+name+" (corral get tools lists them)")
}

// parseArguments decodes the arguments once, for policy, validation and
// the canonical form.
func parseArguments(raw json.RawMessage) (any, error) {
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	value, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, problem.New(http.StatusUnprocessableEntity, problem.InvalidArguments, "the arguments are not valid JSON")
	}
	if err := checkValue(value, 0); err != nil {
		return nil, err
	}
	return value, nil
}

// validate checks the arguments against the tool's input schema and returns
// them in canonical form (the form the upstream gets) with their digest.
func validate(e *tools.Entry, value any) (json.RawMessage, string, error) {
	if v := e.Validator.ValidateValue(value); v != nil {
		return nil, "", &problem.Error{
			Status: http.StatusUnprocessableEntity, Code: problem.InvalidArguments,
			Detail: invalidDetail(e.Tool.Name, v), Errors: v,
		}
	}
	// encoding/json sorts map keys: the same arguments written differently
	// have the same canonical form and digest.
	canonical, err := json.Marshal(value)
	if err != nil {
		return nil, "", problem.New(http.StatusUnprocessableEntity, problem.InvalidArguments, "the arguments cannot be encoded")
	}
	sum := sha256.Sum256(canonical)
	return canonical, "sha256:" + hex.EncodeToString(sum[:]), nil
}

func invalidDetail(tool string, v []tools.Violation) string {
	d := "the arguments do not match " + tool + "'s input schema: "
	if v[0].Pointer != "" {
		d += v[0].Pointer + ": "
	}
	d += v[0].Message
	if len(v) > 1 {
		d += " (and more in errors)"
	}
	return d
}

// truncate bounds what a caller wrote before it is recorded: the target of
// an unauthenticated call is whatever the caller sent.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return s[:max]
}
