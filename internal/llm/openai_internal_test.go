package llm

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestErrorBody(t *testing.T) {
	tests := []struct {
		name, body, typ, msg string
	}{
		{"openai", `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`, "requests", "Rate limit reached"},
		{"error string", `{"error":"model 'llama9' not found"}`, "", "model 'llama9' not found"},
		{"vllm top level", `{"object":"error","message":"max_tokens is too large","type":"BadRequestError","code":400}`, "BadRequestError", "max_tokens is too large"},
		{"fastapi detail", `{"detail":"Not Found"}`, "", "Not Found"},
		{"plain text", "upstream connect error\n", "", "upstream connect error"},
		{"html", "<html><body>502 Bad Gateway</body></html>", "", ""},
		{"empty", "", "", ""},
		{"control characters", `{"error":{"message":"a\u0000b\nc"}}`, "", "a b c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, msg := errorBody([]byte(tt.body))
			if typ != tt.typ || msg != tt.msg {
				t.Errorf("errorBody(%s) = %q, %q; want %q, %q", tt.body, typ, msg, tt.typ, tt.msg)
			}
		})
	}
	_, msg := errorBody([]byte(`{"error":{"message":"` + strings.Repeat("é", 2000) + `"}}`))
	if len(msg) > maxErrorMessage+len("…") || !strings.HasSuffix(msg, "…") {
		t.Errorf("a long message is %d bytes, want it cut to %d", len(msg), maxErrorMessage)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		header http.Header
		want   time.Duration
	}{
		{"none", http.Header{}, 0},
		{"seconds", http.Header{"Retry-After": {"20"}}, 20 * time.Second},
		{"fraction", http.Header{"Retry-After": {"0.5"}}, 500 * time.Millisecond},
		{"milliseconds win", http.Header{"Retry-After": {"20"}, "Retry-After-Ms": {"250"}}, 250 * time.Millisecond},
		{"date", http.Header{"Retry-After": {"Sat, 01 Mar 2025 12:00:30 GMT"}}, 30 * time.Second},
		{"date past", http.Header{"Retry-After": {"Sat, 01 Mar 2025 11:00:00 GMT"}}, 0},
		{"negative", http.Header{"Retry-After": {"-3"}}, 0},
		{"NaN", http.Header{"Retry-After": {"NaN"}}, 0},
		{"huge", http.Header{"Retry-After": {"1e300"}}, maxRetryAfter},
		{"infinite ms", http.Header{"Retry-After-Ms": {"+Inf"}}, maxRetryAfter},
		{"garbage", http.Header{"Retry-After": {"soon"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryAfter(tt.header, now); got != tt.want {
				t.Errorf("retryAfter(%v) = %s, want %s", tt.header, got, tt.want)
			}
		})
	}
}

func TestEndpointURL(t *testing.T) {
	tests := []struct{ base, want string }{
		{"https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"},
		{"https://api.openai.com/v1/", "https://api.openai.com/v1/chat/completions"},
		{"http://localhost:11434/v1", "http://localhost:11434/v1/chat/completions"},
		{"https://res.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-10-21", "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"},
	}
	for _, tt := range tests {
		if got, err := endpointURL(tt.base, "/chat/completions"); err != nil || got != tt.want {
			t.Errorf("endpointURL(%s) = %s, %v; want %s", tt.base, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "api.openai.com/v1", "ftp://x/v1", "http://"} {
		if _, err := endpointURL(bad, "/chat/completions"); err == nil {
			t.Errorf("endpointURL(%q) = nil error, want one", bad)
		}
	}
}
