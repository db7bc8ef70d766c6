package rest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/edge/rest"
	"github.com/corral-dev/corral/internal/tools"
)

func catalogueSpec(required string) string {
	return `openapi: 3.0.3
info: {title: catalogue, version: "1"}
paths:
  /items:
    get:
      operationId: findItems
      parameters:
        - {name: q, in: query, required: true, schema: {type: string}}
        - {name: shop, in: query, required: ` + required + `, schema: {type: string}}
      responses: {"200": {description: found, content: {application/json: {schema: {type: array}}}}}
`
}

// TestDriftHeldUntilAccepted: a breaking change to a document served from a
// URL is held back (the old tool stays in force) and reported, until it is
// accepted; then every caller gets the new definition.
func TestDriftHeldUntilAccepted(t *testing.T) {
	var mu sync.Mutex
	doc := catalogueSpec("false")
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path == "/openapi.yaml" {
			fmt.Fprint(w, doc)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `[]`)
	}))
	t.Cleanup(up.Close)
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: ToolSource
metadata: {name: catalogue}
spec:
  openapi: {spec: "`+up.URL+`/openapi.yaml", baseURL: "`+up.URL+`"}
  refresh: 50ms
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec: {tools: ["catalogue.*"]}
`)
	srv.WaitTool(t, "catalogue.findItems")
	key := srv.Key(t, "impact")

	mu.Lock()
	doc = catalogueSpec("true") // a required field added: breaks callers
	mu.Unlock()
	var drift rest.DriftList
	waitUntil(t, "the drift is reported", func() bool {
		_, body := srv.Call(t, srv.Token, "GET", "/v1/tools/drift", nil, nil)
		drift = decode[rest.DriftList](t, body)
		return len(drift.Drift) == 1
	})
	if ch := drift.Drift[0].Changes; len(ch) != 1 || ch[0].Kind != tools.RequiredAdded || ch[0].Pointer != "/shop" {
		t.Errorf("drift changes = %+v, want required_added at /shop", ch)
	}
	if status, body := invoke(t, srv, key, "catalogue.findItems", `{"q": "crate"}`, nil); status != 200 {
		t.Errorf("call in the old shape while drift is held: HTTP %d %s, want 200", status, body)
	}
	_, body := srv.Call(t, srv.Token, "GET", "/v1/audit?tool=catalogue", nil, nil)
	if !strings.Contains(string(body), `"event": "drift"`) {
		t.Errorf("the audit has no drift event: %s", body)
	}
	_, m := srv.Call(t, "", "GET", "/metrics", nil, nil)
	if !strings.Contains(string(m), `corral_tool_drift{source="catalogue"} 1`) {
		t.Error("/metrics lacks corral_tool_drift for the source")
	}

	if status, body := srv.Call(t, srv.Token, "POST", "/v1/tools/drift/catalogue/accept", nil, nil); status != 200 {
		t.Fatalf("accept: HTTP %d %s", status, body)
	}
	waitUntil(t, "the new definition is in force", func() bool {
		status, _ := invoke(t, srv, key, "catalogue.findItems", `{"q": "crate"}`, nil)
		return status == http.StatusUnprocessableEntity
	})
	_, body = srv.Call(t, srv.Token, "GET", "/v1/tools/drift", nil, nil)
	if d := decode[rest.DriftList](t, body); len(d.Drift) != 0 {
		t.Errorf("drift after accepting: %+v, want none", d.Drift)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(apptest.Patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", apptest.Patience, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
