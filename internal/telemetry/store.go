package telemetry

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TracesStream is the JetStream stream of the built-in trace store.
const TracesStream = "CORRAL_TRACES"

// tracesSubjectPrefix starts every trace subject: corral.traces.<trace_id>.
const tracesSubjectPrefix = "corral.traces."

// Retention defaults of the trace store.
const (
	DefaultTraceMaxAge   = 7 * 24 * time.Hour
	DefaultTraceMaxBytes = 1 << 30
)

// MaxTraceSpans is the most spans Trace returns for one trace.
const MaxTraceSpans = 10000

// maxStoreMessage bounds one stored message, leaving room under the
// server's max_payload (1 MiB by default) for headers.
const maxStoreMessage = 512 << 10

// traceReadTimeout bounds a Trace read that the caller did not bound.
const traceReadTimeout = 15 * time.Second

// Errors Trace returns, for callers to branch on.
var (
	// ErrInvalidTraceID: the id is not 32 lowercase hex digits, or is all
	// zeros.
	ErrInvalidTraceID = errors.New("invalid trace id: want 32 lowercase hex digits, not all zero")
	// ErrTraceNotFound: the store holds no span of the trace (it never
	// came through corral, has not been written yet, or has expired).
	ErrTraceNotFound = errors.New("trace not found")
)

// Span is a stored span, as GET /v1/traces/{trace_id} and `corral trace`
// show it.
type Span struct {
	TraceID      string `json:"trace_id"`
	SpanID       string `json:"span_id"`
	ParentSpanID string `json:"parent_span_id,omitempty"`
	Name         string `json:"name"`
	// Kind is internal, server, client, producer or consumer.
	Kind       string    `json:"kind"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	DurationMS float64   `json:"duration_ms"`
	Status     Status    `json:"status"`
	// Attributes keep their types: strings, booleans, numbers and lists of
	// them. Numbers decode as json.Number, so that integers stay exact.
	Attributes map[string]any `json:"attributes,omitempty"`
	Events     []SpanEvent    `json:"events,omitempty"`
	// Service is the service.name of the process that made the span.
	Service string `json:"service,omitempty"`
}

// Status is a span's outcome: code "unset", "ok" or "error", with a
// message for errors.
type Status struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
}

// SpanEvent is something that happened during a span, at a time.
type SpanEvent struct {
	Name       string         `json:"name"`
	Time       time.Time      `json:"time"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

// StoreOptions configure the trace store's stream.
type StoreOptions struct {
	// MaxAge is how long spans are kept; 0 means DefaultTraceMaxAge.
	MaxAge time.Duration
	// MaxBytes bounds the stream, the oldest spans going first; 0 means
	// DefaultTraceMaxBytes.
	MaxBytes int64
}

// storeSubstrate is what the store needs from the bus.
type storeSubstrate interface {
	Stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	Publisher() (jetstream.JetStream, error)
}

// Store is the built-in trace store: an exporter that writes spans to a
// JetStream stream, one subject per trace, and reads a trace back. Give it
// to NewTracing as TracingOptions.Store.
type Store struct {
	js     jetstream.JetStream
	logger *slog.Logger
	closed atomic.Bool
}

var _ SpanStore = (*Store)(nil)

// OpenStore creates the trace stream, or updates its configuration.
func OpenStore(ctx context.Context, logger *slog.Logger, s storeSubstrate, opts StoreOptions) (*Store, error) {
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultTraceMaxAge
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultTraceMaxBytes
	}
	_, err := s.Stream(ctx, jetstream.StreamConfig{
		Name:        TracesStream,
		Description: "corral traces: spans as JSON lines, subject corral.traces.<trace_id>",
		Subjects:    []string{tracesSubjectPrefix + "*"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      opts.MaxAge,
		MaxBytes:    opts.MaxBytes,
		Discard:     jetstream.DiscardOld,
		// No compression: S2 made storing a batch four times slower
		// (BenchmarkStoreExport), and MaxBytes bounds the disk anyway.
	})
	if err != nil {
		return nil, fmt.Errorf("trace store: %w", err)
	}
	// A JetStream context of the store's own: spans waiting on a stalled
	// trace stream cannot use up the slots the audit publishes with.
	js, err := s.Publisher()
	if err != nil {
		return nil, fmt.Errorf("trace store: %w", err)
	}
	return &Store{js: js, logger: logger.With("component", "tracestore")}, nil
}

// ExportSpans writes spans to the stream and waits for JetStream to store
// them. It runs on the batch processor's goroutine, never an action's. The
// spans of one trace in a batch go out together, as JSON lines in one
// message, so a typical action costs one message; the messages of a batch
// are published asynchronously, so at most one batch is in flight.
func (s *Store) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if s.closed.Load() {
		return errors.New("trace store: export after shutdown")
	}
	var (
		line    []byte
		pending = map[trace.TraceID][]byte{}
		order   []trace.TraceID
		futures []jetstream.PubAckFuture
		errs    []error
		sent    int
	)
	publish := func(id trace.TraceID, data []byte) {
		sent++
		f, err := s.js.PublishMsgAsync(&nats.Msg{Subject: tracesSubjectPrefix + id.String(), Data: data},
			jetstream.WithExpectStream(TracesStream))
		if err != nil {
			errs = append(errs, err)
			return
		}
		futures = append(futures, f)
	}
	for _, sp := range spans {
		line = appendSpan(line[:0], sp, false)
		if len(line) > maxStoreMessage {
			// Attributes made it too large (captured content beyond the
			// caps): keep the span's shape, say what was dropped.
			line = appendSpan(line[:0], sp, true)
		}
		id := sp.SpanContext().TraceID()
		buf, seen := pending[id]
		if !seen {
			order = append(order, id)
		}
		if len(buf)+len(line) > maxStoreMessage {
			publish(id, buf)
			buf = nil
		}
		pending[id] = append(buf, line...)
	}
	for _, id := range order {
		publish(id, pending[id])
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs = append(errs, err)
		case <-ctx.Done():
			return fmt.Errorf("trace store: %d spans: %w", len(spans), ctx.Err())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("trace store: %d of %d messages not stored: %w", len(errs), sent, errs[0])
	}
	return nil
}

// Shutdown stops further exports; reading traces still works.
func (s *Store) Shutdown(context.Context) error {
	s.closed.Store(true)
	return nil
}

// Trace returns every stored span of the trace, at most MaxTraceSpans,
// ordered by start time. It reads what the stream holds when it starts.
func (s *Store) Trace(ctx context.Context, traceID string) ([]Span, error) {
	if !ValidTraceID(traceID) {
		return nil, fmt.Errorf("trace store: %q: %w", traceID, ErrInvalidTraceID)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, traceReadTimeout)
		defer cancel()
	}
	cons, err := s.js.OrderedConsumer(ctx, TracesStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{tracesSubjectPrefix + traceID},
		// Trace deletes its consumer when done; this covers a crash.
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("trace store: read %s: %w", traceID, err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("trace store: read %s: %w", traceID, err)
	}
	defer func() {
		msgs.Stop()
		s.deleteConsumer(ctx, cons)
	}()
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return nil, fmt.Errorf("trace store: %s: %w", traceID, ErrTraceNotFound)
	}
	stop := context.AfterFunc(ctx, msgs.Stop)
	defer stop()

	var spans []Span
	for len(spans) < MaxTraceSpans {
		m, err := msgs.Next()
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return nil, fmt.Errorf("trace store: read %s: %w", traceID, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("trace store: read %s: %w", traceID, err)
		}
		got, err := decodeSpans(m.Data(), MaxTraceSpans-len(spans))
		if err != nil {
			s.logger.WarnContext(ctx, "skipping unreadable stored spans", "trace_id", traceID, "seq", meta.Sequence.Stream, "err", err)
		}
		spans = append(spans, got...)
		if meta.NumPending == 0 {
			break
		}
	}
	if len(spans) == 0 {
		return nil, fmt.Errorf("trace store: %s: %w", traceID, ErrTraceNotFound)
	}
	slices.SortStableFunc(spans, func(a, b Span) int { return a.Start.Compare(b.Start) })
	return spans, nil
}

// deleteConsumer removes a read's consumer from the server.
func (s *Store) deleteConsumer(ctx context.Context, cons jetstream.Consumer) {
	ci := cons.CachedInfo()
	if ci == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := s.js.DeleteConsumer(ctx, TracesStream, ci.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.logger.DebugContext(ctx, "trace read consumer left to expire", "consumer", ci.Name, "err", err)
	}
}

// ValidTraceID reports whether id is a W3C trace id as corral writes it:
// 32 lowercase hex digits, not all zero.
func ValidTraceID(id string) bool {
	if len(id) != 32 {
		return false
	}
	zero := true
	for i := range len(id) {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
		if c != '0' {
			zero = false
		}
	}
	return !zero
}

// appendSpan appends sp to b as one line of JSON, the form Span decodes
// from. It is written by hand because it runs for every span corral makes:
// encoding/json took four times as long (BenchmarkStoreEncode). With lean,
// attributes and events are left out and corral.store.dropped says so.
func appendSpan(b []byte, sp sdktrace.ReadOnlySpan, lean bool) []byte {
	sc := sp.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	b = append(b, `{"trace_id":"`...)
	b = hex.AppendEncode(b, tid[:])
	b = append(b, `","span_id":"`...)
	b = hex.AppendEncode(b, sid[:])
	b = append(b, '"')
	if p := sp.Parent().SpanID(); p.IsValid() {
		b = append(b, `,"parent_span_id":"`...)
		b = hex.AppendEncode(b, p[:])
		b = append(b, '"')
	}
	b = append(b, `,"name":`...)
	b = appendJSONString(b, sp.Name())
	b = append(b, `,"kind":"`...)
	b = append(b, spanKind(sp.SpanKind())...)
	start, end := sp.StartTime(), sp.EndTime()
	b = append(b, `","start":"`...)
	b = start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","end":"`...)
	b = end.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","duration_ms":`...)
	b = appendJSONFloat(b, float64(end.Sub(start))/float64(time.Millisecond))
	status := sp.Status()
	b = append(b, `,"status":{"code":"`...)
	b = append(b, statusCode(status.Code)...)
	b = append(b, '"')
	if status.Description != "" {
		b = append(b, `,"message":`...)
		b = appendJSONString(b, status.Description)
	}
	b = append(b, '}')
	if lean {
		b = append(b, `,"attributes":{"corral.store.dropped":"attributes and events: the span exceeded the store's message size"}`...)
	} else {
		if attrs := sp.Attributes(); len(attrs) > 0 {
			b = append(b, `,"attributes":`...)
			b = appendAttributes(b, attrs)
		}
		if events := sp.Events(); len(events) > 0 {
			b = append(b, `,"events":[`...)
			for i, e := range events {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, `{"name":`...)
				b = appendJSONString(b, e.Name)
				b = append(b, `,"time":"`...)
				b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
				b = append(b, '"')
				if len(e.Attributes) > 0 {
					b = append(b, `,"attributes":`...)
					b = appendAttributes(b, e.Attributes)
				}
				b = append(b, '}')
			}
			b = append(b, ']')
		}
	}
	if res := sp.Resource(); res != nil {
		if v, ok := res.Set().Value("service.name"); ok && v.AsString() != "" {
			b = append(b, `,"service":`...)
			b = appendJSONString(b, v.AsString())
		}
	}
	return append(b, "}\n"...)
}

func statusCode(c codes.Code) string {
	switch c {
	case codes.Ok:
		return "ok"
	case codes.Error:
		return "error"
	}
	return "unset"
}

func spanKind(k trace.SpanKind) string {
	if k == trace.SpanKindUnspecified {
		return "internal" // what the SDK records an unspecified kind as
	}
	return k.String()
}

// appendAttributes appends attributes as a JSON object of typed values.
func appendAttributes(b []byte, attrs []attribute.KeyValue) []byte {
	b = append(b, '{')
	for i, kv := range attrs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, string(kv.Key))
		b = append(b, ':')
		b = appendValue(b, kv.Value)
	}
	return append(b, '}')
}

func appendValue(b []byte, v attribute.Value) []byte {
	switch v.Type() {
	case attribute.BOOL:
		return strconv.AppendBool(b, v.AsBool())
	case attribute.INT64:
		return strconv.AppendInt(b, v.AsInt64(), 10)
	case attribute.FLOAT64:
		return appendJSONFloat(b, v.AsFloat64())
	case attribute.STRING:
		return appendJSONString(b, v.AsString())
	case attribute.BOOLSLICE:
		return appendList(b, v.AsBoolSlice(), strconv.AppendBool)
	case attribute.INT64SLICE:
		return appendList(b, v.AsInt64Slice(), func(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) })
	case attribute.FLOAT64SLICE:
		return appendList(b, v.AsFloat64Slice(), appendJSONFloat)
	case attribute.STRINGSLICE:
		return appendList(b, v.AsStringSlice(), appendJSONString)
	}
	return append(b, "null"...)
}

func appendList[T any](b []byte, items []T, appendItem func([]byte, T) []byte) []byte {
	b = append(b, '[')
	for i, x := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendItem(b, x)
	}
	return append(b, ']')
}

// appendJSONFloat appends f as encoding/json writes it, or, for the values
// JSON has no number for, their name as a string.
func appendJSONFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return appendJSONString(b, fmt.Sprint(f))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(b, f, format, -1, 64)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, each byte of invalid UTF-8 replaced by U+FFFD,
// as encoding/json does (without its HTML escaping).
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\ufffd"...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// decodeSpans reads the JSON lines of one stored message, at most limit
// spans. It returns the spans read before an unreadable one, with the error.
func decodeSpans(data []byte, limit int) ([]Span, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var out []Span
	for len(out) < limit {
		var sp Span
		err := dec.Decode(&sp)
		if err == io.EOF {
			break
		}
		if err != nil {
			return out, err
		}
		if !ValidTraceID(sp.TraceID) || !validSpanID(sp.SpanID) {
			return out, fmt.Errorf("span with trace id %q and span id %q", sp.TraceID, sp.SpanID)
		}
		out = append(out, sp)
	}
	return out, nil
}

func validSpanID(id string) bool {
	if len(id) != 16 {
		return false
	}
	b, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id && !bytes.Equal(b, make([]byte, 8))
}
