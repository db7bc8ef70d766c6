package llm_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/llm/llmtest"
)

// responsesRoundTrip is a Responses request as an agent sends it, and the
// Responses request a responses-API provider must get for it once bridged
// through chat (model renamed, store false, reasoning asked back).
var responsesRoundTrip = []struct {
	name, in, want string
}{
	{
		name: "conversation with reasoning and a function call",
		in: `{"model":"m","instructions":"Be brief.","input":[{"role":"user","content":"Where is 1042?"},
			{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAA"},
			{"type":"function_call","call_id":"call_1","name":"lookup","arguments":"{\"order\":1042}"},
			{"type":"function_call_output","call_id":"call_1","output":"shipped"}],
			"tools":[{"type":"function","name":"lookup","parameters":{"type":"object"},"strict":false}],
			"tool_choice":{"type":"function","name":"lookup"},"max_output_tokens":500,"reasoning":{"effort":"low"},"parallel_tool_calls":false}`,
		want: `{"model":"provider-model","store":false,"stream":false,"input":[
			{"type":"message","role":"system","content":"Be brief."},
			{"type":"message","role":"user","content":"Where is 1042?"},
			{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAA"},
			{"type":"function_call","call_id":"call_1","name":"lookup","arguments":"{\"order\":1042}"},
			{"type":"function_call_output","call_id":"call_1","output":"shipped"}],
			"tools":[{"type":"function","name":"lookup","parameters":{"type":"object"},"strict":false}],
			"tool_choice":{"type":"function","name":"lookup"},"max_output_tokens":500,"reasoning":{"effort":"low"},
			"parallel_tool_calls":false,"include":["reasoning.encrypted_content"]}`,
	},
	{
		name: "parts, json schema",
		in: `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"what is this?"},{"type":"input_image","image_url":"https://example.com/a.png","detail":"low"}]},
			{"role":"assistant","content":[{"type":"output_text","text":"A cat."}]},{"role":"user","content":"JSON please"}],
			"text":{"format":{"type":"json_schema","name":"answer","schema":{"type":"object"},"strict":true}},"temperature":0.5}`,
		want: `{"model":"provider-model","store":false,"stream":false,"input":[
			{"type":"message","role":"user","content":[{"type":"input_text","text":"what is this?"},{"type":"input_image","image_url":"https://example.com/a.png","detail":"low"}]},
			{"type":"message","role":"assistant","content":[{"type":"output_text","text":"A cat.","annotations":[]}]},
			{"type":"message","role":"user","content":"JSON please"}],
			"text":{"format":{"type":"json_schema","name":"answer","schema":{"type":"object"},"strict":true}},"temperature":0.5}`,
	},
}

// TestOpenAIResponsesRequest: a Responses request bridged to chat (as the
// pipeline sees it) reaches a responses-API provider as the Responses
// request it was, reasoning items included.
func TestOpenAIResponsesRequest(t *testing.T) {
	for _, tc := range responsesRoundTrip {
		t.Run(tc.name, func(t *testing.T) {
			up := llmtest.Start(t, llmtest.WithHandler(llmtest.ResponsesHandler("ok", nil, false)))
			req, err := llm.DecodeResponsesRequest([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := llm.NewOpenAIResponses(endpoint(up.URL())).Chat(t.Context(), req.ToChat()); err != nil {
				t.Fatal(err)
			}
			sent := up.Requests()
			if len(sent) != 1 || sent[0].Path != "/v1/responses" {
				t.Fatalf("the upstream got %+v, want one POST /v1/responses", sent)
			}
			var got, want any
			if err := json.Unmarshal(sent[0].Body, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatalf("want: %v", err)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("request (-want +got):\n%s\ngot %s", d, sent[0].Body)
			}
		})
	}
}

var refundCall = llm.ToolCall{ID: "call_9", Type: "function", Function: llm.FunctionCall{Name: "refund", Arguments: `{"order":1042,"amount":"42.00"}`}}

func TestOpenAIResponsesChat(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithHandler(llmtest.ResponsesHandler("Refunding now.", []llm.ToolCall{refundCall}, true)))
	resp, err := llm.NewOpenAIResponses(endpoint(up.URL())).Chat(t.Context(), userRequest("refund 1042"))
	if err != nil {
		t.Fatal(err)
	}
	c := resp.Choices[0]
	if c.Message.Content.String() != "Refunding now." || c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 ||
		c.Message.ToolCalls[0] != refundCall || len(c.Message.Reasoning) != 1 || string(c.Message.Reasoning[0]) != llmtest.ReasoningItem {
		t.Errorf("answer %+v, want the text, the call, tool_calls and the reasoning item", c)
	}
	if d := cmp.Diff(&llmtest.ResponsesUsage, resp.Usage); d != "" {
		t.Errorf("usage (-want +got):\n%s", d)
	}
}

func TestOpenAIResponsesStream(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithHandler(llmtest.ResponsesHandler("Ich erstatte 42 Euro.", []llm.ToolCall{refundCall}, true)))
	s, err := llm.NewOpenAIResponses(endpoint(up.URL())).ChatStream(t.Context(), userRequest("refund 1042"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var acc llm.Accumulator
	reasoning, chunks := 0, 0
	for {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		chunks++
		for _, ch := range c.Choices {
			reasoning += len(ch.Delta.Reasoning)
		}
		acc.Add(c)
	}
	resp := acc.Response()
	c := resp.Choices[0]
	if c.Message.Content.String() != "Ich erstatte 42 Euro." || c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 ||
		c.Message.ToolCalls[0].Function.Arguments != refundCall.Function.Arguments || c.Message.ToolCalls[0].ID != "call_9" {
		t.Errorf("folded answer %+v", c)
	}
	if reasoning != 1 || chunks < 8 {
		t.Errorf("%d reasoning items in %d chunks, want 1 and the text in pieces", reasoning, chunks)
	}
	if resp.Usage == nil || resp.Usage.TotalTokens != 18 {
		t.Errorf("usage %+v, want 18", resp.Usage)
	}
	if body := string(up.Requests()[0].Body); !strings.Contains(body, `"stream":true`) {
		t.Errorf("request %s, want stream true", body)
	}
}

func TestOpenAIResponsesFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		stream  bool
		check   func(*llm.ProviderError) bool
	}{
		{"refused", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":{"message":"Unknown parameter: 'x'.","type":"invalid_request_error"}}`))
		}, false, func(pe *llm.ProviderError) bool {
			return pe.Status == 400 && strings.Contains(pe.Message, "Unknown parameter")
		}},
		{"failed response", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"id":"resp_1","status":"failed","error":{"code":"server_error","message":"The model failed."},"output":[]}`))
		}, false, func(pe *llm.ProviderError) bool { return pe.Message == "The model failed." }},
		{"failed stream", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\"}}\n\n" +
				"event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"boom\"}}}\n\n"))
		}, true, func(pe *llm.ProviderError) bool { return pe.Message == "boom" }},
		{"stream cut", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\"}}\n\n"))
		}, true, func(pe *llm.ProviderError) bool { return errors.Is(pe, llm.ErrInvalidAnswer) }},
		{"arguments of no call", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("data: {\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_x\",\"delta\":\"{\"}\n\n"))
		}, true, func(pe *llm.ProviderError) bool { return errors.Is(pe, llm.ErrInvalidAnswer) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := llmtest.Start(t, llmtest.WithHandler(tc.handler))
			p := llm.NewOpenAIResponses(endpoint(up.URL()))
			var err error
			if tc.stream {
				var s llm.Stream
				if s, err = p.ChatStream(t.Context(), userRequest("x")); err == nil {
					defer s.Close()
					for err == nil {
						_, err = s.Recv()
					}
				}
			} else {
				_, err = p.Chat(t.Context(), userRequest("x"))
			}
			var pe *llm.ProviderError
			if !errors.As(err, &pe) || !tc.check(pe) {
				t.Errorf("error %v, want a ProviderError saying so", err)
			}
		})
	}
}
