package app_test

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
)

// TestTrustedProxiesWired: the server resolves the client behind a trusted
// proxy (here loopback, the test's own address) before the console counts
// failed sign-ins, so two browsers behind it have a limit each.
func TestTrustedProxiesWired(t *testing.T) {
	s := apptest.StartWith(t, app.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	signIn := func(client string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), "POST", s.URL+"/ui/api/session", strings.NewReader(`{"credential":"corral_hk_guess"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", client)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 10 {
		if got := signIn("203.0.113.1"); got != http.StatusUnauthorized {
			t.Fatalf("failed sign-in %d = %d, want 401", i+1, got)
		}
	}
	if got := signIn("203.0.113.1"); got != http.StatusTooManyRequests {
		t.Errorf("sign-in past the limit = %d, want 429", got)
	}
	if got := signIn("203.0.113.2"); got != http.StatusUnauthorized {
		t.Errorf("another browser behind the proxy = %d, want 401 (its own limit)", got)
	}
}
