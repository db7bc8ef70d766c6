package app

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestNotServedUntilReady: before a replica has loaded keys, kill switches,
// policy, budgets and tools, a call is answered 503 not_ready with
// Retry-After (not 401 for a key it has not read yet, nor 404 for a
// resource) and /readyz names what is still loading; once Run has loaded
// everything, /readyz says ready with every check loaded (issue 20.3).
func TestNotServedUntilReady(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := New(ctx, slog.New(slog.DiscardHandler), Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(method, path, token string) (*httptest.ResponseRecorder, map[string]any) {
		req := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader(`{"arguments": {}}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		a.server.Handler.ServeHTTP(rec, req)
		var body map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec, body
	}

	// Run has not started: nothing is mirrored yet.
	for _, c := range []struct{ method, path, token string }{
		{"POST", "/v1/tools/crm.lookup/invoke", "ck_someagentkeythatisnotloadedyet"},
		{"GET", "/v1/resources/agents/impact", "admin-token-not-loaded"},
		{"POST", "/openai/v1/chat/completions", "ck_someagentkeythatisnotloadedyet"},
	} {
		rec, body := serve(c.method, c.path, c.token)
		if rec.Code != http.StatusServiceUnavailable || body["code"] != "not_ready" || rec.Header().Get("Retry-After") == "" {
			t.Errorf("%s %s before ready = %d %s (Retry-After %q), want 503 not_ready with Retry-After",
				c.method, c.path, rec.Code, rec.Body, rec.Header().Get("Retry-After"))
		}
	}
	rec, body := serve("GET", "/readyz", "")
	checks, _ := body["checks"].(map[string]any)
	if rec.Code != http.StatusServiceUnavailable || checks["keys"] != "loading" || checks["tools"] != "loading" {
		t.Errorf("GET /readyz before ready = %d %s, want 503 with keys and tools loading", rec.Code, rec.Body)
	}
	if rec, _ := serve("GET", "/healthz", ""); rec.Code != http.StatusOK {
		t.Errorf("GET /healthz before ready = %d, want 200: the process is alive", rec.Code)
	}

	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("Run ended before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not ready within 30s")
	}
	rec, body = serve("GET", "/readyz", "")
	checks, _ = body["checks"].(map[string]any)
	if rec.Code != http.StatusOK || len(checks) < 9 {
		t.Errorf("GET /readyz once ready = %d %s, want 200 and every check", rec.Code, rec.Body)
	}
	for name, state := range checks {
		if name != "substrate" && state != "loaded" {
			t.Errorf("/readyz once ready: %s is %v, want loaded", name, state)
		}
	}
	if rec, body := serve("POST", "/v1/tools/crm.lookup/invoke", "ck_someagentkeythatisnotloadedyet"); rec.Code != http.StatusUnauthorized {
		t.Errorf("an unknown key once ready = %d %v, want 401", rec.Code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
