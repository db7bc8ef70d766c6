// Package anthropictest is a fake Anthropic Messages API for tests: an
// httptest server on 127.0.0.1 that records every request, checks what the
// real API checks first (the anthropic-version header, model, max_tokens,
// alternating roles), and answers with configured content blocks, whole or
// as the real sequence of stream events, or fails with a status and
// Anthropic's error body.
//
// It speaks the wire format only and imports nothing of corral, so that
// the llm package's own tests can use it.
package anthropictest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Block is a content block of the answer: text or tool_use.
type Block struct {
	Type  string          `json:"type"`
	Text  string          `json:"text,omitempty"`
	ID    string          `json:"id,omitempty"`
	Name  string          `json:"name,omitempty"`
	Input json.RawMessage `json:"input,omitempty"`
}

// Text is a text block.
func Text(s string) Block { return Block{Type: "text", Text: s} }

// ToolUse is a tool_use block; input is a JSON object.
func ToolUse(id, name, input string) Block {
	return Block{Type: "tool_use", ID: id, Name: name, Input: json.RawMessage(input)}
}

// Usage is the answer's token counts.
type Usage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
}

// Request is a request the server received.
type Request struct {
	Header http.Header
	Body   []byte
}

// Option configures a Server.
type Option func(*Server)

// WithBlocks sets the answer's content; default one text block.
func WithBlocks(blocks ...Block) Option { return func(s *Server) { s.blocks = blocks } }

// WithStopReason sets the stop_reason; default tool_use when the answer
// has a tool_use block, end_turn otherwise.
func WithStopReason(reason string) Option { return func(s *Server) { s.stopReason = reason } }

// WithUsage sets the token counts; default 10 in, 20 out.
func WithUsage(u Usage) Option { return func(s *Server) { s.usage = u } }

// WithError makes every request fail with status and Anthropic's error body.
func WithError(status int, errType, message string) Option {
	return func(s *Server) { s.status, s.errType, s.errMessage = status, errType, message }
}

// WithRetryAfter adds a Retry-After header, in seconds, to failures.
func WithRetryAfter(seconds int) Option { return func(s *Server) { s.retryAfter = seconds } }

// WithStreamError ends a stream with an error event after the first n
// events, as Anthropic does when it overloads mid-answer.
func WithStreamError(n int, errType, message string) Option {
	return func(s *Server) { s.streamErrAfter, s.errType, s.errMessage = n, errType, message }
}

// WithDelay waits before answering (before the headers).
func WithDelay(d time.Duration) Option { return func(s *Server) { s.delay = d } }

// WithEventDelay waits before each stream event but the first.
func WithEventDelay(d time.Duration) Option { return func(s *Server) { s.eventDelay = d } }

// WithPieceSize splits streamed text and tool input into pieces of n runes;
// default 5.
func WithPieceSize(n int) Option { return func(s *Server) { s.pieceSize = n } }

// WithAPIKey makes the server refuse requests without this x-api-key.
func WithAPIKey(key string) Option { return func(s *Server) { s.apiKey = key } }

// WithHandler answers every request with h instead (after recording it),
// for anything the options do not cover.
func WithHandler(h http.HandlerFunc) Option { return func(s *Server) { s.handler = h } }

// Server is a running fake.
type Server struct {
	srv  *httptest.Server
	done chan struct{} // closed at cleanup, to end delays

	blocks         []Block
	stopReason     string
	usage          Usage
	status         int
	errType        string
	errMessage     string
	retryAfter     int
	streamErrAfter int
	delay          time.Duration
	eventDelay     time.Duration
	pieceSize      int
	apiKey         string
	handler        http.HandlerFunc

	mu       sync.Mutex
	requests []Request
}

// Start starts a server on 127.0.0.1; it stops when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{
		done:      make(chan struct{}),
		blocks:    []Block{Text("Hello from the fake Anthropic API.")},
		usage:     Usage{InputTokens: 10, OutputTokens: 20},
		pieceSize: 5,
	}
	for _, opt := range opts {
		opt(s)
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		close(s.done)
		s.srv.Close()
	})
	return s
}

// URL is the API's base URL, with /v1, as a Model's baseURL.
func (s *Server) URL() string { return s.srv.URL + "/v1" }

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// wireRequest is what the server reads of a request.
type wireRequest struct {
	Model     string `json:"model"`
	MaxTokens int    `json:"max_tokens"`
	Messages  []struct {
		Role string `json:"role"`
	} `json:"messages"`
	Stream bool `json:"stream"`
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, Request{Header: r.Header.Clone(), Body: body})
	s.mu.Unlock()
	if !s.wait(r, s.delay) {
		return
	}
	if s.handler != nil {
		s.handler(w, r)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/messages" {
		s.fail(w, http.StatusNotFound, "not_found_error", "Not found")
		return
	}
	if s.status != 0 {
		s.fail(w, s.status, s.errType, s.errMessage)
		return
	}
	if s.apiKey != "" && r.Header.Get("x-api-key") != s.apiKey {
		s.fail(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key")
		return
	}
	if r.Header.Get("anthropic-version") == "" {
		s.fail(w, http.StatusBadRequest, "invalid_request_error", "anthropic-version: header is required")
		return
	}
	var req wireRequest
	if err := json.Unmarshal(body, &req); err != nil {
		s.fail(w, http.StatusBadRequest, "invalid_request_error", "invalid JSON: "+err.Error())
		return
	}
	if msg := check(&req); msg != "" {
		s.fail(w, http.StatusBadRequest, "invalid_request_error", msg)
		return
	}
	if req.Stream {
		s.stream(w, r, &req)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"id":            s.messageID(),
		"type":          "message",
		"role":          "assistant",
		"model":         req.Model,
		"content":       s.blocks,
		"stop_reason":   s.reason(),
		"stop_sequence": nil,
		"usage":         s.usage,
	})
}

// check applies the rules the real API enforces that a translation could
// break; it returns the error message, or "".
func check(req *wireRequest) string {
	switch {
	case req.Model == "":
		return "model: Field required"
	case req.MaxTokens < 1:
		return "max_tokens: Field required"
	case len(req.Messages) == 0:
		return "messages: at least one message is required"
	}
	for i, m := range req.Messages {
		if m.Role != "user" && m.Role != "assistant" {
			return fmt.Sprintf("messages.%d.role: Input should be 'user' or 'assistant'", i)
		}
		if i > 0 && m.Role == req.Messages[i-1].Role {
			return "messages: roles must alternate between \"user\" and \"assistant\""
		}
	}
	return ""
}

// stream sends the answer as the Messages API streams it: message_start,
// ping, for each block content_block_start, its deltas and
// content_block_stop, then message_delta and message_stop.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, req *wireRequest) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	startUsage := s.usage
	startUsage.OutputTokens = 1
	events := []map[string]any{
		map[string]any{"type": "message_start", "message": map[string]any{
			"id": s.messageID(), "type": "message", "role": "assistant", "model": req.Model,
			"content": []Block{}, "stop_reason": nil, "stop_sequence": nil, "usage": startUsage,
		}},
		map[string]any{"type": "ping"},
	}
	for i, b := range s.blocks {
		start := Block{Type: b.Type, ID: b.ID, Name: b.Name}
		var pieces []string
		var delta func(string) map[string]any
		switch b.Type {
		case "tool_use":
			start.Input = json.RawMessage("{}")
			// The real API opens with an empty piece.
			pieces = append([]string{""}, split(compact(b.Input), s.pieceSize)...)
			delta = func(p string) map[string]any { return map[string]any{"type": "input_json_delta", "partial_json": p} }
		default:
			pieces = split(b.Text, s.pieceSize)
			delta = func(p string) map[string]any { return map[string]any{"type": "text_delta", "text": p} }
		}
		events = append(events, map[string]any{"type": "content_block_start", "index": i, "content_block": startBlock(start)})
		for _, p := range pieces {
			events = append(events, map[string]any{"type": "content_block_delta", "index": i, "delta": delta(p)})
		}
		events = append(events, map[string]any{"type": "content_block_stop", "index": i})
	}
	events = append(events,
		map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": s.reason(), "stop_sequence": nil},
			"usage": map[string]any{"output_tokens": s.usage.OutputTokens}},
		map[string]any{"type": "message_stop"},
	)
	flusher, _ := w.(http.Flusher)
	for i, ev := range events {
		if i > 0 && !s.wait(r, s.eventDelay) {
			return
		}
		if s.streamErrAfter > 0 && i == s.streamErrAfter {
			ev = map[string]any{"type": "error", "error": map[string]any{"type": s.errType, "message": s.errMessage}}
		}
		data, _ := json.Marshal(ev)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev["type"], data)
		if flusher != nil {
			flusher.Flush()
		}
		if s.streamErrAfter > 0 && i == s.streamErrAfter {
			return
		}
	}
}

// startBlock is a block as content_block_start shows it: a text block with
// its (empty) text field, a tool_use block with an empty input.
func startBlock(b Block) any {
	if b.Type == "text" {
		return map[string]string{"type": "text", "text": ""}
	}
	return b
}

func (s *Server) fail(w http.ResponseWriter, status int, errType, message string) {
	if s.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(s.retryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type":  "error",
		"error": map[string]string{"type": errType, "message": message},
	})
}

func (s *Server) reason() string {
	if s.stopReason != "" {
		return s.stopReason
	}
	for _, b := range s.blocks {
		if b.Type == "tool_use" {
			return "tool_use"
		}
	}
	return "end_turn"
}

func (s *Server) messageID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("msg_fake%04d", len(s.requests))
}

// wait sleeps d, or less if the client goes away or the test ends; it
// reports whether to go on.
func (s *Server) wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-s.done:
	}
	return false
}

// split cuts s into pieces of n runes.
func split(s string, n int) []string {
	if n <= 0 {
		n = 1
	}
	var pieces []string
	runes := []rune(s)
	for len(runes) > 0 {
		k := min(n, len(runes))
		pieces = append(pieces, string(runes[:k]))
		runes = runes[k:]
	}
	return pieces
}

// compact is a JSON value without insignificant space, keys in their
// order, as Anthropic streams tool input.
func compact(raw json.RawMessage) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return string(raw)
	}
	return buf.String()
}
