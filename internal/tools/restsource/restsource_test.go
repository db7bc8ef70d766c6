package restsource_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/tools"
	"github.com/corral-dev/corral/internal/tools/restsource"
	"github.com/corral-dev/corral/internal/tools/sourcetest"
)

// standardSpec offers the conformance kit's three tools over HTTP.
const standardSpec = `openapi: 3.1.0
info: {title: standard, version: "1"}
paths:
  /echo:
    get:
      operationId: echo
      parameters: [{name: text, in: query, required: true, schema: {type: string}}]
      responses: {"200": {description: echoed, content: {application/json: {schema: {type: object}}}}}
  /fail:
    get:
      operationId: fail
      responses: {"400": {description: always}}
  /slow:
    get:
      operationId: slow
      parameters: [{name: ms, in: query, required: true, schema: {type: integer}}]
      responses: {"200": {description: waited}}
`

func standard(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/openapi.yaml":
		fmt.Fprint(w, standardSpec)
	case "/echo":
		fmt.Fprintf(w, `{"text": %q}`, r.URL.Query().Get("text"))
	case "/fail":
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error": "failed as asked"}`)
	case "/slow":
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			fmt.Fprint(w, `{"ok": true}`)
		case <-r.Context().Done():
		}
	}
}

func env(t *testing.T) tools.Env {
	return tools.Env{
		Logger: slog.New(slog.DiscardHandler),
		Secret: func(context.Context, config.SecretValue) (string, error) { return "", nil },
	}
}

func TestConformance(t *testing.T) {
	sourcetest.Run(t, func(t *testing.T) tools.Source {
		up := httptest.NewServer(http.HandlerFunc(standard))
		t.Cleanup(up.Close)
		spec := &config.ToolSourceSpec{OpenAPI: &config.OpenAPISource{Spec: up.URL + "/openapi.yaml", BaseURL: up.URL}}
		src, err := restsource.New(t.Context(), "t", spec, env(t), restsource.Options{HTTPClient: up.Client()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		return src
	})
}

// docServer serves an OpenAPI document that the test can change.
type docServer struct {
	mu  sync.Mutex
	doc string
}

func (d *docServer) set(doc string) {
	d.mu.Lock()
	d.doc = doc
	d.mu.Unlock()
}

func (d *docServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprint(w, d.doc)
}

func orders(required, extra string) string {
	return `openapi: 3.0.3
info: {title: orders, version: "1"}
servers: [{url: "http://orders.invalid"}]
paths:
  /orders:
    post:
      operationId: createOrder
      requestBody:
        required: true
        content: {application/json: {schema: {type: object, required: [` + required + `], properties: {sku: {type: string}, qty: {type: integer}` + extra + `}}}}
      responses: {"201": {description: created}}
`
}

// TestDrift: a compatible change is adopted; a breaking one is held back and
// reported, and survives a restart (the pin), until a new revision of the
// ToolSource is applied.
func TestDrift(t *testing.T) {
	docs := &docServer{doc: orders("sku", "")}
	up := httptest.NewServer(docs)
	t.Cleanup(up.Close)
	pins, err := restsource.OpenPins(t.Context(), bustest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	var reported []tools.Drift
	opts := restsource.Options{Pins: pins, HTTPClient: up.Client(), OnDrift: func(d tools.Drift) { reported = append(reported, d) }}
	spec := &config.ToolSourceSpec{OpenAPI: &config.OpenAPISource{Spec: up.URL + "/openapi.yaml"}, Refresh: "0s"}
	open := func(rev uint64, labels map[string]string) *restsource.Source {
		e := env(t)
		e.Revision, e.Labels = rev, labels
		src, err := restsource.New(t.Context(), "orders", spec, e, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		return src
	}
	required := func(src *restsource.Source) string {
		return string(src.Tools()[0].InputSchema)
	}

	src := open(1, nil)
	first := required(src)

	// An optional field added: adopted at the next read.
	docs.set(orders("sku", `, note: {type: string}`))
	src = open(1, nil)
	if src.Drift() != nil || required(src) == first {
		t.Fatalf("compatible change: drift %v, schema unchanged %v; want it adopted", src.Drift(), required(src) == first)
	}
	adopted := required(src)

	// A required field added: held back, reported, and still held after a restart.
	docs.set(orders("sku, qty", `, note: {type: string}`))
	src = open(1, nil)
	d := src.Drift()
	if d == nil || len(d.Changes) != 1 || d.Changes[0].Kind != tools.RequiredAdded || d.Changes[0].Pointer != "/qty" {
		t.Fatalf("breaking change: Drift() = %+v, want required_added at /qty", d)
	}
	if required(src) != adopted {
		t.Error("breaking change: the new schema is in force, want the previous one")
	}
	if len(reported) != 1 {
		t.Errorf("OnDrift called %d times, want 1", len(reported))
	}
	// An unrelated edit (a new revision) does not adopt the breaking change.
	src = open(2, nil)
	if src.Drift() == nil || required(src) != adopted {
		t.Errorf("after an unrelated edit: drift %v, new schema in force %v; want the change still held", src.Drift(), required(src) != adopted)
	}
	// Accepting names the candidate; the next revision takes exactly it.
	candidate := strings.TrimPrefix(src.Drift().Candidate, "sha256:")[:12]
	src = open(3, map[string]string{tools.AcceptDriftLabel: candidate})
	if src.Drift() != nil || required(src) == adopted {
		t.Errorf("after accepting: drift %v; want the new document in force", src.Drift())
	}
	// An accept label naming another document adopts nothing.
	docs.set(orders("sku, qty, note", `, note: {type: string}`))
	src = open(4, map[string]string{tools.AcceptDriftLabel: candidate})
	if src.Drift() == nil {
		t.Error("a document other than the accepted one was adopted")
	}
}
