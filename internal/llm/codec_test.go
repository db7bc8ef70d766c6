package llm

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// requestSeeds are real requests, as agents and SDKs send them; the fuzz
// test starts from them.
var requestSeeds = []string{
	`{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}]}`,
	`{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"What is in this image?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"low"}}]}],"max_tokens":300}`,
	`{"model":"gpt-4o","messages":[{"role":"user","content":"Weather in Paris?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_abc","content":"18C"}],"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather by city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}}],"tool_choice":"auto","parallel_tool_calls":false}`,
	`{"model":"o3-mini","messages":[{"role":"developer","content":"Answer in JSON."},{"role":"user","content":"List 3 colours"}],"response_format":{"type":"json_schema","json_schema":{"name":"colours","schema":{"type":"object"}}},"reasoning_effort":"low","max_completion_tokens":1000,"seed":42,"logit_bias":{"50256":-100}}`,
	`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count to 3"}],"stream":true,"stream_options":{"include_usage":true},"temperature":0.2,"top_p":0.9,"stop":["\n\n"],"user":"u-1","n":1,"metadata":{"team":"a"}}`,
	`{"model":"m","messages":[{"role":"user","content":"x","name":"ann","cache_control":{"type":"ephemeral"}}],"tool_choice":{"type":"function","function":{"name":"f"}},"stop":"END"}`,
	`{"model":"m","messages":[{"role":"assistant","content":[],"refusal":"no"}],"temperature":null,"extra":{"deep":[1,2,{"a":null}]}}`,
}

func TestDecodeRequestKeepsFields(t *testing.T) {
	req, err := DecodeRequest([]byte(requestSeeds[2]))
	if err != nil {
		t.Fatal(err)
	}
	if req.Model != "gpt-4o" || len(req.Messages) != 3 || len(req.Tools) != 1 || string(req.ToolChoice) != `"auto"` {
		t.Fatalf("DecodeRequest = %+v", req)
	}
	if got := string(req.Extra["parallel_tool_calls"]); got != "false" {
		t.Errorf("Extra[parallel_tool_calls] = %q, want false", got)
	}
	if req.Messages[1].Content != nil {
		t.Errorf("assistant content = %+v, want nil for null", req.Messages[1].Content)
	}
	if got := req.Messages[1].ToolCalls[0].Function.Arguments; got != `{"city":"Paris"}` {
		t.Errorf("tool call arguments = %q", got)
	}
	if got := req.Messages[2].Content.String(); got != "18C" || req.Messages[2].ToolCallID != "call_abc" {
		t.Errorf("tool message = %q %q", got, req.Messages[2].ToolCallID)
	}

	req, err = DecodeRequest([]byte(requestSeeds[1]))
	if err != nil {
		t.Fatal(err)
	}
	parts := req.Messages[1].Content.Parts
	if len(parts) != 2 || parts[0].Type != "text" || parts[0].Text != "What is in this image?" || parts[1].Type != "image_url" {
		t.Fatalf("parts = %+v", parts)
	}
	if want := `{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"low"}}`; string(parts[1].Raw) != want {
		t.Errorf("image part Raw = %s, want %s", parts[1].Raw, want)
	}
	if got := req.Messages[1].Content.String(); got != "What is in this image?" {
		t.Errorf("Content.String() = %q", got)
	}
}

// TestRequestRoundTrip checks that what corral writes carries everything
// the agent sent: the same JSON value, but for nulls of known fields, which
// mean the same as absent, and content, which is always written.
func TestRequestRoundTrip(t *testing.T) {
	tests := []struct{ in, want string }{
		{requestSeeds[0], requestSeeds[0]},
		{requestSeeds[1], requestSeeds[1]},
		{requestSeeds[2], requestSeeds[2]},
		{requestSeeds[3], requestSeeds[3]},
		{requestSeeds[4], requestSeeds[4]},
		{requestSeeds[5], requestSeeds[5]},
		{requestSeeds[6], `{"model":"m","messages":[{"role":"assistant","content":[],"refusal":"no"}],"extra":{"deep":[1,2,{"a":null}]}}`},
		{
			`{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`,
			`{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`,
		},
		{`{"model":"m","messages":[{"role":"user","content":"a","x-unknown":true}], "Model": "other"}`, `{"Model":"other","model":"m","messages":[{"role":"user","content":"a","x-unknown":true}]}`},
	}
	for i, tt := range tests {
		req, err := DecodeRequest([]byte(tt.in))
		if err != nil {
			t.Fatalf("DecodeRequest(seed %d) = %v", i, err)
		}
		out, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("Marshal(seed %d) = %v", i, err)
		}
		if diff := cmp.Diff(jsonValue(t, tt.want), jsonValue(t, string(out))); diff != "" {
			t.Errorf("round trip of seed %d mismatch (-want +got):\n%s\ngot %s", i, diff, out)
		}
	}
}

func jsonValue(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("invalid JSON %s: %v", s, err)
	}
	return v
}

func TestContentForms(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // marshalled again
	}{
		{"string", `"hi"`, `"hi"`},
		{"empty string", `""`, `""`},
		{"empty list", `[]`, `[]`},
		{"text part", `[{"type":"text","text":"a"}]`, `[{"type":"text","text":"a"}]`},
		{"text part with empty text", `[{"type":"text","text":""}]`, `[{"type":"text","text":""}]`},
		{"other part kept", `[{"type":"input_audio","input_audio":{"data":"AAA=","format":"wav"}}]`, `[{"type":"input_audio","input_audio":{"data":"AAA=","format":"wav"}}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Content
			if err := json.Unmarshal([]byte(tt.in), &c); err != nil {
				t.Fatal(err)
			}
			out, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tt.want {
				t.Errorf("Marshal(Unmarshal(%s)) = %s, want %s", tt.in, out, tt.want)
			}
		})
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"not JSON", `{"model":`, "the body is not valid JSON: unexpected end of JSON input"},
		{"not an object", `[1]`, "the request must be a JSON object"},
		{"null", `null`, "the request must be a JSON object"},
		{"trailing data", `{"model":"m"} {}`, "the body is not valid JSON: invalid character '{' after top-level value"},
		{"model type", `{"model":1}`, "model: must be a string, got number"},
		{"messages type", `{"messages":{}}`, "messages: must be a list of messages"},
		{"message type", `{"messages":[{"role":"user","content":"a"},"x"]}`, "messages[1]: must be an object with a role"},
		{"content type", `{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"user","content":5}]}`, "messages[2].content: must be a string or a list of parts"},
		{"content object", `{"messages":[{"role":"user","content":{"text":"a"}}]}`, "messages[0].content: must be a string or a list of parts"},
		{"part not object", `{"messages":[{"role":"user","content":["a"]}]}`, "messages[0].content[0]: must be an object with a type"},
		{"part without type", `{"messages":[{"role":"user","content":[{"text":"a"}]}]}`, "messages[0].content[0].type: required"},
		{"text part without text", `{"messages":[{"role":"user","content":[{"type":"text"}]}]}`, "messages[0].content[0].text: required in a text part"},
		{"text part text type", `{"messages":[{"role":"user","content":[{"type":"text","text":7}]}]}`, "messages[0].content[0].text: must be a string, got number"},
		{"role type", `{"messages":[{"role":7}]}`, "messages[0].role: must be a string, got number"},
		{"tool call name", `{"messages":[{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f"}},{"id":"b","function":{"name":3}}]}]}`, "messages[0].tool_calls[1].function.name: must be a string, got number"},
		{"tools", `{"tools":[{"type":"function","function":{"name":"f","strict":"yes"}}]}`, "tools[0].function.strict: must be a boolean, got string"},
		{"max_tokens", `{"max_tokens":1.5}`, "max_tokens: must be an integer, got number 1.5"},
		{"temperature", `{"temperature":"hot"}`, "temperature: must be a number, got string"},
		{"stream", `{"stream":"yes"}`, "stream: must be a boolean, got string"},
		{"stream_options", `{"stream_options":{"include_usage":1}}`, "stream_options.include_usage: must be a boolean, got number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRequest([]byte(tt.in))
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("DecodeRequest(%s) error = %v, want a *RequestError", tt.in, err)
			}
			if err.Error() != tt.want {
				t.Errorf("DecodeRequest(%s) error = %q, want %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name, in, want string // want "" for valid
	}{
		{"minimal", `{"model":"m","messages":[{"role":"user","content":"a"}]}`, ""},
		{"every role", `{"model":"m","messages":[{"role":"system","content":"a"},{"role":"developer","content":"a"},{"role":"user","content":"a"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"r"}]}`, ""},
		{"n is 1", `{"model":"m","messages":[{"role":"user","content":"a"}],"n":1}`, ""},
		{"n is null", `{"model":"m","messages":[{"role":"user","content":"a"}],"n":null}`, ""},
		{"no model", `{"messages":[{"role":"user","content":"a"}]}`, "model: required"},
		{"no messages", `{"model":"m"}`, "messages: at least one message is required"},
		{"empty messages", `{"model":"m","messages":[]}`, "messages: at least one message is required"},
		{"no role", `{"model":"m","messages":[{"role":"user","content":"a"},{"content":"a"}]}`, "messages[1].role: required"},
		{"unknown role", `{"model":"m","messages":[{"role":"function","content":"a"}]}`, `messages[0].role: unknown role "function"; use system, developer, user, assistant, tool`},
		{"tool without id", `{"model":"m","messages":[{"role":"tool","content":"a"}]}`, "messages[0].tool_call_id: required in a tool message: the id of the call it answers"},
		{"n is 2", `{"model":"m","messages":[{"role":"user","content":"a"}],"n":2}`, "n: " + oneChoice},
		{"n is text", `{"model":"m","messages":[{"role":"user","content":"a"}],"n":"1"}`, "n: must be a number"},
		// Generation multipliers and output limits the reservation does not
		// see are refused as n is (finding 15).
		{"best_of is 1", `{"model":"m","messages":[{"role":"user","content":"a"}],"best_of":1,"use_beam_search":false}`, ""},
		{"best_of is 20", `{"model":"m","messages":[{"role":"user","content":"a"}],"best_of":20,"max_tokens":1}`, "best_of: " + oneChoice},
		{"best_of is text", `{"model":"m","messages":[{"role":"user","content":"a"}],"best_of":"2"}`, "best_of: must be a number"},
		{"beam search", `{"model":"m","messages":[{"role":"user","content":"a"}],"use_beam_search":true}`, "use_beam_search: " + oneChoice},
		{"beam search as text", `{"model":"m","messages":[{"role":"user","content":"a"}],"use_beam_search":"yes"}`, "use_beam_search: must be a boolean"},
		{"max_new_tokens", `{"model":"m","messages":[{"role":"user","content":"a"}],"max_new_tokens":100000}`, "max_new_tokens: corral caps output with max_tokens or max_completion_tokens, which budgets reserve; use one of those"},
		{"num_predict", `{"model":"m","messages":[{"role":"user","content":"a"}],"num_predict":-1}`, "num_predict: corral caps output with max_tokens or max_completion_tokens, which budgets reserve; use one of those"},
		{"min_tokens within the limit", `{"model":"m","messages":[{"role":"user","content":"a"}],"min_tokens":10,"max_completion_tokens":10}`, ""},
		{"min_tokens over the limit", `{"model":"m","messages":[{"role":"user","content":"a"}],"min_tokens":100000,"max_tokens":1}`, "min_tokens: must be at most the request's max_tokens or max_completion_tokens (set one)"},
		{"min_tokens without a limit", `{"model":"m","messages":[{"role":"user","content":"a"}],"min_tokens":5}`, "min_tokens: must be at most the request's max_tokens or max_completion_tokens (set one)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := DecodeRequest([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			err = req.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate(%s) = %v, want nil", tt.in, err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Errorf("Validate(%s) = %v, want %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestMarshalRefusesInvalidExtra(t *testing.T) {
	req := ChatRequest{Model: "m", Extra: map[string]json.RawMessage{"x": json.RawMessage(`{bad`)}}
	if _, err := json.Marshal(req); err == nil {
		t.Error("Marshal(request with invalid Extra) = nil error, want one")
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"messages":[{"role":"user","content":[{"type":"text","text":"\u00e9"},{"type":"x"}]}]}`))
	f.Add([]byte(`{"model":"m","messages":null,"tools":null}`))
	f.Add([]byte(strings.Repeat("[", 50)))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeRequest(data)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("DecodeRequest error %T, want *RequestError: %v", err, err)
			}
			return
		}
		_ = req.Validate()
		_ = EstimatePrompt(req)
		first, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("Marshal of a decoded request: %v", err)
		}
		again, err := DecodeRequest(first)
		if err != nil {
			t.Fatalf("DecodeRequest(%s) of an encoded request: %v", first, err)
		}
		second, err := json.Marshal(again)
		if err != nil {
			t.Fatalf("Marshal again: %v", err)
		}
		if string(first) != string(second) {
			t.Fatalf("decode→encode is not stable:\n%s\n%s", first, second)
		}
	})
}
