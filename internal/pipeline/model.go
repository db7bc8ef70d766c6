package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/budget"
	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/idempotency"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/policy"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/ratelimit"
	"github.com/corral-dev/corral/internal/redact"
	"github.com/corral-dev/corral/internal/telemetry"
)

// Models finds models and plans calls over routes.
type Models interface {
	Lookup(name string) (*llm.Model, bool)
	List() []*llm.Model
	Plan(m *llm.Model, pick func(n int) int) (llm.Plan, error)
	Candidates(m *llm.Model) []*llm.Model
}

// Budgets reserves a call's worst case on every budget that covers it.
type Budgets interface {
	Reserve(ctx context.Context, s budget.Subject, worst budget.Usage) (*budget.Reservation, error)
}

// ChatOutcome is an allowed model call's answer: Response for a plain call,
// Stream for a streamed one.
type ChatOutcome struct {
	// AuditID names the call's audit record; for a stream it is known only
	// once the stream has ended (ChatStream.AuditID).
	AuditID string
	// Target is the concrete model that answered.
	Target   string
	Response *llm.ChatResponse
	Stream   *ChatStream
	// Replayed is set when Response is the recorded answer to an earlier
	// call with the same Idempotency-Key: no provider was called, nothing
	// was charged.
	Replayed bool
	// Cost is what the call was charged, from the answering model's pricing.
	Cost float64
	// Started is when the call began and CallID names the audit record of
	// its intent: a replay's are those of the call it replays, so an edge
	// that builds an answer around Response (a Responses API object, its
	// ids and created_at) builds the same one again.
	Started time.Time
	CallID  string
}

// EmbedOutcome is an allowed embeddings call's answer.
type EmbedOutcome struct {
	AuditID  string
	Target   string
	Response *llm.EmbeddingResponse
	// Replayed is set when Response is the recorded answer to an earlier
	// call with the same Idempotency-Key, as for ChatOutcome.
	Replayed bool
}

// modelCall is what the stages before the provider learned about a call.
type modelCall struct {
	caller      Caller
	model       *llm.Model
	plan        llm.Plan
	obligations redactObligation
	reservation *budget.Reservation
	subject     budget.Subject
	// permit holds the call's place under the RateLimits, released when
	// the call settles; limits marks providers that answer 429.
	permit *ratelimit.Permit
	limits Limits
	// agentCapture: the agent asked for content in its traces.
	agentCapture, capture bool
	// prompt is the prompt's estimated tokens; outCap the output a target
	// may produce for this call (the agent's limit, clamped to the target's
	// maximum). Together they are a target's worst case.
	prompt int
	outCap func(*llm.Model) int
	// sent: a provider call may have reached its provider.
	sent bool
	// unreported is the worst case of the attempts that may have run at
	// their provider without saying what they used (timed out, cut, the
	// agent gone): it stays charged, on top of what the answer used.
	unreported budget.Usage
	// approval is the approval this call runs under, when policy wanted
	// one: its outcome is recorded on it (finishModelApproval).
	approval string
	// cands is every model the call may reach, for its worst case.
	cands []*llm.Model
	// claim is held on the call's Idempotency-Key while it runs; a stream
	// records its answer under it when it completes.
	claim *idempotency.Claim
}

// prepareAttempt redacts the request for one target, recording a redact
// span when something was redacted.
func (p *Pipeline) prepareAttempt(ctx context.Context, target *llm.Model, mc *modelCall, rec *audit.Record, req *llm.ChatRequest) (*llm.ChatRequest, *redact.Session, error) {
	t0 := p.now()
	sess, err := p.session(target, mc.obligations, rec.Model)
	if err != nil {
		return nil, nil, err
	}
	preq := redactRequest(req, sess)
	setOutputCap(preq, mc.outCap(target), target)
	noteRedactions(rec.Model, sess)
	if sess != nil {
		p.stageDone(ctx, telemetry.StageRedact, t0, redactCounts(sess)...)
	}
	return preq, sess, nil
}

// attemptSpan opens the invoke span of one target: the provider's HTTP
// calls are its children.
func (p *Pipeline) attemptSpan(ctx context.Context, target *llm.Model) (context.Context, stageSpan) {
	ctx, span := p.stage(ctx, telemetry.StageInvoke)
	if span.IsRecording() {
		span.SetAttributes(
			telemetry.AttrGenAIProviderName.String(target.Spec.Provider),
			telemetry.AttrGenAIRequestModel.String(target.ProviderModel()),
			telemetry.AttrGenAIResponseModel.String(target.Name),
		)
	}
	return ctx, span
}

// Chat runs a chat completion through every stage: authenticate, kill
// switch, scope, policy, idempotency (a replay ends there), rate limits,
// budget, then each planned target in turn with the prompt redacted for
// it, falling back on failures a retry elsewhere may cure, and the answer
// restored. A streamed call's audit record is written when its stream
// ends.
func (p *Pipeline) Chat(ctx context.Context, a Action, req *llm.ChatRequest) (out *ChatOutcome, err error) {
	start := p.now()
	ctx, span := p.startAction(ctx, telemetry.OpChat, req.Model, a)
	rec := &audit.Record{
		Time: start.UTC(), Kind: "model", Target: truncate(req.Model, 256), Edge: a.Edge, RequestID: a.RequestID, Remote: a.RemoteAddr,
		Model: &audit.ModelCall{Stream: req.Stream},
	}
	var mc *modelCall
	defer func() {
		if out != nil && !out.Replayed {
			out.Started, out.CallID = start, rec.Intent
		}
		if out != nil && out.Stream != nil {
			return // the stream finishes the record and the span
		}
		if mc != nil && err != nil {
			mc.settleFailed(ctx, p, rec)
		}
		var auditID string
		auditID, err = p.finishRecord(ctx, rec, start, err)
		if err != nil {
			out = nil // never a success without its record
		} else if out != nil {
			out.AuditID = auditID
		}
		endAction(span, rec, err)
	}()

	mc, err = p.prepareModel(ctx, rec, a, req.Model, chatArguments(req), llm.EstimatePrompt(req), req)
	if err != nil {
		return nil, err
	}
	mc.capture = mc.agentCapture
	if mc.approval != "" {
		defer func() { p.finishModelApproval(ctx, mc, rec, out, err) }()
	}
	if a.IdempotencyKey != "" {
		prev, err := p.beginModel(ctx, rec, mc, a, opChat, req)
		if err != nil {
			return nil, err
		}
		if prev != nil {
			out, err := replayChat(prev)
			if out != nil {
				rec.Source, rec.Model.Target = out.Target, out.Target
			}
			return out, err
		}
		ctx = withUpstreamKey(ctx, mc, a.IdempotencyKey)
		defer func() {
			switch {
			case out != nil && out.Stream != nil:
				// The stream records its answer if it completes (ChatStream.end).
			case out != nil:
				p.recordModel(ctx, mc, rec, recordChat(out.Target, out.Response, out.Cost, start))
			default:
				// A stream that did not start frees its key, as one cut does.
				p.releaseModel(ctx, mc, !req.Stream)
			}
		}()
	}
	if err := p.reserveModel(ctx, rec, mc); err != nil {
		return nil, err
	}
	if err := p.writeIntent(ctx, rec); err != nil {
		return nil, err
	}
	if req.Stream {
		return p.chatStream(ctx, span, rec, start, mc, req)
	}
	for i, target := range mc.plan.Attempts {
		preq, sess, err := p.prepareAttempt(ctx, target, mc, rec, req)
		if err != nil {
			return nil, err
		}
		ictx, ispan := p.attemptSpan(ctx, target)
		resp, err := target.Provider.Chat(ictx, preq)
		p.endStage(ispan, err)
		if err != nil {
			if err := mc.attemptFailed(ctx, rec, target, err, i == len(mc.plan.Attempts)-1); err != nil {
				return nil, err
			}
			continue
		}
		mc.sent = true
		// Captured as the provider saw them: redacted for it, then masked.
		p.capture(span, mc.capture, telemetry.AttrGenAIInputMessages, preq.Messages)
		p.capture(span, mc.capture, telemetry.AttrGenAIOutputMessages, resp.Choices)
		restoreResponse(resp, sess, target)
		resp.Model = mc.model.Name
		usage, estimated := responseUsage(resp, preq)
		p.settle(ctx, rec, mc, target, usage, estimated)
		if len(resp.Choices) > 0 {
			rec.Model.FinishReason = resp.Choices[0].FinishReason
		}
		p.shadow(ctx, mc, req, target.Name, resp)
		return &ChatOutcome{Target: target.Name, Response: resp, Cost: rec.Model.Cost}, nil
	}
	return nil, problem.New(http.StatusServiceUnavailable, problem.UpstreamUnavailable, "model "+mc.model.Name+" has no target to call")
}

// Embed runs an embeddings call through the same stages as Chat. Inputs are
// redacted for the target (placeholders stay: there is nothing to restore).
func (p *Pipeline) Embed(ctx context.Context, a Action, req *llm.EmbeddingRequest) (out *EmbedOutcome, err error) {
	start := p.now()
	ctx, span := p.startAction(ctx, telemetry.OpEmbeddings, req.Model, a)
	rec := &audit.Record{
		Time: start.UTC(), Kind: "model", Target: truncate(req.Model, 256), Edge: a.Edge, RequestID: a.RequestID, Remote: a.RemoteAddr,
		Model: &audit.ModelCall{}, Event: "embeddings",
	}
	var mc *modelCall
	defer func() {
		if mc != nil && err != nil {
			mc.settleFailed(ctx, p, rec)
		}
		var auditID string
		auditID, err = p.finishRecord(ctx, rec, start, err)
		if err != nil {
			out = nil // never a success without its record
		} else if out != nil {
			out.AuditID = auditID
		}
		endAction(span, rec, err)
	}()
	inputs, err := embeddingInputs(req.Input)
	if err != nil {
		return nil, err
	}
	tokens := 0
	for _, s := range inputs {
		tokens += llm.EstimateTokens(s)
	}
	mc, err = p.prepareModel(ctx, rec, a, req.Model, map[string]any{"embeddings": true}, tokens, nil)
	if err != nil {
		return nil, err
	}
	if a.IdempotencyKey != "" {
		prev, err := p.beginModel(ctx, rec, mc, a, opEmbeddings, req)
		if err != nil {
			return nil, err
		}
		if prev != nil {
			out, err := replayEmbedding(prev)
			if out != nil {
				rec.Source, rec.Model.Target = out.Target, out.Target
			}
			return out, err
		}
		ctx = withUpstreamKey(ctx, mc, a.IdempotencyKey)
		defer func() {
			if out == nil {
				p.releaseModel(ctx, mc, true)
				return
			}
			b, _ := json.Marshal(recordedEmbedding{Target: out.Target, Response: out.Response})
			p.recordModel(ctx, mc, rec, b)
		}()
	}
	if err := p.reserveModel(ctx, rec, mc); err != nil {
		return nil, err
	}
	if err := p.writeIntent(ctx, rec); err != nil {
		return nil, err
	}
	for i, target := range mc.plan.Attempts {
		t0 := p.now()
		sess, err := p.session(target, mc.obligations, rec.Model)
		if err != nil {
			return nil, err
		}
		preq := redactEmbedding(req, inputs, sess)
		noteRedactions(rec.Model, sess)
		if sess != nil {
			p.stageDone(ctx, telemetry.StageRedact, t0, redactCounts(sess)...)
		}
		ictx, ispan := p.attemptSpan(ctx, target)
		resp, err := target.Provider.Embed(ictx, &preq)
		p.endStage(ispan, err)
		if err != nil {
			if err := mc.attemptFailed(ctx, rec, target, err, i == len(mc.plan.Attempts)-1); err != nil {
				return nil, err
			}
			continue
		}
		mc.sent = true
		resp.Model = mc.model.Name
		usage, estimated := llm.Usage{PromptTokens: tokens, TotalTokens: tokens}, true
		if resp.Usage != nil {
			usage, estimated = *resp.Usage, false
		}
		p.settle(ctx, rec, mc, target, usage, estimated)
		return &EmbedOutcome{Target: target.Name, Response: resp}, nil
	}
	return nil, problem.New(http.StatusServiceUnavailable, problem.UpstreamUnavailable, "model "+mc.model.Name+" has no target to call")
}

// prepareModel runs the stages before a model call's Idempotency-Key is
// looked up: authenticate, kill switch, the model's existence, scope, the
// key's form, the output limit and policy (reserveModel runs the rate
// limits and budgets after it). prompt is the prompt's estimated tokens;
// req is nil for calls without output (embeddings).
func (p *Pipeline) prepareModel(ctx context.Context, rec *audit.Record, a Action, name string, args map[string]any,
	prompt int, req *llm.ChatRequest) (*modelCall, error) {
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
	if p.Models == nil {
		return nil, problem.New(http.StatusNotFound, problem.ModelNotFound, "this corral serves no models")
	}
	m, ok := p.Models.Lookup(name)
	if !ok {
		return nil, problem.New(http.StatusNotFound, problem.ModelNotFound, "no model named "+name+" (GET /openai/v1/models lists the ones this agent may use)")
	}
	if err := inScope(caller, "model", m.Name); err != nil {
		return nil, err
	}
	if err := checkIdempotencyKey(a.IdempotencyKey); err != nil {
		return nil, err
	}
	plan, err := p.Models.Plan(m, rand.IntN)
	if err != nil {
		return nil, problem.Wrap(http.StatusServiceUnavailable, problem.UpstreamUnavailable, err.Error(), err)
	}
	cands := p.Models.Candidates(m)
	if err := checkOutputLimit(req, m, cands); err != nil {
		return nil, err
	}
	// Shadows get the prompt too: policy must allow them like the targets.
	d, err := p.decide(ctx, rec, p.modelInput(caller, agent, m, withShadows(cands, plan.Shadows), args))
	var approvalID string
	if err != nil {
		// A chat call policy wants approved is parked like a tool call;
		// an embeddings call is refused (there is nothing to show a human).
		if !p.parked(err) || req == nil {
			return nil, err
		}
		if approvalID, err = p.modelApprovalGate(ctx, rec, caller, a, m, d, req); err != nil {
			return nil, err
		}
	}
	obl, err := redactObligations(d.Obligations)
	if err != nil {
		return nil, problem.Wrap(http.StatusForbidden, problem.PolicyError, "policy's redact obligation is invalid, so the call is denied: "+err.Error(), err)
	}
	mc := &modelCall{caller: caller, model: m, plan: plan, obligations: obl, prompt: prompt, outCap: outputCap(req), approval: approvalID}
	mc.subject = budget.Subject{Kind: "model", Agent: caller.Agent, Task: rec.Task, Models: modelNames(m, cands)}
	if caller.Principal != nil {
		mc.subject.Principal = caller.Principal.Subject
	}
	mc.agentCapture = agent.spec.CaptureContent
	mc.cands = cands
	return mc, nil
}

// reserveModel runs the stages that hold something for a model call about
// to be made: the rate limits' permit and the budgets' reservation of its
// worst case. A replayed answer skips them.
func (p *Pipeline) reserveModel(ctx context.Context, rec *audit.Record, mc *modelCall) error {
	if err := p.admitModel(ctx, rec, mc); err != nil {
		return err
	}
	if p.Budgets == nil {
		return nil
	}
	t0 := p.now()
	var err error
	mc.reservation, err = p.Budgets.Reserve(ctx, mc.subject, mc.worst(mc.cands))
	if err != nil {
		mc.releaseLimits(ctx)
		p.stageDone(ctx, telemetry.StageBudget, t0, telemetry.AttrBudgetExceeded.Bool(true))
		return budgetProblem(err)
	}
	if mc.reservation != nil {
		p.stageDone(ctx, telemetry.StageBudget, t0)
	}
	return nil
}

// modelInput is the policy input for a model call.
func (p *Pipeline) modelInput(c Caller, agent *agentCache, m *llm.Model, cands []*llm.Model, args map[string]any) *policy.Input {
	in := &policy.Input{
		Action: policy.Action{Kind: policy.KindModel, Target: m.Name, Arguments: args},
		Agent:  policy.Agent{Name: c.Agent, Labels: agent.labels, Tools: agent.spec.Tools, Models: agent.spec.Models},
		Model:  policyModel(m),
	}
	if m.IsRoute() {
		for _, t := range cands {
			in.Model.Targets = append(in.Model.Targets, *policyModel(t))
		}
	}
	p.noteInput(in, c)
	return in
}

// policyModel is what policy sees of one model: a route has no provider,
// region or redaction mode of its own (its targets do).
func policyModel(m *llm.Model) *policy.Model {
	pm := &policy.Model{Name: m.Name, Provider: m.Spec.Provider, Region: m.Spec.Region}
	if !m.IsRoute() {
		pm.Redact = m.Spec.RedactOrDefault()
	}
	return pm
}

// ModelList returns the models the caller may use, for GET /openai/v1/models:
// those in its token's scope that policy could allow.
func (p *Pipeline) ModelList(ctx context.Context, c Caller) ([]*llm.Model, error) {
	agent, err := p.agent(c)
	if err != nil {
		return nil, err
	}
	if p.Models == nil {
		return nil, nil
	}
	engine := p.Policy.Engine()
	var out []*llm.Model
	for _, m := range p.Models.List() {
		if inScope(c, "model", m.Name) != nil {
			continue
		}
		visible, err := engine.Visible(ctx, p.modelInput(c, agent, m, p.reachable(m), nil))
		if err != nil {
			p.Metrics.policyError()
			p.logger.WarnContext(ctx, "policy cannot say whether a model is visible; hiding it", "model", m.Name, "agent", c.Agent, "err", err)
			continue
		}
		if visible {
			out = append(out, m)
		}
	}
	return out, nil
}

// reachable is every model a call of m may reach, shadows included: what
// policy sees of a call, so that a listing hides what a call would be
// refused for (a shadow outside the agent's region, say).
func (p *Pipeline) reachable(m *llm.Model) []*llm.Model {
	cands := p.Models.Candidates(m)
	plan, err := p.Models.Plan(m, func(int) int { return 0 })
	if err != nil {
		return cands
	}
	return withShadows(cands, plan.Shadows)
}

// worst is the call's worst case for budgets: the estimated prompt plus the
// most output it allows on the model that allows most, priced at the
// dearest model it may reach. The sums saturate: no limit wraps to a
// negative.
func (mc *modelCall) worst(cands []*llm.Model) budget.Usage {
	u := budget.Usage{Calls: 1}
	for _, m := range cands {
		w := mc.worstOn(m)
		u.Tokens, u.Cost = max(u.Tokens, w.Tokens), max(u.Cost, w.Cost)
	}
	return u
}

// worstOn is the call's worst case on one target.
func (mc *modelCall) worstOn(m *llm.Model) budget.Usage {
	out := mc.outCap(m)
	return budget.Usage{Tokens: budget.SatAdd(int64(mc.prompt), int64(out)), Cost: cost(m, mc.prompt, out), Calls: 1}
}

// cost is what in and out tokens cost at m's prices.
func cost(m *llm.Model, in, out int) float64 {
	if m.Spec.Pricing == nil {
		return 0
	}
	return (float64(in)*m.Spec.Pricing.InputPerMTok + float64(out)*m.Spec.Pricing.OutputPerMTok) / 1e6
}

// settle charges what the call used and notes it in the audit record. When
// the provider reported no usage, the target's worst case stays charged:
// what was seen of the answer says nothing of hidden reasoning, nor of what
// the provider went on generating after corral stopped reading. Attempts
// that may have run before it (mc.unreported) are charged on top.
func (p *Pipeline) settle(ctx context.Context, rec *audit.Record, mc *modelCall, target *llm.Model, u llm.Usage, estimated bool) {
	mc.releaseLimits(ctx)
	if estimated {
		u = atLeastWorst(u, mc, target)
	}
	c := cost(target, u.PromptTokens, u.CompletionTokens)
	rec.Source = target.Name
	rec.Model.Target = target.Name
	rec.Model.PromptTokens, rec.Model.CompletionTokens, rec.Model.Estimated = u.PromptTokens, u.CompletionTokens, estimated
	rec.Model.Cost = c
	p.Metrics.modelUsage(rec.Agent, target.Name, u.PromptTokens, u.CompletionTokens, c)
	total := u.TotalTokens
	if total == 0 {
		total = u.PromptTokens + u.CompletionTokens
	}
	charge := budget.Usage{Tokens: budget.SatAdd(int64(total), mc.unreported.Tokens), Cost: c + mc.unreported.Cost, Calls: 1}
	if err := mc.reservation.Settle(context.WithoutCancel(ctx), charge); err != nil {
		p.logger.ErrorContext(ctx, "settling budgets; the worst case stays charged", "model", target.Name, "err", err)
	}
	mc.reservation = nil
}

// atLeastWorst is an estimated usage raised to the target's worst case.
func atLeastWorst(u llm.Usage, mc *modelCall, target *llm.Model) llm.Usage {
	u.PromptTokens = max(u.PromptTokens, mc.prompt)
	u.CompletionTokens = max(u.CompletionTokens, mc.outCap(target))
	u.TotalTokens = int(min(budget.SatAdd(int64(u.PromptTokens), int64(u.CompletionTokens)), math.MaxInt))
	return u
}

// settleFailed charges a call that failed. Attempts that may have run at
// their provider keep their worst case charged (a provider that got the
// request usually finishes and bills it, whether or not the agent waited);
// a call refused by every provider counts as a call only; a call that never
// reached a provider gives its whole reservation back.
func (mc *modelCall) settleFailed(ctx context.Context, p *Pipeline, rec *audit.Record) {
	mc.releaseLimits(ctx)
	if mc.reservation == nil {
		return
	}
	var err error
	switch {
	case mc.unreported != (budget.Usage{}):
		err = mc.reservation.Settle(context.WithoutCancel(ctx), budget.Usage{Tokens: mc.unreported.Tokens, Cost: mc.unreported.Cost, Calls: 1})
	case mc.sent:
		err = mc.reservation.Settle(context.WithoutCancel(ctx), budget.Usage{Calls: 1})
	default:
		err = mc.reservation.Release(context.WithoutCancel(ctx))
	}
	if err != nil {
		p.logger.ErrorContext(ctx, "settling budgets; the worst case stays charged", "model", rec.Target, "err", err)
	}
	mc.reservation = nil
}

// attemptFailed notes a target's failure in the audit record and the
// charges. It returns nil when the next target should be tried, or else the
// call's error: the agent went away (nothing more is tried for it), the
// failure is not one another target may cure, or this was the last target.
func (mc *modelCall) attemptFailed(ctx context.Context, rec *audit.Record, target *llm.Model, err error, last bool) error {
	what := attemptError(err)
	if llm.MayHaveRun(err) {
		mc.sent = true
		w := mc.worstOn(target)
		mc.unreported.Tokens = budget.SatAdd(mc.unreported.Tokens, w.Tokens)
		mc.unreported.Cost += w.Cost
		what += fmt.Sprintf(" (may have run: its worst case, %d tokens, stays charged)", w.Tokens)
	} else if pe := (*llm.ProviderError)(nil); errors.As(err, &pe) && pe.Status != 0 {
		mc.sent = true
	}
	rec.Model.Attempts = append(rec.Model.Attempts, target.Name+": "+what)
	mc.noteThrottle(ctx, target, err)
	if perr := callEnded(ctx, target.Name); perr != nil {
		return perr
	}
	if llm.Retryable(err) && !last {
		return nil
	}
	return modelProblem(target.Name, err)
}

// callEnded is the error of a call whose context ended before its answer:
// the agent went away (client_closed, audited as such and not as the
// provider's failure), or the edge's limit on the call's duration ran out.
// Nil while ctx is live.
func callEnded(ctx context.Context, target string) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return problem.Wrap(http.StatusGatewayTimeout, problem.UpstreamTimeout, "model "+target+" ran past the longest a call may take on this corral", ctx.Err())
	case ctx.Err() != nil:
		return problem.Wrap(statusClientClosed, problem.ClientClosed, "the agent went away before model "+target+" finished", ctx.Err())
	}
	return nil
}

// statusClientClosed is the status of a call whose agent went away: nobody
// reads it, but the audit and the metrics keep it apart from a failure
// (nginx's 499).
const statusClientClosed = 499

// withShadows is cands with the shadows not among them.
func withShadows(cands, shadows []*llm.Model) []*llm.Model {
	out := cands
	for _, s := range shadows {
		if !slices.Contains(out, s) {
			out = append(slices.Clip(out), s)
		}
	}
	return out
}

// responseUsage is the provider's usage, or an estimate when it sent none.
func responseUsage(resp *llm.ChatResponse, req *llm.ChatRequest) (llm.Usage, bool) {
	if resp.Usage != nil {
		return *resp.Usage, false
	}
	u := llm.Usage{PromptTokens: llm.EstimatePrompt(req)}
	for _, c := range resp.Choices {
		if c.Message.Content != nil {
			u.CompletionTokens += llm.EstimateTokens(c.Message.Content.Text)
			for _, part := range c.Message.Content.Parts {
				u.CompletionTokens += llm.EstimateTokens(part.Text)
			}
		}
		for _, tc := range c.Message.ToolCalls {
			u.CompletionTokens += llm.EstimateTokens(tc.Function.Name + tc.Function.Arguments)
		}
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u, true
}

// modelNames are the names a budget's model scope may match: the model
// asked for and every model the call may reach.
func modelNames(m *llm.Model, cands []*llm.Model) []string {
	out := []string{m.Name}
	for _, c := range cands {
		if c.Name != m.Name {
			out = append(out, c.Name)
		}
	}
	return out
}

// chatArguments is what policy sees of a chat request: not the prompt, but
// its shape and which kinds of personal data it carries.
func chatArguments(req *llm.ChatRequest) map[string]any {
	tools := make([]any, len(req.Tools))
	for i, t := range req.Tools {
		tools[i] = t.Function.Name
	}
	args := map[string]any{"stream": req.Stream, "tools": tools, "messages": len(req.Messages)}
	if req.MaxCompletionTokens != nil {
		args["max_tokens"] = *req.MaxCompletionTokens
	} else if req.MaxTokens != nil {
		args["max_tokens"] = *req.MaxTokens
	}
	return args
}

// attemptError says briefly why a target failed, for the audit.
func attemptError(err error) string {
	var pe *llm.ProviderError
	switch {
	case errors.As(err, &pe) && pe.Status != 0:
		return fmt.Sprintf("HTTP %d", pe.Status)
	case errors.Is(err, llm.ErrTimeout):
		return "time-out"
	case errors.Is(err, llm.ErrConnection):
		return "connection failed"
	case errors.Is(err, llm.ErrBroken):
		return "connection broke"
	case errors.Is(err, context.Canceled):
		return "the agent went away"
	}
	return "failed"
}

// modelProblem maps a provider's failure to the pipeline's codes.
func modelProblem(model string, err error) error {
	var pe *llm.ProviderError
	switch {
	case errors.Is(err, llm.ErrTimeout):
		return problem.Wrap(http.StatusGatewayTimeout, problem.UpstreamTimeout, "model "+model+" did not answer in time", err)
	case errors.Is(err, llm.ErrConnection):
		return problem.Wrap(http.StatusServiceUnavailable, problem.UpstreamUnavailable, "model "+model+" cannot be reached", err)
	case errors.Is(err, llm.ErrBroken):
		return problem.Wrap(http.StatusBadGateway, problem.UpstreamError, "the connection to model "+model+" broke", err)
	case errors.Is(err, llm.ErrUnsupported):
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "model "+model+": "+err.Error(), err)
	case errors.Is(err, llm.ErrBadRequest):
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "model "+model+": "+err.Error(), err)
	case errors.Is(err, llm.ErrInvalidAnswer):
		return problem.Wrap(http.StatusBadGateway, problem.UpstreamInvalid, "model "+model+"'s answer is invalid", err)
	case errors.As(err, &pe) && pe.Status == http.StatusTooManyRequests:
		e := problem.Wrap(http.StatusTooManyRequests, problem.UpstreamUnavailable, "model "+model+" is rate limited by its provider", err)
		e.RetryAfter = pe.RetryAfter
		return e
	case errors.As(err, &pe) && (pe.Status == http.StatusUnauthorized || pe.Status == http.StatusForbidden):
		// The provider refused corral's credentials: an operator's matter,
		// and its message may quote part of the key.
		return problem.Wrap(http.StatusBadGateway, problem.UpstreamError, "model "+model+" refused corral's credentials; an operator must fix the Model's auth", err)
	case errors.As(err, &pe) && pe.Status >= 400 && pe.Status < 500:
		// The provider refused the request itself (a context too long, a bad
		// parameter): its message helps the agent fix it.
		return problem.Wrap(http.StatusBadGateway, problem.UpstreamError, "model "+model+" refused the request: "+truncate(pe.Message, 512), err)
	}
	return problem.Wrap(http.StatusBadGateway, problem.UpstreamError, "model "+model+" failed", err)
}

// budgetProblem turns a budget's refusal into a 429 naming the budget.
func budgetProblem(err error) error {
	var ex *budget.Exceeded
	if !errors.As(err, &ex) {
		if bus.Unavailable(err) {
			return substrateProblem("budgets cannot be read now, so the call is refused; nothing was charged", err)
		}
		if errors.Is(err, budget.ErrContended) {
			e := problem.Wrap(http.StatusServiceUnavailable, problem.Overloaded, "too many calls at once on one budget; nothing was charged", err)
			e.RetryAfter = time.Second
			return e
		}
		return problem.Wrap(http.StatusServiceUnavailable, problem.Internal, "budgets are unavailable, so the call is refused", err)
	}
	e := problem.Wrap(http.StatusTooManyRequests, problem.BudgetExceeded, ex.Error(), err)
	if !ex.ResetAt.IsZero() {
		e.RetryAfter = time.Until(ex.ResetAt)
	}
	return e
}

// requestedOutput is the output limit the agent asked for, the larger of
// max_tokens and max_completion_tokens, with the field that set it; 0 when
// it set neither.
func requestedOutput(req *llm.ChatRequest) (int, string) {
	n, field := 0, ""
	if req == nil {
		return 0, ""
	}
	if req.MaxTokens != nil {
		n, field = *req.MaxTokens, "max_tokens"
	}
	if req.MaxCompletionTokens != nil && *req.MaxCompletionTokens >= n {
		n, field = *req.MaxCompletionTokens, "max_completion_tokens"
	}
	return n, field
}

// checkOutputLimit refuses an output limit above the most that any model
// the call may reach produces: such a limit would reserve far more than the
// call can spend, and hold a shared budget hostage while in flight.
func checkOutputLimit(req *llm.ChatRequest, m *llm.Model, cands []*llm.Model) error {
	n, field := requestedOutput(req)
	if n == 0 {
		return nil
	}
	most := 0
	for _, c := range cands {
		most = max(most, c.Spec.MaxOutputOrDefault())
	}
	if n <= most {
		return nil
	}
	e := problem.New(http.StatusUnprocessableEntity, problem.OutputLimitTooHigh,
		fmt.Sprintf("%s: %d is more than model %s produces (at most %d tokens); ask for at most %d", field, n, m.Name, most, most))
	e.Errors = []map[string]string{{"field": field, "message": fmt.Sprintf("at most %d", most)}}
	return e
}

// outputCap returns the output limit a target gets: the agent's, clamped to
// the target's maximum, or that maximum when the agent set none. Calls
// without output (req nil) get 0.
func outputCap(req *llm.ChatRequest) func(*llm.Model) int {
	if req == nil {
		return func(*llm.Model) int { return 0 }
	}
	n, _ := requestedOutput(req)
	return func(m *llm.Model) int {
		most := m.Spec.MaxOutputOrDefault()
		if n == 0 || n > most {
			return most
		}
		return n
	}
}

// setOutputCap puts one consistent output limit on the request a provider
// gets, even when the agent set none, so that the reservation bounds what
// the call can spend, in the field(s) the target's outputLimitField names.
// By default, for OpenAI's own APIs: in max_tokens when that is the only
// field the agent used, in max_completion_tokens otherwise (which OpenAI's
// reasoning models require); for any other OpenAI-compatible server in
// max_tokens, which they all read (Ollama knows no other).
func setOutputCap(req *llm.ChatRequest, n int, target *llm.Model) {
	field := ""
	if target != nil && target.Spec != nil {
		field = target.Spec.OutputLimitFieldOrDefault()
	}
	switch {
	case field == config.OutputLimitBoth:
		req.MaxTokens, req.MaxCompletionTokens = &n, &n
	case field == config.OutputLimitMaxTokens,
		field == "" && req.MaxTokens != nil && req.MaxCompletionTokens == nil:
		req.MaxTokens, req.MaxCompletionTokens = &n, nil
	default:
		req.MaxTokens, req.MaxCompletionTokens = nil, &n
	}
}
