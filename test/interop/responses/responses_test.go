// Package responses_test checks corral's Responses API with the official
// packages agents are built on: responses.mjs calls /openai/v1/responses with
// the openai npm package (whole, streamed, the stream helper, refusals) and
// the Vercel AI SDK (ai, @ai-sdk/openai: text whole and streamed, a tool
// loop), and runs an @openai/agents Agent whose tools are a function of its own and
// corral's /mcp, against a scripted model, through its whole loop.
// idempotency.mjs (idempotency_test.go) lets the openai package retry calls
// whose answers a proxy lost, on every model endpoint, and counts one
// provider call and one charge for each.
package responses_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/llm/llmtest"
	"github.com/corral-dev/corral/test/nodetest"
)

// Generous bounds for a shared two-core machine: they catch a hang.
const (
	clientTimeout = 3 * time.Minute
	readyTimeout  = 30 * time.Second
)

const (
	email       = "alice@example.com"
	placeholder = "<EMAIL_1>"
	mcpTool     = "orders.lookup_order"
	// mcpFunction is the name the Agents SDK gives mcpTool for the model:
	// OpenAI's function names take no dots.
	mcpFunction = "orders_lookup_order"
)

// ordersSpec describes the orders service the agent reaches through
// corral's MCP edge.
const ordersSpec = `{
  "openapi": "3.0.3",
  "info": {"title": "orders", "version": "1"},
  "paths": {
    "/orders/{id}": {
      "get": {
        "operationId": "lookup_order",
        "summary": "Looks an order up by its number.",
        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The order.", "content": {"application/json": {"schema": {"type": "object"}}}}}
      }
    }
  }
}`

func TestAgentsSDK(t *testing.T) {
	node := nodetest.Program(t, "node")
	nodetest.Install(t, "@openai/agents")

	var lookups atomic.Int32
	orders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "GET" || r.URL.Path != "/orders/1042" {
			http.NotFound(w, r)
			return
		}
		lookups.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"order": "1042", "status": "shipped"}`)
	}))
	t.Cleanup(orders.Close)
	up := llmtest.Start(t, llmtest.WithContent("I will refund "+placeholder+" now."))

	srv := apptest.Start(t)
	srv.ApplyValues(t, map[string]any{
		"apiVersion": "corral.dev/v1", "kind": "ToolSource", "metadata": map[string]any{"name": "orders"},
		"spec": map[string]any{"openapi": map[string]any{"document": ordersSpec, "baseURL": orders.URL}},
	})
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: gpt-eu}
spec: {provider: openai, baseURL: %q, model: gpt-4o, redact: reversible}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: bot}
spec:
  provider: scripted
  script:
    - toolCalls:
        - {name: %s, arguments: {id: "1042"}}
        - {name: refund_amount, arguments: {order: "1042"}}
    - content: "Order 1042 has shipped; its refund is 42.00 EUR."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: sdk}
spec: {description: "An agent built on the OpenAI Agents SDK.", models: [gpt-eu, bot], tools: [%s]}
`, up.URL(), mcpFunction, mcpTool))
	key := srv.Key(t, "sdk")
	waitFor(t, srv, key, "/openai/v1/models", `"id":"bot"`)
	waitFor(t, srv, key, "/openai/v1/models", `"id":"gpt-eu"`)
	waitFor(t, srv, key, "/v1/tools", mcpTool)

	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "responses.mjs")
	cmd.Env = append(os.Environ(),
		"CORRAL_URL="+srv.URL, "CORRAL_KEY="+key, "CORRAL_PII_MODEL=gpt-eu", "CORRAL_AGENT_MODEL=bot",
		"CORRAL_EMAIL="+email, "CORRAL_MCP_TOOL="+mcpTool,
		// The SDK would export its traces to OpenAI with the agent's key.
		"OPENAI_AGENTS_DISABLE_TRACING=1", "OPENAI_API_KEY=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node responses.mjs: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))

	// The upstream saw the five calls of gpt-eu with the address replaced.
	sent := up.ChatRequests()
	if len(sent) != 5 {
		t.Fatalf("the upstream got %d chat requests, want 5 (openai: create, create streamed, stream helper; ai: generateText, streamText)", len(sent))
	}
	for i, req := range sent {
		prompt := req.Messages[len(req.Messages)-1].Content.String()
		if strings.Contains(prompt, email) || !strings.Contains(prompt, placeholder) {
			t.Errorf("request %d: the upstream's prompt is %q, want %s in place of %s", i, prompt, placeholder, email)
		}
	}
	if n := lookups.Load(); n != 2 {
		t.Errorf("the orders service was called %d times, want 2 (one per agent run)", n)
	}
	checkAudit(t, srv)
}

// checkAudit checks that every step went through corral, in order: the
// Vercel AI SDK's loop (model, model), then the Agents SDK's two runs:
// model (edge responses), the MCP tool (edge mcp), model, twice; the SDK's own function tool runs in the agent, so corral sees its
// result only in the next model call.
func checkAudit(t *testing.T, srv *apptest.Server) {
	t.Helper()
	var audit struct {
		Records []struct {
			Time                                             time.Time
			Kind, Target, Edge, Decision, Code, Phase, Event string
			Model                                            *struct {
				Stream   bool
				Redacted map[string]int
			}
		}
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/audit?agent=sdk&limit=1000", nil, nil)
	if err := json.Unmarshal(body, &audit); status != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/audit: HTTP %d %s", status, body)
	}
	recs := audit.Records
	slices.SortStableFunc(recs, func(a, b struct {
		Time                                             time.Time
		Kind, Target, Edge, Decision, Code, Phase, Event string
		Model                                            *struct {
			Stream   bool
			Redacted map[string]int
		}
	}) int {
		return a.Time.Compare(b.Time)
	})
	var steps []string
	pii := 0
	for _, r := range recs {
		if r.Phase != "" || r.Event != "" {
			continue
		}
		if r.Kind == "model" && r.Target == "gpt-eu" {
			if r.Edge != "responses" || r.Decision != "allowed" || r.Model == nil || r.Model.Redacted["EMAIL"] != 1 {
				t.Errorf("audit record %+v, want an allowed responses call with one EMAIL redacted", r)
			}
			pii++
			continue
		}
		steps = append(steps, r.Kind+" "+r.Target+" "+r.Edge+" "+r.Decision)
	}
	if pii != 5 {
		t.Errorf("audit: %d calls of gpt-eu, want 5", pii)
	}
	want := []string{
		// The Vercel AI SDK's tool loop, whose tools run in the agent.
		"model bot responses allowed", "model bot responses allowed",
		// The Agents SDK's two runs.
		"model bot responses allowed", "tool " + mcpTool + " mcp allowed", "model bot responses allowed",
		"model bot responses allowed", "tool " + mcpTool + " mcp allowed", "model bot responses allowed",
	}
	if !slices.Equal(steps, want) {
		t.Errorf("audit steps in time order:\n%s\nwant:\n%s", strings.Join(steps, "\n"), strings.Join(want, "\n"))
	}
}

// waitFor polls path as the agent until its body contains want: the
// catalogues follow the registry in the background.
func waitFor(t *testing.T, srv *apptest.Server, key, path, want string) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		status, body := srv.Call(t, key, "GET", path, nil, nil)
		if status == http.StatusOK && strings.Contains(string(body), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: HTTP %d %s after %v, want %s", path, status, body, readyTimeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
