package telemetry

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// The OTLP protocols NewTracing can export with.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// instrumentationName names corral's tracer, the instrumentation scope of
// every span corral makes.
const instrumentationName = "github.com/corral-dev/corral"

// storeBatchDelay is how long the built-in store's batch processor waits
// before writing what it holds: short, so that `corral trace` finds a trace
// a second after its action ended, yet long enough to batch under load.
const storeBatchDelay = time.Second

// SpanStore is an exporter that keeps spans where corral can read them back:
// the JetStream trace store (*Store).
type SpanStore interface {
	sdktrace.SpanExporter
}

// TracingOptions configure NewTracing.
type TracingOptions struct {
	// ServiceName and ServiceVersion become the resource's service.name and
	// service.version; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// override them.
	ServiceName, ServiceVersion string
	// OTLPEndpoint is where spans are exported over OTLP (--otlp-endpoint):
	// a URL (http://127.0.0.1:4317, https://collector:4318) or host:port,
	// which means http:// on a loopback host and https:// elsewhere. It is
	// a base endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT is: over HTTP,
	// /v1/traces is appended to its path. Empty means the exporter's own
	// variables decide: it exports when OTEL_EXPORTER_OTLP_ENDPOINT or
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, and not otherwise. Either
	// way, the other OTEL_EXPORTER_OTLP_* variables (headers, certificates,
	// timeout, compression) apply.
	OTLPEndpoint string
	// OTLPProtocol is "grpc" or "http/protobuf"; empty takes
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, then OTEL_EXPORTER_OTLP_PROTOCOL,
	// then grpc.
	OTLPProtocol string
	// Store, when not nil, also receives every span: the built-in trace
	// store.
	Store SpanStore
	// Disabled turns span recording off: Tracer returns a tracer whose
	// spans cost next to nothing and record nothing. Trace context from
	// callers still passes through to upstreams, so that their traces hold
	// together across corral.
	Disabled bool
}

// Tracing owns corral's OpenTelemetry tracer provider and its exporters.
type Tracing struct {
	provider *sdktrace.TracerProvider // nil when no span is recorded
	tracer   trace.Tracer
}

// NewTracing builds the tracer provider: spans are sampled parent-based
// (OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG choose otherwise, as the
// SDK reads them), batched off the caller's goroutine, and exported to the
// store and over OTLP, each with its own batch processor. With neither
// store nor OTLP endpoint, or when Disabled, no span is recorded. It also
// installs the W3C TraceContext and Baggage propagator as the global one,
// for any library that reads it.
//
// Shutdown must run before the store's substrate closes, so that the last
// spans are written.
func NewTracing(ctx context.Context, logger *slog.Logger, opts TracingOptions) (*Tracing, error) {
	otel.SetTextMapPropagator(propagator)
	// Exporters report failures (a collector that is down) through the
	// global handler, once per batch; they belong in corral's log.
	tlog := logger.With("component", "tracing")
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		tlog.Warn("tracing error", "err", err)
	}))
	if opts.Disabled {
		logger.InfoContext(ctx, "tracing disabled")
		return &Tracing{tracer: noop.NewTracerProvider().Tracer(instrumentationName)}, nil
	}
	if s, ok := opts.Store.(*Store); ok && s == nil {
		opts.Store = nil // a nil *Store in the interface: no store
	}
	var procs []sdktrace.TracerProviderOption
	if opts.Store != nil {
		procs = append(procs, sdktrace.WithBatcher(opts.Store, sdktrace.WithBatchTimeout(storeBatchDelay)))
	}
	exp, target, err := otlpExporter(ctx, opts.OTLPEndpoint, opts.OTLPProtocol)
	if err != nil {
		return nil, err
	}
	if exp != nil {
		procs = append(procs, sdktrace.WithBatcher(exp))
		logger.InfoContext(ctx, "exporting traces over OTLP", "endpoint", target)
	}
	if len(procs) == 0 {
		return &Tracing{tracer: noop.NewTracerProvider().Tracer(instrumentationName)}, nil
	}
	res, err := newResource(ctx, opts.ServiceName, opts.ServiceVersion)
	if err != nil {
		if exp != nil {
			_ = exp.Shutdown(ctx)
		}
		return nil, err
	}
	provider := sdktrace.NewTracerProvider(append(procs, sdktrace.WithResource(res))...)
	return &Tracing{provider: provider, tracer: provider.Tracer(instrumentationName)}, nil
}

// Tracer returns the tracer corral's spans are made with.
func (t *Tracing) Tracer() trace.Tracer { return t.tracer }

// ForceFlush exports every span that has ended and waits until the
// exporters have taken them.
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	if err := t.provider.ForceFlush(ctx); err != nil {
		return fmt.Errorf("tracing: flush: %w", err)
	}
	return nil
}

// Shutdown exports the spans still held and stops the exporters. Spans
// started afterwards are not recorded.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}

// newResource describes this process: service name and version, the SDK,
// then what OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES say, which win.
func newResource(ctx context.Context, name, version string) (*resource.Resource, error) {
	if name == "" {
		name = "corral"
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", name)}
	if version != "" {
		attrs = append(attrs, attribute.String("service.version", version))
	}
	// Detected resources merge in order, later ones winning; none carries
	// a schema URL that could conflict with the SDK's.
	res, err := resource.New(ctx,
		resource.WithAttributes(attrs...),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	// A partial resource (a malformed OTEL_RESOURCE_ATTRIBUTES entry) is
	// still the best description there is.
	return res, nil
}

// otlpExporter builds the OTLP exporter, or none when neither endpoint nor
// the OTEL_* variables ask for one. It returns where it exports, for the log.
func otlpExporter(ctx context.Context, endpoint, protocol string) (sdktrace.SpanExporter, string, error) {
	protocol = otlpProtocol(protocol)
	if endpoint == "" {
		// The exporter reads its endpoint variables itself; they are read
		// here only to know whether to make one, and for the log.
		fromEnv := cmp.Or(os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
		if fromEnv == "" || strings.EqualFold(os.Getenv("OTEL_TRACES_EXPORTER"), "none") {
			return nil, "", nil
		}
		if u, err := url.Parse(fromEnv); err == nil {
			fromEnv = u.Redacted()
		}
		exp, err := newOTLP(ctx, protocol, "")
		return exp, fromEnv, err
	}
	u, err := ParseOTLPEndpoint(endpoint)
	if err != nil {
		return nil, "", err
	}
	if protocol == ProtocolHTTP {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
	}
	exp, err := newOTLP(ctx, protocol, u.String())
	return exp, u.String(), err
}

func newOTLP(ctx context.Context, protocol, endpointURL string) (sdktrace.SpanExporter, error) {
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch protocol {
	case ProtocolGRPC:
		var o []otlptracegrpc.Option
		if endpointURL != "" {
			o = append(o, otlptracegrpc.WithEndpointURL(endpointURL))
		}
		exp, err = otlptracegrpc.New(ctx, o...)
	case ProtocolHTTP:
		var o []otlptracehttp.Option
		if endpointURL != "" {
			o = append(o, otlptracehttp.WithEndpointURL(endpointURL))
		}
		exp, err = otlptracehttp.New(ctx, o...)
	default:
		return nil, fmt.Errorf("tracing: OTLP protocol %q: want %s or %s", protocol, ProtocolGRPC, ProtocolHTTP)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP %s exporter: %w", protocol, err)
	}
	return exp, nil
}

// otlpProtocol is the protocol asked for, else the one the standard
// variables name, else gRPC.
func otlpProtocol(p string) string {
	for _, v := range []string{p, os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")} {
		if v != "" {
			return strings.ToLower(v)
		}
	}
	return ProtocolGRPC
}

// ParseOTLPEndpoint reads an --otlp-endpoint value: an http or https URL,
// or host:port, which is taken as http:// on a loopback host (a local
// collector rarely has a certificate) and https:// elsewhere.
func ParseOTLPEndpoint(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	bad := func(why string) error {
		return fmt.Errorf("tracing: OTLP endpoint %q: %s", s, why)
	}
	if s == "" {
		return nil, bad("empty")
	}
	if !strings.Contains(s, "://") {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			return nil, bad("want a URL (http://host:4317) or host:port")
		}
		if host == "" || port == "" {
			return nil, bad("want host:port with both parts")
		}
		scheme := "https"
		if loopback(host) {
			scheme = "http"
		}
		s = scheme + "://" + net.JoinHostPort(host, port)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, bad(err.Error())
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, bad("the scheme must be http or https")
	case u.Host == "" || u.Hostname() == "":
		return nil, bad("no host")
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return nil, bad("no query, fragment or user info allowed; OTEL_EXPORTER_OTLP_HEADERS carries credentials")
	}
	return u, nil
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
