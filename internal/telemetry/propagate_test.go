package telemetry

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const callerTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// headerEcho is an upstream that keeps the headers of the last request.
type headerEcho struct {
	*httptest.Server
	mu   sync.Mutex
	last http.Header
}

func startHeaderEcho(t *testing.T, status int) *headerEcho {
	t.Helper()
	e := &headerEcho{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.last = r.Header.Clone()
		e.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *headerEcho) header() http.Header {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last
}

// recorder returns a tracer whose ended spans the returned recorder holds.
func recorder(t *testing.T) (trace.Tracer, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp.Tracer("test"), rec
}

func TestExtractHTTP(t *testing.T) {
	tests := []struct {
		name        string
		traceparent string
		wantValid   bool
	}{
		{"valid", callerTraceparent, true},
		{"none", "", false},
		{"malformed", "00-xyz-00f067aa0ba902b7-01", false},
		{"all-zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.traceparent != "" {
				h.Set("Traceparent", tt.traceparent)
			}
			sc := trace.SpanContextFromContext(ExtractHTTP(t.Context(), h))
			if sc.IsValid() != tt.wantValid {
				t.Fatalf("ExtractHTTP(%q) valid = %v, want %v", tt.traceparent, sc.IsValid(), tt.wantValid)
			}
			if tt.wantValid && (sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || !sc.IsRemote() || !sc.IsSampled()) {
				t.Errorf("ExtractHTTP(%q) = %v, want the caller's sampled remote context", tt.traceparent, sc)
			}
		})
	}
}

// TestTransportPropagates: an upstream behind Transport receives a
// traceparent with the trace id of the caller that reached corral.
func TestTransportPropagates(t *testing.T) {
	tracer, rec := recorder(t)
	upstream := startHeaderEcho(t, http.StatusTeapot)
	client := &http.Client{Transport: Transport(nil)}

	in := http.Header{}
	in.Set("Traceparent", callerTraceparent)
	in.Set("Baggage", "user=alice")
	ctx := ExtractHTTP(t.Context(), in)
	if b := baggage.FromContext(ctx); b.Member("user").Value() != "alice" {
		t.Fatalf("ExtractHTTP lost the baggage: %v", b)
	}
	ctx, invoke := tracer.Start(ctx, StageInvoke)
	req, _ := http.NewRequestWithContext(ctx, "POST", upstream.URL+"/orders/7?api_key=secret", strings.NewReader("{}"))
	req.Header.Set("X-Mine", "1")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	invoke.End()

	got := upstream.header()
	if req.Header.Get("Traceparent") != "" {
		t.Errorf("Transport changed the caller's request: %v", req.Header)
	}
	tp := got.Get("Traceparent")
	if !strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || got.Get("X-Mine") != "1" {
		t.Errorf("upstream got traceparent %q and X-Mine %q, want the caller's trace and the request's own headers", tp, got.Get("X-Mine"))
	}
	if got.Get("Baggage") != "" {
		t.Errorf("upstream got baggage %q, want none (not passed to third parties)", got.Get("Baggage"))
	}
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("recorded %d spans, want invoke and its client span", len(spans))
	}
	client0 := spans[0]
	if client0.Name() != "POST" || client0.SpanKind() != trace.SpanKindClient || client0.Parent().SpanID() != invoke.SpanContext().SpanID() {
		t.Errorf("client span = %s %v under %s, want POST, client, under invoke", client0.Name(), client0.SpanKind(), client0.Parent().SpanID())
	}
	if !strings.Contains(tp, client0.SpanContext().SpanID().String()) {
		t.Errorf("traceparent %q does not name the client span %s as parent", tp, client0.SpanContext().SpanID())
	}
	attrs := map[attribute.Key]attribute.Value{}
	for _, kv := range client0.Attributes() {
		attrs[kv.Key] = kv.Value
	}
	if attrs[AttrURLFull].AsString() != upstream.URL+"/orders/7" || attrs[AttrHTTPResponseStatusCode].AsInt64() != 418 ||
		attrs[AttrHTTPRequestMethod].AsString() != "POST" || attrs[AttrServerAddress].AsString() != "127.0.0.1" || attrs[AttrServerPort].AsInt64() == 0 {
		t.Errorf("client span attributes = %v", attrs)
	}
	if client0.Status().Code != codes.Error || attrs[AttrErrorType].AsString() != "418" {
		t.Errorf("client span of a 418 has status %v, error.type %q; want an error", client0.Status(), attrs[AttrErrorType].AsString())
	}
}

func TestTransportWithoutSpan(t *testing.T) {
	upstream := startHeaderEcho(t, http.StatusOK)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", upstream.URL, nil)
	resp, err := (&http.Client{Transport: Transport(nil)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := upstream.header().Get("Traceparent"); got != "" {
		t.Errorf("a request without a span went out with traceparent %q", got)
	}
}

// TestTransportNonRecording: under a non-recording span (tracing off, or a
// caller's context alone) the traceparent still goes out, with no span made.
func TestTransportNonRecording(t *testing.T) {
	upstream := startHeaderEcho(t, http.StatusOK)
	in := http.Header{}
	in.Set("Traceparent", callerTraceparent)
	req, _ := http.NewRequestWithContext(ExtractHTTP(t.Context(), in), "GET", upstream.URL, nil)
	resp, err := (&http.Client{Transport: Transport(nil)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := upstream.header().Get("Traceparent"); got != callerTraceparent {
		t.Errorf("upstream got traceparent %q, want the caller's %q", got, callerTraceparent)
	}
}

func TestTransportFailedRequest(t *testing.T) {
	tracer, rec := recorder(t)
	ctx, span := tracer.Start(t.Context(), "invoke")
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://127.0.0.1:1/", nil)
	if _, err := (&http.Client{Transport: Transport(nil)}).Do(req); err == nil {
		t.Fatal("request to port 1 succeeded")
	}
	span.End()
	ended := rec.Ended()
	if len(ended) != 2 || ended[0].Status().Code != codes.Error {
		t.Fatalf("spans = %d, first status %v; want the client span with an error", len(ended), ended[0].Status())
	}
}

type idleCounter struct {
	http.RoundTripper
	closed int
}

func (c *idleCounter) CloseIdleConnections() { c.closed++ }

func TestTransportCloseIdleConnections(t *testing.T) {
	base := &idleCounter{RoundTripper: http.DefaultTransport}
	(&http.Client{Transport: Transport(base)}).CloseIdleConnections()
	if base.closed != 1 {
		t.Errorf("CloseIdleConnections reached the base %d times, want 1", base.closed)
	}
}

func TestNATSRoundTrip(t *testing.T) {
	tracer, _ := recorder(t)
	member, _ := baggage.NewMember("tenant", "acme")
	bag, _ := baggage.New(member)
	ctx, span := tracer.Start(baggage.ContextWithBaggage(t.Context(), bag), "publish")
	defer span.End()

	h := nats.Header{}
	InjectNATS(ctx, h)
	if h.Get("traceparent") == "" {
		t.Fatalf("InjectNATS wrote %v, want a traceparent", h)
	}
	got := ExtractNATS(context.Background(), h)
	sc := trace.SpanContextFromContext(got)
	if sc.TraceID() != span.SpanContext().TraceID() || sc.SpanID() != span.SpanContext().SpanID() || !sc.IsRemote() {
		t.Errorf("ExtractNATS = %v, want the publisher's span %v, remote", sc, span.SpanContext())
	}
	if baggage.FromContext(got).Member("tenant").Value() != "acme" {
		t.Errorf("ExtractNATS lost the baggage")
	}

	// Headers copied from HTTP keep their canonical form.
	canonical := nats.Header{"Traceparent": []string{callerTraceparent}}
	if sc := trace.SpanContextFromContext(ExtractNATS(context.Background(), canonical)); sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("ExtractNATS(Traceparent) = %v, want the trace", sc)
	}
	// Nothing to read, nothing to write.
	if ctx := ExtractNATS(t.Context(), nil); trace.SpanContextFromContext(ctx).IsValid() {
		t.Error("ExtractNATS(nil) made up a span context")
	}
	InjectNATS(ctx, nil) // must not panic
	empty := nats.Header{}
	InjectNATS(context.Background(), empty)
	if len(empty) != 0 {
		t.Errorf("InjectNATS without a span wrote %v", empty)
	}
}

func TestSetTraceResponse(t *testing.T) {
	h := http.Header{}
	SetTraceResponse(t.Context(), h)
	if len(h) != 0 {
		t.Errorf("SetTraceResponse without a span set %v", h)
	}
	in := http.Header{}
	in.Set("Traceparent", callerTraceparent)
	SetTraceResponse(ExtractHTTP(t.Context(), in), h)
	if got := h.Get("Traceresponse"); got != callerTraceparent {
		t.Errorf("traceresponse = %q, want %q", got, callerTraceparent)
	}
}

// TestMiddlewareContinuesTrace: handlers behind the middleware see the
// caller's trace in their context, and their log lines carry it.
func TestMiddlewareContinuesTrace(t *testing.T) {
	var logs strings.Builder
	logger, err := NewLogger(&logs, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	var sc trace.SpanContext
	mux := http.NewServeMux()
	mux.HandleFunc("/x", func(w http.ResponseWriter, r *http.Request) {
		sc = trace.SpanContextFromContext(r.Context())
		logger.InfoContext(r.Context(), "handled")
	})
	h := NewHTTPMetrics(prometheus.NewRegistry()).Middleware(slog.New(slog.DiscardHandler), mux)
	req := httptest.NewRequest("GET", "/x", nil)
	req.Header.Set("Traceparent", callerTraceparent)
	h.ServeHTTP(httptest.NewRecorder(), req)
	if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("handler saw span context %v, want the caller's trace", sc)
	}
	if !strings.Contains(logs.String(), `"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"`) {
		t.Errorf("log line %s lacks the trace and span ids", logs.String())
	}
}

func FuzzExtractHTTP(f *testing.F) {
	f.Add(callerTraceparent, "congo=t61rcWkgMzE", "user=alice")
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "", "")
	f.Add("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "a=b,c=d", "k=v;p=1")
	f.Add("00-xyz", "", "%%%")
	f.Fuzz(func(t *testing.T, traceparent, tracestate, bag string) {
		in := http.Header{}
		in.Set("Traceparent", traceparent)
		in.Set("Tracestate", tracestate)
		in.Set("Baggage", bag)
		ctx := ExtractHTTP(context.Background(), in)
		sc := trace.SpanContextFromContext(ctx)
		out := http.Header{}
		upstreamPropagator.Inject(ctx, propagation.HeaderCarrier(out))
		if !sc.IsValid() {
			if out.Get("Traceparent") != "" {
				t.Fatalf("no valid context from %q, yet Inject wrote %q", traceparent, out.Get("Traceparent"))
			}
			return
		}
		// What was accepted goes out with the same trace and parent.
		if want := sc.TraceID().String() + "-" + sc.SpanID().String(); !strings.Contains(out.Get("Traceparent"), want) {
			t.Fatalf("Inject wrote %q for %v", out.Get("Traceparent"), sc)
		}
		h := nats.Header{}
		InjectNATS(ctx, h)
		if back := trace.SpanContextFromContext(ExtractNATS(context.Background(), h)); back.TraceID() != sc.TraceID() || back.SpanID() != sc.SpanID() {
			t.Fatalf("NATS round trip of %v gave %v", sc, back)
		}
	})
}
