package llm_test

import (
	"encoding/json"
	"testing"
)

func BenchmarkZZBaselineStdJSON(b *testing.B) {
	type msg struct {
		Role      string          `json:"role"`
		Content   json.RawMessage `json:"content"`
		ToolCalls []struct {
			ID       string `json:"id"`
			Function struct{ Name, Arguments string }
		} `json:"tool_calls"`
		ToolCallID string `json:"tool_call_id"`
	}
	type req struct {
		Model       string          `json:"model"`
		Messages    []msg           `json:"messages"`
		Tools       json.RawMessage `json:"tools"`
		Temperature *float64        `json:"temperature"`
	}
	for b.Loop() {
		var r req
		if err := json.Unmarshal(benchRequest, &r); err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(r); err != nil {
			b.Fatal(err)
		}
	}
}
