package console

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/audit"
)

// signInFrom posts credential to the console from remote.
func (w *world) signInFrom(t *testing.T, remote, credential string) answer {
	t.Helper()
	body, _ := json.Marshal(SignIn{Credential: credential})
	req := httptest.NewRequest("POST", "http://corral.example/ui/api/session", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = remote
	rec := httptest.NewRecorder()
	w.c.ServeHTTP(rec, req)
	return answer{rec.Code, rec.Header(), rec.Body.String()}
}

// jwtClaiming is a token-shaped credential claiming iss and sub, with no
// valid signature.
func jwtClaiming(iss, sub string) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims, _ := json.Marshal(map[string]string{"iss": iss, "sub": sub})
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(claims) + "." + enc([]byte("forged"))
}

// wantLimited checks a 429 rate_limited problem with Retry-After.
func wantLimited(t *testing.T, what string, a answer, retryAfter string) {
	t.Helper()
	var p struct{ Code string }
	_ = json.Unmarshal([]byte(a.body), &p)
	if a.status != http.StatusTooManyRequests || p.Code != "rate_limited" || a.header.Get("Content-Type") != "application/problem+json" ||
		a.header.Get("Retry-After") != retryAfter {
		t.Errorf("%s = %d %s %s (Retry-After %q), want 429 rate_limited problem+json with Retry-After %s",
			what, a.status, a.header.Get("Content-Type"), a.body, a.header.Get("Retry-After"), retryAfter)
	}
}

// TestSignInLimitPerAddress: signInBurst failed sign-ins from one address,
// on either of two replicas, and the next sign-in from it is refused before
// its credential is checked, a right one too; other addresses are not
// held back; one more try is let through each signInPeriod.
func TestSignInLimitPerAddress(t *testing.T) {
	a := newWorld(t)
	b := a.replica()
	const mallory = "192.0.2.66:40000"
	for i := range signInBurst {
		w := a
		if i%2 == 1 {
			w = b // the replicas count together
		}
		if r := w.signInFrom(t, mallory, fmt.Sprintf("corral_hk_guess%d", i)); r.status != http.StatusUnauthorized {
			t.Fatalf("failed sign-in %d = %d %s, want 401", i+1, r.status, r.body)
		}
	}
	wantLimited(t, "a wrong key past the limit", a.signInFrom(t, mallory, "corral_hk_guess"), "60")
	wantLimited(t, "the right key from that address on the other replica", b.signInFrom(t, "192.0.2.66:40001", aliceKey), "60")
	// IPv4-mapped, the same host.
	wantLimited(t, "the same host in IPv6 form", a.signInFrom(t, "[::ffff:192.0.2.66]:1", aliceKey), "60")
	if r := a.signInFrom(t, "192.0.2.7:1234", aliceKey); r.status != http.StatusOK {
		t.Errorf("another address's sign-in = %d %s, want 200", r.status, r.body)
	}
	a.now = a.now.Add(signInPeriod)
	if r := a.signInFrom(t, mallory, aliceKey); r.status != http.StatusOK {
		t.Errorf("a period later, the right key = %d %s, want 200", r.status, r.body)
	}
	if r := a.signInFrom(t, mallory, "corral_hk_again"); r.status != http.StatusUnauthorized {
		t.Errorf("a period later, one wrong key = %d, want 401", r.status)
	}
	wantLimited(t, "a second try within the period", a.signInFrom(t, mallory, aliceKey), "60")
}

// TestSignInLimitPerName: failed sign-ins claiming one name from many
// addresses (a token with a forged signature) are limited for that name;
// the same addresses may still try others.
func TestSignInLimitPerName(t *testing.T) {
	w := newWorld(t)
	forged := jwtClaiming("https://login.example", "uma")
	for i := range signInBurst {
		remote := fmt.Sprintf("198.51.100.%d:5000", i+1)
		if r := w.signInFrom(t, remote, forged); r.status != http.StatusUnauthorized {
			t.Fatalf("failed sign-in %d = %d %s, want 401", i+1, r.status, r.body)
		}
	}
	wantLimited(t, "the same name from a new address", w.signInFrom(t, "203.0.113.9:1", jwtClaiming("https://login.example", "uma")), "60")
	if r := w.signInFrom(t, "203.0.113.9:1", jwtClaiming("https://login.example", "victor")); r.status != http.StatusUnauthorized {
		t.Errorf("another name from the same new address = %d %s, want 401 (not limited)", r.status, r.body)
	}
}

// TestSignInLimitIPv6: an IPv6 host holds a whole /64; it counts as one.
func TestSignInLimitIPv6(t *testing.T) {
	w := newWorld(t)
	for i := range signInBurst {
		remote := fmt.Sprintf("[2001:db8:1:2::%x]:443", i+1)
		if r := w.signInFrom(t, remote, "corral_hk_guess"); r.status != http.StatusUnauthorized {
			t.Fatalf("failed sign-in %d = %d %s", i+1, r.status, r.body)
		}
	}
	wantLimited(t, "another address of the /64", w.signInFrom(t, "[2001:db8:1:2:ffff::1]:443", aliceKey), "60")
	if r := w.signInFrom(t, "[2001:db8:1:3::1]:443", aliceKey); r.status != http.StatusOK {
		t.Errorf("another /64 = %d, want 200", r.status)
	}
}

// fakeAudit keeps what the console appends.
type fakeAudit struct {
	mu      sync.Mutex
	records []audit.Record
}

func (f *fakeAudit) Append(_ context.Context, r *audit.Record) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.records = append(f.records, *r)
	return "aud_1", nil
}

// TestFailedSignInsAudited: a refused sign-in leaves an audit record, and a
// flood of them leaves no more than the bound on unauthenticated refusals
// per address allows, the rest counted.
func TestFailedSignInsAudited(t *testing.T) {
	w := newWorld(t)
	rec := &fakeAudit{}
	refusals := &audit.Refusals{}
	w.c = w.console(w, func(o *Options) { o.Audit, o.Refusals = rec, refusals })

	w.signInFrom(t, "192.0.2.1:1", jwtClaiming("https://login.example", "uma"))
	if len(rec.records) != 1 {
		t.Fatalf("one failed sign-in left %d records", len(rec.records))
	}
	r := rec.records[0]
	if r.Kind != "console" || r.Target != "sign-in" || r.Decision != "denied" || r.Code != "unauthenticated" || r.Remote != "192.0.2.1:1" ||
		r.Agent != "" || !strings.Contains(r.Reason, "https://login.example uma") {
		t.Errorf("record = %+v, want a console sign-in denied as unauthenticated from 192.0.2.1:1 naming the claimed uma", r)
	}

	const flood = 200
	for range flood {
		w.signInFrom(t, "192.0.2.2:1", "corral_hk_guess")
	}
	var unauthenticated, limited int
	for _, r := range rec.records[1:] {
		switch r.Code {
		case "unauthenticated":
			unauthenticated++
		case "rate_limited":
			limited++
		}
	}
	stored := len(rec.records) - 1
	if unauthenticated != signInBurst || limited == 0 || stored > int(audit.RefusalBurst)+1 {
		t.Errorf("%d refused sign-ins left %d records (%d unauthenticated, %d rate_limited), want %d unauthenticated and at most %d in all",
			flood, stored, unauthenticated, limited, signInBurst, int(audit.RefusalBurst)+1)
	}
	if got := refusals.Suppressed(); got != uint64(flood-stored) {
		t.Errorf("suppressed = %d, want the %d not stored", got, flood-stored)
	}
	// A successful sign-in is not a refusal.
	before := len(rec.records)
	if a := w.signInFrom(t, "192.0.2.3:1", aliceKey); a.status != http.StatusOK || len(rec.records) != before {
		t.Errorf("a sign-in = %d and %d new records, want 200 and none", a.status, len(rec.records)-before)
	}
}

func TestClaimedName(t *testing.T) {
	for _, tt := range []struct {
		credential, want string
	}{
		{jwtClaiming("https://login.example", "uma"), "https://login.example uma"},
		{jwtClaiming("", "uma"), " uma"},
		{jwtClaiming("https://login.example", ""), ""},
		{aliceKey, ""},
		{adminToken, ""},
		{"a.b.c", ""},
		{"a." + base64.RawURLEncoding.EncodeToString([]byte(`["sub"]`)) + ".c", ""},
		{"a." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"`+strings.Repeat("x", 2000)+`"}`)) + ".c", " " + strings.Repeat("x", maxClaimedName-1)},
	} {
		if got := claimedName(tt.credential); got != tt.want {
			t.Errorf("claimedName(%.40q) = %.40q, want %.40q", tt.credential, got, tt.want)
		}
	}
}

// TestSignInLimitWindow: a counter left alone drains: after signInWindow
// the whole burst is available again.
func TestSignInLimitWindow(t *testing.T) {
	w := newWorld(t)
	for range signInBurst {
		w.signInFrom(t, "192.0.2.9:1", "corral_hk_guess")
	}
	wantLimited(t, "past the burst", w.signInFrom(t, "192.0.2.9:1", aliceKey), "60")
	w.now = w.now.Add(signInWindow + time.Second)
	for i := range signInBurst {
		if r := w.signInFrom(t, "192.0.2.9:1", "corral_hk_guess"); r.status != http.StatusUnauthorized {
			t.Fatalf("after the window, failure %d = %d, want 401", i+1, r.status)
		}
	}
}
