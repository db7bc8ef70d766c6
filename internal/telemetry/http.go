package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// RequestIDHeader carries the request id in both directions.
const RequestIDHeader = "X-Request-Id"

// validRequestID limits what a caller may pass as its own request id, so that
// ids are safe to log and echo.
var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// NewRequestID returns a random 16-byte hex id.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// HTTPMetrics counts and times HTTP requests by route pattern and status.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
	tracer   trace.Tracer // nil: no server spans
}

// WithTracer makes the middleware open a server span for each request (but
// health checks and metrics scrapes), answer its traceresponse header, and
// hand the span's context to the handler, so an action's span sits under
// the request that carried it.
func (m *HTTPMetrics) WithTracer(t trace.Tracer) *HTTPMetrics {
	m.tracer = t
	return m
}

// untraced are the paths polled by machines, whose spans would drown the rest.
var untraced = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// NewHTTPMetrics registers the HTTP metrics with reg.
func NewHTTPMetrics(reg prometheus.Registerer) *HTTPMetrics {
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "corral_http_requests_total",
			Help: "HTTP requests served, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "corral_http_request_duration_seconds",
			Help:    "Time to serve HTTP requests, by route pattern.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "corral_http_requests_in_flight",
			Help: "HTTP requests being served now.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.inFlight)
	return m
}

// Middleware gives every request an id (the caller's X-Request-Id when it is
// sane, else a new one), echoes it in the response, puts it in the context for
// logs and problem responses, continues the caller's trace (traceparent and
// baggage headers) in that context, and records metrics and a debug access
// log line.
func (m *HTTPMetrics) Middleware(logger *slog.Logger, next *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inFlight.Inc()
		defer m.inFlight.Dec()
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID.MatchString(id) {
			id = NewRequestID()
		}
		w.Header().Set(RequestIDHeader, id)
		r = r.WithContext(ExtractHTTP(WithRequestID(r.Context(), id), r.Header))
		var span trace.Span
		if m.tracer != nil && !untraced[r.URL.Path] {
			var ctx context.Context
			// Named for its route once the mux has matched it (below).
			ctx, span = m.tracer.Start(r.Context(), r.Method, trace.WithSpanKind(trace.SpanKindServer))
			if span.IsRecording() {
				span.SetAttributes(AttrHTTPRequestMethod.String(r.Method), attribute.String("url.path", r.URL.Path), AttrRequestID.String(id))
			}
			SetTraceResponse(ctx, w.Header())
			r = r.WithContext(ctx)
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		if span != nil {
			if span.IsRecording() {
				if r.Pattern != "" { // the mux records the pattern it served on r
					span.SetName(r.Pattern)
					span.SetAttributes(attribute.String("http.route", r.Pattern))
				}
				span.SetAttributes(AttrHTTPResponseStatusCode.Int(rec.status))
				if rec.status >= 500 {
					span.SetStatus(codes.Error, http.StatusText(rec.status))
				}
			}
			span.End()
		}

		// The matched pattern, not the path, keeps label cardinality bounded.
		// The mux records it on the request it served.
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		elapsed := time.Since(start)
		m.requests.WithLabelValues(route, r.Method, strconv.Itoa(rec.status)).Inc()
		m.duration.WithLabelValues(route).Observe(elapsed.Seconds())
		if logger.Enabled(r.Context(), slog.LevelDebug) {
			logger.DebugContext(r.Context(), "http request", "method", r.Method, "path", r.URL.Path,
				"status", rec.status, "duration_ms", float64(elapsed.Microseconds())/1000)
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer (flushing
// for streamed responses).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
