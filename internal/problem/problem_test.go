package problem

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/telemetry"
)

func TestWrite(t *testing.T) {
	secret := errors.New("dial tcp 10.0.0.7:5432: password authentication failed for user corral")
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
		wantDetail string
	}{
		{"problem", New(http.StatusNotFound, ResourceNotFound, "Agent/x does not exist"), 404, ResourceNotFound, "Agent/x does not exist"},
		{"wrapped problem", fmt.Errorf("handler: %w", Wrap(409, Conflict, "changed", secret)), 409, Conflict, "changed"},
		{"plain error", secret, 500, Internal, "internal error; the server log has the details under this request_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			rec := httptest.NewRecorder()
			req := httptest.NewRequestWithContext(telemetry.WithRequestID(t.Context(), "req-1"), "GET", "/v1/x", nil)
			Write(rec, req, logger, tt.err)

			if rec.Code != tt.wantStatus || rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Errorf("Write(%v) = %d %s, want %d application/problem+json", tt.err, rec.Code, rec.Header().Get("Content-Type"), tt.wantStatus)
			}
			var d Details
			if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
				t.Fatal(err)
			}
			want := Details{Type: TypeURI(tt.wantCode), Title: http.StatusText(tt.wantStatus), Status: tt.wantStatus,
				Detail: tt.wantDetail, Instance: "/v1/x", Code: tt.wantCode, RequestID: "req-1"}
			if d != want {
				t.Errorf("Write(%v) body = %+v, want %+v", tt.err, d, want)
			}
			if strings.Contains(rec.Body.String(), "password") {
				t.Errorf("internal cause leaked to the client: %s", rec.Body.String())
			}
			if tt.wantStatus >= 500 && !strings.Contains(logs.String(), "password authentication failed") {
				t.Errorf("internal cause not logged: %s", logs.String())
			}
		})
	}
}

func TestUnauthenticatedChallenges(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, httptest.NewRequest("GET", "/", nil), slog.New(slog.DiscardHandler), New(401, Unauthenticated, "no token"))
	if got := rec.Header().Get("WWW-Authenticate"); got != `Bearer realm="corral"` {
		t.Errorf("WWW-Authenticate = %q, want Bearer realm", got)
	}
}
