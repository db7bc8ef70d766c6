package app_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/llm/anthropictest"
	"github.com/corral-dev/corral/internal/llm/llmtest"
	"github.com/corral-dev/corral/internal/problem"
)

// respond posts a Responses API request as the agent and returns the
// status, the content type and the body.
func respond(t *testing.T, srv *apptest.Server, key string, body []byte) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", srv.URL+"/openai/v1/responses", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), out
}

// responseObject is what the tests read of a response object.
type responseObject struct {
	ID, Object, Status, Model string
	Output                    []struct {
		Type, ID, Status, Role, Name, Arguments string
		CallID                                  string `json:"call_id"`
		Content                                 []struct{ Type, Text string }
	}
	Usage *struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
		TotalTokens  int `json:"total_tokens"`
	}
}

// text is the response's output text.
func (r responseObject) text() string {
	var b strings.Builder
	for _, it := range r.Output {
		for _, c := range it.Content {
			b.WriteString(c.Text)
		}
	}
	return b.String()
}

// sseEvent is one streamed event as the tests read it.
type sseEvent struct {
	Name           string
	Type           string
	SequenceNumber int    `json:"sequence_number"`
	Delta          string `json:"delta"`
	Code           string `json:"code"`
	Response       *responseObject
}

// readEvents parses a Responses API stream.
func readEvents(t *testing.T, body []byte) []sseEvent {
	t.Helper()
	var out []sseEvent
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	name := ""
	for sc.Scan() {
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "event: "); ok {
			name = n
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev sseEvent
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		if ev.Type != name {
			t.Errorf("event named %q carries type %q", name, ev.Type)
		}
		ev.Name = name
		out = append(out, ev)
	}
	return out
}

// TestResponsesAPI drives POST /openai/v1/responses as an agent built on
// the Responses API would: whole and streamed answers with personal data
// restored (split across deltas in the stream), a function call round trip
// on a scripted model, a budget refusal, refused hosted tools and hostile
// bodies, and the audit of it all.
func TestResponsesAPI(t *testing.T) {
	up := echo(t)
	srv := apptest.Start(t)
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: gpt-eu}
spec: {provider: openai, baseURL: %q, model: gpt-4o, redact: reversible, pricing: {inputPerMTok: 2.5, outputPerMTok: 10}}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: bot}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: lookup_order, arguments: {order: 1042}}]
    - content: "Order 1042 ships today."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: support}
spec: {models: [gpt-eu, bot]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: poor}
spec: {models: [gpt-eu]}
---
apiVersion: corral.dev/v1
kind: Budget
metadata: {name: poor-day}
spec: {scope: {agent: poor}, window: day, limit: {tokens: 10}}
`, up.URL()))
	key := srv.Key(t, "support")
	poor := srv.Key(t, "poor")
	waitModel(t, srv, key, "gpt-eu")
	waitModel(t, srv, key, "bot")
	waitBudget(t, srv, "poor-day")

	t.Run("whole, redaction restored", func(t *testing.T) {
		status, ctype, body := respond(t, srv, key, mustJSON(t, map[string]any{
			"model": "gpt-eu", "instructions": "You are a support agent.",
			"input": []any{map[string]any{"role": "user", "content": []any{map[string]any{"type": "input_text", "text": pii}}}},
		}))
		if status != http.StatusOK || !strings.HasPrefix(ctype, "application/json") {
			t.Fatalf("HTTP %d %s %s", status, ctype, body)
		}
		var r responseObject
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(r.ID, "resp_") || r.Object != "response" || r.Status != "completed" || r.Model != "gpt-eu" {
			t.Errorf("response %s, want resp_..., object response, completed, model gpt-eu", body)
		}
		if got := r.text(); got != "you said: "+pii {
			t.Errorf("output text %q, want the originals restored: %q", got, "you said: "+pii)
		}
		if r.Usage == nil || r.Usage.InputTokens != 10 || r.Usage.OutputTokens != 5 || r.Usage.TotalTokens != 15 {
			t.Errorf("usage %s, want the provider's 10 + 5", body)
		}
		sent := up.ChatRequests()
		last := sent[len(sent)-1]
		if len(last.Messages) != 2 || last.Messages[0].Role != "system" {
			t.Fatalf("the provider got %+v, want the instructions as a system message, then the user's", last.Messages)
		}
		prompt := last.Messages[1].Content.String()
		if strings.Contains(prompt, "alice@example.com") || !strings.Contains(prompt, "<EMAIL_1>") {
			t.Errorf("the provider saw %q, want placeholders", prompt)
		}
	})

	t.Run("streamed, placeholders split across deltas", func(t *testing.T) {
		status, ctype, body := respond(t, srv, key, mustJSON(t, map[string]any{"model": "gpt-eu", "input": pii, "stream": true}))
		if status != http.StatusOK || !strings.HasPrefix(ctype, "text/event-stream") {
			t.Fatalf("HTTP %d %s %s", status, ctype, body)
		}
		events := readEvents(t, body)
		var text strings.Builder
		deltas := 0
		for i, ev := range events {
			if ev.SequenceNumber != i {
				t.Errorf("event %d (%s) has sequence_number %d", i, ev.Type, ev.SequenceNumber)
			}
			if ev.Type == "response.output_text.delta" {
				text.WriteString(ev.Delta)
				deltas++
			}
		}
		if text.String() != "you said: "+pii {
			t.Errorf("deltas add up to %q, want %q", text.String(), "you said: "+pii)
		}
		if deltas < 10 {
			t.Errorf("%d deltas: the upstream streams three bytes at a time, so the text must come in pieces", deltas)
		}
		if len(events) < 4 || events[0].Type != "response.created" || events[1].Type != "response.in_progress" {
			t.Fatalf("events start %+v, want response.created, response.in_progress", events)
		}
		final := events[len(events)-1]
		if final.Type != "response.completed" || final.Response == nil || final.Response.text() != "you said: "+pii ||
			final.Response.Usage == nil || final.Response.Usage.TotalTokens != 15 {
			t.Errorf("last event %+v, want response.completed with the restored text and the usage", final)
		}
	})

	t.Run("function call round trip", func(t *testing.T) {
		tools := []any{map[string]any{"type": "function", "name": "lookup_order", "description": "Looks an order up.",
			"parameters": map[string]any{"type": "object", "properties": map[string]any{"order": map[string]any{"type": "integer"}}}}}
		input := []any{map[string]any{"role": "user", "content": "Where is order 1042?"}}
		status, _, body := respond(t, srv, key, mustJSON(t, map[string]any{"model": "bot", "input": input, "tools": tools}))
		if status != http.StatusOK {
			t.Fatalf("turn 1: HTTP %d %s", status, body)
		}
		var r responseObject
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Output) != 1 || r.Output[0].Type != "function_call" || r.Output[0].Name != "lookup_order" ||
			r.Output[0].Arguments != `{"order":1042}` || r.Output[0].CallID == "" {
			t.Fatalf("turn 1: output %s, want one function_call of lookup_order", body)
		}
		call := r.Output[0]
		input = append(input,
			map[string]any{"type": "function_call", "id": call.ID, "call_id": call.CallID, "name": call.Name, "arguments": call.Arguments, "status": "completed"},
			map[string]any{"type": "function_call_output", "call_id": call.CallID, "output": `{"status":"shipped"}`})
		// The second turn streamed, as the Agents SDK does with run(..., {stream: true}).
		status, _, body = respond(t, srv, key, mustJSON(t, map[string]any{"model": "bot", "input": input, "tools": tools, "stream": true}))
		if status != http.StatusOK {
			t.Fatalf("turn 2: HTTP %d %s", status, body)
		}
		events := readEvents(t, body)
		final := events[len(events)-1]
		if final.Type != "response.completed" || final.Response.text() != "Order 1042 ships today." {
			t.Errorf("turn 2: last event %+v, want the scripted answer", final)
		}
	})

	t.Run("budget refusal", func(t *testing.T) {
		// The first call spends the budget's 10 tokens and more; the next
		// ones are refused.
		if status, _, body := respond(t, srv, poor, mustJSON(t, map[string]any{"model": "gpt-eu", "input": "hi"})); status != http.StatusOK {
			t.Fatalf("first call: HTTP %d %s", status, body)
		}
		status, ctype, body := respond(t, srv, poor, mustJSON(t, map[string]any{"model": "gpt-eu", "input": "hi"}))
		if status != http.StatusTooManyRequests || !strings.HasPrefix(ctype, "application/problem+json") || !strings.Contains(string(body), `"code":"budget_exceeded"`) {
			t.Errorf("over budget: HTTP %d %s %s, want 429 problem+json budget_exceeded", status, ctype, body)
		}
		status, _, body = respond(t, srv, poor, mustJSON(t, map[string]any{"model": "gpt-eu", "input": "hi", "stream": true}))
		if status != http.StatusTooManyRequests || !strings.Contains(string(body), `"code":"budget_exceeded"`) {
			t.Errorf("streamed, over budget: HTTP %d %s, want 429 budget_exceeded before any event", status, body)
		}
	})

	t.Run("refusals name the field", func(t *testing.T) {
		for _, tc := range []struct {
			name, body, field string
		}{
			{"hosted web search", `{"model":"gpt-eu","input":"hi","tools":[{"type":"web_search"}]}`, "tools[0].type"},
			{"hosted file search", `{"model":"gpt-eu","input":"hi","tools":[{"type":"function","name":"f"},{"type":"file_search","vector_store_ids":["vs_1"]}]}`, "tools[1].type"},
			{"computer use", `{"model":"gpt-eu","input":"hi","tools":[{"type":"computer_use_preview"}]}`, "tools[0].type"},
			{"previous response", `{"model":"gpt-eu","input":"hi","previous_response_id":"resp_123"}`, "previous_response_id"},
			{"wrong type", `{"model":"gpt-eu","input":[{"role":"user","content":7}]}`, "input[0].content"},
			{"unknown role", `{"model":"gpt-eu","input":[{"role":"wizard","content":"x"}]}`, "input[0].role"},
			{"temperature a string", `{"model":"gpt-eu","input":"hi","temperature":"warm"}`, "temperature"},
			{"output limit above the model's", `{"model":"gpt-eu","input":"hi","max_output_tokens":100000000}`, "max_output_tokens"},
			{"deeply nested", `{"model":"gpt-eu","input":` + strings.Repeat("[", 50000) + strings.Repeat("]", 50000) + `}`, "not valid JSON"},
			{"not JSON", `{"model":`, ""},
		} {
			status, ctype, body := respond(t, srv, key, []byte(tc.body))
			if status != http.StatusBadRequest && status != http.StatusUnprocessableEntity {
				t.Errorf("%s: HTTP %d %s, want 400", tc.name, status, body)
				continue
			}
			if !strings.HasPrefix(ctype, "application/problem+json") || !strings.Contains(string(body), tc.field) {
				t.Errorf("%s: %s %s, want problem+json naming %s", tc.name, ctype, body, tc.field)
			}
		}
		huge := []byte(`{"model":"gpt-eu","input":"` + strings.Repeat("a", 9<<20) + `"}`)
		if status, _, body := respond(t, srv, key, huge); status != http.StatusRequestEntityTooLarge {
			t.Errorf("9 MiB body: HTTP %d %s, want 413", status, body)
		}
		if status, _, _ := respond(t, srv, "", []byte(`{"model":"gpt-eu","input":"hi"}`)); status != http.StatusUnauthorized {
			t.Errorf("no key: HTTP %d, want 401", status)
		}
		if status, _ := srv.Call(t, key, "GET", "/openai/v1/responses/resp_123", nil, nil); status != http.StatusNotFound {
			t.Errorf("GET a response: HTTP %d, want 404 (corral stores none)", status)
		}
	})

	t.Run("audit", func(t *testing.T) {
		var out struct {
			Records []struct {
				Agent, Kind, Target, Edge, Decision, Code string
				Model                                     *struct {
					Stream   bool
					Redacted map[string]int
				}
			}
		}
		status, body := srv.Call(t, srv.Token, "GET", "/v1/audit?limit=1000", nil, nil)
		if err := json.Unmarshal(body, &out); status != http.StatusOK || err != nil {
			t.Fatalf("GET /v1/audit: HTTP %d %s", status, body)
		}
		counts := map[string]int{}
		for _, r := range out.Records {
			if r.Kind != "model" || r.Edge != "responses" {
				continue
			}
			counts[r.Agent+" "+r.Target+" "+r.Decision+" "+r.Code]++
			if r.Agent == "support" && r.Target == "gpt-eu" && r.Decision == "allowed" && (r.Model == nil || r.Model.Redacted["EMAIL"] != 1) {
				t.Errorf("audit record %+v, want the email counted as redacted", r)
			}
		}
		want := map[string]int{
			"support gpt-eu allowed ": 2, "support bot allowed ": 2, "poor gpt-eu allowed ": 1, "poor gpt-eu denied budget_exceeded": 2,
		}
		for k, n := range want {
			if counts[k] != n {
				t.Errorf("audit: %d records %q, want %d (all: %v)", counts[k], k, n, counts)
			}
		}
	})
}

// TestResponsesPassthrough: a Model with api: responses is called through
// OpenAI's Responses API: the upstream gets POST /responses with the
// personal data redacted, the agent gets it back restored, whole and
// streamed, with the provider's reasoning item, which goes back to the
// provider in the next call; a chat completions call reaches the same
// model through the Responses API too. An Anthropic model answers the
// Responses API through corral's Messages API translation.
func TestResponsesPassthrough(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithHandler(llmtest.ResponsesHandler("I will refund <EMAIL_1> now.", nil, true)))
	claude := anthropictest.Start(t, anthropictest.WithBlocks(anthropictest.Text("Let me look."), anthropictest.ToolUse("toolu_1", "lookup", `{"order":1042}`)),
		anthropictest.WithStopReason("tool_use"))
	srv := apptest.Start(t)
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: o-eu}
spec: {provider: openai, api: responses, baseURL: %q, model: o4-mini, redact: reversible}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: claude}
spec: {provider: anthropic, baseURL: %q, model: claude-sonnet-4-5}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: support}
spec: {models: [o-eu, claude]}
`, up.URL(), claude.URL()))
	key := srv.Key(t, "support")
	waitModel(t, srv, key, "o-eu")
	waitModel(t, srv, key, "claude")

	// Anthropic answers through corral's Messages API translation, whole
	// and streamed, its tool use a function_call.
	tools := []any{map[string]any{"type": "function", "name": "lookup", "parameters": map[string]any{"type": "object"}}}
	for _, stream := range []bool{false, true} {
		status, _, body := respond(t, srv, key, mustJSON(t, map[string]any{"model": "claude", "input": "Where is 1042?", "tools": tools, "stream": stream}))
		if status != http.StatusOK {
			t.Fatalf("claude (stream %v): HTTP %d %s", stream, status, body)
		}
		var r responseObject
		if stream {
			events := readEvents(t, body)
			r = *events[len(events)-1].Response
		} else if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Output) != 2 || r.text() != "Let me look." || r.Output[1].Type != "function_call" || r.Output[1].CallID != "toolu_1" ||
			r.Output[1].Name != "lookup" || r.Output[1].Arguments != `{"order":1042}` {
			t.Errorf("claude (stream %v): output %+v, want the text and a call of lookup", stream, r.Output)
		}
	}
	if n := len(claude.Requests()); n != 2 {
		t.Errorf("Anthropic got %d requests, want 2", n)
	}
	const ask = "Please refund alice@example.com."
	const want = "I will refund alice@example.com now."

	status, _, body := respond(t, srv, key, mustJSON(t, map[string]any{"model": "o-eu", "input": ask, "reasoning": map[string]any{"effort": "low"}}))
	if status != http.StatusOK {
		t.Fatalf("HTTP %d %s", status, body)
	}
	var r struct {
		Output []json.RawMessage
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Output) != 2 || string(r.Output[0]) != llmtest.ReasoningItem || !strings.Contains(string(r.Output[1]), want) {
		t.Fatalf("output %s, want the reasoning item as it came, then the restored message", body)
	}
	if b := string(body); !strings.Contains(b, `"input_tokens_details":{"cached_tokens":4}`) || !strings.Contains(b, `"output_tokens_details":{"reasoning_tokens":3}`) {
		t.Errorf("response %s, want the provider's usage details", b)
	}
	sent := up.Requests()
	if len(sent) != 1 || sent[0].Path != "/v1/responses" {
		t.Fatalf("the upstream got %+v, want POST /v1/responses", sent)
	}
	if b := string(sent[0].Body); strings.Contains(b, "alice@example.com") || !strings.Contains(b, "<EMAIL_1>") ||
		!strings.Contains(b, `"model":"o4-mini"`) || !strings.Contains(b, `"reasoning":{"effort":"low"}`) || !strings.Contains(b, `"store":false`) {
		t.Errorf("the upstream got %s, want the address redacted, its model name, the reasoning effort and store false", b)
	}

	// The next turn sends the reasoning item back, streamed.
	input := []any{map[string]any{"role": "user", "content": ask}, json.RawMessage(r.Output[0]), json.RawMessage(r.Output[1]),
		map[string]any{"role": "user", "content": "Thanks!"}}
	status, _, body = respond(t, srv, key, mustJSON(t, map[string]any{"model": "o-eu", "input": input, "stream": true}))
	if status != http.StatusOK {
		t.Fatalf("streamed: HTTP %d %s", status, body)
	}
	events := readEvents(t, body)
	var text strings.Builder
	reasoning := 0
	for _, ev := range events {
		if ev.Type == "response.output_text.delta" {
			text.WriteString(ev.Delta)
		}
	}
	final := events[len(events)-1]
	if final.Type != "response.completed" || text.String() != want || final.Response.text() != want {
		t.Errorf("streamed: deltas %q, last event %+v, want %q", text.String(), final, want)
	}
	for _, it := range final.Response.Output {
		if it.Type == "reasoning" {
			reasoning++
		}
	}
	if reasoning != 1 {
		t.Errorf("streamed: %d reasoning items in the final response, want 1", reasoning)
	}
	sent = up.Requests()
	if b := string(sent[1].Body); !strings.Contains(b, `"encrypted_content":"gAAAAB-opaque-reasoning"`) || strings.Contains(b, "alice@example.com") ||
		!strings.Contains(b, `"include":["reasoning.encrypted_content"]`) {
		t.Errorf("second call: the upstream got %s, want the reasoning item back, the address redacted, encrypted content asked for", b)
	}

	// Chat completions reach the same model through its Responses API.
	status, body, _ = chat(t, srv, key, userMessage("o-eu", ask))
	if status != http.StatusOK || !strings.Contains(string(body), want) {
		t.Errorf("chat completions: HTTP %d %s, want %q", status, body, want)
	}
	if n := len(up.Requests()); n != 3 || up.Requests()[2].Path != "/v1/responses" {
		t.Errorf("the upstream got %d requests, the last at %s; want 3, all at /v1/responses", n, up.Requests()[n-1].Path)
	}
}

// TestResponsesApprovalAndBrokenStream: a Responses call policy wants
// approved is parked like a chat completion (202 approval_pending) and
// runs once approved; a stream whose provider breaks after its first
// chunk ends with an error event and response.failed.
func TestResponsesApprovalAndBrokenStream(t *testing.T) {
	broken := llmtest.Start(t, llmtest.WithHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"x","choices":[{"index":0,"delta":{"role":"assistant","content":"Partial"}}]}`+"\n\n")
		// No [DONE]: the stream ends before the answer does.
	}))
	srv := apptest.Start(t)
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: oracle}
spec:
  provider: scripted
  script: [{content: "The forecast is grim."}]
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: flaky}
spec: {provider: openai, baseURL: %q, redact: "off"}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: analyst}
spec: {models: [oracle, flaky]}
---
apiVersion: corral.dev/v1
kind: Policy
metadata: {name: reviewed-models}
spec:
  rego: |
    package corral.authz
    require_approval contains "the oracle's forecasts are reviewed" if {
      allow
      input.action.kind == "model"
      input.action.target == "oracle"
    }
    obligations.approvers := ["analysts"] if input.action.target == "oracle"
`, broken.URL()))
	key := srv.Key(t, "analyst")
	waitModel(t, srv, key, "flaky")
	ask := mustJSON(t, map[string]any{"model": "oracle", "input": "forecast Q3"})

	var parked problem.Details
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, ctype, body := respond(t, srv, key, ask)
		_ = json.Unmarshal(body, &parked)
		if status == http.StatusAccepted && parked.Code == problem.ApprovalPending && parked.ApprovalID != "" && strings.HasPrefix(ctype, "application/problem+json") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a reviewed model call: HTTP %d %s, want 202 approval_pending", status, body)
		}
		time.Sleep(20 * time.Millisecond) // the policy loads in the background
	}
	status, body := srv.Call(t, srv.Token, "POST", "/v1/humans", map[string]any{"name": "ana", "groups": []string{"analysts"}}, nil)
	var ana struct{ Key string }
	if status != http.StatusCreated || json.Unmarshal(body, &ana) != nil {
		t.Fatalf("POST /v1/humans: %d %s", status, body)
	}
	if status, body := srv.Call(t, ana.Key, "POST", "/v1/approvals/"+parked.ApprovalID+"/approve", map[string]any{}, nil); status != http.StatusOK {
		t.Fatalf("approve: %d %s", status, body)
	}
	if status, _, body := respond(t, srv, key, ask); status != http.StatusOK || !strings.Contains(string(body), "The forecast is grim.") {
		t.Errorf("after approval: HTTP %d %s, want the forecast", status, body)
	}

	status, _, body = respond(t, srv, key, mustJSON(t, map[string]any{"model": "flaky", "input": "hi", "stream": true}))
	if status != http.StatusOK {
		t.Fatalf("broken stream: HTTP %d %s", status, body)
	}
	events := readEvents(t, body)
	n := len(events)
	if n < 3 || events[n-2].Type != "error" || events[n-2].Code == "" || events[n-1].Type != "response.failed" ||
		events[n-1].Response == nil || events[n-1].Response.Status != "failed" || events[n-1].Response.text() != "Partial" {
		t.Errorf("broken stream events %+v, want error then response.failed with the partial text", events)
	}
}
