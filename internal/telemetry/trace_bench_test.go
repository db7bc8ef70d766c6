package telemetry

import (
	"context"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// discard is an exporter that drops what it gets.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// actionSpans makes the spans of one tool call as the pipeline will: the
// action, three stages, and their attributes.
func actionSpans(ctx context.Context, tracer trace.Tracer) {
	ctx, action := tracer.Start(ctx, "execute_tool crm.get_order", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(AttrGenAIOperationName.String(OpExecuteTool), AttrGenAIToolName.String("crm.get_order"), AttrAgent.String("impact")))
	_, policy := tracer.Start(ctx, StagePolicy)
	policy.SetAttributes(AttrPolicyEffect.String("allow"), AttrPolicyRevision.String("sha256:f881b823c542"))
	policy.End()
	_, validate := tracer.Start(ctx, StageValidate)
	validate.End()
	_, invoke := tracer.Start(ctx, StageInvoke)
	invoke.End()
	action.SetAttributes(AttrAuditID.String("01JABCDEF"))
	action.End()
}

// BenchmarkActionSpans is what tracing costs an action's own goroutine:
// making and ending four spans; export happens on the batch goroutine.
func BenchmarkActionSpans(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts TracingOptions
	}{
		{"recording", TracingOptions{Store: discard{}}},
		{"disabled", TracingOptions{Disabled: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tr, err := NewTracing(b.Context(), slog.New(slog.DiscardHandler), bc.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Shutdown(context.Background())
			tracer := tr.Tracer()
			b.ReportAllocs()
			for b.Loop() {
				actionSpans(b.Context(), tracer)
			}
		})
	}
}

func benchSpans(n int) []sdktrace.ReadOnlySpan {
	stubs := make(tracetest.SpanStubs, 0, n)
	for i := range n {
		id := traceA
		id[0] = byte(i / 4) // four spans per trace, as one action makes
		stubs = append(stubs, stub(id, byte(i%4+1), 0, "execute_tool crm.get_order", 0, 1,
			AttrGenAIOperationName.String(OpExecuteTool), AttrAgent.String("impact"), AttrPolicyEffect.String("allow"),
			attribute.Int("corral.upstream.attempts", 1)))
	}
	return stubs.Snapshots()
}

// BenchmarkStoreEncode is the store's encoding work per span, on the batch
// goroutine.
func BenchmarkStoreEncode(b *testing.B) {
	sp := benchSpans(1)[0]
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = appendSpan(buf[:0], sp, false)
	}
}

// BenchmarkStoreExport stores a full batch (512 spans, 128 traces) in an
// embedded JetStream; ns/op divided by 512 is the background cost per span.
func BenchmarkStoreExport(b *testing.B) {
	s := openStore(b)
	spans := benchSpans(512)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.ExportSpans(b.Context(), spans); err != nil {
			b.Fatal(err)
		}
	}
}
