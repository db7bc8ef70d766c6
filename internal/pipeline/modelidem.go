package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/budget"
	"github.com/corral-dev/corral/internal/idempotency"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/problem"
)

// A model call made with an Idempotency-Key is looked up after policy and
// before the rate limits and budgets: a replay is answered from the record
// without a provider, a permit or a reservation (a budget spent by the
// first call does not refuse its replay), and a first call holds a claim
// on the key while it runs. The record lives in the same store, under the
// same rules, as a tool call's (internal/idempotency).

// Operations a model call's key is bound to, with its request.
const (
	opChat       = "chat"
	opEmbeddings = "embeddings"
)

// inFlightRetry is the Retry-After of a model call refused because another
// with its key is running: model calls take seconds, and the OpenAI SDKs
// wait that long before they try again.
const inFlightRetry = 2 * time.Second

// RequestDigest is the digest an Idempotency-Key is bound to: of the
// operation, the edge and the request body in canonical form (object keys
// sorted, no insignificant space, numbers and strings as written), so that
// the same request encoded otherwise is the same request, and a chat
// completion and a Responses API call never match.
func RequestDigest(op, edge string, body []byte) (string, error) {
	canonical, err := canonicalJSON(body)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(op + "\x00" + edge + "\x00"))
	h.Write(canonical)
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// canonicalJSON is one JSON value re-encoded with its object keys sorted
// (encoding/json sorts map keys) and numbers kept as written. Anything
// after the value, or no value, is an error.
func canonicalJSON(body []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("pipeline: canonical form: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("pipeline: canonical form: more than one JSON value")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("pipeline: canonical form: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// modelDigest is the digest a model call's key is bound to: of the request
// as the caller sent it when the edge handed it over (Action.Request),
// else of the request the pipeline was handed (the orchestrator's calls),
// encoded as before so that a step resumed across an upgrade still matches.
func modelDigest(op string, a Action, req any) (string, error) {
	if len(a.Request) > 0 {
		d, err := RequestDigest(op, a.Edge, a.Request)
		if err != nil {
			return "", problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "the request is not one JSON value", err)
		}
		return d, nil
	}
	body, err := json.Marshal(req)
	if err != nil {
		return "", problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "the request cannot be encoded", err)
	}
	sum := sha256.Sum256(body)
	if op != opChat {
		sum = sha256.Sum256(append([]byte(op+"\x00"), body...))
	}
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// beginModel looks a model call's Idempotency-Key up. It returns the
// record of a call made before with the same request (replay it), or
// holds a claim on the key in mc.claim while this call runs. A key used
// with another request, or held by a call still running, is refused with
// 409 idempotency_conflict naming the key.
func (p *Pipeline) beginModel(ctx context.Context, rec *audit.Record, mc *modelCall, a Action, op string, req any) (*idempotency.Record, error) {
	rec.IdempotencyKey = a.IdempotencyKey
	digest, err := modelDigest(op, a, req)
	if err != nil {
		return nil, err
	}
	// The lease outlasts the attempts of every target in the plan.
	lease := time.Duration(len(mc.plan.Attempts)+1)*5*time.Minute + 10*time.Second
	if a.Resume {
		lease = 0 // the earlier holder is gone (Action.Resume)
	}
	key := strconv.Quote(a.IdempotencyKey)
	prev, claim, err := p.Idempotency.Begin(ctx, idempotency.Key(KeyOwner(mc.caller), "model:"+mc.model.Name, a.IdempotencyKey), digest, lease)
	switch {
	case errors.Is(err, idempotency.ErrConflict):
		return nil, problem.New(http.StatusConflict, problem.IdempotencyConflict, "Idempotency-Key "+key+" was used with another request")
	case errors.Is(err, idempotency.ErrInProgress):
		e := problem.New(http.StatusConflict, problem.IdempotencyConflict, "a call with Idempotency-Key "+key+" is still running; retry later")
		e.RetryAfter = inFlightRetry
		return nil, e
	case err != nil:
		return nil, problem.Wrap(http.StatusServiceUnavailable, problem.SubstrateUnavailable, "idempotency records are unavailable", err)
	case prev != nil && prev.TooLarge:
		return nil, problem.New(http.StatusConflict, problem.IdempotencyConflict,
			fmt.Sprintf("the call with Idempotency-Key %s was made, but its answer was over %d KiB, too large to record for replay", key, idempotency.MaxResult>>10))
	case prev != nil:
		rec.Replayed = true
		rec.Reason = "replayed the answer of the call whose intent is audit record " + prev.AuditID
		return prev, nil
	}
	mc.claim = claim
	return nil, nil
}

// withUpstreamKey is ctx with the Idempotency-Key the providers get for
// the caller's key: scoped to the caller and the model (UpstreamKey), the
// same on every retry, so that a provider or gateway that honours the
// header answers the call once.
func withUpstreamKey(ctx context.Context, mc *modelCall, key string) context.Context {
	return llm.WithIdempotencyKey(ctx, UpstreamKey(KeyOwner(mc.caller), "model:"+mc.model.Name, key))
}

// recordedChat is a chat call's answer as its idempotency record keeps it.
type recordedChat struct {
	Target   string            `json:"target"`
	Response *llm.ChatResponse `json:"response"`
	// Reasoning is each choice's Responses API reasoning items, which the
	// response's JSON leaves out (llm.Message.Reasoning), by choice index.
	Reasoning map[int][]json.RawMessage `json:"reasoning,omitempty"`
	// Cost is what the call was charged (a replay charges nothing again).
	Cost float64 `json:"cost,omitempty"`
	// Started is when the call began (ChatOutcome.Started).
	Started time.Time `json:"started,omitzero"`
}

// replayChat is the outcome a recorded chat answer replays.
func replayChat(prev *idempotency.Record) (*ChatOutcome, error) {
	var r recordedChat
	if err := json.Unmarshal(prev.Result, &r); err != nil || r.Response == nil {
		return nil, problem.Wrap(http.StatusInternalServerError, problem.Internal, "the recorded answer is unreadable", err)
	}
	for i := range r.Response.Choices {
		c := &r.Response.Choices[i]
		c.Message.Reasoning = r.Reasoning[c.Index]
	}
	return &ChatOutcome{Target: r.Target, Response: r.Response, Replayed: true, Cost: r.Cost, Started: r.Started, CallID: prev.AuditID}, nil
}

// recordChat is the record of a chat answer; nil if it cannot be encoded.
func recordChat(target string, resp *llm.ChatResponse, cost float64, started time.Time) json.RawMessage {
	r := recordedChat{Target: target, Response: resp, Cost: cost, Started: started.UTC()}
	for _, c := range resp.Choices {
		if len(c.Message.Reasoning) > 0 {
			if r.Reasoning == nil {
				r.Reasoning = map[int][]json.RawMessage{}
			}
			r.Reasoning[c.Index] = c.Message.Reasoning
		}
	}
	b, _ := json.Marshal(r)
	return b
}

// recordedEmbedding is an embeddings call's answer as its record keeps it.
type recordedEmbedding struct {
	Target   string                 `json:"target"`
	Response *llm.EmbeddingResponse `json:"response"`
}

// replayEmbedding is the outcome a recorded embeddings answer replays.
func replayEmbedding(prev *idempotency.Record) (*EmbedOutcome, error) {
	var r recordedEmbedding
	if err := json.Unmarshal(prev.Result, &r); err != nil || r.Response == nil {
		return nil, problem.Wrap(http.StatusInternalServerError, problem.Internal, "the recorded answer is unreadable", err)
	}
	return &EmbedOutcome{Target: r.Target, Response: r.Response, Replayed: true}, nil
}

// recordModel records a model call's answer under its claim, with the
// audit record of the call's intent. A nil or oversized result records
// that the call was made without its answer: a retry learns it (409).
func (p *Pipeline) recordModel(ctx context.Context, mc *modelCall, rec *audit.Record, result json.RawMessage) {
	claim := mc.claim
	if claim == nil {
		return
	}
	mc.claim = nil
	if len(result) > idempotency.MaxResult {
		result = nil
	}
	if err := p.Idempotency.Finish(context.WithoutCancel(ctx), claim, result, rec.Intent); err != nil {
		p.logger.ErrorContext(ctx, "recording idempotent answer", "err", err)
	}
}

// releaseModel ends the claim of a model call that failed. The key is
// given up, so that a retry runs the call, unless keep is set and an
// attempt may have run at its provider without saying what it did (a
// time-out, a broken connection): then the claim stays until its lease
// ends and a retry meanwhile is refused, as a tool call's is, rather than
// run and billed twice. A provider's refusal (an HTTP error) ran nothing,
// and frees the key.
func (p *Pipeline) releaseModel(ctx context.Context, mc *modelCall, keep bool) {
	claim := mc.claim
	if claim == nil {
		return
	}
	mc.claim = nil
	if keep && mc.unreported != (budget.Usage{}) {
		return
	}
	if err := p.Idempotency.Abandon(context.WithoutCancel(ctx), claim); err != nil {
		p.logger.WarnContext(ctx, "abandoning idempotency claim", "err", err)
	}
}
