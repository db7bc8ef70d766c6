package llm

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The helpers of these tests are prefixed with anth: the package's other
// tests are written by someone else at the same time.

func anthText(s string) *Content { return &Content{Text: s} }

func anthParts(parts ...ContentPart) *Content { return &Content{Parts: parts} }

func anthImage(url string) ContentPart {
	raw, _ := json.Marshal(map[string]any{"type": "image_url", "image_url": map[string]string{"url": url, "detail": "high"}})
	return ContentPart{Type: "image_url", Raw: raw}
}

func anthUser(s string) Message { return Message{Role: "user", Content: anthText(s)} }

func anthCall(id, name, args string) ToolCall {
	return ToolCall{ID: id, Type: "function", Function: FunctionCall{Name: name, Arguments: args}}
}

func anthInt(n int) *int { return &n }

// anthJSON decodes JSON for comparison, failing the test if it is invalid.
func anthJSON(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("invalid JSON %s: %v", data, err)
	}
	return v
}

var anthEP = Endpoint{Model: "claude-test", MaxOutputTokens: 1000}

func TestAnthropicTranslateRequest(t *testing.T) {
	hi := []Message{anthUser("hi")}
	tests := []struct {
		name string
		req  ChatRequest
		want string // the Messages API request
	}{{
		name: "model from the endpoint, max_tokens from the model",
		req:  ChatRequest{Model: "smart", Messages: hi},
		want: `{"model":"claude-test","max_tokens":1000,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
	}, {
		name: "max_completion_tokens first",
		req:  ChatRequest{Messages: hi, MaxCompletionTokens: anthInt(50), MaxTokens: anthInt(60)},
		want: `{"model":"claude-test","max_tokens":50,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
	}, {
		name: "then max_tokens",
		req:  ChatRequest{Messages: hi, MaxTokens: anthInt(60)},
		want: `{"model":"claude-test","max_tokens":60,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
	}, {
		name: "system and developer messages joined into system",
		req: ChatRequest{Messages: []Message{
			{Role: "system", Content: anthText("Be brief.")},
			{Role: "developer", Content: anthParts(ContentPart{Type: "text", Text: "Use "}, ContentPart{Type: "text", Text: "French."})},
			anthUser("hi"),
		}},
		want: `{"model":"claude-test","max_tokens":1000,"system":"Be brief.\n\nUse French.","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
	}, {
		name: "parts, images and empty text",
		req: ChatRequest{Messages: []Message{{Role: "user", Content: anthParts(
			ContentPart{Type: "text", Text: "What is this?"},
			ContentPart{Type: "text", Text: ""},
			anthImage("data:image/png;base64,iVBORw0KGgo="),
			anthImage("https://example.com/cat.jpg"),
		)}}},
		want: `{"model":"claude-test","max_tokens":1000,"messages":[{"role":"user","content":[
			{"type":"text","text":"What is this?"},
			{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
			{"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"}}]}]}`,
	}, {
		name: "consecutive same-role messages merged, empty ones left out",
		req: ChatRequest{Messages: []Message{
			anthUser("one"), anthUser("two"),
			{Role: "assistant", Content: anthText("three")}, {Role: "assistant", Content: anthText("")},
			{Role: "assistant", Content: anthText("four")}, anthUser("five"),
		}},
		want: `{"model":"claude-test","max_tokens":1000,"messages":[
			{"role":"user","content":[{"type":"text","text":"one"},{"type":"text","text":"two"}]},
			{"role":"assistant","content":[{"type":"text","text":"three"},{"type":"text","text":"four"}]},
			{"role":"user","content":[{"type":"text","text":"five"}]}]}`,
	}, {
		name: "tool calls and their results",
		req: ChatRequest{Messages: []Message{
			anthUser("weather in Paris and Rome?"),
			{Role: "assistant", Content: anthText("Let me look."), ToolCalls: []ToolCall{
				anthCall("toolu_1", "weather", `{"city": "Paris"}`),
				anthCall("toolu_2", "weather", `{"city":"Rome","units":{"t":"C"}}`),
				anthCall("toolu_3", "clock", ""),
			}},
			{Role: "tool", ToolCallID: "toolu_1", Content: anthText("18C")},
			{Role: "tool", ToolCallID: "toolu_2", Content: anthParts(ContentPart{Type: "text", Text: "21C"})},
			{Role: "tool", ToolCallID: "toolu_3", Content: anthText("")},
			anthUser("thanks"),
		}},
		want: `{"model":"claude-test","max_tokens":1000,"messages":[
			{"role":"user","content":[{"type":"text","text":"weather in Paris and Rome?"}]},
			{"role":"assistant","content":[
				{"type":"text","text":"Let me look."},
				{"type":"tool_use","id":"toolu_1","name":"weather","input":{"city":"Paris"}},
				{"type":"tool_use","id":"toolu_2","name":"weather","input":{"city":"Rome","units":{"t":"C"}}},
				{"type":"tool_use","id":"toolu_3","name":"clock","input":{}}]},
			{"role":"user","content":[
				{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"18C"}]},
				{"type":"tool_result","tool_use_id":"toolu_2","content":[{"type":"text","text":"21C"}]},
				{"type":"tool_result","tool_use_id":"toolu_3"},
				{"type":"text","text":"thanks"}]}]}`,
	}, {
		name: "tools, with and without parameters",
		req: ChatRequest{Messages: hi, Tools: []Tool{
			{Type: "function", Function: Function{Name: "weather", Description: "Weather of a city", Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}}}`)}},
			{Type: "function", Function: Function{Name: "clock"}},
		}},
		want: `{"model":"claude-test","max_tokens":1000,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"tools":[
			{"name":"weather","description":"Weather of a city","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}},
			{"name":"clock","input_schema":{"type":"object"}}]}`,
	}, {
		name: "stop as a string, temperature over 1, top_p, user",
		req:  ChatRequest{Messages: hi, Stop: json.RawMessage(`"END"`), Temperature: new(1.7), TopP: new(0.9), User: "u-42"},
		want: `{"model":"claude-test","max_tokens":1000,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
			"stop_sequences":["END"],"temperature":1,"top_p":0.9,"metadata":{"user_id":"u-42"}}`,
	}, {
		name: "stop as a list, temperature kept",
		req:  ChatRequest{Messages: hi, Stop: json.RawMessage(`["END","","STOP"]`), Temperature: new(0.2)},
		want: `{"model":"claude-test","max_tokens":1000,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
			"stop_sequences":["END","STOP"],"temperature":0.2}`,
	}, {
		name: "json_object asks for JSON in the system prompt",
		req:  ChatRequest{Messages: []Message{{Role: "system", Content: anthText("Be brief.")}, anthUser("hi")}, ResponseFormat: &ResponseFormat{Type: "json_object"}},
		want: `{"model":"claude-test","max_tokens":1000,"system":"Be brief.\n\n` + anthropicJSONInstruction + `",
			"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
	}, {
		name: "json_schema gives the schema",
		req: ChatRequest{Messages: hi, ResponseFormat: &ResponseFormat{Type: "json_schema",
			JSONSchema: json.RawMessage(`{"name":"answer","schema":{"type":"object", "required":["ok"]},"strict":true}`)}},
		want: `{"model":"claude-test","max_tokens":1000,"system":"` + anthropicJSONInstruction + ` The object must conform to this JSON Schema: {\"type\":\"object\",\"required\":[\"ok\"]}",
			"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := anthropicTranslate(&tt.req, anthEP)
			if err != nil {
				t.Fatalf("anthropicTranslate: %v", err)
			}
			data, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(anthJSON(t, []byte(tt.want)), anthJSON(t, data)); diff != "" {
				t.Errorf("anthropicTranslate (-want +got):\n%s\ngot %s", diff, data)
			}
		})
	}
}

func TestAnthropicTranslateToolChoice(t *testing.T) {
	tools := []Tool{{Type: "function", Function: Function{Name: "weather"}}}
	tests := []struct {
		choice   string
		parallel string
		want     string // tool_choice, "" for none sent
	}{
		{"", "", ""},
		{`"auto"`, "", `{"type":"auto"}`},
		{`"none"`, "", `{"type":"none"}`},
		{`"required"`, "", `{"type":"any"}`},
		{`{"type":"function","function":{"name":"weather"}}`, "", `{"type":"tool","name":"weather"}`},
		{"", "false", `{"type":"auto","disable_parallel_tool_use":true}`},
		{`"required"`, "false", `{"type":"any","disable_parallel_tool_use":true}`},
		{`"none"`, "false", `{"type":"none"}`},
		{`"auto"`, "true", `{"type":"auto"}`},
	}
	for _, tt := range tests {
		t.Run(tt.choice+"/"+tt.parallel, func(t *testing.T) {
			req := ChatRequest{Messages: []Message{anthUser("hi")}, Tools: tools, ToolChoice: json.RawMessage(tt.choice)}
			if tt.parallel != "" {
				req.Extra = map[string]json.RawMessage{"parallel_tool_calls": json.RawMessage(tt.parallel)}
			}
			got, err := anthropicTranslate(&req, anthEP)
			if err != nil {
				t.Fatalf("anthropicTranslate: %v", err)
			}
			if tt.want == "" {
				if got.ToolChoice != nil {
					t.Errorf("tool_choice = %+v, want none", got.ToolChoice)
				}
				return
			}
			data, _ := json.Marshal(got.ToolChoice)
			if string(data) != tt.want {
				t.Errorf("tool_choice = %s, want %s", data, tt.want)
			}
		})
	}

	t.Run("no tools, no tool_choice", func(t *testing.T) {
		req := ChatRequest{Messages: []Message{anthUser("hi")}, ToolChoice: json.RawMessage(`"required"`)}
		got, err := anthropicTranslate(&req, anthEP)
		if err != nil || got.ToolChoice != nil {
			t.Errorf("anthropicTranslate = %+v, %v, want no tool_choice", got.ToolChoice, err)
		}
	})
}

func TestAnthropicTranslateRequestErrors(t *testing.T) {
	tests := []struct {
		name string
		req  ChatRequest
		want string // in the error
	}{
		{"invalid arguments", ChatRequest{Messages: []Message{anthUser("hi"), {Role: "assistant", ToolCalls: []ToolCall{anthCall("c1", "f", `{"a":`)}}}},
			"messages[1].tool_calls[0].function.arguments"},
		{"arguments not an object", ChatRequest{Messages: []Message{anthUser("hi"), {Role: "assistant", ToolCalls: []ToolCall{anthCall("c1", "f", `{}`), anthCall("c2", "f", `[1]`)}}}},
			"messages[1].tool_calls[1].function.arguments"},
		{"call without an id", ChatRequest{Messages: []Message{{Role: "assistant", ToolCalls: []ToolCall{anthCall("", "f", `{}`)}}}},
			"messages[0].tool_calls[0]"},
		{"unknown role", ChatRequest{Messages: []Message{{Role: "function", Content: anthText("x")}}},
			"messages[0].role"},
		{"tool message without tool_call_id", ChatRequest{Messages: []Message{anthUser("hi"), {Role: "tool", Content: anthText("x")}}},
			"messages[1].tool_call_id"},
		{"data URL not base64", ChatRequest{Messages: []Message{{Role: "user", Content: anthParts(anthImage("data:image/png,abc"))}}},
			"messages[0].content[0].image_url"},
		{"ftp URL", ChatRequest{Messages: []Message{{Role: "user", Content: anthParts(ContentPart{Type: "text", Text: "a"}, anthImage("ftp://x/y.png"))}}},
			"messages[0].content[1].image_url"},
		{"audio", ChatRequest{Messages: []Message{{Role: "user", Content: anthParts(ContentPart{Type: "input_audio", Raw: json.RawMessage(`{"type":"input_audio"}`)})}}},
			`messages[0].content[0]: a "input_audio" part`},
		{"image in a system message", ChatRequest{Messages: []Message{{Role: "system", Content: anthParts(anthImage("https://x/y.png"))}, anthUser("hi")}},
			"messages[0].content[0]"},
		{"unknown tool_choice", ChatRequest{Messages: []Message{anthUser("hi")}, ToolChoice: json.RawMessage(`"sometimes"`)},
			"tool_choice"},
		{"tool_choice object without a name", ChatRequest{Messages: []Message{anthUser("hi")}, ToolChoice: json.RawMessage(`{"type":"function"}`)},
			"tool_choice"},
		{"stop not a string", ChatRequest{Messages: []Message{anthUser("hi")}, Stop: json.RawMessage(`42`)},
			"stop"},
		{"unknown response_format", ChatRequest{Messages: []Message{anthUser("hi")}, ResponseFormat: &ResponseFormat{Type: "yaml"}},
			"response_format.type"},
		{"tool not a function", ChatRequest{Messages: []Message{anthUser("hi")}, Tools: []Tool{{Type: "custom", Function: Function{Name: "x"}}}},
			"tools[0].type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := anthropicTranslate(&tt.req, anthEP)
			if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("anthropicTranslate = %v, want ErrBadRequest naming %s", err, tt.want)
			}
		})
	}
}

func TestAnthropicTranslateResponse(t *testing.T) {
	now := time.Unix(1700000000, 0)
	tests := []struct {
		name   string
		answer string
		want   *ChatResponse
	}{{
		name: "text blocks joined, cache tokens counted as prompt",
		answer: `{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","stop_reason":"end_turn",
			"content":[{"type":"thinking","thinking":"hmm"},{"type":"text","text":"Hello, "},{"type":"text","text":"world."}],
			"usage":{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":3,"cache_read_input_tokens":2}}`,
		want: &ChatResponse{ID: "msg_1", Object: "chat.completion", Created: now.Unix(), Model: "claude-x",
			Choices: []Choice{{Message: Message{Role: "assistant", Content: anthText("Hello, world.")}, FinishReason: "stop"}},
			Usage:   &Usage{PromptTokens: 15, CompletionTokens: 5, TotalTokens: 20}},
	}, {
		name: "tool calls with compact arguments, no content",
		answer: `{"id":"msg_2","type":"message","model":"claude-x","stop_reason":"tool_use","content":[
			{"type":"tool_use","id":"toolu_a","name":"weather","input":{ "city" : "Paris", "days": [1, 2] }},
			{"type":"tool_use","id":"toolu_b","name":"clock","input":{}}],
			"usage":{"input_tokens":1,"output_tokens":2}}`,
		want: &ChatResponse{ID: "msg_2", Object: "chat.completion", Created: now.Unix(), Model: "claude-x",
			Choices: []Choice{{Message: Message{Role: "assistant", ToolCalls: []ToolCall{
				anthCall("toolu_a", "weather", `{"city":"Paris","days":[1,2]}`),
				anthCall("toolu_b", "clock", `{}`),
			}}, FinishReason: "tool_calls"}},
			Usage: &Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}},
	}, {
		name:   "no content at all is an empty string",
		answer: `{"id":"msg_3","type":"message","model":"claude-x","stop_reason":"max_tokens","content":[],"usage":{}}`,
		want: &ChatResponse{ID: "msg_3", Object: "chat.completion", Created: now.Unix(), Model: "claude-x",
			Choices: []Choice{{Message: Message{Role: "assistant", Content: anthText("")}, FinishReason: "length"}},
			Usage:   &Usage{}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r anthropicResponse
			if err := json.Unmarshal([]byte(tt.answer), &r); err != nil {
				t.Fatal(err)
			}
			got, err := r.toOpenAI(now)
			if err != nil {
				t.Fatalf("toOpenAI: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("toOpenAI (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("not a message", func(t *testing.T) {
		r := anthropicResponse{Type: "error"}
		if _, err := r.toOpenAI(now); !errors.Is(err, ErrInvalidAnswer) {
			t.Errorf("toOpenAI = %v, want ErrInvalidAnswer", err)
		}
	})
}

func TestAnthropicFinish(t *testing.T) {
	for reason, want := range map[string]string{
		"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "": "stop",
		"max_tokens": "length", "model_context_window_exceeded": "length",
		"tool_use": "tool_calls", "refusal": "content_filter",
	} {
		if got := anthropicFinish(reason); got != want {
			t.Errorf("anthropicFinish(%q) = %q, want %q", reason, got, want)
		}
	}
}

// FuzzAnthropicTranslate feeds arbitrary values to the fields the
// translation parses (arguments, tool_choice, stop, image URLs, a JSON
// schema): it must never panic, refuse only with ErrBadRequest, and what it
// accepts must marshal into a request Anthropic can read.
func FuzzAnthropicTranslate(f *testing.F) {
	f.Add(`{"city":"Paris"}`, `"required"`, `["END"]`, "data:image/png;base64,iVBORw0KGgo=", `{"schema":{"type":"object"}}`, "false")
	f.Add("", `{"type":"function","function":{"name":"weather"}}`, `"END"`, "https://example.com/a.png", `{}`, "")
	f.Add(`{"a":`, `"sometimes"`, `42`, "data:image/png,abc", `{"schema":null}`, "true")
	f.Add(`[1]`, `null`, `null`, "ftp://x", `[`, "null")
	f.Fuzz(func(t *testing.T, args, choice, stop, url, schema, parallel string) {
		image, _ := json.Marshal(map[string]any{"type": "image_url", "image_url": map[string]string{"url": url}})
		req := ChatRequest{
			Messages: []Message{
				{Role: "user", Content: anthParts(ContentPart{Type: "text", Text: "hi"}, ContentPart{Type: "image_url", Raw: image})},
				{Role: "assistant", ToolCalls: []ToolCall{anthCall("c1", "weather", args)}},
				{Role: "tool", ToolCallID: "c1", Content: anthText("ok")},
			},
			Tools:          []Tool{{Type: "function", Function: Function{Name: "weather"}}},
			ToolChoice:     json.RawMessage(choice),
			Stop:           json.RawMessage(stop),
			ResponseFormat: &ResponseFormat{Type: "json_schema", JSONSchema: json.RawMessage(schema)},
			Extra:          map[string]json.RawMessage{"parallel_tool_calls": json.RawMessage(parallel)},
		}
		out, err := anthropicTranslate(&req, anthEP)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("anthropicTranslate = %v, want ErrBadRequest", err)
			}
			return
		}
		data, err := json.Marshal(out)
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", out, err)
		}
		var back anthropicRequest
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatalf("the request does not read back: %v\n%s", err, data)
		}
		if in := back.Messages[1].Content[0].Input; len(in) == 0 || in[0] != '{' {
			t.Errorf("tool_use input = %s, want an object", in)
		}
	})
}
