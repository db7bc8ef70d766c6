package app_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/llm/llmtest"
)

// chat posts a chat completion as the agent and returns the status, body
// and the header naming the target that answered.
func chat(t *testing.T, srv *apptest.Server, key string, body any) (int, []byte, string) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", srv.URL+"/openai/v1/chat/completions", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out, resp.Header.Get("Corral-Model-Target")
}

func userMessage(model, text string) map[string]any {
	return map[string]any{"model": model, "messages": []any{map[string]any{"role": "user", "content": text}}}
}

// waitModel waits until the agent's model list shows name: the catalogue
// follows the registry in the background.
func waitModel(t *testing.T, srv *apptest.Server, key, name string) {
	t.Helper()
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, body := srv.Call(t, key, "GET", "/openai/v1/models", nil, nil)
		if status == http.StatusOK && strings.Contains(string(body), `"id":"`+name+`"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("model %s never listed: HTTP %d %s", name, status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// echo is an OpenAI-compatible upstream that answers with what it was sent,
// so a test sees both what the provider got and what the agent got back.
func echo(t *testing.T) *llmtest.Server {
	return llmtest.Start(t, llmtest.WithHandler(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req, err := llm.DecodeRequest(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		said := "you said: " + req.Messages[len(req.Messages)-1].Content.String()
		resp := &llm.ChatResponse{ID: "chatcmpl-echo", Object: "chat.completion", Created: 1, Model: req.Model,
			Choices: []llm.Choice{{Message: llm.Message{Role: "assistant", Content: llm.TextContent(said)}, FinishReason: "stop"}},
			Usage:   &llm.Usage{PromptTokens: 10, CompletionTokens: 5, TotalTokens: 15}}
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(resp)
			return
		}
		// Streamed in pieces of three bytes, so placeholders are split.
		w.Header().Set("Content-Type", "text/event-stream")
		for _, c := range llmChunks(resp) {
			b, _ := json.Marshal(c)
			fmt.Fprintf(w, "data: %s\n\n", b)
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
}

func llmChunks(resp *llm.ChatResponse) []*llm.ChatChunk {
	text := resp.Choices[0].Message.Content.Text
	var out []*llm.ChatChunk
	stop := "stop"
	for i := 0; i < len(text); i += 3 {
		piece := text[i:min(i+3, len(text))]
		out = append(out, &llm.ChatChunk{ID: resp.ID, Object: "chat.completion.chunk", Created: 1, Model: resp.Model,
			Choices: []llm.ChunkChoice{{Delta: llm.Delta{Content: &piece}}}})
	}
	out = append(out, &llm.ChatChunk{ID: resp.ID, Object: "chat.completion.chunk", Created: 1, Model: resp.Model,
		Choices: []llm.ChunkChoice{{Delta: llm.Delta{}, FinishReason: &stop}}})
	out = append(out, &llm.ChatChunk{ID: resp.ID, Object: "chat.completion.chunk", Created: 1, Model: resp.Model, Usage: resp.Usage, Choices: []llm.ChunkChoice{}})
	return out
}

const pii = "Refund alice@example.com, card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00."

// TestModelRedaction: a prompt with an email, a card and an IBAN reaches
// the provider with placeholders only, and the agent's answer, plain and
// streamed, has the originals back.
func TestModelRedaction(t *testing.T) {
	up := echo(t)
	srv := apptest.Start(t)
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: gpt-eu}
spec: {provider: openai, baseURL: %q, model: gpt-4o, region: eu-west-1, redact: reversible, pricing: {inputPerMTok: 2.5, outputPerMTok: 10}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: support}
spec: {models: [gpt-eu]}
`, up.URL()))
	key := srv.Key(t, "support")
	waitModel(t, srv, key, "gpt-eu")

	status, body, target := chat(t, srv, key, userMessage("gpt-eu", pii))
	if status != http.StatusOK || target != "gpt-eu" {
		t.Fatalf("chat: HTTP %d target %q %s", status, target, body)
	}
	var resp llm.ChatResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if got := resp.Choices[0].Message.Content.String(); got != "you said: "+pii {
		t.Errorf("the agent got %q, want the originals restored: %q", got, "you said: "+pii)
	}
	sent := up.ChatRequests()
	if len(sent) != 1 {
		t.Fatalf("upstream got %d requests", len(sent))
	}
	prompt := sent[0].Messages[0].Content.String()
	for _, value := range []string{"alice@example.com", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00"} {
		if strings.Contains(prompt, value) {
			t.Errorf("the provider saw %q in %q", value, prompt)
		}
	}
	for _, placeholder := range []string{"<EMAIL_1>", "<CARD_1>", "<IBAN_1>"} {
		if !strings.Contains(prompt, placeholder) {
			t.Errorf("the provider's prompt %q lacks %s", prompt, placeholder)
		}
	}
	if sent[0].Model != "gpt-4o" {
		t.Errorf("the provider was asked for model %q, want its own name gpt-4o", sent[0].Model)
	}

	// Every other string that reaches the provider is redacted too: names,
	// user, tools, response_format, fields corral only passes through.
	leaky := map[string]any{
		"model": "gpt-eu", "user": "alice@example.com", "metadata": map[string]any{"customer": "alice@example.com"},
		"messages": []any{
			map[string]any{"role": "user", "name": "alice@example.com", "content": []any{
				map[string]any{"type": "text", "text": "hi"}, map[string]any{"type": "input_text", "text": "alice@example.com"}}},
		},
		"tools": []any{map[string]any{"type": "function", "function": map[string]any{"name": "lookup", "description": "for alice@example.com",
			"parameters": map[string]any{"type": "object", "description": "alice@example.com"}}}},
		"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x", "description": "alice@example.com"}},
		"stop":            []string{"alice@example.com"},
	}
	if status, body, _ := chat(t, srv, key, leaky); status != http.StatusOK {
		t.Fatalf("chat with extra fields: HTTP %d %s", status, body)
	}
	reqs := up.Requests()
	if last := string(reqs[len(reqs)-1].Body); strings.Contains(last, "alice@example.com") || !strings.Contains(last, "EMAIL_1") {
		t.Errorf("the provider got %s, want the address nowhere", last)
	}
	if status, body, _ := chat(t, srv, key, map[string]any{"model": "gpt-eu", "max_completion_tokens": -1000,
		"messages": []any{map[string]any{"role": "user", "content": "x"}}}); status != http.StatusBadRequest || !strings.Contains(string(body), "max_completion_tokens") {
		t.Errorf("negative max_completion_tokens: HTTP %d %s, want 400 naming the field", status, body)
	}

	// Streamed in three-byte pieces: placeholders arrive split, and are
	// restored whole.
	stream := userMessage("gpt-eu", pii)
	stream["stream"] = true
	status, body, _ = chat(t, srv, key, stream)
	if status != http.StatusOK {
		t.Fatalf("streamed chat: HTTP %d %s", status, body)
	}
	var text strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(body))
	done := false
	for sc.Scan() {
		line := sc.Text()
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			break
		}
		var c llm.ChatChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		if c.Usage != nil {
			t.Errorf("a usage chunk reached an agent that did not ask for it: %s", data)
		}
		for _, ch := range c.Choices {
			if ch.Delta.Content != nil {
				text.WriteString(*ch.Delta.Content)
			}
		}
	}
	if !done || text.String() != "you said: "+pii {
		t.Errorf("streamed answer %q (done %v), want %q", text.String(), done, "you said: "+pii)
	}

	// The audit has both calls, with what was redacted and the cost.
	var records struct {
		Records []struct {
			Target, Source, Status string
			Model                  struct {
				Target   string
				Stream   bool
				Redacted map[string]int
				Cost     float64
			}
		}
	}
	status, body = srv.Call(t, srv.Token, "GET", "/v1/audit?agent=support&tool=gpt-eu", nil, nil)
	if err := json.Unmarshal(body, &records); status != http.StatusOK || err != nil || len(records.Records) != 3 {
		t.Fatalf("audit: HTTP %d %s", status, body)
	}
	for _, r := range []int{0, 2} { // the plain and the streamed call with the three values
		r := records.Records[r]
		if r.Status != "ok" || r.Model.Target != "gpt-eu" || r.Model.Redacted["EMAIL"] != 1 || r.Model.Redacted["CARD"] != 1 || r.Model.Redacted["IBAN"] != 1 || r.Model.Cost <= 0 {
			t.Errorf("audit record %+v, want ok, target gpt-eu, one EMAIL, CARD and IBAN redacted, a cost", r)
		}
	}
}

// TestModelRoutes: a primary answering 503 falls back, and the audit says
// which target answered; weights 80/20 hold over 1,000 calls; a model
// outside the agent's list is refused and not listed.
func TestModelRoutes(t *testing.T) {
	down := llmtest.Start(t, llmtest.WithError(http.StatusServiceUnavailable, "server_error", "overloaded"))
	up := llmtest.Start(t, llmtest.WithContent("fallback answer"))
	srv := apptest.Start(t)
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: primary}
spec: {provider: openai, baseURL: %q, redact: "off"}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: backup}
spec: {provider: openai, baseURL: %q, redact: "off"}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: smart}
spec: {route: {targets: [{model: primary}], fallbacks: [backup]}}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: a}
spec: {provider: scripted, script: [{content: "a"}]}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: b}
spec: {provider: scripted, script: [{content: "b"}]}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: split}
spec: {route: {targets: [{model: a, weight: 80}, {model: b, weight: 20}]}}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: compare}
spec: {route: {targets: [{model: a}], shadow: [b]}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: router}
spec: {models: [smart, split, compare], captureContent: true}
`, down.URL(), up.URL()))
	key := srv.Key(t, "router")
	waitModel(t, srv, key, "split")

	status, body, target := chat(t, srv, key, userMessage("smart", "hello"))
	if status != http.StatusOK || target != "backup" || !strings.Contains(string(body), "fallback answer") {
		t.Fatalf("smart: HTTP %d target %q %s, want the fallback's answer", status, target, body)
	}
	var records struct {
		Records []struct {
			Target string
			Model  struct {
				Target   string
				Attempts []string
			}
		}
	}
	status, body = srv.Call(t, srv.Token, "GET", "/v1/audit?agent=router", nil, nil)
	if err := json.Unmarshal(body, &records); status != http.StatusOK || err != nil || len(records.Records) != 1 {
		t.Fatalf("audit: HTTP %d %s", status, body)
	}
	if r := records.Records[0]; r.Target != "smart" || r.Model.Target != "backup" || len(r.Model.Attempts) != 1 || r.Model.Attempts[0] != "primary: HTTP 503" {
		t.Errorf("audit record %+v, want target smart answered by backup after primary: HTTP 503", r)
	}

	// A shadow gets a copy; its answer is audited (the agent captures
	// content), never returned.
	status, body, target = chat(t, srv, key, userMessage("compare", "which?"))
	if status != http.StatusOK || target != "a" || !strings.Contains(string(body), `"content":"a"`) {
		t.Fatalf("compare: HTTP %d target %q %s, want a's answer", status, target, body)
	}
	var shadow struct {
		Records []struct {
			Target, Event, Edge string
			Detail              struct{ Of, Primary, Answer string }
		}
	}
	deadline := time.Now().Add(apptest.Patience)
	for len(shadow.Records) == 0 && time.Now().Before(deadline) {
		_, body = srv.Call(t, srv.Token, "GET", "/v1/audit?agent=router&tool=b", nil, nil)
		if err := json.Unmarshal(body, &shadow); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(shadow.Records) != 1 || shadow.Records[0].Event != "shadow" || shadow.Records[0].Detail.Answer != "b" ||
		shadow.Records[0].Detail.Of != "compare" || shadow.Records[0].Detail.Primary != "a" {
		t.Errorf("shadow audit records %+v, want one event shadow of compare answered by a, with answer b", shadow.Records)
	}

	// 1,000 calls over 80/20, eight at a time.
	const calls = 1000
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	work := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for range work {
				status, body, target := chat(t, srv, key, userMessage("split", "pick"))
				if status != http.StatusOK {
					t.Errorf("split: HTTP %d %s", status, body)
				}
				mu.Lock()
				counts[target]++
				mu.Unlock()
			}
		})
	}
	for range calls {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	share := float64(counts["a"]) / calls * 100
	t.Logf("80/20 over %d calls: %v (a: %.1f%%)", calls, counts, share)
	if share < 75 || share > 85 || counts["a"]+counts["b"] != calls {
		t.Errorf("a answered %.1f%% of %d calls (%v), want 80 ± 5", share, calls, counts)
	}

	// A model outside spec.models: refused and not listed.
	status, body, _ = chat(t, srv, key, userMessage("backup", "hello"))
	if status != http.StatusForbidden || !strings.Contains(string(body), `"code":"policy_denied"`) || !strings.Contains(string(body), `"error":{`) {
		t.Errorf("backup, outside the agent's models: HTTP %d %s, want 403 policy_denied with an OpenAI error member", status, body)
	}
	if status, body := srv.Call(t, key, "POST", "/openai/v1/completions", map[string]any{}, nil); status != http.StatusNotFound || !strings.Contains(string(body), `"error":{"message":"no such endpoint`) {
		t.Errorf("an endpoint corral does not serve: HTTP %d %s, want 404 with OpenAI's error member", status, body)
	}
	_, body = srv.Call(t, key, "GET", "/openai/v1/models", nil, nil)
	if strings.Contains(string(body), `"backup"`) || !strings.Contains(string(body), `"smart"`) {
		t.Errorf("models list %s, want smart and split only", body)
	}
}

// TestModelBudget: 20 concurrent calls against a calls limit of 5: exactly
// 5 pass and 15 are refused with 429 budget_exceeded naming the budget.
// The same budget counts tool calls (see TestToolCallsCountOnBudgets).
func TestModelBudget(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Model
metadata: {name: local}
spec: {provider: scripted, script: [{content: "ok"}], pricing: {inputPerMTok: 1, outputPerMTok: 2}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: looper}
spec: {models: [local]}
---
apiVersion: corral.dev/v1
kind: Budget
metadata: {name: looper-day}
spec: {scope: {agent: looper}, window: day, limit: {calls: 5}}
`)
	key := srv.Key(t, "looper")
	waitModel(t, srv, key, "local")
	// The budget loads from the registry in the background too.
	waitBudget(t, srv, "looper-day")

	var mu sync.Mutex
	codes := map[int]int{}
	var refused []byte
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			status, body, _ := chat(t, srv, key, userMessage("local", "again"))
			mu.Lock()
			defer mu.Unlock()
			codes[status]++
			if status == http.StatusTooManyRequests {
				refused = body
			}
		})
	}
	wg.Wait()
	if codes[http.StatusOK] != 5 || codes[http.StatusTooManyRequests] != 15 {
		t.Fatalf("20 concurrent calls against calls: 5 gave %v, want 5 × 200 and 15 × 429", codes)
	}
	if !bytes.Contains(refused, []byte(`"code":"budget_exceeded"`)) || !bytes.Contains(refused, []byte("looper-day")) {
		t.Errorf("refusal %s, want budget_exceeded naming looper-day", refused)
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/budgets", nil, nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"calls": 5`) {
		t.Errorf("GET /v1/budgets: HTTP %d %s, want 5 calls used", status, body)
	}
}

func waitBudget(t *testing.T, srv *apptest.Server, name string) {
	t.Helper()
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, body := srv.Call(t, srv.Token, "GET", "/v1/budgets", nil, nil)
		if status == http.StatusOK && strings.Contains(string(body), `"`+name+`"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("budget %s never loaded: HTTP %d %s", name, status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestModelRegionPolicy: the docs' rule keeping an agent's prompts on EU
// models refuses a route that may reach a US model, whichever target it
// would pick, and allows an EU-only one.
func TestModelRegionPolicy(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Model
metadata: {name: eu}
spec: {provider: scripted, region: eu-west-1, script: [{content: "bonjour"}]}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: us}
spec: {provider: scripted, region: us-east-1, script: [{content: "howdy"}]}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: mixed}
spec: {route: {targets: [{model: eu, weight: 99}], fallbacks: [us]}}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: shadowed}
spec: {route: {targets: [{model: eu}], shadow: [us]}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: care, labels: {team: customer-care}}
spec: {models: [eu, mixed, shadowed]}
---
apiVersion: corral.dev/v1
kind: Policy
metadata: {name: eu-only}
spec:
  rego: |
    package corral.authz

    deny contains sprintf("model %s runs outside the EU", [t.name]) if {
    	input.action.kind == "model"
    	input.agent.labels.team == "customer-care"
    	some t in array.concat([input.model], object.get(input.model, "targets", []))
    	t.provider != ""
    	not startswith(t.region, "eu-")
    }
`)
	key := srv.Key(t, "care")
	waitModel(t, srv, key, "eu")
	waitRefused(t, srv, key, "mixed", "model us runs outside the EU")
	if status, body, _ := chat(t, srv, key, userMessage("eu", "hello")); status != http.StatusOK {
		t.Errorf("eu: HTTP %d %s, want 200", status, body)
	}
	// A shadow gets the prompt too: policy sees it among the targets.
	if status, body, _ := chat(t, srv, key, userMessage("shadowed", "hello")); status != http.StatusForbidden || !strings.Contains(string(body), "model us runs outside the EU") {
		t.Errorf("shadowed: HTTP %d %s, want 403 naming the US shadow", status, body)
	}
}

// TestModelStreamCut: an agent that hangs up after the answer but before
// the provider's usage chunk is still charged, the worst case since no
// usage came, and the audit says it closed the stream.
func TestModelStreamCut(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\""+strings.Repeat("word ", 200)+"\"},\"finish_reason\":null}]}\n\n")
		fmt.Fprint(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the usage chunk never comes
	}))
	srv := apptest.Start(t)
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: m}
spec: {provider: openai, baseURL: %q, redact: "off"}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: cutter}
spec: {models: [m]}
---
apiVersion: corral.dev/v1
kind: Budget
metadata: {name: cutter-day}
spec: {scope: {agent: cutter}, window: day, limit: {tokens: 1000000}}
`, up.URL()))
	key := srv.Key(t, "cutter")
	waitModel(t, srv, key, "m")
	waitBudget(t, srv, "cutter-day")

	req, err := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/openai/v1/chat/completions",
		strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && !strings.Contains(sc.Text(), `"finish_reason":"stop"`) {
	}
	resp.Body.Close() // hang up before the usage

	var records struct {
		Records []struct {
			Status, Reason string
			Model          struct {
				CompletionTokens int `json:"completion_tokens"`
				Estimated        bool
			}
		}
	}
	deadline := time.Now().Add(apptest.Patience)
	// Until its outcome is stored, the call shows as its intent, outcome unknown.
	for (len(records.Records) == 0 || records.Records[0].Status == "unknown") && time.Now().Before(deadline) {
		_, body := srv.Call(t, srv.Token, "GET", "/v1/audit?agent=cutter", nil, nil)
		if err := json.Unmarshal(body, &records); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(records.Records) != 1 {
		t.Fatalf("audit records %+v, want the cut call", records.Records)
	}
	r := records.Records[0]
	if r.Status != "error" || !strings.Contains(r.Reason, "closed the stream") || r.Model.CompletionTokens < 4096 || !r.Model.Estimated {
		t.Errorf("audit record %+v, want the stream closed by the agent, charged the worst case (estimated)", r)
	}
	_, body := srv.Call(t, srv.Token, "GET", "/v1/budgets", nil, nil)
	var budgets struct {
		Items []struct{ Used struct{ Tokens int } }
	}
	if err := json.Unmarshal(body, &budgets); err != nil || len(budgets.Items) != 1 || budgets.Items[0].Used.Tokens < 4096 {
		t.Errorf("budgets %s, want the worst case charged (the default maximum output, 4096, and the prompt)", body)
	}
}

// waitRefused waits until a call of model is refused with 403 and a detail
// holding want: a Policy takes effect in the background.
func waitRefused(t *testing.T, srv *apptest.Server, key, model, want string) {
	t.Helper()
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, body, _ := chat(t, srv, key, userMessage(model, "hello"))
		if status == http.StatusForbidden && strings.Contains(string(body), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: HTTP %d %s, want 403 saying %q", model, status, body, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
