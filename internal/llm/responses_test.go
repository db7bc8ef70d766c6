package llm_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/llm"
)

// responsesBridge is a table of Responses requests and the chat request
// each becomes, written as the chat JSON a provider would get.
var responsesBridge = []struct {
	name, in, want string
}{
	{
		name: "string input",
		in:   `{"model":"m","input":"Hallo, wie geht's?"}`,
		want: `{"model":"m","messages":[{"role":"user","content":"Hallo, wie geht's?"}]}`,
	},
	{
		name: "instructions and parts",
		in: `{"model":"m","instructions":"Be brief.","input":[{"role":"developer","content":"Réponds en français."},
			{"type":"message","role":"user","content":[{"type":"input_text","text":"Où est"},{"type":"input_text","text":"ma commande 1042 ?"}]}]}`,
		want: `{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"developer","content":"Réponds en français."},
			{"role":"user","content":"Où est\nma commande 1042 ?"}]}`,
	},
	{
		name: "function call round trip",
		in: `{"model":"m","input":[{"role":"user","content":"refund 1042"},
			{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Refunding.","annotations":[]}],"id":"msg_1","status":"completed"},
			{"type":"function_call","id":"fc_1","call_id":"call_a","name":"refund","arguments":"{\"order\":1042}","status":"completed"},
			{"type":"function_call","call_id":"call_b","name":"notify","arguments":"{}"},
			{"type":"function_call_output","call_id":"call_a","output":"refunded"},
			{"type":"function_call_output","call_id":"call_b","output":[{"type":"input_text","text":"sent"}]}],
			"tools":[{"type":"function","name":"refund","description":"Refunds an order.","parameters":{"type":"object"},"strict":true},{"type":"function","name":"notify"}],
			"tool_choice":"required","parallel_tool_calls":false,"max_output_tokens":300,"temperature":0.2}`,
		want: `{"model":"m","messages":[{"role":"user","content":"refund 1042"},
			{"role":"assistant","content":"Refunding.","tool_calls":[
				{"id":"call_a","type":"function","function":{"name":"refund","arguments":"{\"order\":1042}"}},
				{"id":"call_b","type":"function","function":{"name":"notify","arguments":"{}"}}]},
			{"role":"tool","content":"refunded","tool_call_id":"call_a"},{"role":"tool","content":"sent","tool_call_id":"call_b"}],
			"tools":[{"type":"function","function":{"name":"refund","description":"Refunds an order.","parameters":{"type":"object"},"strict":true}},{"type":"function","function":{"name":"notify"}}],
			"tool_choice":"required","max_completion_tokens":300,"temperature":0.2,"parallel_tool_calls":false}`,
	},
	{
		name: "a function call with no assistant text",
		in: `{"model":"m","input":[{"role":"user","content":"x"},{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},
			{"type":"function_call_output","call_id":"c1","output":"ok"}],"tool_choice":{"type":"function","name":"f"}}`,
		want: `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
			{"role":"tool","content":"ok","tool_call_id":"c1"}],"tool_choice":{"function":{"name":"f"},"type":"function"}}`,
	},
	{
		name: "reasoning items dropped, effort passed, stream asks usage",
		in: `{"model":"m","stream":true,"reasoning":{"effort":"low"},"input":[{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAA"},{"role":"user","content":"hi"}],
			"text":{"format":{"type":"json_schema","name":"answer","schema":{"type":"object"},"strict":true}},"store":false,"metadata":{"ticket":"T-1"},
			"include":["reasoning.encrypted_content"],"truncation":"disabled","prompt_cache_key":"k","user":"u-7"}`,
		want: `{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"description":"","name":"answer","schema":{"type":"object"},"strict":true}},
			"stream":true,"stream_options":{"include_usage":true},"user":"u-7","reasoning_effort":"low"}`,
	},
	{
		name: "images kept as parts, refusals as refusals",
		in: `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"what is this?"},{"type":"input_image","image_url":"data:image/png;base64,iVBO"}]},
			{"role":"assistant","content":[{"type":"refusal","refusal":"I can't help with that."}]}]}`,
		want: `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},{"type":"image_url","image_url":{"detail":"auto","url":"data:image/png;base64,iVBO"}}]},
			{"role":"assistant","content":null,"refusal":"I can't help with that."}]}`,
	},
}

func TestResponsesToChat(t *testing.T) {
	for _, tc := range responsesBridge {
		t.Run(tc.name, func(t *testing.T) {
			req, err := llm.DecodeResponsesRequest([]byte(tc.in))
			if err != nil {
				t.Fatalf("DecodeResponsesRequest = %v", err)
			}
			chat := req.ToChat()
			if err := chat.Validate(); err != nil {
				t.Fatalf("the chat request is invalid: %v", err)
			}
			got, err := json.Marshal(chat)
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.want), &w); err != nil {
				t.Fatalf("want: %v", err)
			}
			if d := cmp.Diff(w, g); d != "" {
				t.Errorf("ToChat() (-want +got):\n%s\ngot %s", d, got)
			}
		})
	}
}

// responsesRefusals are requests corral refuses, and the field each
// refusal must name.
var responsesRefusals = []struct {
	name, in, field string
}{
	{"not an object", `[1,2]`, ""},
	{"no model", `{"input":"hi"}`, "model"},
	{"no input", `{"model":"m"}`, "input"},
	{"input a number", `{"model":"m","input":42}`, "input"},
	{"empty input list", `{"model":"m","input":[]}`, "input"},
	{"reasoning alone", `{"model":"m","input":[{"type":"reasoning","id":"rs_1","summary":[]}]}`, "input"},
	{"model a number", `{"model":7,"input":"hi"}`, "model"},
	{"hosted web search", `{"model":"m","input":"hi","tools":[{"type":"web_search"}]}`, "tools[0].type"},
	{"hosted file search second", `{"model":"m","input":"hi","tools":[{"type":"function","name":"f"},{"type":"file_search","vector_store_ids":["vs_1"]}]}`, "tools[1].type"},
	{"computer use", `{"model":"m","input":"hi","tools":[{"type":"computer_use_preview","display_width":1024}]}`, "tools[0].type"},
	{"tool without name", `{"model":"m","input":"hi","tools":[{"type":"function"}]}`, "tools[0].name"},
	{"tool name a number", `{"model":"m","input":"hi","tools":[{"type":"function","name":5}]}`, "tools[0].name"},
	{"tool parameters a string", `{"model":"m","input":"hi","tools":[{"type":"function","name":"f","parameters":"object"}]}`, "tools[0].parameters"},
	{"previous response", `{"model":"m","input":"hi","previous_response_id":"resp_1"}`, "previous_response_id"},
	{"background", `{"model":"m","input":"hi","background":true}`, "background"},
	{"unknown field", `{"model":"m","input":"hi","frobnicate":1}`, "frobnicate"},
	{"unknown role", `{"model":"m","input":[{"role":"tool","content":"x"}]}`, "input[0].role"},
	{"role a number", `{"model":"m","input":[{"role":1,"content":"x"}]}`, "input[0].role"},
	{"content missing", `{"model":"m","input":[{"role":"user"}]}`, "input[0].content"},
	{"content a number", `{"model":"m","input":[{"role":"user","content":3}]}`, "input[0].content"},
	{"part type unknown", `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"hologram"}]}]}`, "input[0].content[1].type"},
	{"part text missing", `{"model":"m","input":[{"role":"user","content":[{"type":"input_text"}]}]}`, "input[0].content[0].text"},
	{"image by file id", `{"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"file_1"}]}]}`, "input[0].content[0].image_url"},
	{"function call without call_id", `{"model":"m","input":[{"type":"function_call","name":"f","arguments":"{}"}]}`, "input[0].call_id"},
	{"arguments an object", `{"model":"m","input":[{"type":"function_call","call_id":"c","name":"f","arguments":{}}]}`, "input[0].arguments"},
	{"output missing", `{"model":"m","input":[{"type":"function_call_output","call_id":"c"}]}`, "input[0].output"},
	{"item reference", `{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}`, "input[0].type"},
	{"hosted call item", `{"model":"m","input":[{"role":"user","content":"x"},{"type":"web_search_call","id":"ws_1"}]}`, "input[1].type"},
	{"item without type", `{"model":"m","input":[{"content":"x"}]}`, "input[0].type"},
	{"item a string", `{"model":"m","input":["hi"]}`, "input[0]"},
	{"temperature a string", `{"model":"m","input":"hi","temperature":"hot"}`, "temperature"},
	{"max output zero", `{"model":"m","input":"hi","max_output_tokens":0}`, "max_output_tokens"},
	{"max output huge", `{"model":"m","input":"hi","max_output_tokens":1e300}`, "max_output_tokens"},
	{"stream a string", `{"model":"m","input":"hi","stream":"yes"}`, "stream"},
	{"tool choice unknown", `{"model":"m","input":"hi","tool_choice":"sometimes"}`, "tool_choice"},
	{"tool choice hosted", `{"model":"m","input":"hi","tool_choice":{"type":"web_search_preview"}}`, "tool_choice.type"},
	{"metadata a list", `{"model":"m","input":"hi","metadata":["a"]}`, "metadata"},
	{"metadata value a number", `{"model":"m","input":"hi","metadata":{"a":1}}`, "metadata.a"},
	{"text format unknown", `{"model":"m","input":"hi","text":{"format":{"type":"yaml"}}}`, "text.format.type"},
	{"json schema without schema", `{"model":"m","input":"hi","text":{"format":{"type":"json_schema","name":"a"}}}`, "text.format.schema"},
	{"truncation unknown", `{"model":"m","input":"hi","truncation":"sometimes"}`, "truncation"},
	{"deeply nested", `{"model":"m","input":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`, ""},
	{"deeply nested parameters", `{"model":"m","input":"hi","tools":[{"type":"function","name":"f","parameters":` + strings.Repeat(`{"a":`, 20000) + `1` + strings.Repeat("}", 20000) + `}]}`, ""},
}

func TestDecodeResponsesRequestRefusals(t *testing.T) {
	for _, tc := range responsesRefusals {
		t.Run(tc.name, func(t *testing.T) {
			_, err := llm.DecodeResponsesRequest([]byte(tc.in))
			var re *llm.RequestError
			if !errors.As(err, &re) {
				t.Fatalf("DecodeResponsesRequest = %v, want a *RequestError naming %q", err, tc.field)
			}
			if tc.field != "" && re.Field != tc.field {
				t.Errorf("DecodeResponsesRequest names %q (%v), want %q", re.Field, err, tc.field)
			}
			if re.Message == "" {
				t.Errorf("DecodeResponsesRequest = %v: no message", err)
			}
		})
	}
}

func TestDecodeResponsesRequestTooManyItems(t *testing.T) {
	items := strings.Repeat(`{"role":"user","content":"x"},`, 10_001)
	_, err := llm.DecodeResponsesRequest([]byte(`{"model":"m","input":[` + strings.TrimSuffix(items, ",") + `]}`))
	var re *llm.RequestError
	if !errors.As(err, &re) || re.Field != "input" {
		t.Fatalf("DecodeResponsesRequest(10001 items) = %v, want a refusal naming input", err)
	}
}

func TestResponseComplete(t *testing.T) {
	req, err := llm.DecodeResponsesRequest([]byte(`{"model":"support","input":"hi","instructions":"Be kind.","metadata":{"ticket":"T-9"}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name           string
		chat           llm.ChatResponse
		status, reason string
		items          []string // type:status
		text           string
	}{
		{
			name: "text and a call",
			chat: llm.ChatResponse{Choices: []llm.Choice{{Message: llm.Message{Role: "assistant", Content: llm.TextContent("Checking."),
				ToolCalls: []llm.ToolCall{{ID: "call_1", Type: "function", Function: llm.FunctionCall{Name: "lookup", Arguments: `{"order":1042}`}}}}, FinishReason: "tool_calls"}},
				Usage: &llm.Usage{PromptTokens: 20, CompletionTokens: 9, TotalTokens: 29}},
			status: "completed", items: []string{"message:completed", "function_call:completed"}, text: "Checking.",
		},
		{
			name:   "cut by the output limit",
			chat:   llm.ChatResponse{Choices: []llm.Choice{{Message: llm.Message{Role: "assistant", Content: llm.TextContent("Once upon")}, FinishReason: "length"}}},
			status: "incomplete", reason: "max_output_tokens", items: []string{"message:incomplete"}, text: "Once upon",
		},
		{
			name:   "no choices",
			chat:   llm.ChatResponse{},
			status: "completed", items: []string{"message:completed"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := llm.NewResponse(req, time.Unix(1700000000, 0))
			resp.Complete(&tc.chat)
			if resp.Status != tc.status || (tc.reason != "" && (resp.IncompleteDetails == nil || resp.IncompleteDetails.Reason != tc.reason)) {
				t.Errorf("status %q, details %+v; want %q, %q", resp.Status, resp.IncompleteDetails, tc.status, tc.reason)
			}
			var items []string
			for _, it := range resp.Output {
				items = append(items, it.Type+":"+it.Status)
			}
			if d := cmp.Diff(tc.items, items); d != "" {
				t.Errorf("output items (-want +got):\n%s", d)
			}
			b, err := json.Marshal(resp)
			if err != nil {
				t.Fatal(err)
			}
			var obj struct {
				ID, Object, Model string
				Output            []struct {
					Type, ID, CallID, Name, Arguments, Role string
					CallIDWire                              string `json:"call_id"`
					Content                                 []struct{ Type, Text string }
				}
				Usage *struct {
					InputTokens        int `json:"input_tokens"`
					OutputTokens       int `json:"output_tokens"`
					TotalTokens        int `json:"total_tokens"`
					InputTokensDetails *struct {
						CachedTokens *int `json:"cached_tokens"`
					} `json:"input_tokens_details"`
				}
				Metadata     map[string]string
				Instructions string
			}
			if err := json.Unmarshal(b, &obj); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(obj.ID, "resp_") || obj.Object != "response" || obj.Model != "support" || obj.Metadata["ticket"] != "T-9" || obj.Instructions != "Be kind." {
				t.Errorf("response %s: want id resp_..., object response, model support, the metadata and instructions echoed", b)
			}
			if obj.Output[0].Type == "message" && (obj.Output[0].Role != "assistant" || len(obj.Output[0].Content) != 1 || obj.Output[0].Content[0].Type != "output_text" || obj.Output[0].Content[0].Text != tc.text) {
				t.Errorf("message item %s, want an assistant message with output_text %q", b, tc.text)
			}
			if len(obj.Output) == 2 && (obj.Output[1].CallIDWire != "call_1" || obj.Output[1].Name != "lookup" || obj.Output[1].Arguments != `{"order":1042}` || !strings.HasPrefix(obj.Output[1].ID, "fc_")) {
				t.Errorf("function call item %s, want call_id call_1, name lookup and the arguments", b)
			}
			if tc.chat.Usage != nil && (obj.Usage == nil || obj.Usage.InputTokens != 20 || obj.Usage.OutputTokens != 9 || obj.Usage.TotalTokens != 29 ||
				obj.Usage.InputTokensDetails == nil || obj.Usage.InputTokensDetails.CachedTokens == nil) {
				t.Errorf("usage in %s, want 20 in, 9 out, 29 total, with details", b)
			}
		})
	}
}

// streamChunks is a streamed chat answer: text in pieces, then two tool
// calls whose arguments come in pieces, interleaved, then usage.
func streamChunks() []*llm.ChatChunk {
	text := func(s string) *llm.ChatChunk {
		return &llm.ChatChunk{Choices: []llm.ChunkChoice{{Delta: llm.Delta{Content: &s}}}}
	}
	call := func(i int, id, name, args string) *llm.ChatChunk {
		return &llm.ChatChunk{Choices: []llm.ChunkChoice{{Delta: llm.Delta{ToolCalls: []llm.ToolCallDelta{{Index: i, ID: id, Function: llm.FunctionCallDelta{Name: name, Arguments: args}}}}}}}
	}
	finish := "tool_calls"
	return []*llm.ChatChunk{
		text("Ich "), text("prüfe "), text("das."),
		call(0, "call_1", "lookup", ""), call(0, "", "", `{"order":`), call(1, "call_2", "notify", `{}`), call(0, "", "", `1042}`),
		{Choices: []llm.ChunkChoice{{FinishReason: &finish}}},
		{Choices: []llm.ChunkChoice{}, Usage: &llm.Usage{PromptTokens: 12, CompletionTokens: 8, TotalTokens: 20}},
	}
}

func TestResponseEvents(t *testing.T) {
	req, err := llm.DecodeResponsesRequest([]byte(`{"model":"support","input":"hi","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	ev := llm.NewResponseEvents(llm.NewResponse(req, time.Unix(1700000000, 0)))
	all := ev.Start()
	for _, c := range streamChunks() {
		all = append(all, ev.Chunk(c)...)
	}
	all = append(all, ev.Finish()...)
	all = append(all, ev.Finish()...) // a second Finish adds nothing

	var types []string
	var text, args0, args1 strings.Builder
	for i, e := range all {
		if e.SequenceNumber != i {
			t.Errorf("event %d (%s) has sequence_number %d", i, e.Type, e.SequenceNumber)
		}
		types = append(types, e.Type)
		switch {
		case e.Type == "response.output_text.delta":
			text.WriteString(*e.Delta)
		case e.Type == "response.function_call_arguments.delta" && *e.OutputIndex == 1:
			args0.WriteString(*e.Delta)
		case e.Type == "response.function_call_arguments.delta" && *e.OutputIndex == 2:
			args1.WriteString(*e.Delta)
		}
	}
	want := []string{
		"response.created", "response.in_progress",
		"response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
		"response.output_text.done", "response.content_part.done", "response.output_item.done",
		"response.output_item.added", "response.function_call_arguments.delta",
		"response.output_item.added", "response.function_call_arguments.delta",
		"response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done",
		"response.function_call_arguments.done", "response.output_item.done",
		"response.completed",
	}
	if d := cmp.Diff(want, types); d != "" {
		t.Errorf("event types (-want +got):\n%s", d)
	}
	if text.String() != "Ich prüfe das." || args0.String() != `{"order":1042}` || args1.String() != `{}` {
		t.Errorf("deltas: text %q, arguments %q and %q", text.String(), args0.String(), args1.String())
	}
	final := all[len(all)-1].Response
	if final.Status != "completed" || len(final.Output) != 3 || final.Usage == nil || final.Usage.TotalTokens != 20 {
		t.Fatalf("final response %+v, want completed with 3 items and usage 20", final)
	}
	if final.Output[1].CallID != "call_1" || final.Output[1].Arguments != `{"order":1042}` || final.Output[2].Name != "notify" {
		t.Errorf("final function calls %+v", final.Output[1:])
	}
	// Items keep their ids from added to done to the final response.
	ids := map[int]string{}
	for _, e := range all {
		if e.Item != nil {
			if id, ok := ids[*e.OutputIndex]; ok && id != e.Item.ID {
				t.Errorf("item %d is %s, then %s", *e.OutputIndex, id, e.Item.ID)
			}
			ids[*e.OutputIndex] = e.Item.ID
		}
	}
	for i, it := range final.Output {
		if ids[i] != it.ID {
			t.Errorf("final item %d is %s, streamed as %s", i, it.ID, ids[i])
		}
	}
}

func TestResponseEventsFail(t *testing.T) {
	req, _ := llm.DecodeResponsesRequest([]byte(`{"model":"m","input":"hi","stream":true}`))
	ev := llm.NewResponseEvents(llm.NewResponse(req, time.Unix(1, 0)))
	all := ev.Start()
	s := "partial"
	all = append(all, ev.Chunk(&llm.ChatChunk{Choices: []llm.ChunkChoice{{Delta: llm.Delta{Content: &s}}}})...)
	all = append(all, ev.Fail("upstream_error", "the connection to model m broke")...)
	all = append(all, ev.Finish()...)
	last := all[len(all)-1]
	if e := all[len(all)-2]; e.Type != "error" || e.Code != "upstream_error" {
		t.Errorf("second to last event %+v, want error upstream_error", e)
	}
	if last.Type != "response.failed" || last.Response.Status != "failed" || last.Response.Error == nil || last.Response.Error.Code != "upstream_error" ||
		len(last.Response.Output) != 1 {
		t.Errorf("last event %+v, want response.failed with the error and the partial message", last)
	}
}

func TestDecodeResponsesRequestEmptyCallID(t *testing.T) {
	_, err := llm.DecodeResponsesRequest([]byte(`{"model":"m","input":[{"type":"function_call_output","call_id":"","output":"x"}]}`))
	var re *llm.RequestError
	if !errors.As(err, &re) || re.Field != "input[0].call_id" {
		t.Fatalf("DecodeResponsesRequest(empty call_id) = %v, want a refusal naming input[0].call_id", err)
	}
}

// TestResponseReasoning: reasoning items a provider answered with come out
// first, as they came, whole and streamed.
func TestResponseReasoning(t *testing.T) {
	req, _ := llm.DecodeResponsesRequest([]byte(`{"model":"m","input":"hi"}`))
	item := json.RawMessage(`{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAA"}`)
	resp := llm.NewResponse(req, time.Unix(1, 0))
	resp.Complete(&llm.ChatResponse{Choices: []llm.Choice{{Message: llm.Message{Role: "assistant", Content: llm.TextContent("Hi."), Reasoning: []json.RawMessage{item}}, FinishReason: "stop"}}})
	b, _ := json.Marshal(resp.Output)
	if want := `[` + string(item) + `,`; !strings.HasPrefix(string(b), want) || len(resp.Output) != 2 {
		t.Errorf("output %s, want the reasoning item first, as it came, then the message", b)
	}

	ev := llm.NewResponseEvents(llm.NewResponse(req, time.Unix(1, 0)))
	all := ev.Start()
	text := "Hi."
	all = append(all, ev.Chunk(&llm.ChatChunk{Choices: []llm.ChunkChoice{{Delta: llm.Delta{Reasoning: []json.RawMessage{item}}}}})...)
	all = append(all, ev.Chunk(&llm.ChatChunk{Choices: []llm.ChunkChoice{{Delta: llm.Delta{Content: &text}}}})...)
	all = append(all, ev.Finish()...)
	final := all[len(all)-1].Response
	if all[2].Type != "response.output_item.added" || all[2].Item.Type != "reasoning" || len(final.Output) != 2 || final.Output[0].ID != "rs_1" || final.Output[1].Type != "message" {
		t.Errorf("events %+v, want the reasoning item added first and kept in the final output", all)
	}
}

// BenchmarkResponsesBridge: decoding a 40-item conversation with tools and
// bridging it to chat, and turning a 200-chunk stream into events.
func BenchmarkResponsesBridge(b *testing.B) {
	var items []string
	for i := range 10 {
		items = append(items,
			`{"role":"user","content":"Where is order `+strings.Repeat("1", i+1)+`? My address is Hauptstraße 5, 10115 Berlin."}`,
			`{"type":"function_call","call_id":"call_`+string(rune('a'+i))+`","name":"lookup_order","arguments":"{\"order\":1042}"}`,
			`{"type":"function_call_output","call_id":"call_`+string(rune('a'+i))+`","output":"{\"status\":\"shipped\",\"eta\":\"2026-12-09\"}"}`,
			`{"role":"assistant","content":[{"type":"output_text","text":"Your order has shipped and arrives on Wednesday."}]}`)
	}
	body := []byte(`{"model":"m","instructions":"You are a support agent.","input":[` + strings.Join(items, ",") + `],
		"tools":[{"type":"function","name":"lookup_order","parameters":{"type":"object","properties":{"order":{"type":"integer"}}}}]}`)
	b.Run("request", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			req, err := llm.DecodeResponsesRequest(body)
			if err != nil {
				b.Fatal(err)
			}
			_ = req.ToChat()
		}
	})
	req, _ := llm.DecodeResponsesRequest(body)
	chunks := make([]*llm.ChatChunk, 200)
	for i := range chunks {
		s := "word "
		chunks[i] = &llm.ChatChunk{Choices: []llm.ChunkChoice{{Delta: llm.Delta{Content: &s}}}}
	}
	b.Run("stream", func(b *testing.B) {
		for b.Loop() {
			ev := llm.NewResponseEvents(llm.NewResponse(req, time.Unix(1, 0)))
			n := len(ev.Start())
			for _, c := range chunks {
				for _, e := range ev.Chunk(c) {
					if _, err := json.Marshal(e); err != nil {
						b.Fatal(err)
					}
					n++
				}
			}
			n += len(ev.Finish())
		}
	})
}

// TestResponseDeriveIDs: a response given a seed has the same id and item
// ids every time it is built from the same answer, whole or streamed (an
// answer replayed for an Idempotency-Key), and other ids for another seed.
func TestResponseDeriveIDs(t *testing.T) {
	req, err := llm.DecodeResponsesRequest([]byte(`{"model":"support","input":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	chat := &llm.ChatResponse{Choices: []llm.Choice{{Message: llm.Message{Role: "assistant", Content: llm.TextContent("On it."),
		ToolCalls: []llm.ToolCall{{ID: "call_1", Type: "function", Function: llm.FunctionCall{Name: "refund", Arguments: `{}`}}}}, FinishReason: "tool_calls"}}}
	whole := func(seed string) string {
		resp := llm.NewResponse(req, time.Unix(1700000000, 0))
		if seed != "" {
			resp.DeriveIDs(seed)
		}
		resp.Complete(chat)
		b, err := json.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	streamed := func(seed string) string {
		resp := llm.NewResponse(req, time.Unix(1700000000, 0))
		resp.DeriveIDs(seed)
		ev := llm.NewResponseEvents(resp)
		all := ev.Start()
		for _, c := range llm.Chunks(chat, true) {
			all = append(all, ev.Chunk(c)...)
		}
		all = append(all, ev.Finish()...)
		b, err := json.Marshal(all)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if a, b := whole("call-1"), whole("call-1"); a != b {
		t.Errorf("the same seed gave two responses:\n%s\n%s", a, b)
	}
	if a, b := streamed("call-1"), streamed("call-1"); a != b {
		t.Errorf("the same seed gave two event streams:\n%s\n%s", a, b)
	}
	if a, b := whole("call-1"), whole("call-2"); a == b {
		t.Errorf("two seeds gave the same response: %s", a)
	}
	if a, b := whole(""), whole(""); a == b {
		t.Errorf("without a seed two responses have the same ids: %s", a)
	}
	var resp llm.Response
	if err := json.Unmarshal([]byte(whole("call-1")), &resp); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.ID, "resp_") || len(resp.ID) != len("resp_")+26 || len(resp.Output) != 2 ||
		!strings.HasPrefix(resp.Output[0].ID, "msg_") || !strings.HasPrefix(resp.Output[1].ID, "fc_") || resp.Output[0].ID[4:] == resp.ID[5:] {
		t.Errorf("derived ids %q, %+v: want resp_, msg_ and fc_ each with 26 characters of their own", resp.ID, resp.Output)
	}
}
