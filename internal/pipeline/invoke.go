package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/nats-io/nuid"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/idempotency"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/tools"
	"github.com/corral-dev/corral/internal/upstream"
)

// invokeOnce calls the tool, at most once per Idempotency-Key: a key seen
// before with the same arguments replays the recorded answer.
func (p *Pipeline) invokeOnce(ctx context.Context, rec *audit.Record, c Caller, e *tools.Entry, args json.RawMessage, digest, key string) (*Outcome, error) {
	if key == "" {
		return p.invoke(ctx, rec, e, args, "")
	}
	if len(key) > idempotency.MaxKey {
		return nil, problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("Idempotency-Key is longer than %d characters", idempotency.MaxKey))
	}
	// The lease outlasts every attempt the upstream client may make.
	lease := 4*e.Spec.TimeoutOrDefault() + 10*1e9
	prev, claim, err := p.Idempotency.Begin(ctx, idempotency.Key(c.Agent, e.Tool.Name, key), digest, lease)
	switch {
	case errors.Is(err, idempotency.ErrConflict):
		return nil, problem.New(http.StatusConflict, problem.IdempotencyConflict, "this Idempotency-Key was used with other arguments")
	case errors.Is(err, idempotency.ErrInProgress):
		return nil, problem.New(http.StatusConflict, problem.IdempotencyConflict, "a call with this Idempotency-Key is still running; retry later")
	case err != nil:
		return nil, problem.Wrap(http.StatusServiceUnavailable, problem.Internal, "idempotency records are unavailable", err)
	case prev != nil:
		var res tools.Result
		if err := json.Unmarshal(prev.Result, &res); err != nil {
			return nil, problem.Wrap(http.StatusInternalServerError, problem.Internal, "the recorded result is unreadable", err)
		}
		return &Outcome{Tool: &e.Tool, Result: &res, Replayed: true}, nil
	}
	out, err := p.invoke(ctx, rec, e, args, key)
	if err != nil {
		// The call did not produce an answer to record: let a retry run it.
		if aerr := p.Idempotency.Abandon(context.WithoutCancel(ctx), claim); aerr != nil {
			p.logger.WarnContext(ctx, "abandoning idempotency claim", "err", aerr)
		}
		return nil, err
	}
	result, _ := json.Marshal(out.Result)
	if ferr := p.Idempotency.Finish(context.WithoutCancel(ctx), claim, result, rec.ID); ferr != nil {
		p.logger.WarnContext(ctx, "recording idempotent result", "err", ferr)
	}
	return out, nil
}

// invoke calls the tool's source and inspects the answer.
func (p *Pipeline) invoke(ctx context.Context, rec *audit.Record, e *tools.Entry, args json.RawMessage, key string) (*Outcome, error) {
	// The audit id is fixed before the call, so the idempotency record can name it.
	rec.ID = nuid.Next()
	res, err := e.Source.Call(ctx, tools.Call{Tool: &e.Tool, Arguments: args, IdempotencyKey: key})
	if err != nil {
		return nil, upstreamProblem(e.Tool.Name, err)
	}
	rec.UpstreamStatus = res.Status
	if res.Status >= 500 {
		return nil, problem.New(http.StatusBadGateway, problem.UpstreamError, fmt.Sprintf("%s answered HTTP %d", e.Tool.Source, res.Status))
	}
	p.inspect(ctx, rec, e, res)
	return &Outcome{Tool: &e.Tool, Result: res}, nil
}

// inspect checks an answer against the tool's output schema. An answer
// that breaks it is still returned — the agent may cope — but counted as
// drift and marked in the audit.
func (p *Pipeline) inspect(ctx context.Context, rec *audit.Record, e *tools.Entry, res *tools.Result) {
	if e.Output == nil || res.IsError || len(res.Structured) == 0 {
		return
	}
	if v := e.Output.Validate(res.Structured); v != nil {
		p.Metrics.outputDrift(e.Tool.Source, e.Tool.Name)
		rec.Reason = "output drift: the answer breaks the declared output schema: " + v[0].Pointer + " " + v[0].Message
		p.logger.WarnContext(ctx, "tool answer breaks its output schema", "tool", e.Tool.Name, "violations", len(v), "first", v[0].Pointer+" "+v[0].Message)
	}
}

// upstreamProblem maps a source's error to the pipeline's codes.
func upstreamProblem(tool string, err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return problem.Wrap(499, "canceled", "the caller went away", err)
	case errors.Is(err, upstream.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return problem.Wrap(http.StatusGatewayTimeout, problem.UpstreamTimeout, tool+": the upstream did not answer in time", err)
	case errors.Is(err, upstream.ErrUnavailable):
		return problem.Wrap(http.StatusServiceUnavailable, problem.UpstreamUnavailable, tool+": the upstream is unavailable; corral fails fast while it recovers", err)
	case errors.Is(err, upstream.ErrTooLarge):
		return problem.Wrap(http.StatusBadGateway, problem.UpstreamInvalid, tool+": the upstream's answer is larger than the cap", err)
	case errors.Is(err, tools.ErrInvalidAnswer):
		return problem.Wrap(http.StatusBadGateway, problem.UpstreamInvalid, tool+": the upstream's answer is invalid", err)
	}
	return problem.Wrap(http.StatusBadGateway, problem.UpstreamError, tool+": the call failed", err)
}

func asProblem(err error, pe **problem.Error) bool { return errors.As(err, pe) }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
