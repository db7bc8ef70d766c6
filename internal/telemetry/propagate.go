package telemetry

import (
	"context"
	"errors"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// propagator reads and writes W3C trace context and baggage. corral uses it
// directly rather than the global one, so that propagation works the same
// whether or not NewTracing ran (in tests, in the CLI).
var propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// upstreamPropagator writes only the trace context into requests to
// upstreams. Baggage is what a caller chose to say; corral does not pass it
// on to third parties unread, as it would any other header.
var upstreamPropagator = propagation.TraceContext{}

// ExtractHTTP returns ctx carrying the caller's trace context (traceparent,
// tracestate) and baggage from h, if h has a valid one; spans started from
// it continue the caller's trace.
func ExtractHTTP(ctx context.Context, h http.Header) context.Context {
	if len(h.Values("Traceparent")) == 0 && len(h.Values("Baggage")) == 0 {
		return ctx // the common case, without the propagator's work
	}
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// InjectNATS writes ctx's trace context and baggage into h, so that whoever
// consumes the message (another replica, a worker) continues the trace.
func InjectNATS(ctx context.Context, h nats.Header) {
	if h == nil {
		return
	}
	propagator.Inject(ctx, natsCarrier(h))
}

// ExtractNATS returns ctx carrying the trace context and baggage that
// InjectNATS wrote into h, if any.
func ExtractNATS(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, natsCarrier(h))
}

// natsCarrier adapts nats.Header, whose keys are case-sensitive, to the
// propagator. It writes the keys the propagator gives (lowercase
// "traceparent", as in W3C's own examples) and reads those or their
// canonical HTTP form, in case a publisher copied HTTP headers across.
type natsCarrier nats.Header

func (c natsCarrier) Get(key string) string {
	if v := nats.Header(c).Get(key); v != "" {
		return v
	}
	return nats.Header(c).Get(textproto.CanonicalMIMEHeaderKey(key))
}

func (c natsCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

func (c natsCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Transport wraps base (http.DefaultTransport when nil) so that every
// request whose context carries a span goes out with that trace context in
// a traceparent header: the upstream continues corral's trace. When the
// span is recording, each request gets its own client span (a retried call
// has one per attempt) with the method, the URL without its query, the
// server and the response status. Requests without a span go through
// untouched, at the cost of a context lookup.
func Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{base: base}
}

type transport struct{ base http.RoundTripper }

// scopeHTTP is the instrumentation scope of client spans.
const scopeHTTP = instrumentationName + "/http"

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	parent := trace.SpanFromContext(ctx)
	if !parent.SpanContext().IsValid() {
		return t.base.RoundTrip(req)
	}
	var span trace.Span
	if parent.IsRecording() {
		// The parent's provider, not a global one: the client span goes
		// wherever its parent goes.
		ctx, span = parent.TracerProvider().Tracer(scopeHTTP).Start(ctx, req.Method,
			trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(requestAttributes(req)...))
	}
	// A RoundTripper must not change the request it was given.
	out := req.WithContext(ctx)
	out.Header = req.Header.Clone()
	if out.Header == nil {
		out.Header = http.Header{}
	}
	upstreamPropagator.Inject(ctx, propagation.HeaderCarrier(out.Header))
	resp, err := t.base.RoundTrip(out)
	if span != nil {
		endClientSpan(span, resp, err)
	}
	return resp, err
}

// CloseIdleConnections passes on to the base transport, so that
// http.Client.CloseIdleConnections still reaches the pool.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// requestAttributes follow the OpenTelemetry HTTP client conventions. The
// URL loses its query, which may hold credentials, and its user info.
func requestAttributes(req *http.Request) []attribute.KeyValue {
	u := req.URL
	attrs := make([]attribute.KeyValue, 0, 4)
	attrs = append(attrs, AttrHTTPRequestMethod.String(req.Method))
	if u == nil {
		return attrs
	}
	clean := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	attrs = append(attrs, AttrURLFull.String(clean.String()), AttrServerAddress.String(u.Hostname()))
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err == nil {
			attrs = append(attrs, AttrServerPort.Int(n))
		}
	} else if u.Scheme == "https" {
		attrs = append(attrs, AttrServerPort.Int(443))
	} else if u.Scheme == "http" {
		attrs = append(attrs, AttrServerPort.Int(80))
	}
	return attrs
}

// endClientSpan records the answer: its status, an error for a failed
// request or a 4xx/5xx answer (as the HTTP client conventions say).
func endClientSpan(span trace.Span, resp *http.Response, err error) {
	switch {
	case err != nil:
		span.SetAttributes(AttrErrorType.String(errorType(err)))
		span.SetStatus(codes.Error, err.Error())
	case resp.StatusCode >= 400:
		code := strconv.Itoa(resp.StatusCode)
		span.SetAttributes(AttrHTTPResponseStatusCode.Int(resp.StatusCode), AttrErrorType.String(code))
		span.SetStatus(codes.Error, "")
	default:
		span.SetAttributes(AttrHTTPResponseStatusCode.Int(resp.StatusCode))
	}
	span.End()
}

// errorType names a transport failure for error.type.
func errorType(err error) string {
	var timeout interface{ Timeout() bool }
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &timeout) && timeout.Timeout():
		return "timeout"
	}
	return "transport"
}

// TraceResponseHeader is the W3C Trace Context Level 2 response header that
// tells a caller which trace its request joined, so that a caller who sent
// no traceparent can still find the trace (`corral trace ID`).
const TraceResponseHeader = "Traceresponse"

// SetTraceResponse sets the traceresponse header from ctx's span, if it has
// one: version, trace id, span id and flags, as traceparent has them. An edge
// calls it with the action span's context before writing its answer.
func SetTraceResponse(ctx context.Context, h http.Header) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return
	}
	h.Set(TraceResponseHeader, "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-"+sc.TraceFlags().String())
}
