// Package interop_test checks that corral's MCP edge works with the
// official TypeScript MCP SDK: it starts corral in-process with a small
// OpenAPI upstream behind it and runs client.mjs, an agent built on
// @modelcontextprotocol/sdk, against /mcp.
package interop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/test/nodetest"
)

// The node client is given generous bounds for a shared two-core machine:
// they catch a hang, not a slow run.
const (
	clientTimeout = 2 * time.Minute
	readyTimeout  = 30 * time.Second
)

func TestTypeScriptSDK(t *testing.T) {
	node := nodetest.Program(t, "node")
	nodetest.Install(t, "@modelcontextprotocol/sdk")

	upstream := httptest.NewServer(greeter())
	t.Cleanup(upstream.Close)
	srv := apptest.Start(t)
	requireMCP(t, srv.URL)

	srv.ApplyValues(t, map[string]any{
		"apiVersion": "corral.dev/v1", "kind": "ToolSource", "metadata": map[string]any{"name": "greeter"},
		"spec": map[string]any{"openapi": map[string]any{"document": greeterSpec, "baseURL": upstream.URL}},
	}, map[string]any{
		"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": map[string]any{"name": "interop"},
		"spec": map[string]any{"description": "The TypeScript SDK interop client.", "tools": []string{"greeter.greet"}},
	})
	key := srv.Key(t, "interop")
	// The catalogue builds the source in the background; its tools appear
	// together, so once the agent sees greet, delete_item exists too.
	waitForTools(t, srv.URL, key, "greeter.greet")

	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs")
	cmd.Env = append(os.Environ(),
		"CORRAL_URL="+srv.URL, "CORRAL_KEY="+key,
		"CORRAL_ALLOWED=greeter.greet", "CORRAL_DENIED=greeter.delete_item")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node client.mjs: %v\n%s", err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
	checkAudit(t, srv)
}

// checkAudit checks that the client's calls went through the pipeline: the
// audit holds them, edge "mcp", with their request ids.
func checkAudit(t *testing.T, srv *apptest.Server) {
	t.Helper()
	var audit struct {
		Records []struct {
			Target, Edge, Decision, Code string
			RequestID                    string `json:"request_id"`
		}
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/audit?agent=interop", nil, nil)
	if err := json.Unmarshal(body, &audit); status != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/audit: HTTP %d %s", status, body)
	}
	seen := map[string]bool{}
	for _, r := range audit.Records {
		if r.Edge != "mcp" || r.RequestID == "" {
			t.Errorf("audit record %+v, want edge mcp and a request id", r)
		}
		seen[r.Target+" "+r.Decision+" "+r.Code] = true
	}
	for _, want := range []string{"greeter.greet allowed ", "greeter.delete_item denied policy_denied"} {
		if !seen[want] {
			t.Errorf("audit has no record %q; has %v", want, seen)
		}
	}
}

// greeterSpec describes greeter: one read-only operation the agent may
// call and one destructive one it may not.
const greeterSpec = `{
  "openapi": "3.0.3",
  "info": {"title": "greeter", "version": "1"},
  "paths": {
    "/greet": {
      "get": {
        "operationId": "greet",
        "summary": "Greets someone by name.",
        "parameters": [{"name": "name", "in": "query", "required": true, "schema": {"type": "string"}}],
        "responses": {
          "200": {
            "description": "The greeting.",
            "content": {"application/json": {"schema": {
              "type": "object", "properties": {"greeting": {"type": "string"}}, "required": ["greeting"]
            }}}
          }
        }
      }
    },
    "/items/{id}": {
      "delete": {
        "operationId": "delete_item",
        "summary": "Deletes an item.",
        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": {"204": {"description": "Deleted."}}
      }
    }
  }
}`

// greeter serves greeterSpec's operations.
func greeter() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /greet", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"greeting": "hello, " + r.URL.Query().Get("name")})
	})
	mux.HandleFunc("DELETE /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// requireMCP fails at once, saying why, if this corral does not serve /mcp.
func requireMCP(t *testing.T, base string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/mcp", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		t.Fatal("POST /mcp = 404: this corral does not serve the MCP edge (internal/app must register internal/edge/mcp)")
	}
}

// waitForTools polls tools/list over MCP, as the agent, until it shows
// every one of names.
func waitForTools(t *testing.T, base, key string, names ...string) {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "interop-wait", Version: "1"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{
		Endpoint: base + "/mcp", HTTPClient: &http.Client{Transport: bearer(key)},
	}, nil)
	if err != nil {
		t.Fatalf("connect to %s/mcp: %v", base, err)
	}
	defer cs.Close()
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last []string
	for {
		res, err := cs.ListTools(t.Context(), nil)
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		last = last[:0]
		for _, tl := range res.Tools {
			last = append(last, tl.Name)
		}
		if containsAll(last, names) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tools/list = %v after %v, want %v (is the tool source failing? corral get toolsources says why)", last, readyTimeout, names)
		}
		<-tick.C
	}
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

type bearer string

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", fmt.Sprintf("Bearer %s", string(b)))
	return http.DefaultTransport.RoundTrip(r)
}
