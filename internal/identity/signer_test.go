package identity

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
)

const testIssuer = "https://corral.test"

// clock is a settable clock for SignerOptions.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// openSigner opens a Signer on b with its keys in dir.
func openTestSigner(t testing.TB, b *bus.Bus, dir string, opts SignerOptions) *Signer {
	t.Helper()
	if opts.Issuer == "" {
		opts.Issuer = testIssuer
	}
	s, err := OpenSigner(t.Context(), slog.New(slog.DiscardHandler), b, dir, opts)
	if err != nil {
		t.Fatalf("OpenSigner: %v", err)
	}
	return s
}

// runSigner runs s until the test ends and waits for its keys to load.
func runSigner(t *testing.T, s *Signer) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Run(t.Context()) }()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if err := s.WaitLoaded(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// eventually waits for a change to reach a replica through its watch.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // generous: CI runs loaded, with the race detector
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// jwksKIDs returns the kids a JWKS lists, checking every key's shape.
func jwksKIDs(t *testing.T, jwks []byte) []string {
	t.Helper()
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatalf("JWKS() = %s: %v", jwks, err)
	}
	var kids []string
	for _, k := range set.Keys {
		kid, _ := k["kid"].(string)
		want := map[string]any{"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid, "x": k["x"]}
		if diff := cmp.Diff(want, k); diff != "" || kid == "" {
			t.Errorf("JWKS key %s (-want +got):\n%s", kid, diff)
		}
		kids = append(kids, kid)
	}
	return kids
}

// tokenHeader decodes a token's header.
func tokenHeader(t *testing.T, token string) map[string]any {
	t.Helper()
	h, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatalf("header of %q: %v", token, err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("header of %q: %v", token, err)
	}
	return m
}

func TestOpenSignerCreatesKey(t *testing.T) {
	dir := t.TempDir()
	s := openTestSigner(t, bustest.Open(t), dir, SignerOptions{})
	keys := s.Keys()
	if len(keys) != 1 || !keys[0].Signing || !keys[0].Local || keys[0].Algorithm != "EdDSA" || keys[0].Retires != nil {
		t.Fatalf("Keys() = %+v, want one local signing EdDSA key", keys)
	}
	kid := keys[0].ID
	if got := jwksKIDs(t, s.JWKS()); len(got) != 1 || got[0] != kid {
		t.Errorf("JWKS() kids = %v, want [%s]", got, kid)
	}
	if strings.Contains(string(s.JWKS()), `"d"`) {
		t.Errorf("JWKS() = %s: holds a private key", s.JWKS())
	}
	path := filepath.Join(dir, SigningKeysDir, kid+".jwk")
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode = %v, want 0600", mode)
	}
	if info, err := os.Stat(filepath.Dir(path)); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("key directory = %v, %v; want mode 0700", info.Mode().Perm(), err)
	}
	if s.Issuer() != testIssuer {
		t.Errorf("Issuer() = %q, want %q", s.Issuer(), testIssuer)
	}
}

func TestOpenSignerNeedsIssuer(t *testing.T) {
	_, err := OpenSigner(t.Context(), slog.New(slog.DiscardHandler), bustest.Open(t), t.TempDir(), SignerOptions{})
	if err == nil {
		t.Fatal("OpenSigner without an issuer succeeded")
	}
}

func TestOpenSignerRestartKeepsKey(t *testing.T) {
	b, dir := bustest.Open(t), t.TempDir()
	first := openTestSigner(t, b, dir, SignerOptions{})
	token, err := first.Mint(Claims{Subject: "a", ClientID: "a"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	second := openTestSigner(t, b, dir, SignerOptions{})
	if got, want := second.Keys(), first.Keys(); len(got) != 1 || got[0].ID != want[0].ID {
		t.Errorf("Keys() after restart = %+v, want %+v", got, want)
	}
	if _, err := second.Verify(token, ""); err != nil {
		t.Errorf("Verify(token from before the restart) = %v", err)
	}
}

func TestMint(t *testing.T) {
	clk := newClock()
	s := openTestSigner(t, bustest.Open(t), t.TempDir(), SignerOptions{MaxTTL: 10 * time.Minute, Now: clk.now})
	now := clk.now().Unix()
	tests := []struct {
		name    string
		claims  Claims
		ttl     time.Duration
		wantTTL int64
		wantAud Audience
		wantTyp string
	}{
		{"access token", Claims{Subject: "a", ClientID: "a"}, 5 * time.Minute, 300, Audience{testIssuer}, "at+jwt"},
		{"capped at MaxTTL", Claims{Subject: "a", ClientID: "a"}, time.Hour, 600, Audience{testIssuer}, "at+jwt"},
		{"zero ttl is MaxTTL", Claims{Subject: "a", ClientID: "a"}, 0, 600, Audience{testIssuer}, "at+jwt"},
		{"under a second is a second", Claims{Subject: "a", ClientID: "a"}, time.Millisecond, 1, Audience{testIssuer}, "at+jwt"},
		{"other audience", Claims{Subject: "u", ClientID: "a", Audience: Audience{"https://tool"}}, time.Minute, 60, Audience{"https://tool"}, "JWT"},
		{"delegated", Claims{Subject: "u", ClientID: "a", Act: &Actor{Subject: "a"}, Scope: "tool:x", Task: "t1",
			Principal: &PrincipalClaims{Issuer: "https://idp", Groups: []string{"g"}}}, time.Minute, 60, Audience{testIssuer}, "at+jwt"},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := s.Mint(tt.claims, tt.ttl)
			if err != nil {
				t.Fatalf("Mint(%+v) = %v", tt.claims, err)
			}
			h := tokenHeader(t, token)
			if h["alg"] != "EdDSA" || h["typ"] != tt.wantTyp || h["kid"] != s.Keys()[0].ID {
				t.Errorf("Mint header = %v, want EdDSA, typ %s, kid %s", h, tt.wantTyp, s.Keys()[0].ID)
			}
			got, err := s.Verify(token, tt.wantAud[0])
			if err != nil {
				t.Fatalf("Verify(Mint(%+v)) = %v", tt.claims, err)
			}
			want := tt.claims
			want.Issuer, want.Audience = testIssuer, tt.wantAud
			want.IssuedAt, want.NotBefore, want.Expiry, want.ID = now, now, now+tt.wantTTL, got.ID
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("Verify(Mint(%+v)) (-want +got):\n%s", tt.claims, diff)
			}
			if len(got.ID) < 20 || seen[got.ID] {
				t.Errorf("Mint jti = %q: want a fresh random id", got.ID)
			}
			seen[got.ID] = true
		})
	}
	for _, c := range []Claims{{ClientID: "a"}, {Subject: "a"}} {
		if _, err := s.Mint(c, time.Minute); err == nil {
			t.Errorf("Mint(%+v) = nil error, want sub and client_id required", c)
		}
	}
}

func TestRotate(t *testing.T) {
	clk := newClock()
	b, dir := bustest.Open(t), t.TempDir()
	s := openTestSigner(t, b, dir, SignerOptions{MaxTTL: 5 * time.Minute, Now: clk.now})
	old := s.Keys()[0]
	before, err := s.Mint(Claims{Subject: "a", ClientID: "a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	next, err := s.Rotate(t.Context())
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if next.ID == old.ID || !next.Signing || !next.Local {
		t.Errorf("Rotate() = %+v, want a new local signing key", next)
	}
	keys := s.Keys()
	wantRetires := clk.now().Add(6 * time.Minute)
	if len(keys) != 2 || keys[0].ID != old.ID || keys[0].Signing || keys[0].Retires == nil ||
		keys[0].Retires.Sub(wantRetires).Abs() > time.Millisecond || keys[1].ID != next.ID || !keys[1].Signing {
		t.Errorf("Keys() after Rotate = %+v, want %s retiring at %v, then %s signing", keys, old.ID, wantRetires, next.ID)
	}
	if got := jwksKIDs(t, s.JWKS()); !cmp.Equal(got, []string{old.ID, next.ID}) {
		t.Errorf("JWKS() kids = %v, want [%s %s]", got, old.ID, next.ID)
	}
	after, err := s.Mint(Claims{Subject: "a", ClientID: "a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if kid := tokenHeader(t, after)["kid"]; kid != next.ID {
		t.Errorf("Mint after Rotate: kid %v, want %s", kid, next.ID)
	}
	if _, err := s.Verify(before, ""); err != nil {
		t.Errorf("Verify(token from before Rotate) = %v", err)
	}

	// The restarted replica keeps signing with the new key.
	if got := openTestSigner(t, b, dir, SignerOptions{MaxTTL: 5 * time.Minute, Now: clk.now}).Keys(); len(got) != 2 || !got[1].Signing || got[1].ID != next.ID {
		t.Errorf("Keys() after restart = %+v, want %s signing", got, next.ID)
	}

	// Past MaxTTL+1m, the old key has retired everywhere.
	clk.advance(6*time.Minute + time.Second)
	if _, err := s.Verify(before, ""); ReasonOf(err) != ReasonUnknownKey {
		t.Errorf("Verify(token of a retired key) = %v, want %s", err, ReasonUnknownKey)
	}
	if got := jwksKIDs(t, s.JWKS()); !cmp.Equal(got, []string{next.ID}) {
		t.Errorf("JWKS() kids after retirement = %v, want [%s]", got, next.ID)
	}
	if got := s.Keys(); len(got) != 1 || got[0].ID != next.ID {
		t.Errorf("Keys() after retirement = %+v, want only %s", got, next.ID)
	}
	s.prune(t.Context())
	if _, err := os.Stat(filepath.Join(dir, SigningKeysDir, old.ID+".jwk")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("retired key file: stat = %v, want it gone", err)
	}
	if _, err := os.Stat(filepath.Join(dir, SigningKeysDir, next.ID+".jwk")); err != nil {
		t.Errorf("signing key file: %v", err)
	}
	if _, err := s.kv.Get(t.Context(), old.ID); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("retired key in the bucket: Get = %v, want %v", err, jetstream.ErrKeyNotFound)
	}
	if _, err := s.Verify(mustMint(t, s), ""); err != nil {
		t.Errorf("Verify(token of the new key) = %v", err)
	}
}

func TestSignersShareKeys(t *testing.T) {
	b := bustest.Open(t)
	a := openTestSigner(t, b, t.TempDir(), SignerOptions{})
	c := openTestSigner(t, b, t.TempDir(), SignerOptions{})
	runSigner(t, a)
	runSigner(t, c)
	kidA, kidC := signingKID(a), signingKID(c)
	if kidA == kidC {
		t.Fatalf("two replicas made the same key %s", kidA)
	}
	for _, s := range []*Signer{a, c} {
		if got := jwksKIDs(t, s.JWKS()); len(got) != 2 {
			t.Errorf("JWKS() kids = %v, want both replicas' keys", got)
		}
		if keys := s.Keys(); len(keys) != 2 || keys[0].Local == keys[1].Local {
			t.Errorf("Keys() = %+v, want one local and one remote key", keys)
		}
	}
	for _, pair := range [][2]*Signer{{a, c}, {c, a}} {
		token, err := pair[0].Mint(Claims{Subject: "x", ClientID: "x"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pair[1].Verify(token, ""); err != nil {
			t.Errorf("Verify(the other replica's token) = %v", err)
		}
	}

	// A rotation on one replica reaches the other through the bucket.
	next, err := a.Rotate(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	token, err := a.Mint(Claims{Subject: "x", ClientID: "x"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rotated key reaches the other replica", func() bool {
		_, err := c.Verify(token, "")
		return err == nil
	})
	if got := jwksKIDs(t, c.JWKS()); len(got) != 3 || !strings.Contains(string(c.JWKS()), next.ID) {
		t.Errorf("JWKS() kids after the other's rotation = %v, want 3 with %s", got, next.ID)
	}
	eventually(t, "the other replica sees the old key retiring", func() bool {
		for _, k := range c.Keys() {
			if k.ID == kidA {
				return k.Retires != nil
			}
		}
		return false
	})
}

// signingKID returns the kid s signs with.
func signingKID(s *Signer) string {
	for _, k := range s.Keys() {
		if k.Signing {
			return k.ID
		}
	}
	return ""
}

func TestIdentityToken(t *testing.T) {
	clk := newClock()
	s := openTestSigner(t, bustest.Open(t), t.TempDir(), SignerOptions{Now: clk.now})
	c := Claims{Subject: "user", ClientID: "agent", Act: &Actor{Subject: "agent"}, Task: "t1", Scope: "tool:x"}

	first, err := s.IdentityToken("https://tool", c, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Verify(first, "https://tool")
	if err != nil {
		t.Fatalf("Verify(IdentityToken) = %v", err)
	}
	if got.Expiry-got.IssuedAt != 60 || got.Subject != "user" || got.Act.Subject != "agent" {
		t.Errorf("IdentityToken claims = %+v, want a 60s token for user acted by agent", got)
	}
	if _, err := s.Verify(first, ""); ReasonOf(err) != ReasonWrongAudience {
		t.Errorf("Verify(identity token, corral) = %v, want %s", err, ReasonWrongAudience)
	}
	if typ := tokenHeader(t, first)["typ"]; typ != "JWT" {
		t.Errorf("identity token typ = %v, want JWT", typ)
	}

	again, _ := s.IdentityToken("https://tool", c, 0)
	if again != first {
		t.Error("IdentityToken signed again instead of reusing a fresh token")
	}
	others := map[string]Claims{
		"task":  {Subject: "user", ClientID: "agent", Act: &Actor{Subject: "agent"}, Task: "t2", Scope: "tool:x"},
		"act":   {Subject: "user", ClientID: "agent", Act: &Actor{Subject: "agent", Act: &Actor{Subject: "b"}}, Task: "t1", Scope: "tool:x"},
		"scope": {Subject: "user", ClientID: "agent", Act: &Actor{Subject: "agent"}, Task: "t1", Scope: "tool:y"},
		"sub":   {Subject: "other", ClientID: "agent", Act: &Actor{Subject: "agent"}, Task: "t1", Scope: "tool:x"},
	}
	for name, oc := range others {
		if tok, _ := s.IdentityToken("https://tool", oc, 0); tok == first {
			t.Errorf("IdentityToken with another %s reused the token", name)
		}
	}
	if tok, _ := s.IdentityToken("https://other-tool", c, 0); tok == first {
		t.Error("IdentityToken for another audience reused the token")
	}

	clk.advance(29 * time.Second)
	if tok, _ := s.IdentityToken("https://tool", c, 0); tok != first {
		t.Error("IdentityToken with more than half its ttl left was not reused")
	}
	clk.advance(2 * time.Second)
	renewed, _ := s.IdentityToken("https://tool", c, 0)
	if renewed == first {
		t.Error("IdentityToken with less than half its ttl left was reused")
	}

	for _, aud := range []string{"", testIssuer} {
		if _, err := s.IdentityToken(aud, c, 0); err == nil {
			t.Errorf("IdentityToken(%q) = nil error, want refused", aud)
		}
	}
}

func TestIdentityTokenCacheBounded(t *testing.T) {
	clk := newClock()
	s := openTestSigner(t, bustest.Open(t), t.TempDir(), SignerOptions{Now: clk.now})
	// Fill the cache as many distinct calls would: half of it stale.
	for i := range maxCachedTokens {
		exp := clk.now().Add(time.Minute)
		if i%2 == 0 {
			exp = clk.now().Add(time.Second)
		}
		s.cache[fmt.Sprint("key", i)] = cachedToken{token: "t", exp: exp, ttl: time.Minute}
	}
	c := Claims{Subject: "u", ClientID: "a"}
	if _, err := s.IdentityToken("https://tool", c, 0); err != nil {
		t.Fatal(err)
	}
	if n := len(s.cache); n != maxCachedTokens/2+1 {
		t.Errorf("cache holds %d tokens, want the %d fresh ones and the new one", n, maxCachedTokens/2)
	}
	// Full of fresh tokens, the cache still makes room.
	for i := range maxCachedTokens {
		s.cache[fmt.Sprint("fresh", i)] = cachedToken{token: "t", exp: clk.now().Add(time.Minute), ttl: time.Minute}
	}
	if _, err := s.IdentityToken("https://tool", Claims{Subject: "v", ClientID: "a"}, 0); err != nil {
		t.Fatal(err)
	}
	if n := len(s.cache); n > maxCachedTokens {
		t.Errorf("cache holds %d tokens, want at most %d", n, maxCachedTokens)
	}
}

// TestVerifyCache: a token verified once is answered from the cache, but
// the cache never outlives the token's lifetime, its audience, or its key.
func TestVerifyCache(t *testing.T) {
	clk := newClock()
	s := openTestSigner(t, bustest.Open(t), t.TempDir(), SignerOptions{MaxTTL: 5 * time.Minute, Now: clk.now})
	token, err := s.Mint(Claims{Subject: "a", ClientID: "a"}, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.Verify(token, ""); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	}
	if _, err := s.Verify(token, "https://elsewhere"); ReasonOf(err) != ReasonWrongAudience {
		t.Errorf("cached token for another audience: %v, want wrong_audience", err)
	}
	clk.advance(3 * time.Minute)
	if _, err := s.Verify(token, ""); ReasonOf(err) != ReasonExpired {
		t.Errorf("cached token past its expiry: %v, want expired", err)
	}
	fresh, err := s.Mint(Claims{Subject: "b", ClientID: "b"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(fresh, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rotate(t.Context()); err != nil {
		t.Fatal(err)
	}
	clk.advance(10 * time.Minute) // past the old key's retirement
	if _, err := s.Verify(fresh, ""); err == nil {
		t.Error("a cached token whose key retired still verifies")
	}
}
