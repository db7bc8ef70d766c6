package llmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/corral-dev/corral/internal/llm"
)

// ReasoningItem is the reasoning item a Responses handler answers with
// when asked to: opaque encrypted content, as OpenAI's reasoning models
// send it with store false.
const ReasoningItem = `{"type":"reasoning","id":"rs_llmtest","summary":[],"encrypted_content":"gAAAAB-opaque-reasoning"}`

// ResponsesUsage is the usage a Responses handler reports.
var ResponsesUsage = llm.Usage{PromptTokens: 11, CompletionTokens: 7, TotalTokens: 18,
	PromptTokensDetails: &llm.PromptTokensDetails{CachedTokens: 4}, CompletionTokensDetails: &llm.CompletionTokensDetails{ReasoningTokens: 3}}

// ResponsesHandler answers POST /v1/responses, OpenAI's Responses API, for
// WithHandler: a reasoning item (when reasoning is set), a message with
// text (unless it is empty) and a function call per call, whole or as
// events (text in pieces of three bytes, arguments in two), with
// ResponsesUsage. Any other request is answered 404.
func ResponsesHandler(text string, calls []llm.ToolCall, reasoning bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/responses" {
			writeError(w, http.StatusNotFound, "invalid_request_error", "llmtest serves /v1/responses here", "")
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody))
		var req struct {
			Model  string `json:"model"`
			Stream bool   `json:"stream"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "not JSON: "+err.Error(), "")
			return
		}
		var output []json.RawMessage
		if reasoning {
			output = append(output, json.RawMessage(ReasoningItem))
		}
		if text != "" {
			output = append(output, mustJSON(map[string]any{"type": "message", "id": "msg_llmtest", "status": "completed", "role": "assistant",
				"content": []any{map[string]any{"type": "output_text", "text": text, "annotations": []any{}}}}))
		}
		for i, c := range calls {
			output = append(output, mustJSON(map[string]any{"type": "function_call", "id": fmt.Sprintf("fc_llmtest_%d", i), "status": "completed",
				"call_id": c.ID, "name": c.Function.Name, "arguments": c.Function.Arguments}))
		}
		u := ResponsesUsage
		resp := map[string]any{"id": "resp_llmtest", "object": "response", "created_at": 1700000000, "model": req.Model, "status": "completed",
			"output": output, "usage": map[string]any{"input_tokens": u.PromptTokens, "output_tokens": u.CompletionTokens, "total_tokens": u.TotalTokens,
				"input_tokens_details":  map[string]int{"cached_tokens": u.PromptTokensDetails.CachedTokens},
				"output_tokens_details": map[string]int{"reasoning_tokens": u.CompletionTokensDetails.ReasoningTokens}}}
		if !req.Stream {
			writeJSON(w, resp)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		seq := 0
		send := func(ev map[string]any) {
			ev["sequence_number"] = seq
			seq++
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev["type"], mustJSON(ev))
		}
		started := map[string]any{}
		for k, v := range resp {
			started[k] = v
		}
		started["status"], started["output"], started["usage"] = "in_progress", []any{}, nil
		send(map[string]any{"type": "response.created", "response": started})
		for i, item := range output {
			var it map[string]any
			_ = json.Unmarshal(item, &it)
			switch it["type"] {
			case "reasoning":
				send(map[string]any{"type": "response.output_item.added", "output_index": i, "item": it})
				send(map[string]any{"type": "response.output_item.done", "output_index": i, "item": it})
			case "message":
				send(map[string]any{"type": "response.output_item.added", "output_index": i,
					"item": map[string]any{"type": "message", "id": it["id"], "status": "in_progress", "role": "assistant", "content": []any{}}})
				for j := 0; j < len(text); j += 3 {
					send(map[string]any{"type": "response.output_text.delta", "item_id": it["id"], "output_index": i, "content_index": 0,
						"delta": text[j:min(j+3, len(text))], "logprobs": []any{}})
				}
				send(map[string]any{"type": "response.output_item.done", "output_index": i, "item": it})
			case "function_call":
				args, _ := it["arguments"].(string)
				added := map[string]any{}
				for k, v := range it {
					added[k] = v
				}
				added["arguments"], added["status"] = "", "in_progress"
				send(map[string]any{"type": "response.output_item.added", "output_index": i, "item": added})
				half := len(args) / 2
				for _, piece := range []string{args[:half], args[half:]} {
					send(map[string]any{"type": "response.function_call_arguments.delta", "item_id": it["id"], "output_index": i, "delta": piece})
				}
				send(map[string]any{"type": "response.function_call_arguments.done", "item_id": it["id"], "output_index": i, "arguments": args})
				send(map[string]any{"type": "response.output_item.done", "output_index": i, "item": it})
			}
		}
		send(map[string]any{"type": "response.completed", "response": resp})
	}
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
