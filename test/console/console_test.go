// Package console_test drives corral's web console in a real browser:
// Debian's Chromium under playwright-core (console.mjs), against the whole
// of corral started in-process with scripted models, a bank that waits
// for approvals, and a tool that never answers until it is stopped.
package console_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/console"
	"github.com/corral-dev/corral/test/nodetest"
)

// chromium is Debian's (make console-deps installs it): the tests never
// download a browser.
const chromium = "/usr/bin/chromium"

// The browser run is given generous bounds for a shared two-core machine:
// they catch a hang, not a slow run.
const browserTimeout = 4 * time.Minute

// hostile is what a model or an agent's author may write: it must show as
// text, never run.
const hostile = `<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">`

func TestConsoleInBrowser(t *testing.T) {
	node := nodetest.Program(t, "node")
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("%s is missing: run make console-deps (apt-get install chromium) to run the browser tests", chromium)
	}
	// playwright-core downloads nothing when installed; this says so to
	// any package that might.
	t.Setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
	nodetest.Install(t, "playwright-core")

	w := newWorld(t)
	shots := filepath.Join(mustAbs(t, "."), "screenshots")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), browserTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "console.mjs")
	cmd.Env = append(os.Environ(),
		"CORRAL_URL="+w.srv.URL, "ADMIN_TOKEN="+w.srv.Token,
		"ALICE_KEY="+w.alice, "VICTOR_KEY="+w.victor, "OTTO_KEY="+w.otto, "PAYER_KEY="+w.srv.Key(t, "payer"),
		"CHROMIUM="+chromium, "SCREENSHOTS="+shots, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("node console.mjs: %v", err)
	}
	// The far side: the approved payment reached the bank once; the killed
	// task's call was stopped rather than answered.
	if n := w.bank.Load(); n != 1 {
		t.Errorf("the bank received %d payments, want 1 (the one approved in the browser)", n)
	}
	if n := w.slowStarted.Load(); n < 1 {
		t.Errorf("the slow tool was called %d times; the kill test never had a running call to stop", n)
	}
}

// TestHostileNamesServedAsJSON: what an agent's author wrote reaches the
// browser only as JSON (nosniff, under the console's CSP), never as HTML.
func TestHostileNamesServedAsJSON(t *testing.T) {
	w := newWorld(t)
	c := signIn(t, w.srv.URL, w.victor)
	for _, p := range []string{"/ui/api/v1/resources/agents", "/ui/api/v1/tools", "/ui/api/v1/tasks"} {
		resp := c.get(t, p)
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" ||
			resp.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s = %d %q nosniff=%q CSP=%q", p, resp.StatusCode, resp.Header.Get("Content-Type"),
				resp.Header.Get("X-Content-Type-Options"), resp.Header.Get("Content-Security-Policy"))
		}
		if !json.Valid(body) {
			t.Errorf("GET %s is not JSON: %.200s", p, body)
		}
	}
	// The hostile description is there, as a JSON string.
	resp := c.get(t, "/ui/api/v1/resources/agents")
	var list struct {
		Items []struct {
			Spec struct{ Description string }
		}
	}
	if err := json.Unmarshal(readAll(t, resp), &list); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, it := range list.Items {
		found = found || it.Spec.Description == hostile
	}
	if !found {
		t.Errorf("the hostile description did not come back intact as JSON data")
	}
	// The viewer may not kill, at the API, whatever the page shows.
	if resp := c.post(t, "/ui/api/v1/killswitches", `{"agent": "poet"}`); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a viewer's kill = %d, want 403", resp.StatusCode)
	}
	if status, body := w.srv.Call(t, w.srv.Token, "GET", "/v1/killswitches", nil, nil); status != http.StatusOK || strings.Contains(string(body), "poet") {
		t.Errorf("after the viewer's attempt the kill switches are %d %s", status, body)
	}
}

type world struct {
	srv           *apptest.Server
	idp           *idp
	alice, victor string
	otto          string // an approver, but not in payments-oncall
	bank          atomic.Int64
	slowStarted   atomic.Int64
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{}
	bank := http.NewServeMux()
	bank.HandleFunc("POST /transfers", func(rw http.ResponseWriter, r *http.Request) {
		w.bank.Add(1)
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusCreated)
		_, _ = rw.Write([]byte(`{"id": "pay_1", "status": "sent"}`))
	})
	bank.HandleFunc("GET /accounts/{iban}/balance", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		_, _ = rw.Write([]byte(`{"amount": 1250.5, "currency": "EUR"}`))
	})
	bankSrv := httptest.NewServer(bank)
	t.Cleanup(bankSrv.Close)
	slow := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.slowStarted.Add(1)
		select { // answers only when corral gives up on the call
		case <-r.Context().Done():
		case <-time.After(2 * time.Minute):
		}
	}))
	t.Cleanup(slow.CloseClientConnections)
	t.Cleanup(slow.Close)
	doc, err := os.ReadFile("../../examples/policies/payments/banking.openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w.idp = startIdP(t)
	w.srv = apptest.StartWith(t, app.Config{ConsoleOIDC: &console.OIDC{Issuer: w.idp.srv.URL, ClientID: consoleClient}})
	hostileJSON, _ := json.Marshal(hostile)
	w.srv.Apply(t, `apiVersion: corral.dev/v1
kind: ToolSource
metadata: {name: banking}
spec:
  openapi:
    baseURL: `+bankSrv.URL+`
    document: |
      `+strings.ReplaceAll(string(doc), "\n", "\n      ")+`
---
apiVersion: corral.dev/v1
kind: ToolSource
metadata: {name: slow}
spec:
  openapi:
    baseURL: `+slow.URL+`
    document: |
      {"openapi": "3.0.3", "info": {"title": "slow", "version": "1"}, "paths": {"/wait": {"post": {"operationId": "wait",
       "summary": "Waits a long time.", "responses": {"200": {"description": "Done."}}}}}}
---
apiVersion: corral.dev/v1
kind: Policy
metadata: {name: payments-approval}
spec:
  rego: |
    package corral.authz
    large if {
      input.action.target == "banking.send_money"
      input.action.arguments.amount > 1000
    }
    require_approval contains "payments over 1,000 EUR need payments-oncall" if {
      allow
      large
    }
    obligations.approvers := ["payments-oncall"] if large
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: payer-model}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: banking__send_money, arguments: {to_iban: "DE89 3704 0044 0532 0130 00", amount: 2000, currency: EUR, reference: "invoice 7"}}]
    - content: "Paid invoice 7."
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: poet-model}
spec:
  provider: scripted
  script:
    - content: `+string(hostileJSON)+`
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: sleeper-model}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: slow__wait, arguments: {}}]
    - content: "woke up"
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: payer}
spec: {description: "Pays invoices.", model: payer-model, models: [payer-model], tools: ["banking.*"]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: poet}
spec: {description: `+string(hostileJSON)+`, model: poet-model, models: [poet-model]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: sleeper}
spec: {description: "Calls a tool that takes its time.", model: sleeper-model, models: [sleeper-model], tools: ["slow.*"]}
---
apiVersion: corral.dev/v1
kind: Budget
metadata: {name: payer-daily}
spec: {scope: {agent: payer}, window: day, limit: {calls: 100}}
---
`+w.idp.issuerYAML())
	w.srv.WaitTool(t, "banking.send_money")
	w.srv.WaitTool(t, "slow.wait")
	waitPolicy(t, w.srv)
	w.alice = human(t, w.srv, "alice", "payments-oncall")
	w.victor = human(t, w.srv, "victor", "payments-oncall", "viewers")
	w.otto = human(t, w.srv, "otto", "ops")
	return w
}

// waitPolicy waits until the approval policy is in force: it loads in the
// background, and a payment before it would go through unasked.
func waitPolicy(t *testing.T, srv *apptest.Server) {
	t.Helper()
	input := map[string]any{
		"action": map[string]any{"kind": "tool", "target": "banking.send_money", "arguments": map[string]any{"amount": 2000}},
		"agent":  map[string]any{"name": "payer", "tools": []string{"banking.*"}},
		"tool":   map[string]any{"name": "banking.send_money", "source": "banking"},
	}
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, body := srv.Call(t, srv.Token, "POST", "/v1/policy/eval", input, nil)
		var d struct{ Effect string }
		if status == http.StatusOK && json.Unmarshal(body, &d) == nil && d.Effect == "approval" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the approval policy is not in force within %v: %d %s", apptest.Patience, status, body)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

func human(t *testing.T, srv *apptest.Server, name string, groups ...string) string {
	t.Helper()
	status, body := srv.Call(t, srv.Token, "POST", "/v1/humans", map[string]any{"name": name, "groups": groups}, nil)
	if status != http.StatusCreated {
		t.Fatalf("POST /v1/humans %s = %d %s", name, status, body)
	}
	var created struct{ Key string }
	_ = json.Unmarshal(body, &created)
	return created.Key
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
