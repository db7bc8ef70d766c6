package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestErrorBody(t *testing.T) {
	tests := []struct {
		name, body, typ, msg string
	}{
		{"openai", `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`, "requests", "Rate limit reached"},
		{"error string", `{"error":"model 'llama9' not found"}`, "", "model 'llama9' not found"},
		{"vllm top level", `{"object":"error","message":"max_tokens is too large","type":"BadRequestError","code":400}`, "BadRequestError", "max_tokens is too large"},
		{"fastapi detail", `{"detail":"Not Found"}`, "", "Not Found"},
		{"plain text", "upstream connect error\n", "", "upstream connect error"},
		{"html", "<html><body>502 Bad Gateway</body></html>", "", ""},
		{"empty", "", "", ""},
		{"control characters", `{"error":{"message":"a\u0000b\nc"}}`, "", "a b c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, msg := errorBody([]byte(tt.body))
			if typ != tt.typ || msg != tt.msg {
				t.Errorf("errorBody(%s) = %q, %q; want %q, %q", tt.body, typ, msg, tt.typ, tt.msg)
			}
		})
	}
	_, msg := errorBody([]byte(`{"error":{"message":"` + strings.Repeat("é", 2000) + `"}}`))
	if len(msg) > maxErrorMessage+len("…") || !strings.HasSuffix(msg, "…") {
		t.Errorf("a long message is %d bytes, want it cut to %d", len(msg), maxErrorMessage)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		header http.Header
		want   time.Duration
	}{
		{"none", http.Header{}, 0},
		{"seconds", http.Header{"Retry-After": {"20"}}, 20 * time.Second},
		{"fraction", http.Header{"Retry-After": {"0.5"}}, 500 * time.Millisecond},
		{"milliseconds win", http.Header{"Retry-After": {"20"}, "Retry-After-Ms": {"250"}}, 250 * time.Millisecond},
		{"date", http.Header{"Retry-After": {"Sat, 01 Mar 2025 12:00:30 GMT"}}, 30 * time.Second},
		{"date past", http.Header{"Retry-After": {"Sat, 01 Mar 2025 11:00:00 GMT"}}, 0},
		{"negative", http.Header{"Retry-After": {"-3"}}, 0},
		{"NaN", http.Header{"Retry-After": {"NaN"}}, 0},
		{"huge", http.Header{"Retry-After": {"1e300"}}, maxRetryAfter},
		{"infinite ms", http.Header{"Retry-After-Ms": {"+Inf"}}, maxRetryAfter},
		{"garbage", http.Header{"Retry-After": {"soon"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryAfter(tt.header, now); got != tt.want {
				t.Errorf("retryAfter(%v) = %s, want %s", tt.header, got, tt.want)
			}
		})
	}
}

func TestEndpointURL(t *testing.T) {
	tests := []struct{ base, want string }{
		{"https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"},
		{"https://api.openai.com/v1/", "https://api.openai.com/v1/chat/completions"},
		{"http://localhost:11434/v1", "http://localhost:11434/v1/chat/completions"},
		{"https://res.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-10-21", "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"},
	}
	for _, tt := range tests {
		if got, err := endpointURL(tt.base, "/chat/completions"); err != nil || got != tt.want {
			t.Errorf("endpointURL(%s) = %s, %v; want %s", tt.base, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "api.openai.com/v1", "ftp://x/v1", "http://"} {
		if _, err := endpointURL(bad, "/chat/completions"); err == nil {
			t.Errorf("endpointURL(%q) = nil error, want one", bad)
		}
	}
}

// FuzzErrorBody feeds error answers to errorBody: it must not panic, and
// what it keeps must be bounded and free of control characters.
func FuzzErrorBody(f *testing.F) {
	f.Add([]byte(`{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`))
	f.Add([]byte(`{"error":"model 'llama9' not found"}`))
	f.Add([]byte(`{"object":"error","message":"max_tokens is too large","type":"BadRequestError","code":400}`))
	f.Add([]byte(`{"detail":"Not Found"}`))
	f.Add([]byte("upstream connect error\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		typ, msg := errorBody(body)
		for _, s := range []string{typ, msg} {
			if len(s) > maxErrorMessage+len("…") {
				t.Fatalf("errorBody kept %d bytes", len(s))
			}
			if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
				t.Fatalf("errorBody kept control characters: %q", s)
			}
		}
	})
}

// FuzzOpenAIStream feeds arbitrary stream bodies to the stream reader: it
// must end with io.EOF or a *ProviderError, never panic, and what it yields
// must fold into an answer.
func FuzzOpenAIStream(f *testing.F) {
	for _, tt := range sseTests {
		f.Add([]byte(tt.input))
	}
	f.Add([]byte(`data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}` + "\n\n" +
		`data: {"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}` + "\n\n" +
		`data: {"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}` + "\n\ndata: [DONE]\n\n"))
	f.Add([]byte(`data: {"error":{"message":"boom","type":"server_error"}}` + "\n\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, d := watch(t.Context(), 0)
		s := &openAIStream{body: io.NopCloser(bytes.NewReader(body)), events: NewSSEReader(bytes.NewReader(body), 1<<16), deadline: d}
		defer s.Close()
		var acc Accumulator
		for range 10000 {
			c, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				var pe *ProviderError
				if !errors.As(err, &pe) {
					t.Fatalf("Recv() error %T, want *ProviderError: %v", err, err)
				}
				break
			}
			acc.Add(c)
		}
		if _, err := json.Marshal(acc.Response()); err != nil {
			t.Fatalf("the folded answer does not encode: %v", err)
		}
	})
}

// TestMayHaveRun: which failures may have been run (and billed) by the
// provider, for budgets.
func TestMayHaveRun(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"time-out", &ProviderError{Err: fmt.Errorf("x: %w", ErrTimeout)}, true},
		{"connection broke", &ProviderError{Err: fmt.Errorf("x: %w", ErrBroken)}, true},
		{"caller gone", &ProviderError{Err: fmt.Errorf("x: %w", context.Canceled)}, true},
		{"invalid answer", &ProviderError{Err: fmt.Errorf("x: %w", ErrInvalidAnswer)}, true},
		{"HTTP 503", &ProviderError{Status: 503}, false},
		{"HTTP 400", &ProviderError{Status: 400}, false},
		{"no connection", &ProviderError{Err: fmt.Errorf("x: %w", ErrConnection)}, false},
		{"bad request", &ProviderError{Err: fmt.Errorf("x: %w", ErrBadRequest)}, false},
		{"credentials", &ProviderError{Err: fmt.Errorf("x: %w", ErrCredentials)}, false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		if got := MayHaveRun(tt.err); got != tt.want {
			t.Errorf("MayHaveRun(%s) = %t, want %t", tt.name, got, tt.want)
		}
	}
}

// TestDialFailureIsNotSent: a refused connection is ErrConnection (nothing
// left); a connection that breaks after the request was written is
// ErrBroken (the provider may run it).
func TestDialFailureIsNotSent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := NewOpenAI(Endpoint{BaseURL: "http://" + addr + "/v1"})
	_, err = p.Chat(t.Context(), &ChatRequest{Model: "m", Messages: []Message{{Role: "user", Content: TextContent("hi")}}})
	if !errors.Is(err, ErrConnection) || MayHaveRun(err) {
		t.Errorf("Chat to a closed port = %v, want ErrConnection, not run", err)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // the request arrived; the answer never does
		}
	}))
	defer srv.Close()
	p = NewOpenAI(Endpoint{BaseURL: srv.URL + "/v1"})
	_, err = p.Chat(t.Context(), &ChatRequest{Model: "m", Messages: []Message{{Role: "user", Content: TextContent("hi")}}})
	if !errors.Is(err, ErrBroken) || !MayHaveRun(err) {
		t.Errorf("Chat cut after the request = %v, want ErrBroken, may have run", err)
	}
}
