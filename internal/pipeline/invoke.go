package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nuid"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/idempotency"
	"github.com/corral-dev/corral/internal/openapi"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/redact"
	"github.com/corral-dev/corral/internal/telemetry"
	"github.com/corral-dev/corral/internal/tools"
	"github.com/corral-dev/corral/internal/upstream"
)

// beginTool looks a tool call's Idempotency-Key up. It returns the
// recorded answer of a call made before with the same arguments (replay
// it), or a claim on the key that this call holds while it runs (nil
// without a key). A key used with other arguments, or held by a call still
// running, is refused with 409 idempotency_conflict.
func (p *Pipeline) beginTool(ctx context.Context, c Caller, e *tools.Entry, key, digest string, resume bool) (*idempotency.Claim, *Outcome, error) {
	if key == "" {
		return nil, nil, nil
	}
	// The lease outlasts every attempt the upstream client may make; a
	// resumed step's earlier holder is gone, so its claim is taken over.
	lease := 4*e.Spec.TimeoutOrDefault() + 10*time.Second
	if resume {
		lease = 0
	}
	prev, claim, err := p.Idempotency.Begin(ctx, idempotency.Key(KeyOwner(c), e.Tool.Name, key), digest, lease)
	switch {
	case errors.Is(err, idempotency.ErrConflict):
		return nil, nil, problem.New(http.StatusConflict, problem.IdempotencyConflict, "this Idempotency-Key was used with other arguments")
	case errors.Is(err, idempotency.ErrInProgress):
		pe := problem.New(http.StatusConflict, problem.IdempotencyConflict, "a call with this Idempotency-Key is still running; retry later")
		pe.RetryAfter = inFlightRetry
		return nil, nil, pe
	case err != nil:
		return nil, nil, problem.Wrap(http.StatusServiceUnavailable, problem.Internal, "idempotency records are unavailable", err)
	case prev != nil && prev.TooLarge:
		return nil, nil, problem.New(http.StatusConflict, problem.IdempotencyConflict, "the call with this Idempotency-Key was made, but its answer was too large to record for replay")
	case prev != nil:
		var res tools.Result
		if err := json.Unmarshal(prev.Result, &res); err != nil {
			return nil, nil, problem.Wrap(http.StatusInternalServerError, problem.Internal, "the recorded result is unreadable", err)
		}
		return nil, &Outcome{Tool: &e.Tool, Result: &res, Replayed: true}, nil
	}
	return claim, nil, nil
}

// abandon gives a claim on an Idempotency-Key back, for a call refused
// before it was sent: a retry may run it. A nil claim is no key.
func (p *Pipeline) abandon(ctx context.Context, claim *idempotency.Claim) {
	if claim == nil {
		return
	}
	if err := p.Idempotency.Abandon(context.WithoutCancel(ctx), claim); err != nil {
		p.logger.WarnContext(ctx, "abandoning idempotency claim", "err", err)
	}
}

// invokeClaimed calls the tool under claim (none without a key) and
// records its answer on the claim for replay.
func (p *Pipeline) invokeClaimed(ctx context.Context, rec *audit.Record, c Caller, e *tools.Entry, call tools.Call, claim *idempotency.Claim) (*Outcome, error) {
	if claim == nil {
		return p.invoke(ctx, rec, e, call)
	}
	call.IdempotencyKey = UpstreamKey(KeyOwner(c), e.Tool.Name, call.IdempotencyKey)
	out, err := p.invoke(ctx, rec, e, call)
	if err != nil {
		if notSent(err) {
			p.abandon(ctx, claim) // the request never left: let a retry run it
		}
		// Otherwise the upstream may have acted (a timeout, a 5xx): the claim
		// stays until its lease ends, so a retry meanwhile is refused rather
		// than acting twice, and one after it carries the same key upstream.
		return nil, err
	}
	result, err := json.Marshal(out.Result)
	if err != nil || len(result) > idempotency.MaxResult {
		result = nil // recorded as made but not replayable
	}
	if ferr := p.Idempotency.Finish(context.WithoutCancel(ctx), claim, result, rec.ID); ferr != nil {
		p.logger.ErrorContext(ctx, "recording idempotent result", "err", ferr)
	}
	return out, nil
}

// checkIdempotencyKey refuses an Idempotency-Key that is too long or not
// printable ASCII, and several of them (an edge joins repeated headers with
// MultipleKeys: a proxy that keeps the last would see another key than
// corral), before anything is reserved or sent.
func checkIdempotencyKey(key string) error {
	if strings.Contains(key, MultipleKeys) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "send one Idempotency-Key header, not several")
	}
	if len(key) > idempotency.MaxKey {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("Idempotency-Key is longer than %d characters", idempotency.MaxKey))
	}
	if !printable(key) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "Idempotency-Key must be printable ASCII")
	}
	return nil
}

// MultipleKeys joins the values of repeated Idempotency-Key headers in
// Action.IdempotencyKey, which the pipeline then refuses.
const MultipleKeys = "\n"

// KeyOwner is whose an Idempotency-Key is: the agent's name, the
// incarnation of the agent (metadata.uid) the credential was issued to, and
// the user it acts for, if any. An agent deleted and created again under the
// same name does not inherit the earlier one's answers, and an agent acting
// for Bob is not handed the answer of a call it made for Alice. A caller
// with neither uid nor user (hand-built agents) is its name, as before.
func KeyOwner(c Caller) string {
	if c.AgentUID == "" && c.Principal == nil {
		return c.Agent
	}
	owner := c.Agent + "\x00uid=" + c.AgentUID
	if c.Principal != nil {
		owner += "\x00principal=" + c.Principal.Issuer + "\x00" + c.Principal.Subject
	}
	return owner
}

// UpstreamKey is the Idempotency-Key sent upstream for a key on a tool:
// "corral-" and the base64url SHA-256 of its owner (KeyOwner), tool and key,
// so that two agents' (or one agent's two tools', or two incarnations' or
// users') "order-42" never meet at the upstream, and a retry sends the same
// key again.
func UpstreamKey(owner, tool, key string) string {
	sum := sha256.Sum256([]byte("corral idempotency\x00" + owner + "\x00" + tool + "\x00" + key))
	return "corral-" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// notSent reports whether a failed call certainly never reached the upstream.
func notSent(err error) bool {
	return errors.Is(err, upstream.ErrNotSent) || errors.Is(err, openapi.ErrArguments) || errors.Is(err, tools.ErrCredentials) ||
		errors.Is(err, errIntentNotStored)
}

func printable(s string) bool {
	for i := range len(s) {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// invoke calls the tool's source and inspects the answer.
func (p *Pipeline) invoke(ctx context.Context, rec *audit.Record, e *tools.Entry, call tools.Call) (*Outcome, error) {
	// The audit id is fixed before the call, so the idempotency record can name it.
	rec.ID = nuid.Next()
	if err := p.writeIntent(ctx, rec); err != nil {
		return nil, err
	}
	// A call that has left runs to its answer or its timeout even if the
	// caller goes away, so that its outcome is recorded (audit, idempotency).
	ictx, span := p.stage(ctx, telemetry.StageInvoke)
	res, err := e.Source.Call(context.WithoutCancel(ictx), call)
	if err != nil {
		err = upstreamProblem(e.Tool.Name, err)
		p.endStage(span, err)
		return nil, err
	}
	if span.IsRecording() {
		span.SetAttributes(telemetry.AttrToolSource.String(e.Tool.Source), telemetry.AttrHTTPResponseStatusCode.Int(res.Status))
	}
	p.endStage(span, nil)
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
		// Pointers only: messages may quote the upstream's data.
		at := p.maskedPointers(v)
		rec.Reason = "output drift: the answer breaks the declared output schema at " + at
		p.logger.WarnContext(ctx, "tool answer breaks its output schema", "tool", e.Tool.Name, "at", at)
	}
}

// pointers lists the places of violations, without their messages.
// maskedPointers is pointers with what the built-in detectors find masked
// (e-mail addresses, cards, IBANs, phones...): the pointers are made of the
// keys of the caller's arguments (or of the upstream's answer), and the
// audit, which nothing can delete from, keeps no such values unless the
// tool source asks for arguments (finding 21).
func (p *Pipeline) maskedPointers(v []tools.Violation) string {
	return p.masker.NewSession(redact.Mask).Redact(pointers(v))
}

func pointers(v []tools.Violation) string {
	var b strings.Builder
	for i, x := range v {
		if i == 5 {
			fmt.Fprintf(&b, " and %d more", len(v)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		if x.Pointer == "" {
			b.WriteString("/")
		} else {
			b.WriteString(x.Pointer)
		}
	}
	return b.String()
}

// upstreamProblem maps a source's error to the pipeline's codes.
func upstreamProblem(tool string, err error) error {
	switch {
	case errors.Is(err, openapi.ErrArguments), errors.Is(err, upstream.ErrInvalidRequest):
		return problem.Wrap(http.StatusUnprocessableEntity, problem.InvalidArguments, tool+": the arguments cannot be sent: "+safeCause(err), err)
	case errors.Is(err, tools.ErrCredentials):
		return problem.Wrap(http.StatusBadGateway, problem.UpstreamError, tool+": corral cannot resolve the upstream's credentials; an operator must fix the ToolSource's auth", err)
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

// safeCause is the last part of an error's text, which for argument errors
// names the parameter and the rule, not corral's internals.
func safeCause(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && i+2 < len(msg) {
		msg = msg[i+2:]
	}
	return msg
}
