package llm_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/llm"
)

// FuzzDecodeResponsesRequest: any body is either refused with a
// *RequestError or becomes a chat request that passes the chat edge's own
// validation and encodes; a response built for it encodes too.
func FuzzDecodeResponsesRequest(f *testing.F) {
	for _, tc := range responsesBridge {
		f.Add([]byte(tc.in))
	}
	for _, tc := range responsesRefusals {
		if len(tc.in) < 4096 {
			f.Add([]byte(tc.in))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := llm.DecodeResponsesRequest(data)
		if err != nil {
			var re *llm.RequestError
			if !errors.As(err, &re) {
				t.Fatalf("DecodeResponsesRequest = %T %v, want a *RequestError", err, err)
			}
			return
		}
		chat := req.ToChat()
		if err := chat.Validate(); err != nil {
			t.Fatalf("ToChat() fails Validate: %v", err)
		}
		if _, err := json.Marshal(chat); err != nil {
			t.Fatalf("the chat request does not encode: %v", err)
		}
		if _, err := json.Marshal(llm.NewResponse(req, time.Unix(1, 0))); err != nil {
			t.Fatalf("the response does not encode: %v", err)
		}
	})
}

// FuzzResponseEvents feeds any sequence of chat chunks (a JSON list) to
// the events translator: sequence numbers count up from 0 with no gap, the
// stream ends with one terminal event, text deltas add up to the final
// message's text, and every event encodes.
func FuzzResponseEvents(f *testing.F) {
	seed, _ := json.Marshal(streamChunks())
	f.Add(seed)
	f.Add([]byte(`[{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"length"}]}]`))
	f.Add([]byte(`[{"choices":[{"index":0,"delta":{"tool_calls":[{"index":3,"function":{"arguments":"{"}}]}}]},{"choices":[{"index":0,"delta":{"refusal":"no"}}]}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var chunks []*llm.ChatChunk
		if json.Unmarshal(data, &chunks) != nil {
			return
		}
		req, _ := llm.DecodeResponsesRequest([]byte(`{"model":"m","input":"hi","stream":true}`))
		ev := llm.NewResponseEvents(llm.NewResponse(req, time.Unix(1, 0)))
		all := ev.Start()
		for _, c := range chunks {
			all = append(all, ev.Chunk(c)...)
		}
		all = append(all, ev.Finish()...)
		var text strings.Builder
		terminal := 0
		for i, e := range all {
			if e.SequenceNumber != i {
				t.Fatalf("event %d has sequence_number %d", i, e.SequenceNumber)
			}
			if _, err := json.Marshal(e); err != nil {
				t.Fatalf("event %d does not encode: %v", i, err)
			}
			switch e.Type {
			case "response.output_text.delta":
				text.WriteString(*e.Delta)
			case "response.completed", "response.incomplete", "response.failed":
				terminal++
			}
		}
		if terminal != 1 || !strings.HasPrefix(all[len(all)-1].Type, "response.") {
			t.Fatalf("%d terminal events, last %s", terminal, all[len(all)-1].Type)
		}
		var got strings.Builder
		for _, it := range all[len(all)-1].Response.Output {
			for _, c := range it.Content {
				got.WriteString(c.Text)
			}
		}
		if got.String() != text.String() {
			t.Fatalf("final text %q, deltas %q", got.String(), text.String())
		}
	})
}
