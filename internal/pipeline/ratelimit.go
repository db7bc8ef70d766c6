package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/ratelimit"
	"github.com/corral-dev/corral/internal/telemetry"
	"github.com/corral-dev/corral/internal/tools"
)

// Limits paces calls under the RateLimit resources and remembers the
// backends that asked corral to wait (ratelimit.Limits).
type Limits interface {
	Admit(ctx context.Context, s ratelimit.Subject) (*ratelimit.Permit, error)
	Throttled(kind, name string) (time.Duration, bool)
	Throttle(ctx context.Context, kind, name string, d time.Duration) (time.Duration, error)
}

// admitTool is the rate stage of a tool call: it refuses a call to a tool
// source that is throttling corral, or one over a RateLimit covering it.
// The function it returns must be called with the call's outcome once the
// call has ended: it frees the call's in-flight slots and, when the
// upstream answered 429, marks the source throttled for its Retry-After.
func (p *Pipeline) admitTool(ctx context.Context, c Caller, rec *audit.Record, e *tools.Entry) (func(*Outcome), error) {
	if p.Limits == nil {
		return func(*Outcome) {}, nil
	}
	source := e.Tool.Source
	if left, ok := p.Limits.Throttled(ratelimit.ThrottleSource, source); ok {
		return nil, throttledProblem("tool source "+source+"'s upstream", left)
	}
	s := ratelimit.Subject{Kind: ratelimit.KindTool, Agent: c.Agent, Task: rec.Task, Source: source, Tool: e.Tool.Name}
	if c.Principal != nil {
		s.Principal = c.Principal.Subject
	}
	permit, err := p.admit(ctx, s)
	if err != nil {
		return nil, err
	}
	return func(out *Outcome) {
		permit.Release(ctx)
		if out == nil || out.Replayed || out.Result == nil || out.Result.Status != http.StatusTooManyRequests {
			return
		}
		d, err := p.Limits.Throttle(context.WithoutCancel(ctx), ratelimit.ThrottleSource, source, out.Result.RetryAfter)
		if err != nil {
			p.logger.WarnContext(ctx, "sharing a throttled upstream with the other replicas failed; this replica holds off alone", "source", source, "err", err)
		}
		rec.Reason = fmt.Sprintf("the upstream answered 429: %s is held off for %s", source, d)
	}, nil
}

// admitModel is the rate stage of a model call: targets whose provider is
// throttling corral are dropped from the plan (the call is refused when
// none is left), then the RateLimits covering the call must admit it. The
// permit is released when the call settles.
func (p *Pipeline) admitModel(ctx context.Context, rec *audit.Record, mc *modelCall) error {
	if p.Limits == nil {
		return nil
	}
	mc.limits = p.Limits
	var attempts []*llm.Model
	var soonest time.Duration
	for _, t := range mc.plan.Attempts {
		left, ok := p.Limits.Throttled(ratelimit.ThrottleModel, t.Name)
		if !ok {
			attempts = append(attempts, t)
			continue
		}
		rec.Model.Attempts = append(rec.Model.Attempts, fmt.Sprintf("%s: not called, its provider asked corral to wait %s more", t.Name, left.Round(time.Millisecond)))
		if soonest == 0 || left < soonest {
			soonest = left
		}
	}
	if len(attempts) == 0 && soonest > 0 {
		return throttledProblem("model "+mc.model.Name+"'s provider", soonest)
	}
	mc.plan.Attempts = attempts
	s := ratelimit.Subject{Kind: ratelimit.KindModel, Agent: mc.subject.Agent, Principal: mc.subject.Principal, Task: mc.subject.Task, Models: mc.subject.Models}
	permit, err := p.admit(ctx, s)
	mc.permit = permit
	return err
}

// admit asks the limits, timing the stage when a limit covered the call.
func (p *Pipeline) admit(ctx context.Context, s ratelimit.Subject) (*ratelimit.Permit, error) {
	t0 := p.now()
	permit, err := p.Limits.Admit(ctx, s)
	var ref *ratelimit.Refused
	switch {
	case errors.As(err, &ref):
		p.stageDone(ctx, telemetry.StageRate, t0, telemetry.AttrRateLimited.String(ref.Limit))
		e := problem.Wrap(http.StatusTooManyRequests, problem.RateLimited, ref.Error(), err)
		e.RetryAfter = max(ref.RetryAfter, time.Second)
		e.Errors = []map[string]string{{"limit": ref.Limit, "reason": ref.Reason}}
		return nil, e
	case err != nil && bus.Unavailable(err):
		return nil, substrateProblem("rate limits cannot be read now, so the call is refused", err)
	case errors.Is(err, ratelimit.ErrContended):
		e := problem.Wrap(http.StatusServiceUnavailable, problem.Overloaded, "too many calls at once on one rate limit", err)
		e.RetryAfter = time.Second
		return nil, e
	case err != nil:
		return nil, problem.Wrap(http.StatusServiceUnavailable, problem.Internal, "rate limits are unavailable, so the call is refused", err)
	case permit != nil:
		p.stageDone(ctx, telemetry.StageRate, t0)
	}
	return permit, nil
}

// releaseLimits frees the model call's in-flight slots; later calls are no-ops.
func (mc *modelCall) releaseLimits(ctx context.Context) {
	mc.permit.Release(ctx)
}

// noteThrottle marks a target whose provider answered 429 as throttled for
// its Retry-After, on every replica.
func (mc *modelCall) noteThrottle(ctx context.Context, target *llm.Model, err error) {
	var pe *llm.ProviderError
	if mc.limits == nil || !errors.As(err, &pe) || pe.Status != http.StatusTooManyRequests {
		return
	}
	// Best effort: the replica that saw the 429 holds off at once; the
	// others learn it through the bucket.
	_, _ = mc.limits.Throttle(context.WithoutCancel(ctx), ratelimit.ThrottleModel, target.Name, pe.RetryAfter)
}

// throttledProblem refuses a call to a backend that asked corral to wait.
func throttledProblem(what string, left time.Duration) *problem.Error {
	e := problem.New(http.StatusTooManyRequests, problem.UpstreamThrottled,
		fmt.Sprintf("%s answered 429 and asked corral to wait; corral does not call it for %s more", what, (left+time.Second-1).Truncate(time.Second)))
	e.RetryAfter = max(left, time.Second)
	return e
}
