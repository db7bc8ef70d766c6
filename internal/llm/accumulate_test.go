package llm

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// decodeChunks reads chunks written as JSON, one a line.
func decodeChunks(t *testing.T, lines string) []*ChatChunk {
	t.Helper()
	var out []*ChatChunk
	for _, line := range strings.Split(strings.TrimSpace(lines), "\n") {
		var c ChatChunk
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("chunk %s: %v", line, err)
		}
		out = append(out, &c)
	}
	return out
}

func TestAccumulator(t *testing.T) {
	tests := []struct {
		name   string
		chunks string
		want   *ChatResponse
	}{
		{
			name: "openai with a tool call and usage",
			chunks: `
{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}
{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]},"finish_reason":null}]}
{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"Paris\"}"}}]},"finish_reason":null}]}
{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":null}]}
{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}
{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":80,"completion_tokens":30,"total_tokens":110}}`,
			want: &ChatResponse{ID: "chatcmpl-1", Object: "chat.completion", Created: 1700000000, Model: "gpt-4o-2024-08-06",
				Choices: []Choice{{Message: Message{Role: "assistant", ToolCalls: []ToolCall{
					{ID: "call_a", Type: "function", Function: FunctionCall{Name: "get_weather", Arguments: `{"city":"Paris"}`}},
					{ID: "call_b", Type: "function", Function: FunctionCall{Name: "get_time", Arguments: "{}"}},
				}}, FinishReason: "tool_calls"}},
				Usage: &Usage{PromptTokens: 80, CompletionTokens: 30, TotalTokens: 110}},
		},
		{
			name: "content and refusal",
			chunks: `
{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}
{"id":"c","choices":[{"index":0,"delta":{"content":"Hello, "},"finish_reason":null}]}
{"id":"c","choices":[{"index":0,"delta":{"content":"world."},"finish_reason":null}]}
{"id":"c","choices":[{"index":0,"delta":{"refusal":"I won't"},"finish_reason":null}]}
{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
			want: &ChatResponse{ID: "c", Object: "chat.completion", Choices: []Choice{{Message: Message{Role: "assistant", Content: TextContent("Hello, world."), Refusal: "I won't"}, FinishReason: "stop"}}},
		},
		{
			name: "empty content stays empty",
			chunks: `
{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}
{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}`,
			want: &ChatResponse{ID: "c", Object: "chat.completion", Choices: []Choice{{Message: Message{Role: "assistant", Content: TextContent("")}, FinishReason: "length"}}},
		},
		{
			name: "whole calls, every index 0, id and name repeated",
			chunks: `
{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\""}}]},"finish_reason":null}]}
{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":":1}"}}]},"finish_reason":null}]}
{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"b","function":{"name":"g","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}`,
			want: &ChatResponse{ID: "c", Object: "chat.completion", Choices: []Choice{{Message: Message{Role: "assistant", ToolCalls: []ToolCall{
				{ID: "a", Type: "function", Function: FunctionCall{Name: "f", Arguments: `{"x":1}`}},
				{ID: "b", Type: "function", Function: FunctionCall{Name: "g", Arguments: "{}"}},
			}}, FinishReason: "tool_calls"}}},
		},
		{
			name: "name in pieces",
			chunks: `
{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"erp."}}]},"finish_reason":null}]}
{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"get_order","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}`,
			want: &ChatResponse{ID: "c", Object: "chat.completion", Choices: []Choice{{Message: Message{Role: "assistant", ToolCalls: []ToolCall{
				{ID: "a", Type: "function", Function: FunctionCall{Name: "erp.get_order", Arguments: "{}"}},
			}}, FinishReason: "tool_calls"}}},
		},
		{
			name: "two choices interleaved",
			chunks: `
{"id":"c","choices":[{"index":1,"delta":{"content":"B"},"finish_reason":null}]}
{"id":"c","choices":[{"index":0,"delta":{"content":"A"},"finish_reason":null},{"index":1,"delta":{"content":"b"},"finish_reason":"stop"}]}
{"id":"c","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}`,
			want: &ChatResponse{ID: "c", Object: "chat.completion", Choices: []Choice{
				{Index: 0, Message: Message{Role: "assistant", Content: TextContent("Aa")}, FinishReason: "stop"},
				{Index: 1, Message: Message{Role: "assistant", Content: TextContent("Bb")}, FinishReason: "stop"},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var acc Accumulator
			for _, c := range decodeChunks(t, tt.chunks) {
				acc.Add(c)
			}
			acc.Add(nil)
			if diff := cmp.Diff(tt.want, acc.Response()); diff != "" {
				t.Errorf("Response() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAccumulatorEmpty(t *testing.T) {
	var acc Accumulator
	got := acc.Response()
	if got.Object != "chat.completion" || got.Choices == nil || len(got.Choices) != 0 || got.Usage != nil {
		t.Errorf("Response() of nothing = %+v", got)
	}
}

func TestChunksRoundTrip(t *testing.T) {
	resps := []*ChatResponse{
		{ID: "a", Object: "chat.completion", Created: 5, Model: "m", Choices: []Choice{{Message: Message{Role: "assistant", Content: TextContent("One two three four five six seven.\nEight  nine ten")}, FinishReason: "stop"}},
			Usage: &Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}},
		{ID: "b", Object: "chat.completion", Model: "m", Choices: []Choice{{Message: Message{Role: "assistant", ToolCalls: []ToolCall{
			{ID: "call_1", Type: "function", Function: FunctionCall{Name: "f", Arguments: `{"text":"ünïcödé everywhere, long enough to split"}`}},
			{ID: "call_2", Type: "function", Function: FunctionCall{Name: "g", Arguments: ""}},
		}}, FinishReason: "tool_calls"}}},
		{ID: "c", Object: "chat.completion", Model: "m", Choices: []Choice{{Message: Message{Role: "assistant", Content: TextContent("  leading and trailing  ")}, FinishReason: "length"}}},
		// A Responses API provider's reasoning items come back whole, in order.
		{ID: "d", Object: "chat.completion", Model: "m", Choices: []Choice{{Message: Message{Role: "assistant", Content: TextContent("Thought it over."),
			Reasoning: []json.RawMessage{json.RawMessage(`{"type":"reasoning","id":"rs_1","summary":[]}`), json.RawMessage(`{"type":"reasoning","id":"rs_2","encrypted_content":"x"}`)}},
			FinishReason: "stop"}}},
	}
	for _, resp := range resps {
		var acc Accumulator
		for _, c := range Chunks(resp, true) {
			acc.Add(c)
		}
		if diff := cmp.Diff(resp, acc.Response()); diff != "" {
			t.Errorf("Accumulate(Chunks(%s)) mismatch (-want +got):\n%s", resp.ID, diff)
		}
	}
	noUsage := Chunks(resps[0], false)
	if IsUsageChunk(noUsage[len(noUsage)-1]) {
		t.Errorf("Chunks(includeUsage false) ends with a usage chunk")
	}
}

func TestSplitWords(t *testing.T) {
	for _, s := range []string{"", "a", "a b c", "a b c d", " a  b\tc\nd e f g ", "日本 語 の 文"} {
		pieces := splitWords(s, 3)
		if strings.Join(pieces, "") != s {
			t.Errorf("splitWords(%q) = %q, which does not join back", s, pieces)
		}
		for _, p := range pieces {
			if n := len(strings.Fields(p)); n > 3 {
				t.Errorf("splitWords(%q) piece %q has %d words", s, p, n)
			}
		}
	}
	if got := splitWords("a b c d e f g", 3); len(got) != 3 {
		t.Errorf("splitWords(7 words, 3) = %q, want 3 pieces", got)
	}
}
