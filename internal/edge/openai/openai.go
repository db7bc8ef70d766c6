// Package openaiedge is the OpenAI-compatible edge of the model gateway:
// POST /openai/v1/chat/completions (plain and streamed), POST
// /openai/v1/responses (responses.go), GET /openai/v1/models and POST
// /openai/v1/embeddings, so that an agent built
// on any OpenAI SDK uses corral by changing only its base URL and key. It
// translates requests into pipeline actions and answers back; it holds no
// policy of its own. A call made with an Idempotency-Key is answered once:
// its retry gets the recorded answer, whole or as a stream again.
package openaiedge

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/telemetry"
)

// Limits bound what model calls may cost this replica before they are
// admitted and while they run. Zero fields take the defaults.
type Limits struct {
	// MaxBody caps a request body (chat or embeddings). Decoding, redacting
	// and re-encoding a prompt takes several times its size in memory.
	MaxBody int64
	// MaxConcurrent caps the model calls in flight on this replica, from
	// before their body is read to the end of their answer or stream; past
	// it a call is answered 503 overloaded with Retry-After.
	MaxConcurrent int
	// MaxConcurrentLarge caps, among those, the calls whose body is over
	// LargeBody (or of unknown length), which take most of the memory.
	MaxConcurrentLarge int
	// WriteTimeout bounds each write of a stream to the agent: an agent
	// that stops reading loses its stream, and its reservation is settled.
	WriteTimeout time.Duration
	// MaxStreamDuration bounds a stream from the request to its end, even
	// one a provider keeps alive with an event now and then.
	MaxStreamDuration time.Duration
}

// The defaults of Limits.
const (
	DefaultMaxBody            = 8 << 20
	DefaultMaxConcurrent      = 64
	DefaultMaxConcurrentLarge = 4
	DefaultWriteTimeout       = 30 * time.Second
	DefaultMaxStreamDuration  = 15 * time.Minute
)

// withDefaults is l with its zero fields set to the defaults.
func (l Limits) withDefaults() Limits {
	l.MaxBody = cmp.Or(l.MaxBody, DefaultMaxBody)
	l.MaxConcurrent = cmp.Or(l.MaxConcurrent, DefaultMaxConcurrent)
	l.MaxConcurrentLarge = min(cmp.Or(l.MaxConcurrentLarge, DefaultMaxConcurrentLarge), l.MaxConcurrent)
	l.WriteTimeout = cmp.Or(l.WriteTimeout, DefaultWriteTimeout)
	l.MaxStreamDuration = cmp.Or(l.MaxStreamDuration, DefaultMaxStreamDuration)
	return l
}

// LargeBody is the body size from which a model call takes one of the
// Limits.MaxConcurrentLarge slots.
const LargeBody = 1 << 20

// retryOverloaded is the Retry-After of a call refused for load: model
// calls last seconds, so a slot is likely free by then.
const retryOverloaded = 2 * time.Second

// Gateway is what the edge needs from the pipeline.
type Gateway interface {
	Authenticate(credential string) (pipeline.Caller, error)
	ModelList(ctx context.Context, c pipeline.Caller) ([]*llm.Model, error)
	Chat(ctx context.Context, a pipeline.Action, req *llm.ChatRequest) (*pipeline.ChatOutcome, error)
	Embed(ctx context.Context, a pipeline.Action, req *llm.EmbeddingRequest) (*pipeline.EmbedOutcome, error)
}

// Headers corral adds to answers.
const (
	// TargetHeader names the concrete model that answered (a route's pick
	// or a fallback).
	TargetHeader = "Corral-Model-Target"
	// AuditHeader names the call's audit record (plain answers and
	// replays only: a stream's record is written when it ends).
	AuditHeader = "Corral-Audit-Id"
	// ReplayedHeader is "true" on an answer replayed for an
	// Idempotency-Key: the name Stripe gave it, which clients of
	// OpenAI-style APIs look for. IdempotencyReplayedHeader, the tool
	// edge's name for it, is sent too.
	ReplayedHeader            = "Idempotent-Replayed"
	IdempotencyReplayedHeader = "Idempotency-Replayed"
)

// Edge serves the OpenAI-compatible endpoints.
type Edge struct {
	gw     Gateway
	logger *slog.Logger
	limits Limits
	// slots holds one token per model call in flight; large one per call
	// with a large body.
	slots, large chan struct{}
}

// New returns the edge.
func New(logger *slog.Logger, gw Gateway, limits Limits) *Edge {
	limits = limits.withDefaults()
	return &Edge{gw: gw, logger: logger, limits: limits,
		slots: make(chan struct{}, limits.MaxConcurrent), large: make(chan struct{}, limits.MaxConcurrentLarge)}
}

// Register adds the edge's routes to mux.
func (e *Edge) Register(mux *http.ServeMux) {
	h := func(f problem.HandlerFunc) http.Handler { return problem.HandleWith(e.logger, withOpenAIError, f) }
	mux.Handle("POST /openai/v1/chat/completions", h(e.admit(e.chat, func(r *http.Request) error {
		_, err := e.gw.Chat(r.Context(), e.action(r), &llm.ChatRequest{})
		return err
	})))
	mux.Handle("POST /openai/v1/embeddings", h(e.admit(e.embeddings, func(r *http.Request) error {
		_, err := e.gw.Embed(r.Context(), e.action(r), &llm.EmbeddingRequest{})
		return err
	})))
	e.registerResponses(mux, h)
	mux.Handle("GET /openai/v1/models", h(e.models))
	mux.Handle("GET /openai/v1/models/{model...}", h(e.model))
	mux.Handle("/openai/v1/chat/completions", h(problem.NotAllowed("POST")))
	mux.Handle("/openai/v1/embeddings", h(problem.NotAllowed("POST")))
	mux.Handle("/openai/v1/models", h(problem.NotAllowed("GET")))
	mux.Handle("/openai/", h(func(_ http.ResponseWriter, r *http.Request) error {
		return problem.New(http.StatusNotFound, problem.NotFound, "no such endpoint: "+r.URL.Path+" (corral serves chat/completions, responses, embeddings and models)")
	}))
}

// openAIError is the "error" member OpenAI's SDKs read a failure from;
// type and code are corral's code.
type openAIError struct {
	Message   string `json:"message"`
	Type      string `json:"type"`
	Code      string `json:"code"`
	RequestID string `json:"request_id,omitempty"`
	AuditID   string `json:"audit_id,omitempty"`
}

// withOpenAIError adds OpenAI's error member to a problem's details, so the
// SDKs show corral's detail.
func withOpenAIError(d *problem.Details) {
	d.Error = openAIError{Message: d.Detail, Type: d.Code, Code: d.Code}
}

func (e *Edge) action(r *http.Request) pipeline.Action {
	return pipeline.Action{Credential: identity.BearerToken(r), Edge: "openai", RequestID: telemetry.RequestID(r.Context()), RemoteAddr: r.RemoteAddr,
		// Several headers are joined, and refused by the pipeline.
		IdempotencyKey: strings.Join(r.Header.Values("Idempotency-Key"), pipeline.MultipleKeys)}
}

// callContext is the context a model call runs under. A plain call made
// with an Idempotency-Key runs to its answer even if its agent goes away,
// as a tool call does, so that the answer is recorded and the agent's
// retry gets it instead of a second call. A stream ends with its agent
// (a cut stream is not recorded: its retry runs again) and within
// Limits.MaxStreamDuration; the pipeline tells that deadline from the
// agent going away.
func (e *Edge) callContext(r *http.Request, a pipeline.Action, stream bool) (context.Context, context.CancelFunc) {
	switch {
	case stream:
		return context.WithTimeout(r.Context(), e.limits.MaxStreamDuration)
	case a.IdempotencyKey != "":
		return context.WithoutCancel(r.Context()), func() {}
	}
	return r.Context(), func() {}
}

// replayed marks an answer replayed for an Idempotency-Key.
func replayed(w http.ResponseWriter) {
	w.Header().Set(ReplayedHeader, "true")
	w.Header().Set(IdempotencyReplayedHeader, "true")
}

// admit runs a model call if a slot is free (and, for a large body, a
// large slot), and answers 503 overloaded otherwise, before the body is
// read: a burst of large prompts is refused instead of exhausting memory.
// The slots are held to the end of the answer.
//
// A caller that does not authenticate takes no slot and is not read: refuse
// sends it through the pipeline without a body, which answers 401 and
// audits it (within the per-address rate), so that idle sockets without a
// credential cannot hold the slots, and an unauthenticated caller learns
// nothing about the endpoint (401 before 400 or 413).
func (e *Edge) admit(next problem.HandlerFunc, refuse func(*http.Request) error) problem.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if _, err := e.gw.Authenticate(identity.BearerToken(r)); err != nil {
			if rerr := refuse(r); rerr != nil {
				return rerr
			}
			return err
		}
		if r.ContentLength > e.limits.MaxBody {
			// Refused from its length alone: it holds no slot a call that
			// fits could use.
			return e.tooLarge()
		}
		if !take(e.slots) {
			return overloaded(fmt.Sprintf("this corral is running %d model calls, its most; retry shortly", e.limits.MaxConcurrent))
		}
		defer func() { <-e.slots }()
		if r.ContentLength < 0 || r.ContentLength > LargeBody {
			if !take(e.large) {
				return overloaded(fmt.Sprintf("this corral is running %d model calls with bodies over 1 MiB, its most; retry shortly", e.limits.MaxConcurrentLarge))
			}
			defer func() { <-e.large }()
		}
		return next(w, r)
	}
}

// take takes a slot if one is free.
func take(slots chan struct{}) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// overloaded is the refusal of a call past a concurrency limit.
func overloaded(detail string) error {
	p := problem.New(http.StatusServiceUnavailable, problem.Overloaded, detail)
	p.RetryAfter = retryOverloaded
	return p
}

func (e *Edge) tooLarge() *problem.Error {
	return problem.New(http.StatusRequestEntityTooLarge, problem.RequestTooLarge,
		fmt.Sprintf("the request is larger than %d bytes, the most this corral takes for a model call", e.limits.MaxBody))
}

// readBody reads a request body of at most Limits.MaxBody bytes; a
// Content-Length over it is refused before anything is read.
func (e *Edge) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	tooLarge := e.tooLarge()
	if r.ContentLength > e.limits.MaxBody {
		return nil, tooLarge
	}
	buf := bytes.NewBuffer(make([]byte, 0, max(r.ContentLength, 0)+1))
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, e.limits.MaxBody))
	body := buf.Bytes()
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, tooLarge
	case err != nil:
		return nil, problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "the request body could not be read", err)
	}
	return body, nil
}

func (e *Edge) chat(w http.ResponseWriter, r *http.Request) error {
	body, err := e.readBody(w, r)
	if err != nil {
		return err
	}
	req, err := llm.DecodeRequest(body)
	if err == nil {
		err = req.Validate()
	}
	if err != nil {
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, err.Error(), err)
	}
	a := e.action(r)
	if a.IdempotencyKey != "" {
		a.Request = body
	}
	ctx, cancel := e.callContext(r, a, req.Stream)
	defer cancel()
	out, err := e.gw.Chat(ctx, a, req)
	if err != nil {
		return err
	}
	w.Header().Set(TargetHeader, out.Target)
	if out.Stream != nil {
		defer out.Stream.Close()
		return e.stream(w, r, out.Stream)
	}
	w.Header().Set(AuditHeader, out.AuditID)
	if out.Replayed {
		replayed(w)
	}
	if req.Stream {
		// A completed stream's answer replayed: the same chunks' shape.
		d := e.startStream(w)
		var buf []byte
		for _, c := range llm.Chunks(out.Response, req.StreamOptions != nil && req.StreamOptions.IncludeUsage) {
			buf = append(buf, event(c)...)
		}
		e.sendReplay(r, d, append(buf, "data: [DONE]\n\n"...))
		return nil
	}
	return e.answer(w, r, out.Response)
}

// sendReplay writes a replayed stream at once: its answer is whole.
func (e *Edge) sendReplay(r *http.Request, d *delivery, b []byte) {
	if err := d.send(b); err != nil {
		e.logger.DebugContext(r.Context(), "the agent did not take its replayed stream", "err", err)
	}
}

// answer writes a whole answer within Limits.WriteTimeout: an agent that
// does not read it cannot hold its concurrency slot.
func (e *Edge) answer(w http.ResponseWriter, r *http.Request, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("openai: encode answer: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if err := e.deliver(w).send(buf.Bytes()); err != nil {
		// The call is done and audited; only its delivery failed.
		e.logger.DebugContext(r.Context(), "the agent did not take its answer", "err", err)
	}
	return nil
}

// delivery writes to an agent, each write and flush within a deadline set
// once the bytes are ready (encoding a large answer is not the agent's
// delay). Done clears the deadline: the connection may serve further
// requests.
type delivery struct {
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
}

func (e *Edge) deliver(w http.ResponseWriter) *delivery {
	return &delivery{w: w, rc: http.NewResponseController(w), timeout: e.limits.WriteTimeout}
}

// send writes b and flushes it to the agent.
func (d *delivery) send(b []byte) error {
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	defer func() { _ = d.rc.SetWriteDeadline(time.Time{}) }()
	if _, err := d.w.Write(b); err != nil {
		return err
	}
	return d.rc.Flush()
}

// stream writes a streamed answer as server-sent events, the way OpenAI
// does: one "data:" event per chunk, "data: [DONE]" at the end. A failure
// after the first event can only be told in the stream: an event carrying
// an "error" object, as OpenAI sends. Each write has Limits.WriteTimeout:
// an agent that stops reading is dropped, and its call settled, instead of
// holding its reservation for as long as it likes.
func (e *Edge) stream(w http.ResponseWriter, r *http.Request, s *pipeline.ChatStream) error {
	d := e.startStream(w)
	for {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			e.logger.DebugContext(r.Context(), "stream ended with an error", "err", err)
			_ = d.send(event(streamError(r, err)))
			break
		}
		if err := d.send(event(c)); err != nil {
			s.Abandon(fmt.Sprintf("the agent stopped reading the stream (a write did not finish within %s)", e.limits.WriteTimeout))
			return nil
		}
	}
	_ = d.send([]byte("data: [DONE]\n\n"))
	return nil
}

// startStream sends the headers of a stream of server-sent events.
func (e *Edge) startStream(w http.ResponseWriter) *delivery {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return e.deliver(w)
}

// event is v as a server-sent event. v is a chunk or an error object, which
// always encode.
func event(v any) []byte {
	b, _ := json.Marshal(v)
	buf := make([]byte, 0, len(b)+8)
	buf = append(buf, "data: "...)
	buf = append(buf, b...)
	return append(buf, "\n\n"...)
}

// streamError is the error event that ends a broken stream.
func streamError(r *http.Request, err error) any {
	var pe *problem.Error
	if !errors.As(err, &pe) {
		pe = problem.New(http.StatusBadGateway, problem.UpstreamError, "the stream failed")
	}
	return map[string]openAIError{"error": {Message: pe.Detail, Type: pe.Code, Code: pe.Code, RequestID: telemetry.RequestID(r.Context()), AuditID: pe.AuditID}}
}

func (e *Edge) embeddings(w http.ResponseWriter, r *http.Request) error {
	body, err := e.readBody(w, r)
	if err != nil {
		return err
	}
	var req llm.EmbeddingRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "the request is not valid: "+err.Error(), err)
	}
	switch {
	case req.Model == "":
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "model: required")
	case len(req.Input) == 0:
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "input: required")
	}
	a := e.action(r)
	if a.IdempotencyKey != "" {
		a.Request = body
	}
	ctx, cancel := e.callContext(r, a, false)
	defer cancel()
	out, err := e.gw.Embed(ctx, a, &req)
	if err != nil {
		return err
	}
	w.Header().Set(TargetHeader, out.Target)
	w.Header().Set(AuditHeader, out.AuditID)
	if out.Replayed {
		replayed(w)
	}
	return e.answer(w, r, out.Response)
}

// modelObject is one entry of GET /openai/v1/models.
type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func toObject(m *llm.Model) modelObject {
	return modelObject{ID: m.Name, Object: "model", Created: created, OwnedBy: "corral"}
}

// created is a fixed date for the models' "created": a Model resource's
// age says nothing about the model.
var created = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

// visible lists the models the caller may use.
func (e *Edge) visible(r *http.Request) ([]*llm.Model, error) {
	c, err := e.gw.Authenticate(identity.BearerToken(r))
	if err != nil {
		return nil, err
	}
	return e.gw.ModelList(r.Context(), c)
}

func (e *Edge) models(w http.ResponseWriter, r *http.Request) error {
	models, err := e.visible(r)
	if err != nil {
		return err
	}
	data := make([]modelObject, len(models))
	for i, m := range models {
		data[i] = toObject(m)
	}
	return problem.WriteCompactJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func (e *Edge) model(w http.ResponseWriter, r *http.Request) error {
	models, err := e.visible(r)
	if err != nil {
		return err
	}
	name := r.PathValue("model")
	for _, m := range models {
		if m.Name == name {
			return problem.WriteCompactJSON(w, http.StatusOK, toObject(m))
		}
	}
	return problem.New(http.StatusNotFound, problem.ModelNotFound, "no model named "+name+" that this agent may use")
}
