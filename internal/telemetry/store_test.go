package telemetry

import (
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/corral-dev/corral/internal/bus/bustest"
)

func openStore(t testing.TB) *Store {
	t.Helper()
	s, err := OpenStore(t.Context(), slog.New(slog.DiscardHandler), bustest.Open(t), StoreOptions{})
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	return s
}

var (
	traceA = trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	traceB = trace.TraceID{0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	t0     = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
)

func spanID(n byte) trace.SpanID { return trace.SpanID{0, 0, 0, 0, 0, 0, 0xa0, n} }

// stub describes a span of traceID with id n and parent p (0 for none),
// starting ms milliseconds after t0 and lasting dur milliseconds.
func stub(traceID trace.TraceID, n, p byte, name string, ms, dur float64, attrs ...attribute.KeyValue) tracetest.SpanStub {
	s := tracetest.SpanStub{
		Name:        name,
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID(n), TraceFlags: trace.FlagsSampled}),
		SpanKind:    trace.SpanKindInternal,
		StartTime:   t0.Add(time.Duration(ms * float64(time.Millisecond))),
		EndTime:     t0.Add(time.Duration((ms + dur) * float64(time.Millisecond))),
		Attributes:  attrs,
		Resource:    resource.NewSchemaless(attribute.String("service.name", "corral")),
	}
	if p != 0 {
		s.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID(p), TraceFlags: trace.FlagsSampled})
	}
	return s
}

func export(t testing.TB, s *Store, stubs ...tracetest.SpanStub) {
	t.Helper()
	if err := s.ExportSpans(t.Context(), tracetest.SpanStubs(stubs).Snapshots()); err != nil {
		t.Fatalf("ExportSpans: %v", err)
	}
}

func TestStoreRoundTrip(t *testing.T) {
	s := openStore(t)
	action := stub(traceA, 1, 0, "execute_tool crm.get_order", 0, 12.5,
		AttrAgent.String("impact"),
		AttrGenAIOperationName.String(OpExecuteTool),
		AttrGenAIUsageInputTokens.Int(1234567890123),
		AttrCost.Float64(0.25),
		AttrReplayed.Bool(false),
		AttrPolicyReasons.StringSlice([]string{"tool in the agent's list"}),
		attribute.Float64("odd", math.Inf(1)),
	)
	action.SpanKind = trace.SpanKindServer
	action.Status = sdktrace.Status{Code: codes.Error, Description: "policy_denied"}
	action.Events = []sdktrace.Event{{Name: "retry", Time: t0.Add(time.Millisecond), Attributes: []attribute.KeyValue{attribute.Int("attempt", 2)}}}
	// The caller's span is the parent of the action: not stored here.
	action.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceA, SpanID: spanID(99), Remote: true})
	policy := stub(traceA, 2, 1, StagePolicy, 0.5, 0.25, AttrPolicyEffect.String("allow"))
	invoke := stub(traceA, 3, 1, StageInvoke, 1, 10)
	other := stub(traceB, 1, 0, "chat gpt-4o", 0, 1)
	// Out of order, and two traces in one batch.
	export(t, s, invoke, other, policy, action)

	got, err := s.Trace(t.Context(), traceA.String())
	if err != nil {
		t.Fatalf("Trace: %v", err)
	}
	want := []Span{
		{
			TraceID: traceA.String(), SpanID: "000000000000a001", ParentSpanID: "000000000000a063",
			Name: "execute_tool crm.get_order", Kind: "server",
			Start: t0, End: t0.Add(12500 * time.Microsecond), DurationMS: 12.5,
			Status: Status{Code: "error", Message: "policy_denied"},
			Attributes: map[string]any{
				"corral.agent":                "impact",
				"gen_ai.operation.name":       "execute_tool",
				"gen_ai.usage.input_tokens":   json.Number("1234567890123"),
				"corral.cost":                 json.Number("0.25"),
				"corral.idempotency.replayed": false,
				"corral.policy.reasons":       []any{"tool in the agent's list"},
				"odd":                         "+Inf",
			},
			Events:  []SpanEvent{{Name: "retry", Time: t0.Add(time.Millisecond), Attributes: map[string]any{"attempt": json.Number("2")}}},
			Service: "corral",
		},
		{
			TraceID: traceA.String(), SpanID: "000000000000a002", ParentSpanID: "000000000000a001",
			Name: "policy", Kind: "internal", Start: t0.Add(500 * time.Microsecond), End: t0.Add(750 * time.Microsecond), DurationMS: 0.25,
			Status: Status{Code: "unset"}, Attributes: map[string]any{"corral.policy.effect": "allow"}, Service: "corral",
		},
		{
			TraceID: traceA.String(), SpanID: "000000000000a003", ParentSpanID: "000000000000a001",
			Name: "invoke", Kind: "internal", Start: t0.Add(time.Millisecond), End: t0.Add(11 * time.Millisecond), DurationMS: 10,
			Status: Status{Code: "unset"}, Service: "corral",
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Trace (-want +got):\n%s", diff)
	}

	// A second batch adds to the trace.
	export(t, s, stub(traceA, 4, 1, StageAudit, 11.5, 0.5))
	got, err = s.Trace(t.Context(), traceA.String())
	if err != nil || len(got) != 4 || got[3].Name != StageAudit {
		t.Errorf("Trace after a second batch = %d spans (%v), want 4 ending with audit", len(got), err)
	}
	if got, err := s.Trace(t.Context(), traceB.String()); err != nil || len(got) != 1 || got[0].Name != "chat gpt-4o" {
		t.Errorf("Trace(B) = %+v, %v; want the one chat span", got, err)
	}
}

func TestStoreTraceErrors(t *testing.T) {
	s := openStore(t)
	export(t, s, stub(traceB, 1, 0, "x", 0, 1))
	tests := []struct {
		id   string
		want error
	}{
		{traceA.String(), ErrTraceNotFound},
		{"", ErrInvalidTraceID},
		{"4BF92F3577B34DA6A3CE929D0E0E4736", ErrInvalidTraceID},
		{"00000000000000000000000000000000", ErrInvalidTraceID},
		{"4bf92f3577b34da6a3ce929d0e0e473", ErrInvalidTraceID},
		{"4bf92f3577b34da6a3ce929d0e0e4736.>", ErrInvalidTraceID},
		{"*", ErrInvalidTraceID},
	}
	for _, tt := range tests {
		if _, err := s.Trace(t.Context(), tt.id); !errors.Is(err, tt.want) {
			t.Errorf("Trace(%q) err = %v, want %v", tt.id, err, tt.want)
		}
	}
}

func TestStoreDropsOversizedAttributes(t *testing.T) {
	s := openStore(t)
	huge := strings.Repeat("x", maxStoreMessage)
	export(t, s,
		stub(traceA, 1, 0, "big", 0, 1, AttrGenAIToolCallResult.String(huge)),
		stub(traceA, 2, 1, "small", 0.5, 0.1, AttrAgent.String("impact")),
	)
	got, err := s.Trace(t.Context(), traceA.String())
	if err != nil || len(got) != 2 {
		t.Fatalf("Trace = %d spans, %v; want 2", len(got), err)
	}
	if _, ok := got[0].Attributes["corral.store.dropped"]; !ok || got[0].Name != "big" || got[0].Attributes[string(AttrGenAIToolCallResult)] != nil {
		t.Errorf("oversized span stored as %+v, want its attributes replaced by corral.store.dropped", got[0])
	}
	if got[1].Attributes["corral.agent"] != "impact" {
		t.Errorf("small span = %+v, want its attributes", got[1])
	}
}

func TestStoreSplitsLargeBatches(t *testing.T) {
	s := openStore(t)
	// Ten spans of about 100 KiB each: one trace, more than one message.
	var stubs []tracetest.SpanStub
	for i := range 10 {
		stubs = append(stubs, stub(traceA, byte(i+1), 0, "span", float64(i), 1, attribute.String("blob", strings.Repeat("y", 100<<10))))
	}
	export(t, s, stubs...)
	got, err := s.Trace(t.Context(), traceA.String())
	if err != nil || len(got) != 10 {
		t.Fatalf("Trace = %d spans, %v; want 10", len(got), err)
	}
	for i, sp := range got {
		if want := spanID(byte(i + 1)).String(); sp.SpanID != want {
			t.Errorf("span %d = %s, want %s (ordered by start)", i, sp.SpanID, want)
		}
	}
}

func TestStoreAfterShutdown(t *testing.T) {
	s := openStore(t)
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.ExportSpans(t.Context(), tracetest.SpanStubs{stub(traceA, 1, 0, "x", 0, 1)}.Snapshots()); err == nil {
		t.Error("ExportSpans after Shutdown succeeded, want an error")
	}
}

func TestDecodeSpansLimit(t *testing.T) {
	var buf []byte
	for i := range 5 {
		buf = appendSpan(buf, stub(traceA, byte(i+1), 0, "s", 0, 1).Snapshot(), false)
	}
	got, err := decodeSpans(buf, 3)
	if err != nil || len(got) != 3 {
		t.Errorf("decodeSpans(5 spans, limit 3) = %d, %v; want 3", len(got), err)
	}
	got, err = decodeSpans(append(buf, "{not json\n"...), 10)
	if err == nil || len(got) != 5 {
		t.Errorf("decodeSpans(5 spans then junk) = %d, %v; want 5 and an error", len(got), err)
	}
}

func TestValidTraceID(t *testing.T) {
	for id, want := range map[string]bool{
		"4bf92f3577b34da6a3ce929d0e0e4736":  true,
		"00000000000000000000000000000001":  true,
		"00000000000000000000000000000000":  false,
		"4bf92f3577b34da6a3ce929d0e0e473g":  false,
		"4BF92F3577B34DA6A3CE929D0E0E4736":  false,
		"4bf92f3577b34da6a3ce929d0e0e47361": false,
		"":                                  false,
	} {
		if got := ValidTraceID(id); got != want {
			t.Errorf("ValidTraceID(%q) = %v, want %v", id, got, want)
		}
	}
}

func FuzzDecodeSpans(f *testing.F) {
	var buf []byte
	buf = appendSpan(buf, stub(traceA, 1, 0, "execute_tool x", 0, 1, AttrAgent.String("a"), AttrCost.Float64(1.5)).Snapshot(), false)
	buf = appendSpan(buf, stub(traceA, 2, 1, "policy", 0, 1).Snapshot(), true)
	f.Add(buf)
	f.Add([]byte(`{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}`))
	f.Add([]byte(`{"trace_id":"x"}`))
	f.Add([]byte("\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		spans, _ := decodeSpans(data, 100)
		if len(spans) > 100 {
			t.Fatalf("decodeSpans returned %d spans, over its limit", len(spans))
		}
		for _, sp := range spans {
			if !ValidTraceID(sp.TraceID) || !validSpanID(sp.SpanID) {
				t.Fatalf("decodeSpans accepted ids %q/%q", sp.TraceID, sp.SpanID)
			}
			if _, err := json.Marshal(sp); err != nil {
				t.Fatalf("a decoded span does not encode again: %v", err)
			}
		}
	})
}

// TestAppendSpanTypes: every attribute type comes back as the same JSON
// value encoding/json would have written, and odd text stays readable.
func TestAppendSpanTypes(t *testing.T) {
	sp := stub(traceA, 1, 0, "name with \"quotes\", a tab\t, \x01 and bad \xff utf-8", 0, 1,
		attribute.Bool("b", true),
		attribute.Int64("i", -42),
		attribute.Float64("f", 1e-7),
		attribute.Float64("big", 1e21),
		attribute.Float64("nan", math.NaN()),
		attribute.String("s", "line\nbreak </script> ü"),
		attribute.BoolSlice("bs", []bool{true, false}),
		attribute.Int64Slice("is", []int64{1, 2}),
		attribute.Float64Slice("fs", []float64{0.5, math.Inf(-1)}),
		attribute.StringSlice("ss", []string{"a", "\"b\""}),
	)
	sp.Status = sdktrace.Status{Code: codes.Error, Description: "bad\r\n"}
	line := appendSpan(nil, sp.Snapshot(), false)
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("appendSpan wrote invalid JSON %s: %v", line, err)
	}
	want := map[string]any{
		"b": true, "i": -42.0, "f": 1e-7, "big": 1e21, "nan": "NaN", "s": "line\nbreak </script> ü",
		"bs": []any{true, false}, "is": []any{1.0, 2.0}, "fs": []any{0.5, "-Inf"}, "ss": []any{"a", `"b"`},
	}
	if diff := cmp.Diff(want, got["attributes"]); diff != "" {
		t.Errorf("attributes (-want +got):\n%s", diff)
	}
	if got["name"] != "name with \"quotes\", a tab\t, \x01 and bad \ufffd utf-8" {
		t.Errorf("name = %q", got["name"])
	}
	if got["status"].(map[string]any)["message"] != "bad\r\n" {
		t.Errorf("status = %v", got["status"])
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote \" backslash \\", "\x00\x1f\x7f", "ü€😀", "\xff\xfe", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var got, want string
		if err := json.Unmarshal(appendJSONString(nil, s), &got); err != nil {
			t.Fatalf("appendJSONString(%q) is not a JSON string: %v", s, err)
		}
		std, _ := json.Marshal(s)
		_ = json.Unmarshal(std, &want)
		if got != want {
			t.Fatalf("appendJSONString(%q) decodes to %q; encoding/json's to %q", s, got, want)
		}
	})
}
