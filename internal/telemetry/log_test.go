package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestLoggerCarriesRequestID(t *testing.T) {
	var buf bytes.Buffer
	logger, err := NewLogger(&buf, "json", "debug")
	if err != nil {
		t.Fatal(err)
	}
	logger.With("component", "http").InfoContext(WithRequestID(context.Background(), "abc"), "served", "status", 200)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	if rec["request_id"] != "abc" || rec["component"] != "http" || rec["msg"] != "served" {
		t.Errorf("log record = %v, want request_id, component and msg", rec)
	}
}

func TestNewLoggerRejectsBadSettings(t *testing.T) {
	for _, tt := range []struct{ format, level, want string }{
		{"xml", "info", `log format "xml"`},
		{"text", "loud", `log level "loud"`},
	} {
		if _, err := NewLogger(&bytes.Buffer{}, tt.format, tt.level); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewLogger(%s, %s) err = %v, want %q", tt.format, tt.level, err, tt.want)
		}
	}
}

func TestLevelFilters(t *testing.T) {
	var buf bytes.Buffer
	logger, _ := NewLogger(&buf, "text", "warn")
	logger.Info("hidden")
	logger.Warn("shown")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), "shown") {
		t.Errorf("warn level log = %q", buf.String())
	}
}

func TestLoggerCarriesTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	logger, err := NewLogger(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:  trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
	})
	tests := []struct {
		name               string
		ctx                context.Context
		wantTrace, wantSpn any
	}{
		{"span", trace.ContextWithSpanContext(context.Background(), sc), "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"},
		{"no span", context.Background(), nil, nil},
		{"invalid span", trace.ContextWithSpanContext(context.Background(), trace.SpanContext{}), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf.Reset()
			logger.With("component", "gateway").InfoContext(tt.ctx, "served")
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			if rec["trace_id"] != tt.wantTrace || rec["span_id"] != tt.wantSpn {
				t.Errorf("log record = %v, want trace_id %v and span_id %v", rec, tt.wantTrace, tt.wantSpn)
			}
		})
	}
}
