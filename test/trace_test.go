package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/llm/llmtest"
)

// requestWith is request with extra headers.
func requestWith(t testing.TB, method, url, token, body string, headers map[string]string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// traceSpan is a span as `corral trace -o json` prints it.
type traceSpan struct {
	TraceID      string         `json:"trace_id"`
	SpanID       string         `json:"span_id"`
	ParentSpanID string         `json:"parent_span_id"`
	Name         string         `json:"name"`
	Attributes   map[string]any `json:"attributes"`
	Status       struct{ Code string }
}

// traceOf runs `corral trace ID -o json` and returns its spans.
func traceOf(t *testing.T, p *proc, traceID string) []traceSpan {
	t.Helper()
	out, stderr, exit := runCLI(t, p.env(), "trace", traceID, "--wait", "10s", "-o", "json")
	if exit != 0 {
		t.Fatalf("corral trace %s: exit %d\n%s%s", traceID, exit, out, stderr)
	}
	var tr struct {
		TraceID string      `json:"trace_id"`
		Spans   []traceSpan `json:"spans"`
	}
	if err := json.Unmarshal([]byte(out), &tr); err != nil {
		t.Fatalf("corral trace -o json: %v\n%s", err, out)
	}
	return tr.Spans
}

// child finds the span named name whose parent is parent.
func child(spans []traceSpan, parent, name string) *traceSpan {
	for i := range spans {
		if spans[i].ParentSpanID == parent && spans[i].Name == name {
			return &spans[i]
		}
	}
	return nil
}

func spanNamed(spans []traceSpan, name string) *traceSpan {
	for i := range spans {
		if spans[i].Name == name {
			return &spans[i]
		}
	}
	return nil
}

// TestTraceThroughToolAndModelCalls: a caller's traceparent is continued
// through corral to the upstream, and `corral trace` shows the action's
// span with the policy and upstream stages under it; the same for a model
// call, whose span carries the GenAI attributes.
func TestTraceThroughToolAndModelCalls(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{} // path -> traceparent the upstream got
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Get("Traceparent")
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id": %s, "name": "crate"}`, strings.TrimPrefix(r.URL.Path, "/items/"))
	}))
	t.Cleanup(up.Close)
	model := llmtest.Start(t, llmtest.WithContent("a draft"), llmtest.WithUsage(llm.Usage{PromptTokens: 12, CompletionTokens: 3, TotalTokens: 15}))
	c := startCorral(t)

	dir := t.TempDir()
	spec := writeFile(t, dir, "inventory.yaml", inventorySpec)
	if stdout, stderr, exit := runCLI(t, c.env(), "tools", "import", "openapi", spec, "--name", "inventory", "--base-url", up.URL, "--apply"); exit != 0 {
		t.Fatalf("tools import: exit %d\n%s%s", exit, stdout, stderr)
	}
	resources := writeFile(t, dir, "resources.yaml", fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Agent
metadata: {name: tracer}
spec: {tools: [inventory.getItem], models: [gpt]}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: gpt}
spec: {provider: openai, baseURL: %q, model: gpt-4o, redact: "off", pricing: {inputPerMTok: 1, outputPerMTok: 2}}
`, model.URL()))
	if stdout, stderr, exit := runCLI(t, c.env(), "apply", "-f", resources); exit != 0 {
		t.Fatalf("apply: exit %d\n%s%s", exit, stdout, stderr)
	}
	keyJSON, stderr, exit := runCLI(t, c.env(), "keys", "create", "--agent", "tracer", "-o", "json")
	var key struct {
		Key string `json:"key"`
	}
	if exit != 0 || json.Unmarshal([]byte(keyJSON), &key) != nil {
		t.Fatalf("keys create: exit %d %s %s", exit, keyJSON, stderr)
	}

	// A tool call with the caller's trace context.
	const toolTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	var r response
	if !waitFor(startTimeout, func() bool {
		r = requestWith(t, "POST", c.URL+"/v1/tools/inventory.getItem/invoke", key.Key, `{"arguments": {"id": 7}}`,
			map[string]string{"traceparent": "00-" + toolTrace + "-00f067aa0ba902b7-01"})
		return r.status == http.StatusOK
	}) {
		t.Fatalf("invoke: HTTP %d %s", r.status, r.body)
	}
	mu.Lock()
	got := seen["/items/7"]
	mu.Unlock()
	if !strings.HasPrefix(got, "00-"+toolTrace+"-") {
		t.Errorf("the upstream got traceparent %q, want the caller's trace %s", got, toolTrace)
	}
	if tr := r.header.Get("Traceresponse"); !strings.Contains(tr, toolTrace) {
		t.Errorf("traceresponse %q, want the caller's trace", tr)
	}
	spans := traceOf(t, c, toolTrace)
	action := spanNamed(spans, "execute_tool inventory.getItem")
	if action == nil {
		t.Fatalf("no action span in %+v", spans)
	}
	if action.Attributes["gen_ai.tool.name"] != "inventory.getItem" || action.Attributes["corral.agent"] != "tracer" {
		t.Errorf("action span attributes %v", action.Attributes)
	}
	policy := child(spans, action.SpanID, "policy")
	if policy == nil || policy.Attributes["corral.policy.effect"] != "allow" {
		t.Errorf("no policy span with effect allow under the action: %+v", spans)
	}
	invoke := child(spans, action.SpanID, "invoke")
	if invoke == nil {
		t.Fatalf("no invoke span under the action: %+v", spans)
	}
	if get := child(spans, invoke.SpanID, "GET"); get == nil {
		t.Errorf("no HTTP client span under invoke: %+v", spans)
	}

	// A model call with the caller's trace context.
	const modelTrace = "0af7651916cd43dd8448eb211c80319c"
	r = requestWith(t, "POST", c.URL+"/openai/v1/chat/completions", key.Key, `{"model": "gpt", "messages": [{"role": "user", "content": "hello"}]}`,
		map[string]string{"traceparent": "00-" + modelTrace + "-b7ad6b7169203331-01"})
	if r.status != http.StatusOK {
		t.Fatalf("chat: HTTP %d %s", r.status, r.body)
	}
	reqs := model.Requests()
	if len(reqs) == 0 || !strings.HasPrefix(reqs[len(reqs)-1].Header.Get("Traceparent"), "00-"+modelTrace+"-") {
		t.Errorf("the model's server did not get the caller's trace")
	}
	spans = traceOf(t, c, modelTrace)
	chat := spanNamed(spans, "chat gpt")
	if chat == nil {
		t.Fatalf("no chat span in %+v", spans)
	}
	for k, want := range map[string]any{
		"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt", "gen_ai.response.model": "gpt",
		"gen_ai.usage.input_tokens": json.Number("12"), "gen_ai.usage.output_tokens": json.Number("3"),
	} {
		if got := chat.Attributes[k]; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("chat span %s = %v, want %v (attributes %v)", k, got, want, chat.Attributes)
		}
	}
	if child(spans, chat.SpanID, "policy") == nil || child(spans, chat.SpanID, "invoke") == nil {
		t.Errorf("chat span lacks policy and invoke children: %+v", spans)
	}

	// The tree, for people.
	out, _, _ := runCLI(t, c.env(), "trace", modelTrace)
	if !strings.Contains(out, "chat gpt") || !strings.Contains(out, "policy") {
		t.Errorf("corral trace:\n%s", out)
	}
	t.Logf("corral trace %s:\n%s", modelTrace, out)
}
