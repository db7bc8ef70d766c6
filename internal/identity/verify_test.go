package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/identity/oidctest"
)

// verifyCase is one row of the Signer.Verify table.
type verifyCase struct {
	name     string
	token    string
	audience string
	want     Reason // "" for accepted
}

// claimsAt are valid claims for a token issued at now.
func claimsAt(now time.Time) map[string]any {
	return map[string]any{
		"iss": testIssuer, "aud": testIssuer, "sub": "agent-a", "client_id": "agent-a",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": "j1",
	}
}

// with returns a copy of m with changes applied; a nil value deletes.
func with(m map[string]any, changes map[string]any) map[string]any {
	out := maps.Clone(m)
	for k, v := range changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// signRaw signs any payload with s's signing key under header, bypassing
// Mint, so the table can hold tokens Mint would never make.
func signRaw(t testing.TB, priv ed25519.PrivateKey, header map[string]any, claims any) string {
	t.Helper()
	payload, ok := claims.([]byte)
	if !ok {
		var err error
		if payload, err = json.Marshal(claims); err != nil {
			t.Fatal(err)
		}
	}
	unsigned := oidctest.Compact(header, payload, nil)
	signingInput := unsigned[:len(unsigned)-1]
	return signingInput + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(signingInput)))
}

// tamper replaces a token's payload and keeps its signature.
func tamper(token string, claims map[string]any) string {
	parts := strings.Split(token, ".")
	payload, _ := json.Marshal(claims)
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	return strings.Join(parts, ".")
}

// retitle replaces a token's header and keeps its payload and signature.
func retitle(token string, header map[string]any) string {
	parts := strings.Split(token, ".")
	h, _ := json.Marshal(header)
	parts[0] = base64.RawURLEncoding.EncodeToString(h)
	return strings.Join(parts, ".")
}

// signerCases builds the table against s at now: one row per way a token
// is accepted or refused.
func signerCases(t testing.TB, s *Signer, now time.Time) []verifyCase {
	t.Helper()
	sk := s.keys.Load().signing
	kid := sk.kid
	hdr := map[string]any{"alg": "EdDSA", "kid": kid, "typ": "JWT"}
	valid := claimsAt(now)
	sign := func(claims any) string { return signRaw(t, sk.priv, hdr, claims) }
	good := sign(valid)

	pub := sk.priv.Public().(ed25519.PublicKey)
	pubJWK, err := publicJWK(kid, pub)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(valid)
	hs := func(key []byte) string {
		return oidctest.HS256(map[string]any{"alg": "HS256", "kid": kid, "typ": "JWT"}, payload, key)
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)

	return []verifyCase{
		{"valid", good, "", ""},
		{"valid, audience given", good, testIssuer, ""},
		{"aud as a list", sign(with(valid, map[string]any{"aud": []string{"https://x", testIssuer}})), "", ""},
		{"minted", mustMint(t, s), "", ""},
		{"expired within leeway", sign(with(valid, map[string]any{"exp": now.Unix() - 20})), "", ""},
		{"nbf within leeway", sign(with(valid, map[string]any{"nbf": now.Unix() + 20})), "", ""},

		{"expired", sign(with(valid, map[string]any{"exp": now.Unix() - 31})), "", ReasonExpired},
		{"nbf in the future", sign(with(valid, map[string]any{"nbf": now.Unix() + 31})), "", ReasonNotYetValid},
		{"iat in the future", sign(with(valid, map[string]any{"iat": now.Unix() + 3600, "nbf": nil})), "", ReasonNotYetValid},
		{"wrong audience", good, "https://tool", ReasonWrongAudience},
		{"audience is another", sign(with(valid, map[string]any{"aud": "https://tool"})), "", ReasonWrongAudience},
		{"no audience", sign(with(valid, map[string]any{"aud": nil})), "", ReasonWrongAudience},
		{"wrong issuer", sign(with(valid, map[string]any{"iss": "https://evil.test"})), "", ReasonWrongIssuer},
		{"no issuer", sign(with(valid, map[string]any{"iss": nil})), "", ReasonWrongIssuer},

		{"tampered payload", tamper(good, with(valid, map[string]any{"sub": "admin"})), "", ReasonBadSignature},
		{"tampered header", retitle(good, map[string]any{"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}), "", ReasonBadSignature},
		{"signed by another key under our kid", signRaw(t, stranger, hdr, valid), "", ReasonBadSignature},
		{"signature cut short", good[:len(good)-4], "", ReasonBadSignature},
		{"signature not base64url", good[:len(good)-2] + "*=", "", ReasonBadSignature},
		{"no signature", oidctest.Compact(hdr, payload, nil), "", ReasonBadSignature},

		{"alg none", oidctest.Compact(map[string]any{"alg": "none", "typ": "JWT"}, payload, nil), "", ReasonAlgNone},
		{"alg NoNe with our signature", retitle(good, map[string]any{"alg": "NoNe", "kid": kid}), "", ReasonAlgNone},
		{"HS256 keyed with the public key", hs(pub), "", ReasonAlgNotAllowed},
		{"HS256 keyed with the public JWK", hs(pubJWK), "", ReasonAlgNotAllowed},
		{"HS256 keyed with the JWKS", hs(s.JWKS()), "", ReasonAlgNotAllowed},
		{"RS256", retitle(good, map[string]any{"alg": "RS256", "kid": kid}), "", ReasonAlgNotAllowed},
		{"Ed25519 spelt differently", retitle(good, map[string]any{"alg": "eddsa", "kid": kid}), "", ReasonAlgNotAllowed},

		{"unknown kid", signRaw(t, sk.priv, map[string]any{"alg": "EdDSA", "kid": "nope"}, valid), "", ReasonUnknownKey},
		{"no kid", signRaw(t, sk.priv, map[string]any{"alg": "EdDSA"}, valid), "", ReasonUnknownKey},

		{"empty", "", "", ReasonMalformed},
		{"one part", "abc", "", ReasonMalformed},
		{"two parts", "abc.def", "", ReasonMalformed},
		{"four parts", good + ".x", "", ReasonMalformed},
		{"header not base64url", "!!!." + strings.SplitN(good, ".", 2)[1], "", ReasonMalformed},
		{"header padded", base64.URLEncoding.EncodeToString([]byte(`{"alg":"EdDSA","kid":"`+kid+`"}`)) + ".e30.x", "", ReasonMalformed},
		{"header not JSON", base64.RawURLEncoding.EncodeToString([]byte("nope")) + ".e30.x", "", ReasonMalformed},
		{"header a JSON list", base64.RawURLEncoding.EncodeToString([]byte("[]")) + ".e30.x", "", ReasonMalformed},
		{"header without alg", oidctest.Compact(map[string]any{"kid": kid}, payload, []byte("x")), "", ReasonMalformed},
		{"critical extension", signRaw(t, sk.priv, map[string]any{"alg": "EdDSA", "kid": kid, "crit": []string{"exp"}, "exp": 1}, valid), "", ReasonMalformed},
		{"larger than 16 KiB", sign(with(valid, map[string]any{"scope": strings.Repeat("tool:x ", 3000)})), "", ReasonMalformed},
		{"payload not JSON", sign([]byte("not json")), "", ReasonMalformed},
		{"payload a JSON list", sign([]byte("[1,2]")), "", ReasonMalformed},
		{"exp a string", sign(with(valid, map[string]any{"exp": "tomorrow"})), "", ReasonMalformed},
		{"aud a number", sign(with(valid, map[string]any{"aud": 7})), "", ReasonMalformed},

		{"no sub", sign(with(valid, map[string]any{"sub": nil})), "", ReasonMissingClaim},
		{"empty sub", sign(with(valid, map[string]any{"sub": ""})), "", ReasonMissingClaim},
		{"no client_id", sign(with(valid, map[string]any{"client_id": nil})), "", ReasonMissingClaim},
		{"no exp", sign(with(valid, map[string]any{"exp": nil})), "", ReasonMissingClaim},
	}
}

func mustMint(t testing.TB, s *Signer) string {
	t.Helper()
	token, err := s.Mint(Claims{Subject: "agent-a", ClientID: "agent-a"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func TestSignerVerify(t *testing.T) {
	clk := newClock()
	s := openTestSigner(t, bustest.Open(t), t.TempDir(), SignerOptions{Now: clk.now})
	for _, tt := range signerCases(t, s, clk.now()) {
		t.Run(tt.name, func(t *testing.T) {
			c, err := s.Verify(tt.token, tt.audience)
			if got := ReasonOf(err); got != tt.want {
				t.Fatalf("Verify(%.60s..., %q) = %v, want reason %q", tt.token, tt.audience, err, tt.want)
			}
			if err != nil {
				var te *TokenError
				if !errors.As(err, &te) || te.Detail == "" || c != nil {
					t.Errorf("Verify(%.60s...) = %v, %v: want a *TokenError with a detail and no claims", tt.token, c, err)
				}
				return
			}
			if c == nil || c.Subject != "agent-a" || c.ClientID != "agent-a" {
				t.Errorf("Verify(%.60s...) = %+v, want agent-a's claims", tt.token, c)
			}
		})
	}
}

func BenchmarkMint(b *testing.B) {
	s := openTestSigner(b, bustest.Open(b), b.TempDir(), SignerOptions{})
	c := Claims{Subject: "user@example.com", ClientID: "agent-a", Act: &Actor{Subject: "agent-a"}, Task: "task-123", Scope: "tool:github.* model:gpt-4o"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Mint(c, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	s := openTestSigner(b, bustest.Open(b), b.TempDir(), SignerOptions{})
	c := Claims{Subject: "user@example.com", ClientID: "agent-a", Act: &Actor{Subject: "agent-a"}, Task: "task-123", Scope: "tool:github.* model:gpt-4o"}
	token, err := s.Mint(c, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Verify(token, ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIdentityToken(b *testing.B) {
	s := openTestSigner(b, bustest.Open(b), b.TempDir(), SignerOptions{})
	c := Claims{Subject: "user@example.com", ClientID: "agent-a", Act: &Actor{Subject: "agent-a"}, Task: "task-123", Scope: "tool:github.* model:gpt-4o"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.IdentityToken("https://tools.example.com", c, 0); err != nil {
			b.Fatal(err)
		}
	}
}
