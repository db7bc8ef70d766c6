package telemetry

import (
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"go.opentelemetry.io/otel/trace"
)

// otlpSink is an OTLP/HTTP endpoint that decodes what it is sent.
type otlpSink struct {
	URL   string
	mu    sync.Mutex
	paths []string
	spans []*tracepb.Span
	svc   []string // service.name of each resource
}

func startOTLPSink(t *testing.T) *otlpSink {
	t.Helper()
	s := &otlpSink{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			t.Errorf("OTLP body is not an ExportTraceServiceRequest: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.paths = append(s.paths, r.URL.Path)
		for _, rs := range req.ResourceSpans {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.Key == "service.name" {
					s.svc = append(s.svc, kv.Value.GetStringValue())
				}
			}
			for _, ss := range rs.ScopeSpans {
				s.spans = append(s.spans, ss.Spans...)
			}
		}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *otlpSink) received() (paths, services []string, spans []*tracepb.Span) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.paths...), append([]string(nil), s.svc...), append([]*tracepb.Span(nil), s.spans...)
}

// clearOTELEnv keeps a developer's OTEL_* settings out of a test.
func clearOTELEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// actionTree makes the spans of one action: the action, policy under it,
// and an upstream call through Transport under invoke.
func actionTree(t *testing.T, tracer trace.Tracer, upstreamURL string) trace.SpanContext {
	t.Helper()
	ctx, action := tracer.Start(t.Context(), ActionSpanName(OpExecuteTool, "crm.get_order"),
		trace.WithAttributes(AttrGenAIOperationName.String(OpExecuteTool), AttrAgent.String("impact")))
	_, policy := tracer.Start(ctx, StagePolicy, trace.WithAttributes(AttrPolicyEffect.String("allow")))
	policy.End()
	ictx, invoke := tracer.Start(ctx, StageInvoke)
	req, _ := http.NewRequestWithContext(ictx, "GET", upstreamURL+"/orders/7?token=secret", nil)
	resp, err := (&http.Client{Transport: Transport(nil)}).Do(req)
	if err != nil {
		t.Fatalf("upstream call: %v", err)
	}
	resp.Body.Close()
	invoke.End()
	action.End()
	return action.SpanContext()
}

func TestTracingExportsToStoreAndOTLP(t *testing.T) {
	clearOTELEnv(t)
	sink := startOTLPSink(t)
	store := openStore(t)
	var saw atomic.Value
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		saw.Store(r.Header.Get("Traceparent"))
	}))
	defer upstream.Close()

	tr, err := NewTracing(t.Context(), slog.New(slog.DiscardHandler), TracingOptions{
		ServiceName: "corral", ServiceVersion: "v9.9.9",
		OTLPEndpoint: sink.URL, OTLPProtocol: ProtocolHTTP,
		Store: store,
	})
	if err != nil {
		t.Fatalf("NewTracing: %v", err)
	}
	sc := actionTree(t, tr.Tracer(), upstream.URL)
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	upstreamSaw, _ := saw.Load().(string)
	if !strings.HasPrefix(upstreamSaw, "00-"+sc.TraceID().String()+"-") {
		t.Errorf("upstream saw traceparent %q, want trace %s", upstreamSaw, sc.TraceID())
	}

	// OTLP: four spans, one resource named corral, parents linked.
	paths, services, spans := sink.received()
	if len(paths) == 0 || paths[0] != "/v1/traces" {
		t.Errorf("OTLP requests went to %v, want /v1/traces", paths)
	}
	if len(services) == 0 || services[0] != "corral" {
		t.Errorf("OTLP resource service.name = %v, want corral", services)
	}
	byName := map[string]*tracepb.Span{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	action := byName["execute_tool crm.get_order"]
	if len(spans) != 4 || action == nil || byName["policy"] == nil || byName["GET"] == nil {
		t.Fatalf("OTLP spans = %v, want the action, policy, invoke and GET", spanNames(spans))
	}
	if got := hex.EncodeToString(byName["policy"].ParentSpanId); got != sc.SpanID().String() {
		t.Errorf("policy span's parent = %s, want the action %s", got, sc.SpanID())
	}
	if got := hex.EncodeToString(byName["GET"].ParentSpanId); got != hex.EncodeToString(byName["invoke"].SpanId) {
		t.Errorf("GET span's parent = %s, want invoke", got)
	}
	if !strings.Contains(upstreamSaw, hex.EncodeToString(byName["GET"].SpanId)) {
		t.Errorf("upstream saw parent %q, want the GET client span %x", upstreamSaw, byName["GET"].SpanId)
	}

	// The store: the same four spans, readable by trace id.
	stored, err := store.Trace(t.Context(), sc.TraceID().String())
	if err != nil {
		t.Fatalf("store.Trace: %v", err)
	}
	if len(stored) != 4 || stored[0].Name != "execute_tool crm.get_order" || stored[0].Service != "corral" {
		t.Fatalf("stored spans = %+v, want 4 starting with the action", stored)
	}
	for _, s := range stored {
		if s.Name == "GET" {
			if s.Kind != "client" || s.Attributes["url.full"] != upstream.URL+"/orders/7" || s.Attributes["http.response.status_code"] == nil {
				t.Errorf("stored GET span = %+v, want a client span with url.full (no query) and the status", s)
			}
		}
	}
}

func spanNames(spans []*tracepb.Span) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

// TestTracingOTLPFromEnvironment: with no endpoint given, the standard
// variables decide, read by the exporter itself.
func TestTracingOTLPFromEnvironment(t *testing.T) {
	clearOTELEnv(t)
	sink := startOTLPSink(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_SERVICE_NAME", "corral-eu-1")
	tr, err := NewTracing(t.Context(), slog.New(slog.DiscardHandler), TracingOptions{ServiceName: "corral"})
	if err != nil {
		t.Fatalf("NewTracing: %v", err)
	}
	_, span := tr.Tracer().Start(t.Context(), "x")
	span.End()
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	paths, services, spans := sink.received()
	if len(spans) != 1 || len(paths) == 0 || paths[0] != "/v1/traces" {
		t.Errorf("sink got %d spans at %v, want 1 at /v1/traces", len(spans), paths)
	}
	if len(services) == 0 || services[0] != "corral-eu-1" {
		t.Errorf("service.name = %v, want OTEL_SERVICE_NAME's corral-eu-1", services)
	}
}

func TestTracingHonoursSamplerVariable(t *testing.T) {
	clearOTELEnv(t)
	t.Setenv("OTEL_TRACES_SAMPLER", "always_off")
	tr, err := NewTracing(t.Context(), slog.New(slog.DiscardHandler), TracingOptions{Store: openStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	if _, span := tr.Tracer().Start(t.Context(), "x"); span.IsRecording() {
		t.Error("span recording with OTEL_TRACES_SAMPLER=always_off")
	}
}

func TestTracingWithoutExporters(t *testing.T) {
	clearOTELEnv(t)
	for name, opts := range map[string]TracingOptions{
		"disabled":     {Disabled: true, Store: openStore(t), OTLPEndpoint: "127.0.0.1:4317"},
		"no exporters": {},
		"nil store":    {Store: (*Store)(nil)},
	} {
		t.Run(name, func(t *testing.T) {
			tr, err := NewTracing(t.Context(), slog.New(slog.DiscardHandler), opts)
			if err != nil {
				t.Fatal(err)
			}
			// A caller's trace context still passes through.
			caller := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceA, SpanID: spanID(1), TraceFlags: trace.FlagsSampled, Remote: true})
			ctx, span := tr.Tracer().Start(trace.ContextWithRemoteSpanContext(t.Context(), caller), "x")
			if span.IsRecording() {
				t.Error("span recording, want none")
			}
			if got := trace.SpanContextFromContext(ctx).TraceID(); got != traceA {
				t.Errorf("trace id under a non-recording tracer = %s, want the caller's %s", got, traceA)
			}
			if err := tr.ForceFlush(t.Context()); err != nil {
				t.Error(err)
			}
			if err := tr.Shutdown(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestNewTracingRejectsBadSettings(t *testing.T) {
	clearOTELEnv(t)
	for _, opts := range []TracingOptions{
		{OTLPEndpoint: "ftp://collector:21"},
		{OTLPEndpoint: "collector"},
		{OTLPEndpoint: "127.0.0.1:4317", OTLPProtocol: "http/json"},
	} {
		if _, err := NewTracing(t.Context(), slog.New(slog.DiscardHandler), opts); err == nil {
			t.Errorf("NewTracing(%+v) succeeded, want an error", opts)
		}
	}
}

func TestParseOTLPEndpoint(t *testing.T) {
	tests := []struct {
		in, want string // want "" for an error
	}{
		{"http://127.0.0.1:4317", "http://127.0.0.1:4317"},
		{"https://collector.example.com:4318/otlp", "https://collector.example.com:4318/otlp"},
		{"127.0.0.1:4317", "http://127.0.0.1:4317"},
		{"localhost:4318", "http://localhost:4318"},
		{"[::1]:4317", "http://[::1]:4317"},
		{"collector.example.com:4317", "https://collector.example.com:4317"},
		{" otel:4317 ", "https://otel:4317"},
		{"", ""},
		{"collector", ""},
		{":4317", ""},
		{"ftp://collector:21", ""},
		{"http://", ""},
		{"http://user:pw@collector:4318", ""},
		{"http://collector:4318?x=1", ""},
	}
	for _, tt := range tests {
		u, err := ParseOTLPEndpoint(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("ParseOTLPEndpoint(%q) = %v, want an error", tt.in, u)
		case tt.want != "" && (err != nil || u.String() != tt.want):
			t.Errorf("ParseOTLPEndpoint(%q) = %v, %v; want %s", tt.in, u, err, tt.want)
		}
	}
}

func FuzzParseOTLPEndpoint(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:4317", "127.0.0.1:4317", "collector.example.com:4317", "[::1]:4317", "https://c:4318/otlp", "ftp://x", "http://u@h:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseOTLPEndpoint(s)
		if err != nil {
			return
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" {
			t.Fatalf("ParseOTLPEndpoint(%q) accepted %v", s, u)
		}
		if again, err := ParseOTLPEndpoint(u.String()); err != nil || again.String() != u.String() {
			t.Fatalf("ParseOTLPEndpoint(%q) = %v, which parses again as %v, %v", s, u, again, err)
		}
	})
}

// TestExportToEndpointFromEnvironment is run by test/otelcol against a real
// OpenTelemetry Collector receiver, which that module can host and this one
// cannot (their dependencies conflict). It exports one action's spans to
// CORRAL_TEST_OTLP_ENDPOINT over CORRAL_TEST_OTLP_PROTOCOL and prints the
// trace id for the receiving side to check.
func TestExportToEndpointFromEnvironment(t *testing.T) {
	endpoint := os.Getenv("CORRAL_TEST_OTLP_ENDPOINT")
	if endpoint == "" {
		t.Skip("set CORRAL_TEST_OTLP_ENDPOINT (test/otelcol does) to export to a real OTLP receiver")
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer upstream.Close()
	tr, err := NewTracing(t.Context(), slog.New(slog.DiscardHandler), TracingOptions{
		ServiceName: "corral", ServiceVersion: "test",
		OTLPEndpoint: endpoint, OTLPProtocol: os.Getenv("CORRAL_TEST_OTLP_PROTOCOL"),
	})
	if err != nil {
		t.Fatalf("NewTracing: %v", err)
	}
	sc := actionTree(t, tr.Tracer(), upstream.URL)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	t.Logf("exported trace_id=%s", sc.TraceID())
	// test/otelcol reads this line from the test's output.
	os.Stdout.WriteString("CORRAL_TRACE_ID=" + sc.TraceID().String() + "\n")
}
