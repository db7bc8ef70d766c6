package llm

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/config"
)

var testScript = []config.ScriptTurn{
	{ToolCalls: []config.ScriptToolCall{
		{Name: "erp.get_order", Arguments: json.RawMessage(`{ "order_id": "A-1001" }`)},
		{Name: "crm.get_customer", Arguments: json.RawMessage(`{"id": 7}`)},
	}},
	{Content: "Checking the stock too.", ToolCalls: []config.ScriptToolCall{{Name: "erp.stock"}}},
	{Content: "Order A-1001 ships tomorrow to Ada Lovelace, who has been told."},
}

// conversation returns a request with the user's question and n assistant
// answers (each followed by a tool result).
func conversation(n int) *ChatRequest {
	req := &ChatRequest{Model: "demo", Messages: []Message{{Role: "user", Content: TextContent("Where is order A-1001?")}}}
	for i := range n {
		req.Messages = append(req.Messages,
			Message{Role: "assistant", ToolCalls: []ToolCall{{ID: "x", Type: "function", Function: FunctionCall{Name: "f", Arguments: "{}"}}}},
			Message{Role: "tool", ToolCallID: "x", Content: TextContent("result " + string(rune('a'+i)))})
	}
	return req
}

func TestScriptedTurns(t *testing.T) {
	p := NewScripted(Endpoint{Model: "scripted-1"}, testScript)
	tests := []struct {
		turn    int
		content *Content
		calls   []ToolCall
		finish  string
	}{
		{0, nil, []ToolCall{
			{ID: "call_1", Type: "function", Function: FunctionCall{Name: "erp.get_order", Arguments: `{"order_id":"A-1001"}`}},
			{ID: "call_2", Type: "function", Function: FunctionCall{Name: "crm.get_customer", Arguments: `{"id":7}`}},
		}, "tool_calls"},
		{1, TextContent("Checking the stock too."), []ToolCall{{ID: "call_3", Type: "function", Function: FunctionCall{Name: "erp.stock", Arguments: "{}"}}}, "tool_calls"},
		{2, TextContent("Order A-1001 ships tomorrow to Ada Lovelace, who has been told."), nil, "stop"},
	}
	for _, tt := range tests {
		for range 2 { // the same answer every time the turn comes
			resp, err := p.Chat(t.Context(), conversation(tt.turn))
			if err != nil {
				t.Fatalf("Chat(turn %d) = %v", tt.turn, err)
			}
			c := resp.Choices[0]
			want := Message{Role: "assistant", Content: tt.content, ToolCalls: tt.calls}
			if diff := cmp.Diff(want, c.Message); diff != "" {
				t.Errorf("Chat(turn %d) message mismatch (-want +got):\n%s", tt.turn, diff)
			}
			if c.FinishReason != tt.finish || resp.Model != "scripted-1" || resp.Object != "chat.completion" || !strings.HasPrefix(resp.ID, "chatcmpl-") {
				t.Errorf("Chat(turn %d) = finish %s, model %s, object %s, id %s", tt.turn, c.FinishReason, resp.Model, resp.Object, resp.ID)
			}
			u := resp.Usage
			if u.PromptTokens != EstimatePrompt(conversation(tt.turn)) || u.CompletionTokens == 0 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
				t.Errorf("Chat(turn %d) usage = %+v", tt.turn, u)
			}
		}
	}

	_, err := p.Chat(t.Context(), conversation(3))
	var pe *ProviderError
	if !errors.As(err, &pe) || pe.Status != 400 || pe.Message != "the script has 3 turns; this conversation is at turn 4" {
		t.Errorf("Chat(past the end) = %v, want a 400 naming the turns", err)
	}
	if Retryable(err) {
		t.Errorf("Retryable(past the end) = true, want false")
	}
}

func TestScriptedStream(t *testing.T) {
	p := NewScripted(Endpoint{Model: "scripted-1"}, testScript)
	for turn := range len(testScript) {
		req := conversation(turn)
		whole, err := p.Chat(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		stream, err := p.ChatStream(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		var acc Accumulator
		var chunks []*ChatChunk
		for {
			c, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			chunks = append(chunks, c)
			acc.Add(c)
		}
		if err := stream.Close(); err != nil {
			t.Fatal(err)
		}
		got := acc.Response()
		if diff := cmp.Diff(whole.Choices, got.Choices); diff != "" {
			t.Errorf("turn %d: streamed answer mismatch (-whole +streamed):\n%s", turn, diff)
		}
		if diff := cmp.Diff(whole.Usage, got.Usage); diff != "" {
			t.Errorf("turn %d: streamed usage mismatch (-whole +streamed):\n%s", turn, diff)
		}
		if last := chunks[len(chunks)-1]; !IsUsageChunk(last) {
			t.Errorf("turn %d: last chunk %+v, want the usage chunk", turn, last)
		}
		contentChunks, argChunks := 0, 0
		for _, c := range chunks {
			for _, cc := range c.Choices {
				if cc.Delta.Content != nil && *cc.Delta.Content != "" {
					contentChunks++
				}
				for _, tc := range cc.Delta.ToolCalls {
					if tc.Function.Arguments != "" {
						argChunks++
					}
				}
			}
		}
		switch turn {
		case 0:
			if argChunks < 3 {
				t.Errorf("turn 0: arguments in %d chunks, want them split", argChunks)
			}
		case 2:
			if contentChunks < 3 {
				t.Errorf("turn 2: content in %d chunks, want a few words each", contentChunks)
			}
		}
	}
}

func TestScriptedEmbed(t *testing.T) {
	p := NewScripted(Endpoint{Model: "emb"}, nil)
	embed := func(input string, dims *int, format string) *EmbeddingResponse {
		t.Helper()
		resp, err := p.Embed(t.Context(), &EmbeddingRequest{Input: json.RawMessage(input), Dimensions: dims, EncodingFormat: format})
		if err != nil {
			t.Fatalf("Embed(%s) = %v", input, err)
		}
		return resp
	}
	vector := func(e Embedding) []float32 {
		var v []float32
		if err := json.Unmarshal(e.Embedding, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	a := embed(`"hello"`, nil, "")
	if len(a.Data) != 1 || len(vector(a.Data[0])) != DefaultEmbeddingDimensions || a.Model != "emb" || a.Object != "list" || a.Usage.PromptTokens != 2 {
		t.Fatalf("Embed(hello) = %+v", a)
	}
	var norm float64
	for _, f := range vector(a.Data[0]) {
		norm += float64(f) * float64(f)
	}
	if math.Abs(norm-1) > 1e-5 {
		t.Errorf("|vector|² = %v, want 1", norm)
	}
	b := embed(`["hello","world"]`, nil, "")
	if diff := cmp.Diff(vector(a.Data[0]), vector(b.Data[0])); diff != "" {
		t.Errorf("the same input gave different vectors:\n%s", diff)
	}
	if cmp.Equal(vector(b.Data[0]), vector(b.Data[1])) || b.Data[1].Index != 1 {
		t.Errorf("different inputs gave the same vector, or wrong index")
	}
	dims := 20
	if n := len(vector(embed(`[1,2,3]`, &dims, "").Data[0])); n != 20 {
		t.Errorf("Embed(tokens, dimensions 20) vector of %d", n)
	}
	if n := len(embed(`[[1,2],[3]]`, nil, "").Data); n != 2 {
		t.Errorf("Embed(two token arrays) gave %d vectors", n)
	}

	enc := embed(`"hello"`, nil, "base64")
	var s string
	if err := json.Unmarshal(enc.Data[0].Embedding, &s); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != 4*DefaultEmbeddingDimensions {
		t.Fatalf("base64 vector %q: %v", s, err)
	}
	if got := math.Float32frombits(binary.LittleEndian.Uint32(raw)); got != vector(a.Data[0])[0] {
		t.Errorf("base64 vector starts %v, float one %v", got, vector(a.Data[0])[0])
	}

	zero, huge := 0, maxEmbeddingDimensions+1
	for _, bad := range []struct {
		input  string
		dims   *int
		format string
	}{{`{}`, nil, ""}, {`[]`, nil, ""}, {`"x"`, &zero, ""}, {`"x"`, &huge, ""}, {`"x"`, nil, "int8"}} {
		_, err := p.Embed(t.Context(), &EmbeddingRequest{Input: json.RawMessage(bad.input), Dimensions: bad.dims, EncodingFormat: bad.format})
		var pe *ProviderError
		if !errors.As(err, &pe) || pe.Status != 400 {
			t.Errorf("Embed(%s, %v, %q) = %v, want a 400", bad.input, bad.dims, bad.format, err)
		}
	}
}

func TestEstimate(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want int
	}{
		{"", 0}, {"a", 1}, {"abcd", 1}, {"abcde", 2},
		// Non-ASCII characters are never a quarter token: a tokenizer that
		// works on UTF-8 bytes spends about one token or more on each CJK
		// character and 1–3 on an emoji.
		{"héllo wörld", 5}, {"日本語", 6}, {"привет", 6}, {"🙂", 3}, {"\xff", 1},
		{strings.Repeat("中", 19000), 38000},
	} {
		if got := EstimateTokens(tt.s); got != tt.want {
			t.Errorf("EstimateTokens(%q) = %d, want %d", tt.s, got, tt.want)
		}
	}
	req := &ChatRequest{
		Messages: []Message{
			{Role: "user", Content: &Content{Parts: []ContentPart{{Type: "text", Text: "describe"}, {Type: "image_url", Raw: json.RawMessage(`{"type":"image_url","image_url":{"url":"data:image/png;base64,` + strings.Repeat("A", 100000) + `"}}`)}}}},
			{Role: "assistant", ToolCalls: []ToolCall{{ID: "c", Function: FunctionCall{Name: "look", Arguments: `{"x":1}`}}}},
			{Role: "tool", ToolCallID: "c", Content: TextContent("seen")},
		},
		Tools: []Tool{{Type: "function", Function: Function{Name: "look", Description: "look at it", Parameters: json.RawMessage(`{"type":"object"}`)}}},
	}
	// replyTokens + 3 messages × perMessageTokens + "describe" 2 + image 765
	// + "look" 1 + `{"x":1}` 2 + "c" 1 + "seen" 1 + tool "look" 1 + "look at it" 3 + `{"type":"object"}` 5
	want := 3 + 3*4 + 2 + 765 + 1 + 2 + 1 + 1 + 1 + 3 + 5
	if got := EstimatePrompt(req); got != want {
		t.Errorf("EstimatePrompt = %d, want %d", got, want)
	}
}

// FuzzScriptedEmbed feeds arbitrary inputs to the scripted embeddings: a
// 400 or one unit vector per input, never a panic.
func FuzzScriptedEmbed(f *testing.F) {
	for _, s := range []string{`"hello"`, `["a","b"]`, `[1,2,3]`, `[[1,2],[3]]`, `[]`, `{}`, `null`, `[1,"a"]`} {
		f.Add([]byte(s))
	}
	p := NewScripted(Endpoint{}, nil)
	f.Fuzz(func(t *testing.T, input []byte) {
		if !json.Valid(input) {
			return
		}
		resp, err := p.Embed(t.Context(), &EmbeddingRequest{Input: input})
		if err != nil {
			var pe *ProviderError
			if !errors.As(err, &pe) || pe.Status != 400 {
				t.Fatalf("Embed(%s) = %v, want a 400", input, err)
			}
			return
		}
		for _, d := range resp.Data {
			var v []float32
			if err := json.Unmarshal(d.Embedding, &v); err != nil || len(v) != DefaultEmbeddingDimensions {
				t.Fatalf("Embed(%s) vector %s: %v", input, d.Embedding, err)
			}
		}
	})
}
