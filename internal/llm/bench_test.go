package llm_test

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/llm/llmtest"
)

// benchRequest is a typical agent turn: a system prompt, a few messages,
// a tool result and three tool definitions (about 2.5 KB).
var benchRequest = []byte(`{"model":"gpt-4o-mini","temperature":0.2,"parallel_tool_calls":true,"messages":[` +
	`{"role":"system","content":"` + strings.Repeat("You are a careful support agent. ", 20) + `"},` +
	`{"role":"user","content":"Where is order A-1001, and when will it arrive?"},` +
	`{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"erp_get_order","arguments":"{\"order_id\":\"A-1001\"}"}}]},` +
	`{"role":"tool","tool_call_id":"call_1","content":"{\"id\":\"A-1001\",\"status\":\"shipped\",\"carrier\":\"DHL\",\"eta\":\"2025-03-04\",\"lines\":[{\"sku\":\"X-1\",\"qty\":2}]}"}],` +
	`"tools":[` + strings.TrimSuffix(strings.Repeat(`{"type":"function","function":{"name":"erp_get_order","description":"Look an order up by its id.","parameters":{"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"]}}},`, 3), ",") + `]}`)

func BenchmarkDecodeEncodeRequest(b *testing.B) {
	b.SetBytes(int64(len(benchRequest)))
	for b.Loop() {
		req, err := llm.DecodeRequest(benchRequest)
		if err != nil {
			b.Fatal(err)
		}
		if err := req.Validate(); err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSSEReader(b *testing.B) {
	var stream bytes.Buffer
	for range 100 {
		stream.WriteString(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"three more words "},"finish_reason":null}]}` + "\n\n")
	}
	b.SetBytes(int64(stream.Len()))
	for b.Loop() {
		r := llm.NewSSEReader(bytes.NewReader(stream.Bytes()), llm.MaxAnswerBytes)
		for {
			if _, _, err := r.Next(); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkOpenAIChat is one call over loopback to the test upstream: the
// provider's cost plus the upstream's.
func BenchmarkOpenAIChat(b *testing.B) {
	up := llmtest.Start(b)
	p := llm.NewOpenAI(llm.Endpoint{BaseURL: up.URL(), Model: "m"})
	req, err := llm.DecodeRequest(benchRequest)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := p.Chat(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenAIStream(b *testing.B) {
	up := llmtest.Start(b, llmtest.WithContent(strings.Repeat("a few words ", 30)))
	p := llm.NewOpenAI(llm.Endpoint{BaseURL: up.URL(), Model: "m"})
	req, err := llm.DecodeRequest(benchRequest)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s, err := p.ChatStream(b.Context(), req)
		if err != nil {
			b.Fatal(err)
		}
		var acc llm.Accumulator
		for {
			c, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			acc.Add(c)
		}
		s.Close()
	}
}
