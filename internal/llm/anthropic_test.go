package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/llm/anthropictest"
	"github.com/google/go-cmp/cmp"
)

// anthEndpoint reaches srv with an API key, as the catalogue would.
func anthEndpoint(srv *anthropictest.Server) Endpoint {
	return Endpoint{
		BaseURL:         srv.URL(),
		Model:           "claude-test",
		Headers:         http.Header{"X-Team": {"agents"}},
		Auth:            func(context.Context) (http.Header, error) { return http.Header{"X-Api-Key": {"sk-test"}}, nil },
		Timeout:         5 * time.Second,
		MaxOutputTokens: 1000,
	}
}

func anthHello() *ChatRequest {
	return &ChatRequest{Model: "smart", Messages: []Message{anthUser("hello")}}
}

// anthCollect reads a stream to its end: the chunks, and the error that
// ended it (nil for io.EOF).
func anthCollect(t *testing.T, s Stream) ([]*ChatChunk, error) {
	t.Helper()
	var chunks []*ChatChunk
	for range 10_000 {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return chunks, nil
		}
		if err != nil {
			return chunks, err
		}
		chunks = append(chunks, c)
	}
	t.Fatal("the stream never ended")
	return nil, nil
}

func TestAnthropicChat(t *testing.T) {
	srv := anthropictest.Start(t, anthropictest.WithAPIKey("sk-test"),
		anthropictest.WithBlocks(anthropictest.Text("Let me check. "), anthropictest.ToolUse("toolu_1", "weather", `{"city": "Paris"}`)),
		anthropictest.WithUsage(anthropictest.Usage{InputTokens: 7, OutputTokens: 9, CacheReadInputTokens: 100}))
	p := NewAnthropic(anthEndpoint(srv))
	req := anthHello()
	req.Tools = []Tool{{Type: "function", Function: Function{Name: "weather"}}}

	got, err := p.Chat(t.Context(), req)
	if err != nil {
		t.Fatalf("Chat: %v", err)
	}
	want := &ChatResponse{
		ID: "msg_fake0001", Object: "chat.completion", Created: got.Created, Model: "claude-test",
		Choices: []Choice{{Message: Message{Role: "assistant", Content: anthText("Let me check. "),
			ToolCalls: []ToolCall{anthCall("toolu_1", "weather", `{"city":"Paris"}`)}}, FinishReason: "tool_calls"}},
		Usage: &Usage{PromptTokens: 107, CompletionTokens: 9, TotalTokens: 116},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Chat (-want +got):\n%s", diff)
	}
	if d := time.Since(time.Unix(got.Created, 0)); d < 0 || d > time.Minute {
		t.Errorf("Created = %d, want now", got.Created)
	}

	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("the server got %d requests, want 1", len(reqs))
	}
	for name, want := range map[string]string{
		"X-Api-Key": "sk-test", "Anthropic-Version": "2023-06-01", "Content-Type": "application/json", "X-Team": "agents",
	} {
		if got := reqs[0].Header.Get(name); got != want {
			t.Errorf("header %s = %q, want %q", name, got, want)
		}
	}
	wantBody := `{"model":"claude-test","max_tokens":1000,"messages":[{"role":"user","content":[{"type":"text","text":"hello"}]}],
		"tools":[{"name":"weather","input_schema":{"type":"object"}}]}`
	if diff := cmp.Diff(anthJSON(t, []byte(wantBody)), anthJSON(t, reqs[0].Body)); diff != "" {
		t.Errorf("request body (-want +got):\n%s", diff)
	}
}

func TestAnthropicVersionFromHeaders(t *testing.T) {
	srv := anthropictest.Start(t)
	ep := anthEndpoint(srv)
	ep.Headers = http.Header{"Anthropic-Version": {"2099-01-01"}}
	if _, err := NewAnthropic(ep).Chat(t.Context(), anthHello()); err != nil {
		t.Fatalf("Chat: %v", err)
	}
	if got := srv.Requests()[0].Header.Values("Anthropic-Version"); len(got) != 1 || got[0] != "2099-01-01" {
		t.Errorf("anthropic-version = %q, want the Model's [2099-01-01]", got)
	}
}

func TestAnthropicStream(t *testing.T) {
	paris := `{"city":"Paris","when":{"day":"tomorrow","hours":[9,12,18]},"note":"çà et là"}`
	rome := `{"city":"Rome"}`
	srv := anthropictest.Start(t,
		anthropictest.WithBlocks(
			anthropictest.Text("Checking both cities."),
			anthropictest.ToolUse("toolu_p", "weather", paris),
			anthropictest.ToolUse("toolu_r", "weather", rome),
			anthropictest.ToolUse("toolu_c", "clock", `{}`),
		),
		anthropictest.WithPieceSize(3),
		anthropictest.WithUsage(anthropictest.Usage{InputTokens: 30, OutputTokens: 40, CacheCreationInputTokens: 5}))
	s, err := NewAnthropic(anthEndpoint(srv)).ChatStream(t.Context(), anthHello())
	if err != nil {
		t.Fatalf("ChatStream: %v", err)
	}
	defer s.Close()
	chunks, err := anthCollect(t, s)
	if err != nil {
		t.Fatalf("stream failed: %v", err)
	}

	if len(chunks) < 3 {
		t.Fatalf("got %d chunks, want at least 3", len(chunks))
	}
	first := chunks[0]
	if len(first.Choices) != 1 || first.Choices[0].Delta.Role != "assistant" {
		t.Errorf("first chunk = %+v, want the assistant role", first)
	}
	var (
		content  strings.Builder
		ids      []string
		names    []string
		args     []strings.Builder
		finishes []string
		pieces   int
	)
	for i, c := range chunks {
		if c.ID != "msg_fake0001" || c.Object != "chat.completion.chunk" || c.Model != "claude-test" || c.Created == 0 {
			t.Errorf("chunk %d = %+v, want the message's id, model and created", i, c)
		}
		if i == len(chunks)-1 {
			break
		}
		if len(c.Choices) != 1 || c.Usage != nil {
			t.Fatalf("chunk %d = %+v, want one choice and no usage", i, c)
		}
		d := c.Choices[0].Delta
		if d.Content != nil {
			content.WriteString(*d.Content)
		}
		for _, tc := range d.ToolCalls {
			if tc.ID != "" {
				if tc.Index != len(ids) || tc.Type != "function" {
					t.Fatalf("chunk %d starts call %+v, want index %d and type function", i, tc, len(ids))
				}
				ids, names = append(ids, tc.ID), append(names, tc.Function.Name)
				args = append(args, strings.Builder{})
			}
			if tc.Index < 0 || tc.Index >= len(ids) {
				t.Fatalf("chunk %d has tool index %d, %d calls started", i, tc.Index, len(ids))
			}
			if tc.Function.Arguments != "" {
				pieces++
			}
			args[tc.Index].WriteString(tc.Function.Arguments)
		}
		if f := c.Choices[0].FinishReason; f != nil {
			finishes = append(finishes, *f)
		}
	}
	if got := content.String(); got != "Checking both cities." {
		t.Errorf("content = %q, want the text block", got)
	}
	if want := []string{"toolu_p", "toolu_r", "toolu_c"}; !cmp.Equal(ids, want) {
		t.Errorf("tool call ids = %q, want %q", ids, want)
	}
	if want := []string{"weather", "weather", "clock"}; !cmp.Equal(names, want) {
		t.Errorf("tool call names = %q, want %q", names, want)
	}
	for i, want := range []string{paris, rome, "{}"} {
		if i < len(args) && args[i].String() != want {
			t.Errorf("tool call %d arguments = %s, want %s", i, args[i].String(), want)
		}
	}
	if pieces < 20 {
		t.Errorf("arguments came in %d pieces, want the many pieces the server split them into", pieces)
	}
	if !cmp.Equal(finishes, []string{"tool_calls"}) {
		t.Errorf("finish reasons = %q, want one tool_calls", finishes)
	}
	last := chunks[len(chunks)-1]
	if last.Choices == nil || len(last.Choices) != 0 {
		t.Errorf("usage chunk choices = %#v, want empty, not null", last.Choices)
	}
	if want := (&Usage{PromptTokens: 35, CompletionTokens: 40, TotalTokens: 75}); !cmp.Equal(last.Usage, want) {
		t.Errorf("usage chunk usage = %+v, want %+v", last.Usage, want)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after the end = %v, want io.EOF again", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	var body struct {
		Stream bool `json:"stream"`
	}
	if err := json.Unmarshal(srv.Requests()[0].Body, &body); err != nil || !body.Stream {
		t.Errorf("request body stream = %v (%v), want true", body.Stream, err)
	}
}

// TestAnthropicStreamMatchesChat: a streamed answer, folded back together,
// is the answer the same call gives unstreamed.
func TestAnthropicStreamMatchesChat(t *testing.T) {
	srv := anthropictest.Start(t, anthropictest.WithPieceSize(2),
		anthropictest.WithBlocks(anthropictest.Text("Two calls: "),
			anthropictest.ToolUse("toolu_1", "search", `{"q":"corral \"gateway\"","n":[1,2]}`),
			anthropictest.ToolUse("toolu_2", "clock", `{}`)),
		anthropictest.WithUsage(anthropictest.Usage{InputTokens: 11, OutputTokens: 13, CacheReadInputTokens: 2}))
	p := NewAnthropic(anthEndpoint(srv))
	whole, err := p.Chat(t.Context(), anthHello())
	if err != nil {
		t.Fatalf("Chat: %v", err)
	}
	s, err := p.ChatStream(t.Context(), anthHello())
	if err != nil {
		t.Fatalf("ChatStream: %v", err)
	}
	defer s.Close()
	chunks, err := anthCollect(t, s)
	if err != nil {
		t.Fatalf("stream failed: %v", err)
	}
	var acc Accumulator
	for _, c := range chunks {
		acc.Add(c)
	}
	streamed := acc.Response()
	streamed.ID, streamed.Created = whole.ID, whole.Created // each call has its own
	if diff := cmp.Diff(whole, streamed); diff != "" {
		t.Errorf("streamed answer (-Chat +stream):\n%s", diff)
	}
}

func TestAnthropicErrors(t *testing.T) {
	tests := []struct {
		name      string
		opts      []anthropictest.Option
		status    int
		errType   string
		retry     time.Duration
		retryable bool
	}{
		{"rate limited", []anthropictest.Option{anthropictest.WithError(429, "rate_limit_error", "slow down"), anthropictest.WithRetryAfter(7)},
			429, "rate_limit_error", 7 * time.Second, true},
		{"overloaded", []anthropictest.Option{anthropictest.WithError(529, "overloaded_error", "Overloaded")},
			529, "overloaded_error", 0, true},
		{"server error", []anthropictest.Option{anthropictest.WithError(500, "api_error", "oops")},
			500, "api_error", 0, true},
		{"bad request", []anthropictest.Option{anthropictest.WithError(400, "invalid_request_error", "messages: bad")},
			400, "invalid_request_error", 0, false},
		{"wrong key", []anthropictest.Option{anthropictest.WithAPIKey("sk-other")},
			401, "authentication_error", 0, false},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", tt.name, stream), func(t *testing.T) {
				srv := anthropictest.Start(t, tt.opts...)
				p := NewAnthropic(anthEndpoint(srv))
				var err error
				if stream {
					_, err = p.ChatStream(t.Context(), anthHello())
				} else {
					_, err = p.Chat(t.Context(), anthHello())
				}
				var pe *ProviderError
				if !errors.As(err, &pe) {
					t.Fatalf("err = %v, want a *ProviderError", err)
				}
				if pe.Status != tt.status || pe.Type != tt.errType || pe.Message == "" || pe.RetryAfter != tt.retry {
					t.Errorf("err = %+v, want status %d, type %s, a message, Retry-After %v", pe, tt.status, tt.errType, tt.retry)
				}
				if got := Retryable(err); got != tt.retryable {
					t.Errorf("Retryable(%v) = %v, want %v", err, got, tt.retryable)
				}
			})
		}
	}
}

func TestAnthropicStreamErrorEvent(t *testing.T) {
	for _, tt := range []struct {
		errType string
		status  int
	}{{"overloaded_error", 529}, {"rate_limit_error", 429}, {"api_error", 500}, {"invalid_request_error", 400}, {"something_new", 500}} {
		t.Run(tt.errType, func(t *testing.T) {
			srv := anthropictest.Start(t, anthropictest.WithStreamError(4, tt.errType, "it broke"))
			s, err := NewAnthropic(anthEndpoint(srv)).ChatStream(t.Context(), anthHello())
			if err != nil {
				t.Fatalf("ChatStream: %v", err)
			}
			defer s.Close()
			chunks, err := anthCollect(t, s)
			var pe *ProviderError
			if !errors.As(err, &pe) || pe.Status != tt.status || pe.Type != tt.errType || pe.Message != "it broke" {
				t.Fatalf("stream ended with %v, want a *ProviderError with status %d", err, tt.status)
			}
			if len(chunks) == 0 {
				t.Errorf("got no chunks before the error, want the role and text chunks")
			}
			if _, again := s.Recv(); again != err {
				t.Errorf("Recv after the error = %v, want the same error", again)
			}
		})
	}
}

func TestAnthropicTimeouts(t *testing.T) {
	t.Run("no answer", func(t *testing.T) {
		srv := anthropictest.Start(t, anthropictest.WithDelay(10*time.Second))
		ep := anthEndpoint(srv)
		ep.Timeout = 100 * time.Millisecond
		p := NewAnthropic(ep)
		start := time.Now()
		if _, err := p.Chat(t.Context(), anthHello()); !errors.Is(err, ErrTimeout) || !Retryable(err) {
			t.Errorf("Chat = %v, want ErrTimeout", err)
		}
		if _, err := p.ChatStream(t.Context(), anthHello()); !errors.Is(err, ErrTimeout) {
			t.Errorf("ChatStream = %v, want ErrTimeout", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the time-outs took %v, want about 200ms", d)
		}
	})

	t.Run("stalled stream", func(t *testing.T) {
		srv := anthropictest.Start(t, anthropictest.WithEventDelay(10*time.Second))
		ep := anthEndpoint(srv)
		ep.Timeout = 100 * time.Millisecond
		s, err := NewAnthropic(ep).ChatStream(t.Context(), anthHello())
		if err != nil {
			t.Fatalf("ChatStream: %v", err)
		}
		defer s.Close()
		if c, err := s.Recv(); err != nil || c.Choices[0].Delta.Role != "assistant" {
			t.Fatalf("first Recv = %+v, %v, want the role chunk", c, err)
		}
		if _, err := s.Recv(); !errors.Is(err, ErrTimeout) {
			t.Errorf("Recv = %v, want ErrTimeout", err)
		}
	})

	t.Run("slow but steady stream", func(t *testing.T) {
		// 40-odd events 10ms apart outlast the limit as a whole, but
		// never between two events.
		srv := anthropictest.Start(t, anthropictest.WithEventDelay(10*time.Millisecond), anthropictest.WithPieceSize(1),
			anthropictest.WithBlocks(anthropictest.Text("one event per letter of this")))
		ep := anthEndpoint(srv)
		ep.Timeout = 300 * time.Millisecond
		start := time.Now()
		s, err := NewAnthropic(ep).ChatStream(t.Context(), anthHello())
		if err != nil {
			t.Fatalf("ChatStream: %v", err)
		}
		defer s.Close()
		if _, err := anthCollect(t, s); err != nil {
			t.Fatalf("stream failed: %v", err)
		}
		if d := time.Since(start); d <= ep.Timeout {
			t.Errorf("the stream took %v, want longer than the %v limit for this test to mean something", d, ep.Timeout)
		}
	})

	t.Run("the caller gives up", func(t *testing.T) {
		srv := anthropictest.Start(t, anthropictest.WithDelay(10*time.Second))
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := NewAnthropic(anthEndpoint(srv)).Chat(ctx, anthHello())
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) || Retryable(err) {
			t.Errorf("Chat = %v, want context.Canceled, not retryable", err)
		}
	})
}

func TestAnthropicInvalidAnswers(t *testing.T) {
	tests := []struct {
		name    string
		stream  bool
		handler http.HandlerFunc
	}{
		{"not JSON", false, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "<html>") }},
		{"not a message", false, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"type":"completion"}`) }},
		{"over 16 MiB", false, func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, `{"type":"message","content":[{"type":"text","text":"`)
			_, _ = w.Write(make([]byte, MaxAnswerBytes))
			_, _ = io.WriteString(w, `"}]}`)
		}},
		{"stream cut short", true, func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\"}}\n\n")
		}},
		{"event over 16 MiB", true, func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\"}}\n\ndata: ")
			_, _ = w.Write(make([]byte, MaxAnswerBytes))
		}},
		{"delta before its block", true, func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\"}}\n\n"+
				"data: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\"}}\n\n")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := anthropictest.Start(t, anthropictest.WithHandler(tt.handler))
			ep := anthEndpoint(srv)
			// These answers are wrong, not slow: under -race on a loaded
			// machine, 16 MiB took longer than the 5 s silence limit to
			// arrive, and the call failed as a time-out instead.
			ep.Timeout = 2 * time.Minute
			p := NewAnthropic(ep)
			var err error
			if tt.stream {
				var s Stream
				if s, err = p.ChatStream(t.Context(), anthHello()); err == nil {
					_, err = anthCollect(t, s)
					s.Close()
				}
			} else {
				_, err = p.Chat(t.Context(), anthHello())
			}
			var pe *ProviderError
			if !errors.Is(err, ErrInvalidAnswer) || !errors.As(err, &pe) {
				t.Errorf("err = %v, want a *ProviderError with ErrInvalidAnswer", err)
			}
		})
	}
}

func TestAnthropicConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := NewAnthropic(Endpoint{BaseURL: "http://" + addr + "/v1", Model: "claude-test", Timeout: 5 * time.Second})
	if _, err := p.Chat(t.Context(), anthHello()); !errors.Is(err, ErrConnection) || !Retryable(err) {
		t.Errorf("Chat = %v, want ErrConnection", err)
	}
	if _, err := p.ChatStream(t.Context(), anthHello()); !errors.Is(err, ErrConnection) {
		t.Errorf("ChatStream = %v, want ErrConnection", err)
	}
}

func TestAnthropicRequestRefusedBeforeSending(t *testing.T) {
	srv := anthropictest.Start(t)
	ep := anthEndpoint(srv)
	p := NewAnthropic(ep)
	bad := &ChatRequest{Messages: []Message{anthUser("hi"), {Role: "assistant", ToolCalls: []ToolCall{anthCall("c", "f", "{")}}}}
	if _, err := p.Chat(t.Context(), bad); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "messages[1]") {
		t.Errorf("Chat = %v, want ErrBadRequest naming messages[1]", err)
	}
	secretErr := errors.New("secret anthropic-key not found")
	ep.Auth = func(context.Context) (http.Header, error) { return nil, secretErr }
	if _, err := NewAnthropic(ep).ChatStream(t.Context(), anthHello()); !errors.Is(err, secretErr) {
		t.Errorf("ChatStream = %v, want the credentials error", err)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("the server got %d requests, want none", n)
	}
}

func TestAnthropicEmbed(t *testing.T) {
	_, err := NewAnthropic(Endpoint{}).Embed(t.Context(), &EmbeddingRequest{Model: "x", Input: json.RawMessage(`"hi"`)})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "no embeddings API") {
		t.Errorf("Embed = %v, want ErrUnsupported saying Anthropic has no embeddings API", err)
	}
}
