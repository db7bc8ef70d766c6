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
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/app/apptest"
)

// The npm install and the node client are given generous bounds for a
// shared two-core machine: they catch a hang, not a slow run.
const (
	installTimeout = 5 * time.Minute
	clientTimeout  = 2 * time.Minute
	readyTimeout   = 30 * time.Second
)

func TestTypeScriptSDK(t *testing.T) {
	node, npm := tool(t, "node"), tool(t, "npm")
	install(t, npm)

	upstream := httptest.NewServer(greeter())
	t.Cleanup(upstream.Close)
	srv := apptest.Start(t)
	requireMCP(t, srv.URL)

	apply(t, srv, map[string]any{
		"apiVersion": "corral.dev/v1", "kind": "ToolSource", "metadata": map[string]any{"name": "greeter"},
		"spec": map[string]any{"openapi": map[string]any{"document": greeterSpec, "baseURL": upstream.URL}},
	}, map[string]any{
		"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": map[string]any{"name": "interop"},
		"spec": map[string]any{"description": "The TypeScript SDK interop client.", "tools": []string{"greeter.greet"}},
	})
	key := createKey(t, srv, "interop")
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
	do(t, srv.Request(t, "GET", "/v1/audit?agent=interop", nil), http.StatusOK, &audit)
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

// tool finds a program on PATH or skips the test.
func tool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed: this test runs the TypeScript MCP SDK under Node.js (install Node.js 20 or later with npm to run it)", name)
	}
	return path
}

// install runs npm ci when node_modules is missing or holds another SDK
// version than package.json pins.
func install(t *testing.T, npm string) {
	t.Helper()
	want := pinnedSDK(t)
	var installed struct{ Version string }
	b, err := os.ReadFile(filepath.Join("node_modules", "@modelcontextprotocol", "sdk", "package.json"))
	if err == nil && json.Unmarshal(b, &installed) == nil && installed.Version == want {
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), installTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in test/interop: %v\n%s", err, out)
	}
}

func pinnedSDK(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("package.json")
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct{ Dependencies map[string]string }
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatalf("package.json: %v", err)
	}
	return pkg.Dependencies["@modelcontextprotocol/sdk"]
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

func apply(t *testing.T, srv *apptest.Server, resources ...map[string]any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"resources": resources})
	do(t, srv.Request(t, "POST", "/v1/apply", body), http.StatusOK, nil)
}

func createKey(t *testing.T, srv *apptest.Server, agent string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"agent": agent})
	var created struct{ Key string }
	do(t, srv.Request(t, "POST", "/v1/keys", body), http.StatusCreated, &created)
	if created.Key == "" {
		t.Fatal("POST /v1/keys answered no key")
	}
	return created.Key
}

func do(t *testing.T, req *http.Request, want int, out any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s = %d, want %d: %s", req.Method, req.URL.Path, resp.StatusCode, want, buf.Bytes())
	}
	if out != nil {
		if err := json.Unmarshal(buf.Bytes(), out); err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
		}
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
