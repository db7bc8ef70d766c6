package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity/oidctest"
)

const testAudience = "corral"

// fakeRegistry is an IssuerResources whose resources the test sets.
type fakeRegistry struct {
	mu      sync.Mutex
	res     []config.Resource
	changed chan struct{}
}

func newRegistry(res ...config.Resource) *fakeRegistry {
	return &fakeRegistry{res: res, changed: make(chan struct{})}
}

func (f *fakeRegistry) List(kind string) []config.Resource {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []config.Resource
	for _, r := range f.res {
		if r.Kind == kind {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeRegistry) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeRegistry) set(res ...config.Resource) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.res = res
	close(f.changed)
	f.changed = make(chan struct{})
}

func issuerResource(t testing.TB, name string, spec config.IssuerSpec) config.Resource {
	t.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return config.Resource{APIVersion: "corral.dev/v1", Kind: "Issuer", Metadata: config.Metadata{Name: name}, Spec: raw}
}

// newTestIssuers trusts each provider under the name idp-<n>, with the
// clock clk.
func newTestIssuers(t testing.TB, clk *clock, res ...config.Resource) *Issuers {
	t.Helper()
	is := NewIssuers(slog.New(slog.DiscardHandler), newRegistry(res...), nil)
	is.now = clk.now
	return is
}

// userClaims are valid claims for a user's token from p.
func userClaims(p *oidctest.Provider, now time.Time) map[string]any {
	return map[string]any{
		"iss": p.URL(), "aud": testAudience, "sub": "user-1",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"groups": []string{"eng"},
	}
}

// issuerCases builds the table against a provider that has rotated once
// (old holds a token of its previous keys) and one that is down.
func issuerCases(t testing.TB, p, down *oidctest.Provider, old string, now time.Time) []verifyCase {
	t.Helper()
	valid := userClaims(p, now)
	good := p.Token(t, valid)
	rsaKID, _ := tokenHeaderMap(good)["kid"].(string)
	cases := []verifyCase{
		{"valid", good, "", ""},
		{"aud as a list", p.Token(t, with(valid, map[string]any{"aud": []string{"other", testAudience}})), "", ""},
		{"no nbf or iat", p.Token(t, withNil(valid, "nbf", "iat")), "", ""},
		{"expired within leeway", p.Token(t, with(valid, map[string]any{"exp": now.Unix() - 20})), "", ""},
		{"exp a fraction", p.Token(t, with(valid, map[string]any{"exp": float64(now.Unix()) + 60.5})), "", ""},

		{"expired", p.Token(t, with(valid, map[string]any{"exp": now.Unix() - 31})), "", ReasonExpired},
		{"nbf in the future", p.Token(t, with(valid, map[string]any{"nbf": now.Unix() + 31})), "", ReasonNotYetValid},
		{"iat in the future", p.Token(t, with(valid, map[string]any{"iat": now.Unix() + 3600, "nbf": nil})), "", ReasonNotYetValid},
		{"wrong audience", p.Token(t, with(valid, map[string]any{"aud": "someone-else"})), "", ReasonWrongAudience},
		{"no audience", p.Token(t, with(valid, map[string]any{"aud": nil})), "", ReasonWrongAudience},
		{"untrusted issuer", p.Token(t, with(valid, map[string]any{"iss": "https://evil.test"})), "", ReasonWrongIssuer},
		{"no issuer", p.Token(t, with(valid, map[string]any{"iss": ""})), "", ReasonWrongIssuer},

		{"tampered payload", tamper(good, with(valid, map[string]any{"sub": "admin"})), "", ReasonBadSignature},
		{"tampered header", retitle(good, map[string]any{"alg": "RS256", "kid": rsaKID, "typ": "at+jwt"}), "", ReasonBadSignature},
		{"RS256 signature under PS256", retitle(good, map[string]any{"alg": "PS256", "kid": rsaKID, "typ": "JWT"}), "", ReasonBadSignature},

		{"alg none", p.SignWith(t, "none", valid), "", ReasonAlgNone},
		{"alg NONE with a signature", retitle(good, map[string]any{"alg": "NONE", "kid": rsaKID}), "", ReasonAlgNone},
		{"HS256 keyed with the public key PEM", p.SignWith(t, "HS256-with-public-key", valid), "", ReasonAlgNotAllowed},
		{"HS256 keyed with the public JWK", p.SignWith(t, "HS256-with-public-jwk", valid), "", ReasonAlgNotAllowed},
		{"HS256 with an oct key in the JWKS", p.SignWith(t, "HS256", valid), "", ReasonAlgNotAllowed},
		{"PS384", p.SignWith(t, "PS384", valid), "", ReasonAlgNotAllowed},
		{"ES256 header on the RSA key", retitle(good, map[string]any{"alg": "ES256", "kid": rsaKID}), "", ReasonAlgNotAllowed},

		{"unknown kid", old, "", ReasonUnknownKey},

		{"empty", "", "", ReasonMalformed},
		{"one part", "abc", "", ReasonMalformed},
		{"header not JSON", "bm9wZQ.e30.x", "", ReasonMalformed},
		{"larger than 16 KiB", p.Token(t, with(valid, map[string]any{"pad": strings.Repeat("x", 17<<10)})), "", ReasonMalformed},
		{"payload not JSON", oidctest.Compact(map[string]any{"alg": "RS256", "kid": rsaKID}, []byte("nope"), []byte("x")), "", ReasonMalformed},
		{"exp a string", p.Token(t, with(valid, map[string]any{"exp": "tomorrow"})), "", ReasonMalformed},
		{"groups not strings", p.Token(t, with(valid, map[string]any{"groups": []any{"eng", 7}})), "", ReasonMalformed},
		{"groups an object", p.Token(t, with(valid, map[string]any{"groups": map[string]any{"a": 1}})), "", ReasonMalformed},

		{"no sub", p.Token(t, with(valid, map[string]any{"sub": nil})), "", ReasonMissingClaim},
		{"sub a number", p.Token(t, with(valid, map[string]any{"sub": 42})), "", ReasonMissingClaim},
		{"no exp", p.SignWith(t, "ES256", withNil(valid, "exp")), "", ReasonMissingClaim},
		{"exp null", p.SignWith(t, "ES256", with(valid, map[string]any{"exp": json.RawMessage("null")})), "", ReasonMalformed},

		{"issuer down", down.Token(t, with(valid, map[string]any{"iss": down.URL()})), "", ReasonIssuerDown},
	}
	for _, alg := range []string{"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"} {
		cases = append(cases, verifyCase{"valid " + alg, p.SignWith(t, alg, valid), "", ""})
	}
	return cases
}

// withNil returns a copy of m with the claims named set to nil, which
// oidctest leaves out of the token instead of filling them.
func withNil(m map[string]any, names ...string) map[string]any {
	out := maps.Clone(m)
	for _, n := range names {
		out[n] = nil
	}
	return out
}

func tokenHeaderMap(token string) map[string]any {
	h, _, _ := strings.Cut(token, ".")
	raw, _ := b64.DecodeString(h)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return m
}

func TestIssuersVerify(t *testing.T) {
	clk := newClock()
	p := oidctest.Start(t, oidctest.PublishSymmetricKey())
	down := oidctest.Start(t)
	down.SetDown(true)
	old := p.Token(t, userClaims(p, clk.now()))
	p.Rotate(t)
	is := newTestIssuers(t, clk,
		issuerResource(t, "idp", config.IssuerSpec{Issuer: p.URL(), Audience: testAudience}),
		issuerResource(t, "down", config.IssuerSpec{Issuer: down.URL(), Audience: testAudience}))
	for _, tt := range issuerCases(t, p, down, old, clk.now()) {
		t.Run(tt.name, func(t *testing.T) {
			ext, err := is.Verify(t.Context(), tt.token)
			if got := ReasonOf(err); got != tt.want {
				t.Fatalf("Verify(%.60s...) = %v, want reason %q", tt.token, err, tt.want)
			}
			if err != nil {
				var te *TokenError
				if !errors.As(err, &te) || te.Detail == "" || ext != nil {
					t.Errorf("Verify(%.60s...) = %v, %v: want a *TokenError with a detail and no result", tt.token, ext, err)
				}
				return
			}
			if ext.Subject != "user-1" || ext.IssuerName != "idp" || ext.Issuer != p.URL() || ext.Expiry == 0 {
				t.Errorf("Verify(%.60s...) = %+v, want user-1 of idp", tt.token, ext)
			}
		})
	}
	if p.JWKSRequests() != 1 {
		t.Errorf("the table fetched the JWKS %d times, want 1 (keys cached, refetch limited)", p.JWKSRequests())
	}
}

func TestIssuersClaims(t *testing.T) {
	clk := newClock()
	p := oidctest.Start(t)
	tests := []struct {
		name   string
		claims config.IssuerClaims
		token  map[string]any
		want   External
	}{
		{
			name:  "defaults",
			token: map[string]any{"sub": "u1", "groups": []string{"eng", "ops"}, "roles": "admin"},
			want:  External{Subject: "u1", Groups: []string{"eng", "ops"}, Roles: []string{"admin"}},
		},
		{
			name:  "absent groups and roles",
			token: map[string]any{"sub": "u1"},
			want:  External{Subject: "u1"},
		},
		{
			name:   "keycloak",
			claims: config.IssuerClaims{Subject: "preferred_username", Roles: "realm_access.roles"},
			token: map[string]any{"sub": "f81d4fae", "preferred_username": "ada", "groups": "eng",
				"realm_access": map[string]any{"roles": []string{"offline_access", "approver"}}},
			want: External{Subject: "ada", Groups: []string{"eng"}, Roles: []string{"offline_access", "approver"}},
		},
		{
			name:   "namespaced claims with dots",
			claims: config.IssuerClaims{Subject: "email", Groups: "https://corral.dev/groups", Roles: "app.roles"},
			token: map[string]any{"sub": "x", "email": "ada@example.com", "https://corral.dev/groups": []string{"g"},
				"app.roles": []string{"flat"}, "app": map[string]any{"roles": []string{"nested"}}},
			want: External{Subject: "ada@example.com", Groups: []string{"g"}, Roles: []string{"flat"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := newTestIssuers(t, clk, issuerResource(t, "idp", config.IssuerSpec{Issuer: p.URL(), Audience: testAudience, Claims: tt.claims}))
			token := p.Token(t, with(map[string]any{"aud": testAudience}, tt.token))
			got, err := is.Verify(t.Context(), token)
			if err != nil {
				t.Fatalf("Verify(%v) = %v", tt.token, err)
			}
			want := tt.want
			want.IssuerName, want.Issuer, want.Expiry = "idp", p.URL(), got.Expiry
			if diff := cmp.Diff(&want, got, cmpopts.IgnoreFields(External{}, "Claims")); diff != "" {
				t.Errorf("Verify(%v) (-want +got):\n%s", tt.token, diff)
			}
			if got.Claims["aud"] != testAudience || got.Claims["iss"] != p.URL() {
				t.Errorf("Verify(%v).Claims = %v, want every claim", tt.token, got.Claims)
			}
		})
	}
}

func TestIssuersKeySources(t *testing.T) {
	clk := newClock()
	tests := []struct {
		name    string
		opts    []oidctest.Option
		jwksURL bool
		want    Reason
		errText string
	}{
		{name: "discovery", want: ""},
		{name: "jwksURL without discovery", opts: []oidctest.Option{oidctest.WithoutDiscovery()}, jwksURL: true, want: ""},
		{name: "no discovery, no jwksURL", opts: []oidctest.Option{oidctest.WithoutDiscovery()}, want: ReasonIssuerDown, errText: "404"},
		{name: "discovery names another issuer", opts: []oidctest.Option{oidctest.DiscoveryIssuer("https://evil.test")}, want: ReasonIssuerDown, errText: `names issuer "https://evil.test"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := oidctest.Start(t, tt.opts...)
			spec := config.IssuerSpec{Issuer: p.URL(), Audience: testAudience}
			if tt.jwksURL {
				spec.JWKSURL = p.JWKSURL()
			}
			is := newTestIssuers(t, clk, issuerResource(t, "idp", spec))
			_, err := is.Verify(t.Context(), p.Token(t, userClaims(p, clk.now())))
			if ReasonOf(err) != tt.want || (tt.errText != "" && !strings.Contains(err.Error(), tt.errText)) {
				t.Fatalf("Verify = %v, want reason %q mentioning %q", err, tt.want, tt.errText)
			}
			if err != nil && !strings.Contains(err.(*TokenError).Detail, "idp") {
				t.Errorf("Verify = %v: the detail does not name the issuer", err)
			}
		})
	}
}

func TestIssuersRefetch(t *testing.T) {
	clk := newClock()
	p := oidctest.Start(t)
	is := newTestIssuers(t, clk, issuerResource(t, "idp", config.IssuerSpec{Issuer: p.URL(), Audience: testAudience}))
	ctx := t.Context()
	if _, err := is.Verify(ctx, p.Token(t, userClaims(p, clk.now()))); err != nil {
		t.Fatal(err)
	}
	p.Rotate(t)
	rotated := p.Token(t, userClaims(p, clk.now()))
	for range 3 {
		if _, err := is.Verify(ctx, rotated); ReasonOf(err) != ReasonUnknownKey {
			t.Fatalf("Verify(token of a new key, within 10s of a fetch) = %v, want %s", err, ReasonUnknownKey)
		}
	}
	if n := p.JWKSRequests(); n != 1 {
		t.Errorf("JWKS fetched %d times within 10s, want 1", n)
	}
	clk.advance(refetchEvery)
	if _, err := is.Verify(ctx, rotated); err != nil {
		t.Errorf("Verify(token of a new key, 10s after a fetch) = %v", err)
	}
	if n := p.JWKSRequests(); n != 2 {
		t.Errorf("JWKS fetched %d times, want 2", n)
	}

	// A failed fetch is not retried within 10s either; then it recovers.
	p.Rotate(t)
	p.SetDown(true)
	clk.advance(refetchEvery)
	again := p.Token(t, userClaims(p, clk.now()))
	if _, err := is.Verify(ctx, again); ReasonOf(err) != ReasonIssuerDown || errors.Unwrap(err) == nil {
		t.Fatalf("Verify(issuer down) = %v, want %s with a cause", err, ReasonIssuerDown)
	}
	p.SetDown(false)
	if _, err := is.Verify(ctx, again); ReasonOf(err) != ReasonIssuerDown {
		t.Errorf("Verify(within 10s of a failed fetch) = %v, want %s", err, ReasonIssuerDown)
	}
	clk.advance(refetchEvery)
	if _, err := is.Verify(ctx, again); err != nil {
		t.Errorf("Verify(issuer back) = %v", err)
	}
	if n := p.JWKSRequests(); n != 3 { // the failed fetch stopped at discovery
		t.Errorf("JWKS fetched %d times, want 3", n)
	}
}

func TestIssuersResponseBounded(t *testing.T) {
	p := oidctest.Start(t)
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"keys":[{"kty":"oct","k":"`+strings.Repeat("A", maxIssuerResponse)+`"}]}`)
	}))
	t.Cleanup(big.Close)
	clk := newClock()
	is := newTestIssuers(t, clk, issuerResource(t, "idp", config.IssuerSpec{Issuer: p.URL(), JWKSURL: big.URL, Audience: testAudience}))
	_, err := is.Verify(t.Context(), p.Token(t, userClaims(p, clk.now())))
	if ReasonOf(err) != ReasonIssuerDown || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Verify(JWKS over 1 MiB) = %v, want %s, larger than", err, ReasonIssuerDown)
	}
}

func TestIssuersRun(t *testing.T) {
	p := oidctest.Start(t)
	reg := newRegistry()
	is := NewIssuers(slog.New(slog.DiscardHandler), reg, nil)
	done := make(chan error, 1)
	go func() { done <- is.Run(t.Context()) }()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	token := p.Token(t, userClaims(p, time.Now()))
	if _, err := is.Verify(t.Context(), token); ReasonOf(err) != ReasonWrongIssuer {
		t.Fatalf("Verify(no issuer trusted) = %v, want %s", err, ReasonWrongIssuer)
	}
	idp := issuerResource(t, "idp", config.IssuerSpec{Issuer: p.URL(), Audience: testAudience})
	reg.set(idp)
	eventually(t, "the new issuer is trusted", func() bool {
		_, err := is.Verify(t.Context(), token)
		return err == nil
	})
	// An unrelated change keeps the cached keys.
	reg.set(idp, issuerResource(t, "other", config.IssuerSpec{Issuer: "https://other.test", Audience: testAudience}))
	eventually(t, "the other issuer is trusted", func() bool { return len(*is.trusted.Load()) == 2 })
	if _, err := is.Verify(t.Context(), token); err != nil || p.JWKSRequests() != 1 {
		t.Errorf("Verify after an unrelated change = %v with %d JWKS fetches, want nil with 1", err, p.JWKSRequests())
	}
	// A change of audience applies.
	reg.set(issuerResource(t, "idp", config.IssuerSpec{Issuer: p.URL(), Audience: "elsewhere"}))
	eventually(t, "the new audience applies", func() bool {
		_, err := is.Verify(t.Context(), token)
		return ReasonOf(err) == ReasonWrongAudience
	})
	reg.set()
	eventually(t, "the removed issuer is no longer trusted", func() bool {
		_, err := is.Verify(t.Context(), token)
		return ReasonOf(err) == ReasonWrongIssuer
	})
}
