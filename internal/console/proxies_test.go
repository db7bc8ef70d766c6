package console

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/forwarded"
)

// signInVia posts credential to the console, as corral's server does: the
// client's address resolved by h (forwarded.Proxies) first. The request
// comes from peer and carries xff as its X-Forwarded-For, if any.
func (w *world) signInVia(t *testing.T, h http.Handler, peer, xff, credential string) answer {
	t.Helper()
	body, _ := json.Marshal(SignIn{Credential: credential})
	req := httptest.NewRequest("POST", "http://corral.example/ui/api/session", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	if xff != "" {
		req.Header.Set(forwarded.Header, xff)
	}
	req.RemoteAddr = peer
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return answer{rec.Code, rec.Header(), rec.Body.String()}
}

// TestSignInLimitBehindTrustedProxy: behind a trusted proxy, two browsers
// have a failed sign-in limit each, and the audit names the client; a
// stranger reaching corral directly cannot pick its address with
// X-Forwarded-For, so a spoofed header changes nothing.
func TestSignInLimitBehindTrustedProxy(t *testing.T) {
	w := newWorld(t)
	rec := &fakeAudit{}
	w.c = w.console(w, func(o *Options) { o.Audit, o.Refusals = rec, &audit.Refusals{} })
	h := forwarded.New([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}).Handler(w.c)
	const proxy = "10.0.0.2:41000"

	// Mallory, behind the proxy, fails until she is held back, lying about
	// her address to the left of what the proxy appends.
	for i := range signInBurst {
		if r := w.signInVia(t, h, proxy, "192.0.2.200, 198.51.100.66", "corral_hk_guess"); r.status != http.StatusUnauthorized {
			t.Fatalf("failed sign-in %d through the proxy = %d %s, want 401", i+1, r.status, r.body)
		}
	}
	wantLimited(t, "mallory through the proxy", w.signInVia(t, h, proxy, "198.51.100.66", aliceKey), "60")
	if got := rec.records[0].Remote; got != "198.51.100.66:0" {
		t.Errorf("audited remote = %q, want mallory's 198.51.100.66:0", got)
	}
	// Alice, behind the same proxy, is not.
	if r := w.signInVia(t, h, proxy, "203.0.113.7", aliceKey); r.status != http.StatusOK {
		t.Errorf("alice through the same proxy = %d %s, want 200", r.status, r.body)
	}

	// A stranger reaching corral directly fails until held back; naming
	// another address in the header, or a trusted one, does not free it.
	const stranger = "192.0.2.99:5000"
	for i := range signInBurst {
		if r := w.signInVia(t, h, stranger, "203.0.113.1", "corral_hk_guess"); r.status != http.StatusUnauthorized {
			t.Fatalf("failed sign-in %d from the stranger = %d %s, want 401", i+1, r.status, r.body)
		}
	}
	wantLimited(t, "the stranger claiming another address", w.signInVia(t, h, stranger, "203.0.113.2", aliceKey), "60")
	wantLimited(t, "the stranger claiming the proxy", w.signInVia(t, h, stranger, "10.0.0.2", aliceKey), "60")
	if got := rec.records[len(rec.records)-1].Remote; got != stranger {
		t.Errorf("audited remote = %q, want the stranger's own %s", got, stranger)
	}
	// Nor did the stranger's spoofed header spend 203.0.113.1's limit.
	if r := w.signInVia(t, h, proxy, "203.0.113.1", aliceKey); r.status != http.StatusOK {
		t.Errorf("the address the stranger named, through the proxy = %d %s, want 200", r.status, r.body)
	}
}
