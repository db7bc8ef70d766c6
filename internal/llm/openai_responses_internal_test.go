package llm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

// FuzzResponsesStream feeds arbitrary bodies to the Responses API stream
// reader: it must end with io.EOF or a *ProviderError, never panic, and
// what it yields must fold into an answer.
func FuzzResponsesStream(f *testing.F) {
	f.Add([]byte("event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"model\":\"m\"}}\n\n" +
		"data: {\"type\":\"response.output_item.added\",\"item\":{\"type\":\"function_call\",\"id\":\"fc\",\"call_id\":\"c\",\"name\":\"f\"}}\n\n" +
		"data: {\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc\",\"delta\":\"{}\"}\n\n" +
		"data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n" +
		"data: {\"type\":\"response.output_item.done\",\"item\":{\"type\":\"reasoning\",\"id\":\"rs\"}}\n\n" +
		"data: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\",\"usage\":{\"input_tokens\":1,\"output_tokens\":2,\"total_tokens\":3}}}\n\n"))
	f.Add([]byte("data: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\"}\n\n"))
	f.Add([]byte("data: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"}}}\n\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, d := watch(t.Context(), 0)
		s := &responsesStream{body: io.NopCloser(bytes.NewReader(body)), events: NewSSEReader(bytes.NewReader(body), 1<<16), deadline: d, calls: map[string]int{}}
		defer s.Close()
		var acc Accumulator
		for range 10000 {
			c, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				var pe *ProviderError
				if !errors.As(err, &pe) {
					t.Fatalf("Recv() error %T, want *ProviderError: %v", err, err)
				}
				break
			}
			acc.Add(c)
		}
		if _, err := json.Marshal(acc.Response()); err != nil {
			t.Fatalf("the folded answer does not encode: %v", err)
		}
	})
}
