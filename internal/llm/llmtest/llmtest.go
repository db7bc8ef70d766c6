// Package llmtest runs an OpenAI-compatible upstream for tests and
// benchmarks: chat completions (whole and streamed), embeddings and the
// model list on 127.0.0.1, answering as configured and recording every
// request it gets. Its answers have the shape OpenAI's have (ids, object,
// created, SSE events and [DONE]), so the official SDKs accept them.
package llmtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/llm"
)

// DefaultContent is what the server answers unless told otherwise.
const DefaultContent = "Hello from llmtest."

// DefaultModel is the model GET /v1/models lists unless told otherwise.
const DefaultModel = "llmtest-model"

// maxBody bounds a request body the server reads.
const maxBody = 32 << 20

// Server is a running upstream. Its methods are safe for concurrent use.
type Server struct {
	srv  *httptest.Server
	done chan struct{} // closed when the test ends: delays stop waiting

	mu       sync.Mutex
	behave   behaviour
	requests []Request

	ids atomic.Int64
}

// Request is one request the server got.
type Request struct {
	Method string
	// Path is the URL path, /v1/chat/completions for instance.
	Path string
	// Query is the URL's raw query.
	Query  string
	Header http.Header
	Body   []byte
}

// Option sets how the server answers.
type Option func(*behaviour)

type behaviour struct {
	content    string
	toolCalls  []llm.ToolCall
	status     int
	errType    string
	message    string
	header     http.Header
	delay      time.Duration
	eventDelay time.Duration
	handler    http.HandlerFunc
	models     []string
	usage      *llm.Usage
}

// WithContent makes chat completions answer s.
func WithContent(s string) Option { return func(b *behaviour) { b.content = s } }

// WithToolCalls makes chat completions call these tools (finish_reason
// tool_calls), with no content unless WithContent is also given. Calls without
// an id get call_1, call_2, ...; arguments are JSON strings as OpenAI sends.
func WithToolCalls(calls ...llm.ToolCall) Option {
	return func(b *behaviour) {
		b.toolCalls = slices.Clone(calls)
		for i := range b.toolCalls {
			if b.toolCalls[i].ID == "" {
				b.toolCalls[i].ID = fmt.Sprintf("call_%d", i+1)
			}
			if b.toolCalls[i].Type == "" {
				b.toolCalls[i].Type = "function"
			}
		}
	}
}

// WithError makes chat completions and embeddings answer status with an
// OpenAI error body: 503 for fallback tests, 429 with WithRetryAfter for
// rate limits. An empty errType is derived from the status as OpenAI does
// (server_error, requests, invalid_request_error); an empty message is the
// status text.
func WithError(status int, errType, message string) Option {
	return func(b *behaviour) { b.status, b.errType, b.message = status, errType, message }
}

// WithRetryAfter sends Retry-After: seconds with every answer.
func WithRetryAfter(seconds int) Option {
	return WithHeader("Retry-After", strconv.Itoa(seconds))
}

// WithHeader adds a header to every answer.
func WithHeader(name, value string) Option {
	return func(b *behaviour) { b.header.Add(name, value) }
}

// WithDelay waits d before answering (before the headers are sent), or
// until the client gives up.
func WithDelay(d time.Duration) Option { return func(b *behaviour) { b.delay = d } }

// WithEventDelay waits d before each event of a stream after the first.
func WithEventDelay(d time.Duration) Option { return func(b *behaviour) { b.eventDelay = d } }

// WithHandler hands every request to h, after recording it, for anything
// the other options cannot say.
func WithHandler(h http.HandlerFunc) Option { return func(b *behaviour) { b.handler = h } }

// WithModels sets what GET /v1/models lists.
func WithModels(names ...string) Option { return func(b *behaviour) { b.models = names } }

// WithUsage sets the usage chat completions report; by default it is
// estimated with llm.EstimatePrompt and llm.EstimateTokens.
func WithUsage(u llm.Usage) Option { return func(b *behaviour) { b.usage = &u } }

func newBehaviour(opts []Option) behaviour {
	b := behaviour{header: http.Header{}, models: []string{DefaultModel}}
	for _, o := range opts {
		o(&b)
	}
	if b.content == "" && len(b.toolCalls) == 0 {
		b.content = DefaultContent
	}
	return b
}

// Start runs a server until the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{behave: newBehaviour(opts), done: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		close(s.done)
		s.srv.Close()
	})
	return s
}

// URL is the server's base URL, with /v1, as a Model's baseURL or an SDK's
// base URL wants it.
func (s *Server) URL() string { return s.srv.URL + "/v1" }

// Set replaces how the server answers from now on.
func (s *Server) Set(opts ...Option) {
	b := newBehaviour(opts)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.behave = b
}

// Requests returns every request the server got, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// ChatRequests returns the chat completions requests the server got,
// decoded, in order.
func (s *Server) ChatRequests() []*llm.ChatRequest {
	var out []*llm.ChatRequest
	for _, r := range s.Requests() {
		if r.Path != "/v1/chat/completions" {
			continue
		}
		if req, err := llm.DecodeRequest(r.Body); err == nil {
			out = append(out, req)
		}
	}
	return out
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body})
	b := s.behave
	s.mu.Unlock()
	if err != nil {
		return
	}
	n := s.ids.Add(1)
	if b.handler != nil {
		r.Body = io.NopCloser(bytes.NewReader(body)) // the hook reads it again
		b.handler(w, r)
		return
	}
	for name, values := range b.header {
		w.Header()[name] = values
	}
	w.Header().Set("X-Request-Id", fmt.Sprintf("req_llmtest_%d", n))
	if !s.wait(r, b.delay) {
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
		if b.status != 0 {
			writeError(w, b.status, b.errType, b.message, "")
			return
		}
		s.chat(w, r, b, body, n)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/embeddings":
		if b.status != 0 {
			writeError(w, b.status, b.errType, b.message, "")
			return
		}
		embeddings(w, r, body)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/models":
		data := make([]model, len(b.models))
		for i, name := range b.models {
			data[i] = model{ID: name, Object: "model", Created: 1700000000, OwnedBy: "llmtest"}
		}
		writeJSON(w, struct {
			Object string  `json:"object"`
			Data   []model `json:"data"`
		}{"list", data})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/models/"):
		name := strings.TrimPrefix(r.URL.Path, "/v1/models/")
		if !slices.Contains(b.models, name) {
			writeError(w, http.StatusNotFound, "", fmt.Sprintf("The model '%s' does not exist", name), "model")
			return
		}
		writeJSON(w, model{ID: name, Object: "model", Created: 1700000000, OwnedBy: "llmtest"})
	default:
		writeError(w, http.StatusNotFound, "", fmt.Sprintf("Unknown request URL: %s %s.", r.Method, r.URL.Path), "")
	}
}

type model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// wait sleeps d, and reports false if the client or the test gave up first.
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

func (s *Server) chat(w http.ResponseWriter, r *http.Request, b behaviour, body []byte, n int64) {
	req, err := llm.DecodeRequest(body)
	if err == nil {
		err = req.Validate()
	}
	if err != nil {
		param := ""
		var re *llm.RequestError
		if errors.As(err, &re) {
			param = re.Field
		}
		writeError(w, http.StatusBadRequest, "", err.Error(), param)
		return
	}
	msg := llm.Message{Role: "assistant", ToolCalls: slices.Clone(b.toolCalls)}
	finish := "stop"
	if len(b.toolCalls) > 0 {
		finish = "tool_calls"
	}
	if b.content != "" {
		msg.Content = llm.TextContent(b.content)
	}
	usage := b.usage
	if usage == nil {
		completion := llm.EstimateTokens(b.content)
		for _, tc := range b.toolCalls {
			completion += llm.EstimateTokens(tc.Function.Name) + llm.EstimateTokens(tc.Function.Arguments)
		}
		prompt := llm.EstimatePrompt(req)
		usage = &llm.Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
	}
	resp := &llm.ChatResponse{
		ID: fmt.Sprintf("chatcmpl-llmtest%d", n), Object: "chat.completion", Created: time.Now().Unix(),
		Model: req.Model, SystemFingerprint: "fp_llmtest",
		Choices: []llm.Choice{{Index: 0, Message: msg, FinishReason: finish}},
		Usage:   usage,
	}
	if !req.Stream {
		writeJSON(w, resp)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	for i, chunk := range llm.Chunks(resp, includeUsage) {
		if i > 0 && !s.wait(r, b.eventDelay) {
			return
		}
		data, err := json.Marshal(chunk)
		if err != nil {
			return
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
}

// embeddings answers with the scripted provider's deterministic vectors.
func embeddings(w http.ResponseWriter, r *http.Request, body []byte) {
	var req llm.EmbeddingRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "", "We could not parse the JSON body of your request.", "")
		return
	}
	resp, err := llm.NewScripted(llm.Endpoint{}, nil).Embed(r.Context(), &req)
	if err != nil {
		msg := err.Error()
		var pe *llm.ProviderError
		if errors.As(err, &pe) && pe.Message != "" {
			msg = pe.Message
		}
		writeError(w, http.StatusBadRequest, "", msg, "input")
		return
	}
	writeJSON(w, resp)
}

func writeJSON(w http.ResponseWriter, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "", err.Error(), "")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
}

// writeError answers an OpenAI error object.
func writeError(w http.ResponseWriter, status int, typ, message, param string) {
	switch {
	case typ != "":
	case status == http.StatusTooManyRequests:
		typ = "requests"
	case status >= 500:
		typ = "server_error"
	default:
		typ = "invalid_request_error"
	}
	if message == "" {
		message = http.StatusText(status)
	}
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	e.Error.Message, e.Error.Type = message, typ
	if param != "" {
		e.Error.Param = &param
	}
	data, _ := json.Marshal(e)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}
