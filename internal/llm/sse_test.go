package llm

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

type sseEvent struct{ Event, Data string }

// readEvents reads every event of input, and the error that ended them.
func readEvents(r io.Reader, max int) ([]sseEvent, error) {
	s := NewSSEReader(r, max)
	var out []sseEvent
	for {
		event, data, err := s.Next()
		if err != nil {
			return out, err
		}
		out = append(out, sseEvent{event, string(data)})
	}
}

var sseTests = []struct {
	name  string
	input string
	want  []sseEvent
}{
	{
		name:  "openai",
		input: "data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n",
		want:  []sseEvent{{"", `{"a":1}`}, {"", `{"a":2}`}, {"", "[DONE]"}},
	},
	{
		name:  "anthropic",
		input: "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
		want:  []sseEvent{{"message_start", `{"type":"message_start"}`}, {"ping", `{"type": "ping"}`}, {"message_stop", `{"type":"message_stop"}`}},
	},
	{
		name:  "CRLF",
		input: "event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n",
		want:  []sseEvent{{"a", "1"}, {"", "2"}},
	},
	{
		name:  "CR only",
		input: "data: 1\r\rdata: 2\r\r",
		want:  []sseEvent{{"", "1"}, {"", "2"}},
	},
	{
		name:  "comments and blank lines",
		input: ": keep-alive\n\n\n: OPENROUTER PROCESSING\ndata: x\n: mid-event comment\n\n",
		want:  []sseEvent{{"", "x"}},
	},
	{
		name:  "multi-line data",
		input: "data: a\ndata:b\ndata:  c\n\n",
		want:  []sseEvent{{"", "a\nb\n c"}},
	},
	{
		name:  "empty data field",
		input: "data\n\ndata:\n\n",
		want:  []sseEvent{{"", ""}, {"", ""}},
	},
	{
		name:  "event without data is skipped and its type forgotten",
		input: "event: lonely\n\ndata: x\n\n",
		want:  []sseEvent{{"", "x"}},
	},
	{
		name:  "id and retry ignored",
		input: "id: 7\nretry: 100\ndata: x\nunknown: y\n\n",
		want:  []sseEvent{{"", "x"}},
	},
	{
		name:  "byte order mark",
		input: "\uFEFFdata: x\n\n",
		want:  []sseEvent{{"", "x"}},
	},
	{
		name:  "cut-off event dropped",
		input: "data: x\n\ndata: partial",
		want:  []sseEvent{{"", "x"}},
	},
	{
		name:  "colon in value",
		input: "data: {\"url\":\"http://x\"}\n\n",
		want:  []sseEvent{{"", `{"url":"http://x"}`}},
	},
}

func TestSSEReader(t *testing.T) {
	for _, tt := range sseTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readEvents(strings.NewReader(tt.input), 1<<10)
			if err != io.EOF {
				t.Fatalf("Next() error = %v, want io.EOF", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("events mismatch (-want +got):\n%s", diff)
			}
			// The same events when the input arrives a byte at a time,
			// which splits every CRLF.
			got, err = readEvents(iotest.OneByteReader(strings.NewReader(tt.input)), 1<<10)
			if err != io.EOF {
				t.Fatalf("Next() one byte at a time error = %v, want io.EOF", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("events one byte at a time mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSSEReaderDoesNotWaitAfterCR checks that an event ending in CR is
// delivered without waiting for the next byte, which may be a while.
func TestSSEReaderDoesNotWaitAfterCR(t *testing.T) {
	r, w := io.Pipe()
	defer r.Close()
	go func() { _, _ = io.WriteString(w, "data: x\r\r") }() // then the writer stays silent
	event, data, err := NewSSEReader(r, 100).Next()
	if err != nil || event != "" || string(data) != "x" {
		t.Errorf("Next() = %q, %q, %v; want \"\", \"x\", nil", event, data, err)
	}
}

func TestSSEReaderLimits(t *testing.T) {
	tests := []struct {
		name  string
		input string
	}{
		{"long line", "data: " + strings.Repeat("x", 200) + "\n\n"},
		{"long event", strings.Repeat("data: "+strings.Repeat("x", 40)+"\n", 5) + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readEvents(strings.NewReader(tt.input), 100)
			if !errors.Is(err, ErrEventTooLarge) {
				t.Errorf("Next() error = %v, want ErrEventTooLarge", err)
			}
		})
	}
	got, err := readEvents(strings.NewReader("data: "+strings.Repeat("x", 94)+"\n\n"), 100)
	if err != io.EOF || len(got) != 1 {
		t.Errorf("an event of exactly the limit = %v, %v; want it read", got, err)
	}
}

func FuzzSSEReader(f *testing.F) {
	for _, tt := range sseTests {
		f.Add([]byte(tt.input))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		const max = 256
		events, err := readEvents(strings.NewReader(string(input)), max)
		if err != io.EOF && !errors.Is(err, ErrEventTooLarge) {
			t.Fatalf("Next() error = %v", err)
		}
		for _, e := range events {
			if len(e.Data) > max {
				t.Fatalf("event data of %d bytes, limit %d", len(e.Data), max)
			}
		}
		// Reading a byte at a time must give the same events.
		again, err2 := readEvents(iotest.OneByteReader(strings.NewReader(string(input))), max)
		if (err == io.EOF) != (err2 == io.EOF) {
			t.Fatalf("errors differ: %v and %v one byte at a time", err, err2)
		}
		if err == io.EOF {
			if diff := cmp.Diff(events, again); diff != "" {
				t.Fatalf("events differ one byte at a time (-whole +bytes):\n%s", diff)
			}
		}
	})
}
