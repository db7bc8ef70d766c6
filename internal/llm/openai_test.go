package llm_test

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

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/llm/llmtest"
)

func userRequest(text string) *llm.ChatRequest {
	return &llm.ChatRequest{Model: "agent-facing-name", Messages: []llm.Message{{Role: "user", Content: llm.TextContent(text)}}}
}

func endpoint(url string) llm.Endpoint {
	return llm.Endpoint{BaseURL: url, Model: "provider-model", Timeout: 5 * time.Second}
}

func TestOpenAIChat(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithContent("Bonjour."))
	ep := endpoint(up.URL())
	ep.Headers = http.Header{"Api-Version": {"2024-10-21"}}
	ep.Auth = func(context.Context) (http.Header, error) {
		return http.Header{"Authorization": {"Bearer sk-test"}}, nil
	}
	req := userRequest("Hello")
	req.Extra = map[string]json.RawMessage{"seed": json.RawMessage("7")}
	resp, err := llm.NewOpenAI(ep).Chat(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Choices[0].Message.Content.String(); got != "Bonjour." || resp.Choices[0].FinishReason != "stop" {
		t.Errorf("answer = %q (%s), want Bonjour. (stop)", got, resp.Choices[0].FinishReason)
	}
	if resp.Usage == nil || resp.Usage.TotalTokens == 0 {
		t.Errorf("usage = %+v, want counts", resp.Usage)
	}
	if req.Model != "agent-facing-name" {
		t.Errorf("the caller's request was changed: model %q", req.Model)
	}
	got := up.Requests()
	if len(got) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(got))
	}
	h := got[0].Header
	if h.Get("Authorization") != "Bearer sk-test" || h.Get("Api-Version") != "2024-10-21" || h.Get("Content-Type") != "application/json" {
		t.Errorf("upstream headers = %v", h)
	}
	want := `{"model":"provider-model","messages":[{"role":"user","content":"Hello"}],"seed":7}`
	if string(got[0].Body) != want {
		t.Errorf("upstream body = %s, want %s", got[0].Body, want)
	}
}

func TestOpenAIStreamWithToolCall(t *testing.T) {
	call := llm.ToolCall{Function: llm.FunctionCall{Name: "erp.get_order", Arguments: `{"order_id":"A-1001","expand":["lines","customer"]}`}}
	up := llmtest.Start(t, llmtest.WithContent("Let me look that up for you now."), llmtest.WithToolCalls(call))
	stream, err := llm.NewOpenAI(endpoint(up.URL())).ChatStream(t.Context(), userRequest("Where is order A-1001?"))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var acc llm.Accumulator
	chunks, usageChunks := 0, 0
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		chunks++
		if llm.IsUsageChunk(c) {
			usageChunks++
		}
		acc.Add(c)
	}
	if chunks < 5 || usageChunks != 1 {
		t.Errorf("got %d chunks of which %d usage chunks, want several and 1", chunks, usageChunks)
	}
	resp := acc.Response()
	msg := resp.Choices[0].Message
	if msg.Content.String() != "Let me look that up for you now." || resp.Choices[0].FinishReason != "tool_calls" {
		t.Errorf("accumulated message = %q, %s", msg.Content.String(), resp.Choices[0].FinishReason)
	}
	wantCalls := []llm.ToolCall{{ID: "call_1", Type: "function", Function: call.Function}}
	if diff := cmp.Diff(wantCalls, msg.ToolCalls); diff != "" {
		t.Errorf("tool calls mismatch (-want +got):\n%s", diff)
	}
	if resp.Usage == nil || resp.Usage.CompletionTokens == 0 {
		t.Errorf("usage = %+v, want the usage chunk's", resp.Usage)
	}
	sent := up.ChatRequests()[0]
	if !sent.Stream || sent.StreamOptions == nil || !sent.StreamOptions.IncludeUsage {
		t.Errorf("sent stream %v, stream_options %+v; want the usage asked for", sent.Stream, sent.StreamOptions)
	}
	if h := up.Requests()[0].Header.Get("Accept"); h != "text/event-stream" {
		t.Errorf("Accept = %q", h)
	}
}

func TestOpenAIEmbed(t *testing.T) {
	up := llmtest.Start(t)
	dims := 4
	resp, err := llm.NewOpenAI(endpoint(up.URL())).Embed(t.Context(), &llm.EmbeddingRequest{
		Model: "x", Input: json.RawMessage(`["a","b"]`), Dimensions: &dims,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Data) != 2 || resp.Model != "provider-model" {
		t.Fatalf("Embed = %+v", resp)
	}
	var vec []float64
	if err := json.Unmarshal(resp.Data[1].Embedding, &vec); err != nil || len(vec) != 4 || resp.Data[1].Index != 1 {
		t.Errorf("vector %s: %v", resp.Data[1].Embedding, err)
	}
	if path := up.Requests()[0].Path; path != "/v1/embeddings" {
		t.Errorf("path = %s", path)
	}
}

func TestOpenAIErrors(t *testing.T) {
	tests := []struct {
		name      string
		opts      []llmtest.Option
		status    int
		message   string
		retry     time.Duration
		retryable bool
	}{
		{"503", []llmtest.Option{llmtest.WithError(503, "", "The server is overloaded.")}, 503, "The server is overloaded.", 0, true},
		{"429 with Retry-After", []llmtest.Option{llmtest.WithError(429, "", "Rate limit reached for requests"), llmtest.WithRetryAfter(2)}, 429, "Rate limit reached for requests", 2 * time.Second, true},
		{"429 with retry-after-ms", []llmtest.Option{llmtest.WithError(429, "", "slow down"), llmtest.WithHeader("Retry-After", "2"), llmtest.WithHeader("Retry-After-Ms", "1500")}, 429, "slow down", 1500 * time.Millisecond, true},
		{"400", []llmtest.Option{llmtest.WithError(400, "", "Invalid value for 'temperature'")}, 400, "Invalid value for 'temperature'", 0, false},
		{"401", []llmtest.Option{llmtest.WithError(401, "", "Incorrect API key provided")}, 401, "Incorrect API key provided", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := llmtest.Start(t, tt.opts...)
			p := llm.NewOpenAI(endpoint(up.URL()))
			_, chatErr := p.Chat(t.Context(), userRequest("x"))
			_, streamErr := p.ChatStream(t.Context(), userRequest("x"))
			_, embedErr := p.Embed(t.Context(), &llm.EmbeddingRequest{Input: json.RawMessage(`"x"`)})
			for what, err := range map[string]error{"Chat": chatErr, "ChatStream": streamErr, "Embed": embedErr} {
				var pe *llm.ProviderError
				if !errors.As(err, &pe) {
					t.Fatalf("%s error = %v, want a *ProviderError", what, err)
				}
				if pe.Status != tt.status || pe.Message != tt.message || pe.RetryAfter != tt.retry {
					t.Errorf("%s error = %d %q retry after %s, want %d %q %s", what, pe.Status, pe.Message, pe.RetryAfter, tt.status, tt.message, tt.retry)
				}
				if got := llm.Retryable(err); got != tt.retryable {
					t.Errorf("Retryable(%v) = %v, want %v", err, got, tt.retryable)
				}
			}
		})
	}
}

func TestOpenAITimeoutBeforeHeaders(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithDelay(10*time.Second))
	ep := endpoint(up.URL())
	ep.Timeout = 50 * time.Millisecond
	p := llm.NewOpenAI(ep)
	start := time.Now()
	_, err := p.Chat(t.Context(), userRequest("x"))
	if !errors.Is(err, llm.ErrTimeout) || !llm.Retryable(err) {
		t.Errorf("Chat error = %v, want ErrTimeout, retryable", err)
	}
	_, err = p.ChatStream(t.Context(), userRequest("x"))
	if !errors.Is(err, llm.ErrTimeout) {
		t.Errorf("ChatStream error = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the calls took %s, want about 100ms", d)
	}
}

func TestOpenAITimeoutBetweenEvents(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithEventDelay(10*time.Second))
	ep := endpoint(up.URL())
	ep.Timeout = 100 * time.Millisecond
	stream, err := llm.NewOpenAI(ep).ChatStream(t.Context(), userRequest("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first Recv() = %v, want the first chunk", err)
	}
	_, err = stream.Recv()
	if !errors.Is(err, llm.ErrTimeout) {
		t.Errorf("second Recv() = %v, want ErrTimeout", err)
	}
	if _, again := stream.Recv(); again != err {
		t.Errorf("Recv() after the error = %v, want the same error", again)
	}
}

// TestOpenAIStreamLongerThanTimeout checks that the time-out bounds the
// silence between events, not the whole stream: over 30 events (three
// words each) 100 ms apart outlast a 2 s limit, each gap a twentieth of it,
// so that a loaded machine stretching one gap does not reach the limit.
func TestOpenAIStreamLongerThanTimeout(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithContent(strings.Repeat("word ", 90)), llmtest.WithEventDelay(100*time.Millisecond))
	ep := endpoint(up.URL())
	ep.Timeout = 2 * time.Second
	stream, err := llm.NewOpenAI(ep).ChatStream(t.Context(), userRequest("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	start := time.Now()
	n := 0
	for {
		_, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Recv() after %d chunks and %s = %v", n, time.Since(start), err)
		}
		n++
	}
	if d := time.Since(start); d < ep.Timeout {
		t.Errorf("the stream took %s over %d chunks; the test needs it to outlast the time-out %s", d, n, ep.Timeout)
	}
}

func TestOpenAIConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := llm.NewOpenAI(endpoint("http://" + addr + "/v1"))
	_, err = p.Chat(t.Context(), userRequest("x"))
	if !errors.Is(err, llm.ErrConnection) || !llm.Retryable(err) {
		t.Errorf("Chat error = %v, want ErrConnection, retryable", err)
	}
	_, err = p.ChatStream(t.Context(), userRequest("x"))
	if !errors.Is(err, llm.ErrConnection) {
		t.Errorf("ChatStream error = %v, want ErrConnection", err)
	}
}

func TestOpenAIOversizedAnswer(t *testing.T) {
	llm.SetMaxAnswer(t, 64<<10) // the mechanism, at a size a test moves quickly
	huge := strings.Repeat("x", 64<<10)
	up := llmtest.Start(t, llmtest.WithHandler(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Accept"), "event-stream") {
			// Many events, each small, adding up to too much.
			piece := `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"` + strings.Repeat("y", 4<<10) + `"},"finish_reason":null}]}` + "\n\n"
			for range 17 {
				if _, err := io.WriteString(w, piece); err != nil {
					return
				}
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"%s"},"finish_reason":"stop"}]}`, huge)
	}))
	p := llm.NewOpenAI(endpoint(up.URL()))
	_, err := p.Chat(t.Context(), userRequest("x"))
	if !errors.Is(err, llm.ErrInvalidAnswer) || llm.Retryable(err) {
		t.Errorf("Chat error = %v, want ErrInvalidAnswer, not retryable", err)
	}
	stream, err := p.ChatStream(t.Context(), userRequest("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	for {
		_, err = stream.Recv()
		if err != nil {
			break
		}
	}
	if !errors.Is(err, llm.ErrInvalidAnswer) {
		t.Errorf("Recv() error = %v, want ErrInvalidAnswer", err)
	}
}

func TestOpenAIBrokenStreams(t *testing.T) {
	tests := []struct {
		name, body, message string
		want                error
	}{
		{"no [DONE]", `data: {"id":"c","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}` + "\n\n", "", llm.ErrInvalidAnswer},
		{"not JSON", "data: {oops\n\n", "", llm.ErrInvalidAnswer},
		{"error event", `data: {"error":{"message":"The server had an error while processing your request.","type":"server_error"}}` + "\n\n", "The server had an error while processing your request.", llm.ErrInvalidAnswer},
		{"finished without [DONE]", `data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n", "", io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := llmtest.Start(t, llmtest.WithHandler(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, tt.body)
			}))
			stream, err := llm.NewOpenAI(endpoint(up.URL())).ChatStream(t.Context(), userRequest("x"))
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			for err == nil {
				_, err = stream.Recv()
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Recv() error = %v, want %v", err, tt.want)
			}
			var pe *llm.ProviderError
			if tt.message != "" && (!errors.As(err, &pe) || pe.Message != tt.message) {
				t.Errorf("Recv() error = %#v, want message %q", err, tt.message)
			}
		})
	}
}

func TestOpenAICallerCancels(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithDelay(10*time.Second))
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err := llm.NewOpenAI(endpoint(up.URL())).Chat(ctx, userRequest("x"))
	if !errors.Is(err, context.Canceled) || llm.Retryable(err) {
		t.Errorf("Chat error = %v, want context.Canceled, not retryable", err)
	}
}

func TestOpenAICredentialsFail(t *testing.T) {
	up := llmtest.Start(t)
	ep := endpoint(up.URL())
	ep.Auth = func(context.Context) (http.Header, error) { return nil, errors.New("secret openai-key: not found") }
	_, err := llm.NewOpenAI(ep).Chat(t.Context(), userRequest("x"))
	if !errors.Is(err, llm.ErrCredentials) || llm.Retryable(err) {
		t.Errorf("Chat error = %v, want ErrCredentials, not retryable", err)
	}
	if n := len(up.Requests()); n != 0 {
		t.Errorf("upstream got %d requests, want none", n)
	}
}

func TestOpenAIBaseURLWithQuery(t *testing.T) {
	up := llmtest.Start(t)
	_, err := llm.NewOpenAI(endpoint(up.URL()+"/?api-version=2024-10-21")).Chat(t.Context(), userRequest("x"))
	if err != nil {
		t.Fatal(err)
	}
	if got := up.Requests()[0]; got.Path != "/v1/chat/completions" || got.Query != "api-version=2024-10-21" {
		t.Errorf("path = %s, query %s; want /v1/chat/completions, api-version=2024-10-21", got.Path, got.Query)
	}
}
