package llm

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// anthStreamSeed is a stream as Anthropic sends it: text, then a tool_use
// block whose input comes in pieces, ping and all.
const anthStreamSeed = `event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-x","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ncisco, CA\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

`

// anthDecode runs the stream decoder over raw SSE bytes.
func anthDecode(raw string) *anthropicStream {
	_, d := watch(context.Background(), 0)
	return newAnthropicStream(io.NopCloser(strings.NewReader(raw)), d, time.Unix(1700000000, 0))
}

func TestAnthropicStreamDecode(t *testing.T) {
	s := anthDecode(anthStreamSeed)
	defer s.Close()
	var got []string
	for {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		got = append(got, anthDescribe(c))
	}
	want := []string{
		`role=assistant content=""`,
		`content="Okay"`,
		`tool[0] id=toolu_01 name=get_weather args=""`,
		`tool[0] args="{\"location\": \"San Fra"`,
		`tool[0] args="ncisco, CA\"}"`,
		`finish=tool_calls`,
		`usage=25+89=114`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("chunks (-want +got):\n%s", diff)
	}
}

func TestAnthropicStreamDecodeEdgeCases(t *testing.T) {
	start := "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\n"
	tests := []struct {
		name string
		raw  string
		want []string
	}{{
		name: "a call without parameters gets {} at its stop",
		raw: start +
			"data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"clock\",\"input\":{}}}\n\n" +
			"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n" +
			"data: {\"type\":\"content_block_stop\",\"index\":0}\n\n" +
			"data: {\"type\":\"message_stop\"}\n\n",
		want: []string{`role=assistant content=""`, `tool[0] id=t name=clock args=""`, `tool[0] args="{}"`, `finish=stop`, `usage=3+0=3`},
	}, {
		name: "thinking and server tool blocks are left out, CRLF and comments read",
		raw: strings.ReplaceAll(start+
			": a comment\n"+
			"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n"+
			"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n"+
			"data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"server_tool_use\",\"id\":\"s\",\"name\":\"web_search\"}}\n\n"+
			"data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n"+
			"data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"+
			"data:{\"type\":\"content_block_delta\",\"index\":2,\n"+ // no space after the colon; data on two lines
			"data: \"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n"+
			"data: {\"type\":\"some_future_event\"}\n\n"+
			"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":4,\"input_tokens\":5}}\n\n"+
			"data: {\"type\":\"message_stop\"}\n\n", "\n", "\r\n"),
		want: []string{`role=assistant content=""`, `content="hi"`, `finish=length`, `usage=5+4=9`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := anthDecode(tt.raw)
			var got []string
			for {
				c, err := s.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("Recv: %v (after %q)", err, got)
				}
				got = append(got, anthDescribe(c))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("chunks (-want +got):\n%s", diff)
			}
		})
	}
}

// anthDescribe is a chunk in a line, for comparing streams.
func anthDescribe(c *ChatChunk) string {
	if c.Usage != nil {
		return "usage=" + strconv.Itoa(c.Usage.PromptTokens) + "+" + strconv.Itoa(c.Usage.CompletionTokens) + "=" + strconv.Itoa(c.Usage.TotalTokens)
	}
	var parts []string
	ch := c.Choices[0]
	if ch.Delta.Role != "" {
		parts = append(parts, "role="+ch.Delta.Role)
	}
	if ch.Delta.Content != nil {
		parts = append(parts, "content="+strconv.Quote(*ch.Delta.Content))
	}
	for _, tc := range ch.Delta.ToolCalls {
		p := "tool[" + strconv.Itoa(tc.Index) + "]"
		if tc.ID != "" {
			p += " id=" + tc.ID + " name=" + tc.Function.Name
		}
		parts = append(parts, p+" args="+strconv.Quote(tc.Function.Arguments))
	}
	if ch.FinishReason != nil {
		parts = append(parts, "finish="+*ch.FinishReason)
	}
	return strings.Join(parts, " ")
}

// FuzzAnthropicStream feeds arbitrary bytes to the stream decoder: it must
// never panic, always end, and never yield a tool call index that no
// tool_use block has opened.
func FuzzAnthropicStream(f *testing.F) {
	f.Add(anthStreamSeed)
	f.Add(strings.ReplaceAll(anthStreamSeed, "\n", "\r\n"))
	f.Add(anthStreamSeed[:len(anthStreamSeed)/2])
	f.Add("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n")
	f.Add("data: {\"type\":\"message_start\",\"message\":{}}\n\ndata: {\"type\":\"content_block_delta\",\"index\":-1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"x\"}}\n\n")
	f.Add("data: {\"type\":\"message_start\",\"message\":{}}\n\ndata: {\"type\":\"content_block_start\",\"index\":5,\"content_block\":{\"type\":\"tool_use\"}}\n\ndata: {\"type\":\"content_block_start\",\"index\":5,\"content_block\":{\"type\":\"tool_use\"}}\n\n")
	f.Add(": just a comment\n\n\n")
	f.Fuzz(func(t *testing.T, raw string) {
		s := anthDecode(raw)
		defer s.Close()
		started := 0 // tool calls opened so far, as the chunks tell it
		var last error
		// Each event yields at most a few chunks, so the stream must end
		// well within this many calls.
		for range 4*len(raw) + 8 {
			c, err := s.Recv()
			if err != nil {
				last = err
				break
			}
			if c == nil {
				t.Fatal("Recv returned no chunk and no error")
			}
			for _, ch := range c.Choices {
				for _, tc := range ch.Delta.ToolCalls {
					if tc.ID != "" && tc.Index == started {
						started++
					}
					if tc.Index < 0 || tc.Index >= started {
						t.Fatalf("tool call index %d with %d calls opened", tc.Index, started)
					}
				}
			}
		}
		if last == nil {
			t.Fatal("the stream did not end")
		}
		if _, err := s.Recv(); err != last {
			t.Errorf("Recv after the end = %v, want %v again", err, last)
		}
	})
}
