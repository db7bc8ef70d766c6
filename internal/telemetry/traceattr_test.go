package telemetry

import (
	"strings"
	"testing"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace/noop"
)

func TestTruncateContent(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		limit int
		want  string
	}{
		{"short", "hello", 10, "hello"},
		{"exact", "hello", 5, "hello"},
		{"cut", "hello world", 5, "hello…[truncated 6 bytes]"},
		{"rune boundary", "ab€cd", 3, "ab…[truncated 5 bytes]"}, // € is 3 bytes: not split
		{"default limit", strings.Repeat("x", DefaultContentLimit+1), 0, strings.Repeat("x", DefaultContentLimit) + "…[truncated 1 bytes]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := truncateContent(tt.in, tt.limit)
			if got != tt.want {
				t.Errorf("truncateContent(%q, %d) = %q, want %q", tt.in, tt.limit, got, tt.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("truncateContent(%q, %d) = %q, not valid UTF-8", tt.in, tt.limit, got)
			}
		})
	}
}

func TestCaptureContentAndSetCode(t *testing.T) {
	tracer, rec := recorder(t)
	_, span := tracer.Start(t.Context(), "execute_tool x")
	CaptureContent(span, AttrGenAIToolCallArguments, `{"email":"[EMAIL_1]","note":"`+strings.Repeat("n", 100)+`"}`, 32)
	SetCode(span, "policy_denied")
	span.SetAttributes(RedactCount("email", 1))
	span.End()
	got := rec.Ended()[0]
	attrs := map[attribute.Key]attribute.Value{}
	for _, kv := range got.Attributes() {
		attrs[kv.Key] = kv.Value
	}
	if v := attrs[AttrGenAIToolCallArguments].AsString(); !strings.HasPrefix(v, `{"email":"[EMAIL_1]","note":"nnn`) || !strings.HasSuffix(v, "…[truncated 99 bytes]") {
		t.Errorf("captured %q, want 32 bytes and the truncation marker", v)
	}
	if attrs[AttrCode].AsString() != "policy_denied" || got.Status().Code != codes.Error || got.Status().Description != "policy_denied" {
		t.Errorf("after SetCode: corral.code %q, status %v; want policy_denied and an error", attrs[AttrCode].AsString(), got.Status())
	}
	if attrs["corral.redact.count.email"].AsInt64() != 1 {
		t.Errorf("RedactCount set %v, want corral.redact.count.email=1", attrs)
	}

	// A span that does not record costs nothing and keeps nothing.
	_, quiet := noop.NewTracerProvider().Tracer("").Start(t.Context(), "x")
	CaptureContent(quiet, AttrGenAIInputMessages, "secret", 0)
	SetCode(quiet, "killed")
}

func TestActionSpanName(t *testing.T) {
	for _, tt := range []struct{ op, target, want string }{
		{OpExecuteTool, "crm.get_order", "execute_tool crm.get_order"},
		{OpChat, "gpt-4o", "chat gpt-4o"},
		{OpChat, "", "chat"},
	} {
		if got := ActionSpanName(tt.op, tt.target); got != tt.want {
			t.Errorf("ActionSpanName(%q, %q) = %q, want %q", tt.op, tt.target, got, tt.want)
		}
	}
}

func TestAttributeNames(t *testing.T) {
	// The names the docs, the dashboard and `corral trace` rely on.
	for key, want := range map[attribute.Key]string{
		AttrGenAIOperationName:         "gen_ai.operation.name",
		AttrGenAIProviderName:          "gen_ai.provider.name",
		AttrGenAIRequestModel:          "gen_ai.request.model",
		AttrGenAIResponseModel:         "gen_ai.response.model",
		AttrGenAIRequestMaxTokens:      "gen_ai.request.max_tokens",
		AttrGenAIUsageInputTokens:      "gen_ai.usage.input_tokens",
		AttrGenAIUsageOutputTokens:     "gen_ai.usage.output_tokens",
		AttrGenAIResponseFinishReasons: "gen_ai.response.finish_reasons",
		AttrGenAIToolName:              "gen_ai.tool.name",
		AttrGenAIToolCallID:            "gen_ai.tool.call.id",
		AttrHTTPResponseStatusCode:     "http.response.status_code",
		AttrURLFull:                    "url.full",
	} {
		if string(key) != want {
			t.Errorf("attribute %s, want %s", key, want)
		}
	}
}
