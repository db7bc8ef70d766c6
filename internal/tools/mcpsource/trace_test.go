package mcpsource

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/tools"
)

// TestCallCarriesTraceContext: over HTTP, a tools/call made under a span
// reaches the MCP server with that trace in its traceparent header.
func TestCallCarriesTraceContext(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string // traceparent of each POST, "" when absent
	)
	_, ts := serveNew(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				mu.Lock()
				seen = append(seen, r.Header.Get("Traceparent"))
				mu.Unlock()
			}
			next.ServeHTTP(w, r)
		})
	})
	src := open(t, "t", &config.ToolSourceSpec{MCP: &config.MCPSource{URL: ts.URL}}, testEnv(t, nil))
	mu.Lock()
	before := len(seen)
	for _, tp := range seen {
		if tp != "" {
			t.Errorf("connecting, with no span, sent traceparent %q", tp)
		}
	}
	mu.Unlock()

	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("test").Start(t.Context(), "invoke")
	args, _ := json.Marshal(map[string]string{"text": "traced"})
	if _, err := src.Call(ctx, tools.Call{Tool: findTool(t, src, "t.echo"), Arguments: args}); err != nil {
		t.Fatalf("Call: %v", err)
	}
	span.End()

	mu.Lock()
	defer mu.Unlock()
	want := "00-" + span.SpanContext().TraceID().String() + "-"
	if len(seen) == before || !strings.HasPrefix(seen[len(seen)-1], want) {
		t.Errorf("the tools/call POST carried traceparent %q, want trace %s", seen[before:], span.SpanContext().TraceID())
	}
}
