package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/telemetry"
)

// adminOnly lets in the one admin token; the trace routes need nothing else.
type adminOnly struct{ api.Credentials }

func (adminOnly) VerifyAdmin(token string) bool { return token == "corral_admin_test" }

// failingTraces is a store that cannot be read.
type failingTraces struct{}

func (failingTraces) Trace(context.Context, string) ([]telemetry.Span, error) {
	return nil, errors.New("nats: timeout")
}

func serveTraces(t *testing.T, traces api.TraceReader) string {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	mux := http.NewServeMux()
	api.New(logger, nil, adminOnly{}).WithTraces(traces).Register(mux)
	srv := httptest.NewServer(telemetry.NewHTTPMetrics(prometheus.NewRegistry()).Middleware(logger, mux))
	t.Cleanup(srv.Close)
	return srv.URL
}

func getTrace(t *testing.T, method, url, token string) (int, []byte, problem.Details) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var p problem.Details
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(body, &p); err != nil || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: HTTP %d %s, want a problem", method, url, resp.StatusCode, body)
		}
	}
	return resp.StatusCode, body, p
}

func TestGetTrace(t *testing.T) {
	ctx := t.Context()
	logger := slog.New(slog.DiscardHandler)
	store, err := telemetry.OpenStore(ctx, logger, bustest.Open(t), telemetry.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tracing, err := telemetry.NewTracing(ctx, logger, telemetry.TracingOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	actx, action := tracing.Tracer().Start(ctx, telemetry.ActionSpanName(telemetry.OpExecuteTool, "crm.get_order"))
	_, policy := tracing.Tracer().Start(actx, telemetry.StagePolicy, trace.WithAttributes(telemetry.AttrPolicyEffect.String("allow")))
	policy.End()
	action.End()
	if err := tracing.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	id := action.SpanContext().TraceID().String()
	base := serveTraces(t, store)

	status, body, _ := getTrace(t, "GET", base+"/v1/traces/"+id, "corral_admin_test")
	var got api.TraceResponse
	if err := json.Unmarshal(body, &got); status != http.StatusOK || err != nil {
		t.Fatalf("GET trace: HTTP %d %s (%v)", status, body, err)
	}
	if got.TraceID != id || len(got.Spans) != 2 || got.Spans[0].Name != "execute_tool crm.get_order" ||
		got.Spans[1].ParentSpanID != got.Spans[0].SpanID || got.Spans[1].Attributes["corral.policy.effect"] != "allow" {
		t.Errorf("GET trace = %s, want the action and the policy span under it", body)
	}

	tests := []struct {
		name, method, path, token string
		status                    int
		code                      string
	}{
		{"no token", "GET", "/v1/traces/" + id, "", 401, problem.Unauthenticated},
		{"unknown trace", "GET", "/v1/traces/0af7651916cd43dd8448eb211c80319c", "corral_admin_test", 404, problem.NotFound},
		{"uppercase id", "GET", "/v1/traces/" + "0AF7651916CD43DD8448EB211C80319C", "corral_admin_test", 400, problem.InvalidRequest},
		{"short id", "GET", "/v1/traces/abc", "corral_admin_test", 400, problem.InvalidRequest},
		{"zero id", "GET", "/v1/traces/00000000000000000000000000000000", "corral_admin_test", 400, problem.InvalidRequest},
		{"wrong method", "DELETE", "/v1/traces/" + id, "corral_admin_test", 405, problem.MethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, p := getTrace(t, tt.method, base+tt.path, tt.token)
			if status != tt.status || p.Code != tt.code {
				t.Errorf("%s %s = HTTP %d %s, want %d %s", tt.method, tt.path, status, body, tt.status, tt.code)
			}
		})
	}

	// A store that fails is an internal error, its cause kept from the client.
	status, body, p := getTrace(t, "GET", serveTraces(t, failingTraces{})+"/v1/traces/"+id, "corral_admin_test")
	if status != http.StatusInternalServerError || p.Code != problem.Internal || strings.Contains(string(body), "nats") {
		t.Errorf("GET trace from a failing store = HTTP %d %s, want 500 internal", status, body)
	}
}
