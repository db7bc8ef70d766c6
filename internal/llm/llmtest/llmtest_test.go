package llmtest_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/llm/llmtest"
)

// client is the official Go SDK pointed at the server: if it accepts the
// answers, agents built on it will.
func client(s *llmtest.Server) *openai.Client {
	c := openai.NewClient(option.WithBaseURL(s.URL()), option.WithAPIKey("sk-test"), option.WithMaxRetries(0))
	return &c
}

func TestOfficialClientChat(t *testing.T) {
	s := llmtest.Start(t, llmtest.WithContent("Hi there."))
	resp, err := client(s).Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Choices[0].Message.Content != "Hi there." || resp.Model != "gpt-4o-mini" || resp.Object != "chat.completion" || resp.ID == "" || resp.Created == 0 {
		t.Errorf("Chat = %+v", resp)
	}
	if resp.Usage.TotalTokens == 0 || resp.Choices[0].FinishReason != "stop" {
		t.Errorf("usage %+v, finish %s", resp.Usage, resp.Choices[0].FinishReason)
	}
	reqs := s.Requests()
	if len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "Bearer sk-test" || !strings.Contains(string(reqs[0].Body), `"Hello"`) {
		t.Errorf("recorded %+v", reqs)
	}
	if got := s.ChatRequests(); len(got) != 1 || got[0].Messages[0].Content.String() != "Hello" {
		t.Errorf("ChatRequests() = %+v", got)
	}
}

func TestOfficialClientStreamsToolCalls(t *testing.T) {
	s := llmtest.Start(t, llmtest.WithToolCalls(llm.ToolCall{Function: llm.FunctionCall{Name: "get_weather", Arguments: `{"city":"Paris","unit":"celsius"}`}}))
	stream := client(s).Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
		Model:         "gpt-4o-mini",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Paris?")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		if !acc.AddChunk(stream.Current()) {
			t.Fatalf("the accumulator refused chunk %d: %s", chunks, stream.Current().RawJSON())
		}
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if chunks < 4 {
		t.Errorf("%d chunks, want the call spread over several", chunks)
	}
	calls := acc.Choices[0].Message.ToolCalls
	if len(calls) != 1 || calls[0].ID != "call_1" || calls[0].Function.Name != "get_weather" || calls[0].Function.Arguments != `{"city":"Paris","unit":"celsius"}` {
		t.Errorf("accumulated tool calls = %+v", calls)
	}
	if acc.Choices[0].FinishReason != "tool_calls" || acc.Usage.TotalTokens == 0 {
		t.Errorf("finish %q, usage %+v", acc.Choices[0].FinishReason, acc.Usage)
	}
}

func TestOfficialClientEmbeddingsAndModels(t *testing.T) {
	s := llmtest.Start(t, llmtest.WithModels("emb-small", "chat-big"))
	c := client(s)
	resp, err := c.Embeddings.New(t.Context(), openai.EmbeddingNewParams{
		Model: "emb-small",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Data) != 2 || len(resp.Data[0].Embedding) != llm.DefaultEmbeddingDimensions || resp.Data[1].Index != 1 || resp.Model != "emb-small" {
		t.Errorf("Embeddings = %+v", resp)
	}
	page, err := c.Models.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 2 || page.Data[0].ID != "emb-small" || page.Data[1].OwnedBy != "llmtest" {
		t.Errorf("Models = %+v", page.Data)
	}
	m, err := c.Models.Get(t.Context(), "chat-big")
	if err != nil || m.ID != "chat-big" {
		t.Errorf("Models.Get = %+v, %v", m, err)
	}
}

func TestOfficialClientErrors(t *testing.T) {
	s := llmtest.Start(t, llmtest.WithError(503, "", "The engine is currently overloaded."), llmtest.WithRetryAfter(1))
	_, err := client(s).Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
		Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Message != "The engine is currently overloaded." || apiErr.Type != "server_error" {
		t.Fatalf("error = %v, want the SDK's 503", err)
	}
	if got := s.Requests()[0].Header; got.Get("Content-Type") != "application/json" {
		t.Errorf("request headers %v", got)
	}

	// Set changes the answers from now on.
	s.Set(llmtest.WithContent("recovered"))
	resp, err := client(s).Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
		Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
	})
	if err != nil || resp.Choices[0].Message.Content != "recovered" {
		t.Errorf("after Set: %v, %v", resp, err)
	}

	// An invalid request is refused as OpenAI would, naming the parameter.
	_, err = client(s).Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{Model: "m"})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "messages" {
		t.Errorf("error = %v, want a 400 about messages", err)
	}
}

func TestHandlerHook(t *testing.T) {
	s := llmtest.Start(t, llmtest.WithHandler(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "teapot", http.StatusTeapot)
	}))
	resp, err := http.Post(s.URL()+"/chat/completions", "application/json", strings.NewReader(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot {
		t.Errorf("status = %d, want the handler's 418", resp.StatusCode)
	}
	if reqs := s.Requests(); len(reqs) != 1 || string(reqs[0].Body) != `{"x":1}` || reqs[0].Path != "/v1/chat/completions" {
		t.Errorf("recorded %+v", reqs)
	}
}
