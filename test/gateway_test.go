package test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/bus/bustest"
)

// inventorySpec describes the upstream of the gateway tests.
const inventorySpec = `openapi: 3.0.3
info: {title: inventory, version: "1"}
paths:
  /items/{id}:
    get:
      operationId: getItem
      parameters: [{name: id, in: path, required: true, schema: {type: integer, minimum: 1}}]
      responses:
        "200":
          description: the item
          content: {application/json: {schema: {type: object, required: [id], properties: {id: {type: integer}, name: {type: string}}}}}
    delete:
      operationId: deleteItem
      parameters: [{name: id, in: path, required: true, schema: {type: integer}}]
      responses: {"204": {description: deleted}}
`

// inventory is an upstream that can go down and come back on the same port.
type inventory struct {
	addr   string
	server *http.Server
	calls  atomic.Int64
	auth   atomic.Value // the last Authorization header seen
}

func startInventory(t *testing.T, addr string) *inventory {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	inv := &inventory{addr: ln.Addr().String()}
	inv.server = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inv.calls.Add(1)
		inv.auth.Store(r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id": %s, "name": "crate"}`, strings.TrimPrefix(r.URL.Path, "/items/"))
	})}
	go inv.server.Serve(ln)
	t.Cleanup(func() { inv.server.Close() })
	return inv
}

func (inv *inventory) stop() { inv.server.Close() }

func invoke(t *testing.T, p *proc, key, tool, args string) response {
	t.Helper()
	return request(t, "POST", p.URL+"/v1/tools/"+tool+"/invoke", key, `{"arguments": `+args+`}`)
}

func code(r response) string {
	var p struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(r.body, &p)
	return p.Code
}

// TestToolGatewayAcrossReplicas drives the tool gateway as a user would:
// the CLI imports an OpenAPI document and applies it, a Secret carries the
// upstream credential, two replicas serve calls, a kill switch applied on
// one stops the agent on both, and the audit shows it all.
func TestToolGatewayAcrossReplicas(t *testing.T) {
	natsURL := bustest.ExternalServer(t)
	a := startCorral(t, "--nats", natsURL)
	b := startCorral(t, "--nats", natsURL, "--secrets-key", filepath.Join(a.Data, "secrets.key"))
	inv := startInventory(t, "127.0.0.1:0")

	dir := t.TempDir()
	spec := writeFile(t, dir, "inventory.yaml", inventorySpec)
	stdout, stderr, exit := runCLI(t, a.env(), "tools", "import", "openapi", spec, "--name", "inventory", "--base-url", "http://"+inv.addr, "--apply")
	if exit != 0 || !strings.Contains(stdout, "inventory.getItem") || !strings.Contains(stderr, "ToolSource/inventory created: 2 tools") {
		t.Fatalf("tools import --apply: exit %d\nstdout:\n%s\nstderr:\n%s", exit, stdout, stderr)
	}
	resources := writeFile(t, dir, "resources.yaml", `apiVersion: corral.dev/v1
kind: Secret
metadata: {name: inventory-token}
spec: {value: tok-123}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec: {tools: [inventory.get*]}
`)
	if stdout, stderr, exit := runCLI(t, a.env(), "apply", "-f", resources); exit != 0 {
		t.Fatalf("apply: exit %d\n%s%s", exit, stdout, stderr)
	}
	// The ToolSource takes its credential from the Secret: edit it as a user would.
	src, _, _ := runCLI(t, a.env(), "get", "toolsource", "inventory", "-o", "yaml")
	src = strings.Replace(src, "spec:\n", "spec:\n  auth: {bearer: {secretRef: inventory-token}}\n", 1)
	if stdout, stderr, exit := runCLIInput(t, src, a.env(), "apply", "-f", "-"); exit != 0 {
		t.Fatalf("apply auth: exit %d\n%s%s", exit, stdout, stderr)
	}
	secret, _, _ := runCLI(t, b.env(), "get", "secret", "inventory-token", "-o", "yaml")
	if strings.Contains(secret, "tok-123") || !strings.Contains(secret, "sealed: v1:") {
		t.Errorf("get secret shows:\n%s\nwant only the sealed form", secret)
	}
	keyJSON, stderr, exit := runCLI(t, a.env(), "keys", "create", "--agent", "impact", "-o", "json")
	var key struct {
		Key string `json:"key"`
	}
	if exit != 0 || json.Unmarshal([]byte(keyJSON), &key) != nil {
		t.Fatalf("keys create: exit %d %s %s", exit, keyJSON, stderr)
	}

	for _, p := range []*proc{a, b} {
		var r response
		if !waitFor(startTimeout, func() bool {
			r = invoke(t, p, key.Key, "inventory.getItem", `{"id": 7}`)
			return r.status == http.StatusOK && inv.auth.Load() == "Bearer tok-123"
		}) {
			t.Fatalf("invoke on %s: HTTP %d %s (upstream saw Authorization %q)", p.URL, r.status, r.body, inv.auth.Load())
		}
	}
	// A tool outside the agent's tools is answered as a missing one (the
	// audit keeps policy_denied).
	if r := invoke(t, b, key.Key, "inventory.deleteItem", `{"id": 7}`); r.status != http.StatusNotFound || code(r) != "tool_not_found" {
		t.Errorf("deleteItem, outside the agent's tools: HTTP %d %s, want 404 tool_not_found", r.status, r.body)
	}
	if r := invoke(t, b, key.Key, "inventory.getItem", `{"id": "seven"}`); r.status != http.StatusUnprocessableEntity || !strings.Contains(string(r.body), `"/id"`) {
		t.Errorf("getItem with a bad id: HTTP %d %s, want 422 naming /id", r.status, r.body)
	}

	// Kill on A: B refuses. The kill switch reaches B through its watch
	// alone (nothing re-reads it later), in well under a second on a quiet
	// machine; the time is logged, not asserted, as CI runs loaded.
	if stdout, stderr, exit := runCLI(t, a.env(), "kill", "--agent", "impact", "--reason", "looping"); exit != 0 {
		t.Fatalf("kill: exit %d\n%s%s", exit, stdout, stderr)
	}
	killed := time.Now()
	var r response
	if !waitFor(startTimeout, func() bool {
		r = invoke(t, b, key.Key, "inventory.getItem", `{"id": 7}`)
		return r.status == http.StatusLocked
	}) {
		t.Fatalf("after kill on A, B answered HTTP %d %s for %v; want 423", r.status, r.body, time.Since(killed))
	}
	t.Logf("kill on A effective on B after %v", time.Since(killed))
	if code(r) != "killed" || !strings.Contains(string(r.body), "looping") {
		t.Errorf("killed call: %s, want code killed and the reason", r.body)
	}
	if stdout, stderr, exit := runCLI(t, b.env(), "unkill", "--agent", "impact"); exit != 0 {
		t.Fatalf("unkill: exit %d\n%s%s", exit, stdout, stderr)
	}
	if !waitFor(startTimeout, func() bool { return invoke(t, a, key.Key, "inventory.getItem", `{"id": 7}`).status == http.StatusOK }) {
		t.Errorf("after unkill on B, A still refuses")
	}

	// The audit, read through B, has the calls made through A and the refusals.
	out, stderr, exit := runCLI(t, b.env(), "audit", "--agent", "impact", "-o", "json")
	if exit != 0 {
		t.Fatalf("audit: exit %d %s", exit, stderr)
	}
	for _, want := range []string{`"code": "policy_denied"`, `"code": "killed"`, `"code": "invalid_arguments"`, `"decision": "allowed"`} {
		if !strings.Contains(out, want) {
			t.Errorf("corral audit -o json lacks %s:\n%s", want, out)
		}
	}
}

// TestBreakerOpensAndCloses: an upstream that goes down trips the breaker,
// so calls fail fast with 503 upstream_unavailable; once it is back, the
// breaker lets a probe through and closes.
func TestBreakerOpensAndCloses(t *testing.T) {
	p := startCorral(t)
	// The upstream comes back on the same port: one below the ephemeral
	// range, which another process's outgoing connection cannot take
	// while it is down.
	inv := startInventory(t, "127.0.0.1:"+strconv.Itoa(bustest.FreePort(t)))
	dir := t.TempDir()
	indented := "      " + strings.ReplaceAll(inventorySpec, "\n", "\n      ")
	file := writeFile(t, dir, "inventory.yaml", `apiVersion: corral.dev/v1
kind: ToolSource
metadata: {name: inventory}
spec:
  openapi:
    baseURL: http://`+inv.addr+`
    document: |
`+indented+`
  breaker: {failures: 3, cooldown: 500ms}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec: {tools: ["inventory.*"]}
`)
	if stdout, stderr, exit := runCLI(t, p.env(), "apply", "-f", file); exit != 0 {
		t.Fatalf("apply: exit %d\n%s%s", exit, stdout, stderr)
	}
	key, _, _ := runCLI(t, p.env(), "keys", "create", "--agent", "impact")
	key = strings.TrimSpace(key)
	if !waitFor(startTimeout, func() bool { return invoke(t, p, key, "inventory.getItem", `{"id": 1}`).status == http.StatusOK }) {
		t.Fatal("the tool never answered")
	}

	inv.stop()
	var r response
	for range 3 { // each call is retried (GET is idempotent); 3 failed calls open the breaker
		r = invoke(t, p, key, "inventory.getItem", `{"id": 1}`)
	}
	start := time.Now()
	r = invoke(t, p, key, "inventory.getItem", `{"id": 1}`)
	took := time.Since(start)
	if r.status != http.StatusServiceUnavailable || code(r) != "upstream_unavailable" {
		t.Fatalf("with the upstream down: HTTP %d %s, want 503 upstream_unavailable", r.status, r.body)
	}
	if !strings.Contains(string(r.body), "fails fast") {
		t.Errorf("open breaker answer %s, want it to say corral fails fast", r.body)
	}
	t.Logf("a call with the breaker open took %v", took)
	metrics := request(t, "GET", p.URL+"/metrics", "", "")
	if !strings.Contains(string(metrics.body), `corral_upstream_breaker_state{source="inventory"} 1`) {
		t.Errorf("/metrics lacks the open breaker (state 1)")
	}

	startInventory(t, inv.addr) // back, on the same address
	if !waitFor(startTimeout, func() bool { return invoke(t, p, key, "inventory.getItem", `{"id": 1}`).status == http.StatusOK }) {
		t.Fatal("the breaker did not close once the upstream was back")
	}
	metrics = request(t, "GET", p.URL+"/metrics", "", "")
	if !strings.Contains(string(metrics.body), `corral_upstream_breaker_state{source="inventory"} 0`) {
		t.Errorf("/metrics does not show the breaker closed (state 0)")
	}
}
