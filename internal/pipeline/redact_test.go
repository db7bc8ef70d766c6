package pipeline

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/redact"
)

// TestRedactLegacyFunctionCall: a legacy function_call's arguments are
// redacted as a tool call's are, so a card written as a number becomes a
// quoted placeholder and the arguments stay JSON (they were
// {"n":<CARD_1>} when redacted as plain text), and the message's other
// passed-through fields are still redacted.
func TestRedactLegacyFunctionCall(t *testing.T) {
	r, err := redact.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	req := &llm.ChatRequest{Messages: []llm.Message{{Role: "assistant", Extra: map[string]json.RawMessage{
		"function_call": json.RawMessage(`{"name":"f","arguments":"{\"to\":\"jane.doe@example.com\",\"n\":4111111111111111}"}`),
		"audio":         json.RawMessage(`{"id":"jane.doe@example.com"}`),
	}}}}
	for _, mode := range []redact.Mode{redact.Reversible, redact.Mask} {
		out := redactRequest(req, r.NewSession(mode))
		var fc llm.FunctionCall
		if err := json.Unmarshal(out.Messages[0].Extra["function_call"], &fc); err != nil {
			t.Fatalf("%v: function_call %s: %v", mode, out.Messages[0].Extra["function_call"], err)
		}
		var args map[string]any
		if err := json.Unmarshal([]byte(fc.Arguments), &args); err != nil {
			t.Errorf("%v: the provider gets arguments %s, not JSON: %v", mode, fc.Arguments, err)
		}
		if strings.Contains(fc.Arguments, "4111111111111111") || strings.Contains(fc.Arguments, "jane.doe") || fc.Name != "f" {
			t.Errorf("%v: function_call %+v, want the card and address redacted and the name kept", mode, fc)
		}
		if audio := string(out.Messages[0].Extra["audio"]); strings.Contains(audio, "jane.doe") {
			t.Errorf("%v: audio %s, want the address redacted", mode, audio)
		}
	}
	if got := string(req.Messages[0].Extra["function_call"]); !strings.Contains(got, "4111111111111111") {
		t.Errorf("the original request changed: %s", got)
	}
}
