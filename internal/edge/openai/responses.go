package openaiedge

// POST /openai/v1/responses: OpenAI's Responses API, which the OpenAI
// Agents SDK and the Vercel AI SDK call by default. The request is
// translated into a chat completions request and goes through the same
// pipeline.Chat as /chat/completions (identity, policy, budgets, rate limits,
// approvals, redaction restored, audit, traces); the answer is translated
// back into a response object, or into the Responses API's events for a
// stream. docs/responses.md says what is served, bridged and refused.

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
)

// responsesEdge is the audit's name for calls made through the Responses
// API (chat completions calls are "openai").
const responsesEdge = "responses"

// registerResponses adds the Responses API's routes to mux.
func (e *Edge) registerResponses(mux *http.ServeMux, h func(problem.HandlerFunc) http.Handler) {
	mux.Handle("POST /openai/v1/responses", h(e.admit(e.responses, func(r *http.Request) error {
		_, err := e.gw.Chat(r.Context(), e.responsesAction(r), &llm.ChatRequest{})
		return err
	})))
	mux.Handle("/openai/v1/responses", h(problem.NotAllowed("POST")))
	mux.Handle("/openai/v1/responses/{rest...}", h(func(_ http.ResponseWriter, r *http.Request) error {
		return problem.New(http.StatusNotFound, problem.NotFound,
			"corral serves POST /openai/v1/responses only: it stores no responses to retrieve, cancel or delete ("+r.URL.Path+"); see docs/responses.md")
	}))
}

func (e *Edge) responsesAction(r *http.Request) pipeline.Action {
	a := e.action(r)
	a.Edge = responsesEdge
	return a
}

func (e *Edge) responses(w http.ResponseWriter, r *http.Request) error {
	body, err := e.readBody(w, r)
	if err != nil {
		return err
	}
	req, err := llm.DecodeResponsesRequest(body)
	if err != nil {
		return badRequest(err)
	}
	creq := req.ToChat()
	if err := creq.Validate(); err != nil {
		// ToChat writes what Validate wants; this names a bridge mistake.
		return badRequest(err)
	}
	a := e.responsesAction(r)
	if a.IdempotencyKey != "" {
		a.Request = body
	}
	ctx, cancel := e.callContext(r, a, req.Stream)
	defer cancel()
	out, err := e.gw.Chat(ctx, a, creq)
	if err != nil {
		return responsesProblem(err)
	}
	resp := llm.NewResponse(req, cmp.Or(out.Started, time.Now()))
	if a.IdempotencyKey != "" && out.CallID != "" {
		// A replay is the response first sent, ids and all.
		resp.DeriveIDs(out.CallID)
	}
	w.Header().Set(TargetHeader, out.Target)
	if out.Stream != nil {
		defer out.Stream.Close()
		return e.streamResponse(w, r, out.Stream, llm.NewResponseEvents(resp))
	}
	w.Header().Set(AuditHeader, out.AuditID)
	if out.Replayed {
		replayed(w)
	}
	if req.Stream {
		// A completed stream's answer replayed: the same events.
		events := llm.NewResponseEvents(resp)
		buf := appendEvents(nil, events.Start())
		for _, c := range llm.Chunks(out.Response, true) {
			buf = appendEvents(buf, events.Chunk(c))
		}
		e.sendReplay(r, e.startStream(w), appendEvents(buf, events.Finish()))
		return nil
	}
	resp.Complete(out.Response)
	return e.answer(w, r, resp)
}

// badRequest is a request corral will not take, naming the field.
func badRequest(err error) error {
	p := problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, err.Error(), err)
	var re *llm.RequestError
	if errors.As(err, &re) && re.Field != "" {
		p.Errors = []map[string]string{{"field": re.Field, "message": re.Message}}
	}
	return p
}

// responsesProblem names the Responses API's field in a refusal the
// pipeline worded for chat completions: the output limit.
func responsesProblem(err error) error {
	var pe *problem.Error
	if !errors.As(err, &pe) || pe.Code != problem.OutputLimitTooHigh {
		return err
	}
	c := *pe
	c.Detail = strings.Replace(c.Detail, "max_completion_tokens", "max_output_tokens", 1)
	c.Errors = []map[string]string{{"field": "max_output_tokens", "message": "too high for this model"}}
	return &c
}

// streamResponse writes a streamed answer as the Responses API's events:
// "event: <type>" and "data: <event>" per event, as OpenAI sends them. A
// failure after the first event ends the stream with an error event and
// response.failed.
func (e *Edge) streamResponse(w http.ResponseWriter, r *http.Request, s *pipeline.ChatStream, events *llm.ResponseEvents) error {
	d := e.startStream(w)
	send := func(evs []llm.ResponseEvent) bool {
		if len(evs) == 0 {
			return true
		}
		if err := d.send(appendEvents(nil, evs)); err != nil {
			s.Abandon(fmt.Sprintf("the agent stopped reading the stream (a write did not finish within %s)", e.limits.WriteTimeout))
			return false
		}
		return true
	}
	if !send(events.Start()) {
		return nil
	}
	for {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			send(events.Finish())
			return nil
		}
		if err != nil {
			e.logger.DebugContext(r.Context(), "stream ended with an error", "err", err)
			var pe *problem.Error
			if !errors.As(err, &pe) {
				pe = problem.New(http.StatusBadGateway, problem.UpstreamError, "the stream failed")
			}
			send(events.Fail(pe.Code, pe.Detail))
			return nil
		}
		if !send(events.Chunk(c)) {
			return nil
		}
	}
}

// appendEvents appends evs as server-sent events.
func appendEvents(buf []byte, evs []llm.ResponseEvent) []byte {
	for _, ev := range evs {
		buf = appendEvent(buf, ev)
	}
	return buf
}

// appendEvent appends ev as a server-sent event named by its type.
func appendEvent(buf []byte, ev llm.ResponseEvent) []byte {
	b, _ := json.Marshal(ev) // events always encode
	buf = append(buf, "event: "...)
	buf = append(buf, ev.Type...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, b...)
	return append(buf, "\n\n"...)
}
