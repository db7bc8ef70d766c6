package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/identity"
)

// fakeAdminTokens keeps admin tokens in memory.
type fakeAdminTokens struct {
	mu      sync.Mutex
	created []string // name/ttl
}

func (f *fakeAdminTokens) CreateAdminToken(_ context.Context, name string, ttl time.Duration) (string, identity.AdminToken, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, fmt.Sprintf("%s/%v", name, ttl))
	return "corral_admin_new", identity.AdminToken{ID: "0123456789ab", Name: name}, nil
}

func (f *fakeAdminTokens) AdminTokens() []identity.AdminToken {
	return []identity.AdminToken{{ID: "0123456789ab", Name: "ci"}}
}

func (f *fakeAdminTokens) RevokeAdminToken(_ context.Context, id string) (identity.AdminToken, error) {
	if id != "0123456789ab" {
		return identity.AdminToken{}, fmt.Errorf("admin token %s: %w", id, identity.ErrAdminTokenNotFound)
	}
	return identity.AdminToken{ID: id, Name: "ci"}, nil
}

func TestAdminTokens(t *testing.T) {
	tokens := &fakeAdminTokens{}
	logger := slog.New(slog.DiscardHandler)
	mux := http.NewServeMux()
	api.New(logger, nil, adminOnly{}).WithAdminTokens(tokens).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	cases := []struct {
		name, method, path, token, body string
		status                          int
		want                            string // in the body
	}{
		{"create", "POST", "/v1/admin-tokens", "corral_admin_test", `{"name": "ci", "ttl": "720h"}`, 201, `"token": "corral_admin_new"`},
		{"create without expiry", "POST", "/v1/admin-tokens", "corral_admin_test", `{"name": "alice"}`, 201, `"name": "alice"`},
		{"list", "GET", "/v1/admin-tokens", "corral_admin_test", "", 200, `"id": "0123456789ab"`},
		{"revoke", "DELETE", "/v1/admin-tokens/0123456789ab", "corral_admin_test", "", 200, `"result": "revoked"`},
		{"revoke unknown", "DELETE", "/v1/admin-tokens/ffffffffffff", "corral_admin_test", "", 404, "no admin token"},
		{"unauthenticated", "POST", "/v1/admin-tokens", "", `{"name": "x"}`, 401, "unauthenticated"},
		{"wrong token", "GET", "/v1/admin-tokens", "corral_admin_guess", "", 401, "unauthenticated"},
		{"no name", "POST", "/v1/admin-tokens", "corral_admin_test", `{"ttl": "1h"}`, 400, "name"},
		{"name too long", "POST", "/v1/admin-tokens", "corral_admin_test", `{"name": "` + strings.Repeat("x", 65) + `"}`, 400, "name"},
		{"name with a control character", "POST", "/v1/admin-tokens", "corral_admin_test", `{"name": "a\u0007b"}`, 400, "name"},
		{"ttl not a duration", "POST", "/v1/admin-tokens", "corral_admin_test", `{"name": "x", "ttl": "forever"}`, 400, "ttl"},
		{"ttl too short", "POST", "/v1/admin-tokens", "corral_admin_test", `{"name": "x", "ttl": "1s"}`, 400, "ttl"},
		{"ttl too long", "POST", "/v1/admin-tokens", "corral_admin_test", `{"name": "x", "ttl": "9000h"}`, 400, "ttl"},
		{"ttl negative", "POST", "/v1/admin-tokens", "corral_admin_test", `{"name": "x", "ttl": "-1h"}`, 400, "ttl"},
		{"ttl a number", "POST", "/v1/admin-tokens", "corral_admin_test", `{"name": "x", "ttl": 3600}`, 400, "JSON"},
		{"body not JSON", "POST", "/v1/admin-tokens", "corral_admin_test", `name=x`, 400, "JSON"},
		{"wrong method", "PUT", "/v1/admin-tokens", "corral_admin_test", "", 405, "method"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), c.method, srv.URL+c.path, strings.NewReader(c.body))
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.status || !strings.Contains(string(body), c.want) {
				t.Errorf("%s %s = %d %s, want %d containing %q", c.method, c.path, resp.StatusCode, body, c.status, c.want)
			}
		})
	}
	if got := strings.Join(tokens.created, ","); got != "ci/720h0m0s,alice/0s" {
		t.Errorf("created %s, want ci/720h0m0s,alice/0s: no refused request may create one", got)
	}
}
