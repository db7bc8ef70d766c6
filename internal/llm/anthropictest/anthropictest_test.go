package anthropictest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func post(t *testing.T, s *Server, version, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL()+"/messages", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if version != "" {
		req.Header.Set("anthropic-version", version)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(data)
}

func TestChecksLikeTheRealAPI(t *testing.T) {
	s := Start(t)
	tests := []struct {
		name       string
		version    string
		body       string
		wantStatus int
		wantIn     string
	}{
		{"fine", "2023-06-01", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, 200, `"type":"message"`},
		{"no version", "", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, 400, "anthropic-version"},
		{"no max_tokens", "2023-06-01", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, 400, "max_tokens"},
		{"system role", "2023-06-01", `{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"hi"}]}`, 400, "messages.0.role"},
		{"roles not alternating", "2023-06-01", `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}`, 400, "alternate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := post(t, s, tt.version, tt.body)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantIn) {
				t.Errorf("POST = %d %s, want %d with %s", status, body, tt.wantStatus, tt.wantIn)
			}
		})
	}
	if n := len(s.Requests()); n != len(tests) {
		t.Errorf("Requests() has %d, want every one of the %d", n, len(tests))
	}
}

func TestStreamsTheEventSequence(t *testing.T) {
	s := Start(t, WithBlocks(Text("hi"), ToolUse("toolu_1", "f", `{"b": 1, "a": 2}`)), WithPieceSize(4))
	status, body := post(t, s, "2023-06-01", `{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if status != 200 {
		t.Fatalf("POST = %d %s", status, body)
	}
	var types []string
	var partial strings.Builder
	for _, line := range strings.Split(body, "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Type  string `json:"type"`
			Delta struct {
				PartialJSON string `json:"partial_json"`
			} `json:"delta"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event data %s: %v", data, err)
		}
		types = append(types, ev.Type)
		partial.WriteString(ev.Delta.PartialJSON)
	}
	want := "message_start ping content_block_start content_block_delta content_block_stop " +
		"content_block_start content_block_delta content_block_delta content_block_delta content_block_delta content_block_delta content_block_stop " +
		"message_delta message_stop"
	if got := strings.Join(types, " "); got != want {
		t.Errorf("events:\n%s\nwant\n%s", got, want)
	}
	if got := partial.String(); got != `{"b":1,"a":2}` {
		t.Errorf("input pieces join to %s, want the compact input, keys in order", got)
	}
}
