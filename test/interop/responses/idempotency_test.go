package responses_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/llm/llmtest"
	"github.com/corral-dev/corral/test/nodetest"
)

// lossyProxy stands between the SDK and corral. It passes every request
// on and reads corral's whole answer; the first answer for each
// Idempotency-Key it then drops, closing the SDK's connection without a
// byte, as a network that lost the answer would.
type lossyProxy struct {
	target string

	mu       sync.Mutex
	attempts map[string][]string // key -> the SDK's X-Stainless-Retry-Count of each attempt
	statuses map[string][]int    // key -> corral's status for each attempt
}

func (p *lossyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	p.mu.Lock()
	first := len(p.attempts[key]) == 0
	p.attempts[key] = append(p.attempts[key], r.Header.Get("X-Stainless-Retry-Count"))
	p.statuses[key] = append(p.statuses[key], resp.StatusCode)
	p.mu.Unlock()
	if first && key != "" {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
			return
		}
	}
	for name, values := range resp.Header {
		w.Header()[name] = values
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

// TestSDKRetryAfterLostAnswer: the openai package's automatic retry of a
// call whose answer was lost on the way back gets corral's recorded answer,
// on every model endpoint, whole and streamed; the provider is called once
// per call and the budget charged once.
func TestSDKRetryAfterLostAnswer(t *testing.T) {
	node := nodetest.Program(t, "node")
	nodetest.Install(t, "openai")

	const content = "Your refund for order 1042 left on Tuesday."
	up := llmtest.Start(t, llmtest.WithContent(content))
	srv := apptest.Start(t)
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: gpt}
spec: {provider: openai, baseURL: %q, model: gpt-4o, pricing: {inputPerMTok: 1000, outputPerMTok: 1000}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: sdk}
spec: {description: "An agent built on the openai package.", models: [gpt]}
---
apiVersion: corral.dev/v1
kind: Budget
metadata: {name: sdk-total}
spec: {scope: {agent: sdk}, window: total, limit: {calls: 100}}
`, up.URL()))
	key := srv.Key(t, "sdk")
	waitFor(t, srv, key, "/openai/v1/models", `"id":"gpt"`)
	waitFor(t, srv, srv.Token, "/v1/budgets", `"sdk-total"`)

	proxy := &lossyProxy{target: srv.URL, attempts: map[string][]string{}, statuses: map[string][]int{}}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)

	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "idempotency.mjs")
	cmd.Env = append(os.Environ(), "CORRAL_URL="+front.URL, "CORRAL_KEY="+key, "CORRAL_MODEL=gpt", "CORRAL_CONTENT="+content)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node idempotency.mjs: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))

	keys := []string{"sdk-chat", "sdk-chat-stream", "sdk-responses", "sdk-responses-stream", "sdk-embeddings"}
	proxy.mu.Lock()
	for _, k := range keys {
		// The SDK's own retry: the same key, its retry count going up.
		if got := strings.Join(proxy.attempts[k], ","); got != "0,1" || fmt.Sprint(proxy.statuses[k]) != "[200 200]" {
			t.Errorf("%s: the proxy saw attempts with X-Stainless-Retry-Count %q answered %v, want 0,1 both 200 (one lost, one retried by the SDK)", k, got, proxy.statuses[k])
		}
	}
	if len(proxy.attempts) != len(keys) {
		t.Errorf("the proxy saw keys %v, want %v", proxy.attempts, keys)
	}
	proxy.mu.Unlock()

	// The far side: one provider call per SDK call, one charge each.
	chats, embeds := 0, 0
	for _, r := range up.Requests() {
		switch r.Path {
		case "/v1/chat/completions":
			chats++
		case "/v1/embeddings":
			embeds++
		}
	}
	if chats != 4 || embeds != 1 {
		t.Errorf("the provider got %d chat and %d embeddings requests, want 4 and 1", chats, embeds)
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/budgets", nil, nil)
	var budgets struct {
		Items []struct {
			Budget string
			Used   struct{ Calls int64 }
		}
	}
	if err := json.Unmarshal(body, &budgets); status != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/budgets: HTTP %d %s %v", status, body, err)
	}
	for _, b := range budgets.Items {
		if b.Budget == "sdk-total" && b.Used.Calls != 5 {
			t.Errorf("budget sdk-total counted %d calls, want 5", b.Used.Calls)
		}
	}
	status, body = srv.Call(t, srv.Token, "GET", "/v1/audit?agent=sdk", nil, nil)
	var audit struct {
		Records []struct {
			Replayed       bool
			IdempotencyKey string `json:"idempotency_key"`
		}
	}
	if err := json.Unmarshal(body, &audit); status != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/audit: HTTP %d %v", status, err)
	}
	var replays []string
	for _, r := range audit.Records {
		if r.Replayed {
			replays = append(replays, r.IdempotencyKey)
		}
	}
	if len(replays) != len(keys) {
		t.Errorf("the audit holds replays for keys %v, want one for each of %v", replays, keys)
	}
}
