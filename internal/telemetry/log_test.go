package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
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
