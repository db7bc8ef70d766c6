// Package oidctest runs a local OpenID provider for tests: a real HTTP
// server on 127.0.0.1 that serves discovery and a JWKS, and signs real
// tokens with RSA, ECDSA and Ed25519 keys, plus the forged tokens that a
// verifier must refuse (alg none, HS256 keyed with the public key).
package oidctest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Paths the provider serves.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/jwks"
)

// Option changes how a Provider behaves.
type Option func(*options)

type options struct {
	discoveryIssuer string
	noDiscovery     bool
	symmetric       bool
}

// DiscoveryIssuer makes the discovery document name iss as the issuer
// instead of the provider's URL, as a provider speaking for another would.
func DiscoveryIssuer(iss string) Option {
	return func(o *options) { o.discoveryIssuer = iss }
}

// WithoutDiscovery makes the provider answer 404 for discovery, as
// providers that only publish a JWKS do.
func WithoutDiscovery() Option {
	return func(o *options) { o.noDiscovery = true }
}

// PublishSymmetricKey adds an "oct" key to the JWKS, the secret that
// SignWith "HS256" signs with: a verifier must refuse HS256 even so.
func PublishSymmetricKey() Option {
	return func(o *options) { o.symmetric = true }
}

// Provider is a running OpenID provider.
type Provider struct {
	srv  *httptest.Server
	opts options

	mu   sync.Mutex
	gen  int
	keys keys

	down         atomic.Bool
	jwksRequests atomic.Int64
}

// keys are one generation of the provider's keys.
type keys struct {
	rsa     *rsa.PrivateKey
	p256    *ecdsa.PrivateKey
	p384    *ecdsa.PrivateKey
	ed      ed25519.PrivateKey
	secret  []byte
	rsaKID  string
	p256KID string
	p384KID string
	edKID   string
	octKID  string
}

// Start runs a provider until the test ends.
func Start(t testing.TB, opts ...Option) *Provider {
	t.Helper()
	p := &Provider{}
	for _, o := range opts {
		o(&p.opts)
	}
	p.keys = newKeys(t, 1)
	p.gen = 1
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+DiscoveryPath, p.serveDiscovery)
	mux.HandleFunc("GET "+JWKSPath, p.serveJWKS)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func newKeys(t testing.TB, gen int) keys {
	t.Helper()
	var (
		k   keys
		err error
	)
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatalf("oidctest: generate RSA key: %v", err)
	}
	if k.p256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatalf("oidctest: generate P-256 key: %v", err)
	}
	if k.p384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		t.Fatalf("oidctest: generate P-384 key: %v", err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatalf("oidctest: generate Ed25519 key: %v", err)
	}
	k.secret = make([]byte, 32)
	_, _ = rand.Read(k.secret)
	k.rsaKID = fmt.Sprintf("rsa-%d", gen)
	k.p256KID = fmt.Sprintf("p256-%d", gen)
	k.p384KID = fmt.Sprintf("p384-%d", gen)
	k.edKID = fmt.Sprintf("ed25519-%d", gen)
	k.octKID = fmt.Sprintf("oct-%d", gen)
	return k
}

// URL returns the issuer: the server's base URL.
func (p *Provider) URL() string { return p.srv.URL }

// JWKSURL returns where the provider's public keys are.
func (p *Provider) JWKSURL() string { return p.srv.URL + JWKSPath }

// JWKSRequests returns how many times the JWKS has been fetched.
func (p *Provider) JWKSRequests() int { return int(p.jwksRequests.Load()) }

// SetDown makes discovery and the JWKS answer 503 while down is true.
func (p *Provider) SetDown(down bool) { p.down.Store(down) }

// Rotate replaces every key with a new one; the old keys leave the JWKS.
func (p *Provider) Rotate(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	p.keys = newKeys(t, p.gen)
}

func (p *Provider) current() keys {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys
}

func (p *Provider) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	if p.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if p.opts.noDiscovery {
		http.NotFound(w, r)
		return
	}
	iss := p.URL()
	if p.opts.discoveryIssuer != "" {
		iss = p.opts.discoveryIssuer
	}
	writeJSON(w, map[string]any{
		"issuer":                                iss,
		"jwks_uri":                              p.JWKSURL(),
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"},
	})
}

func (p *Provider) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	p.jwksRequests.Add(1)
	if p.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	k := p.current()
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: k.rsa.Public(), KeyID: k.rsaKID, Use: "sig"},
		{Key: k.p256.Public(), KeyID: k.p256KID, Use: "sig", Algorithm: "ES256"},
		{Key: k.p384.Public(), KeyID: k.p384KID, Use: "sig", Algorithm: "ES384"},
		{Key: k.ed.Public(), KeyID: k.edKID, Use: "sig", Algorithm: "EdDSA"},
	}}
	if p.opts.symmetric {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.secret, KeyID: k.octKID, Use: "sig", Algorithm: "HS256"})
	}
	writeJSON(w, set)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Token signs claims with RS256: see SignWith.
func (p *Provider) Token(t testing.TB, claims map[string]any) string {
	t.Helper()
	return p.SignWith(t, "RS256", claims)
}

// SignWith signs claims, after filling iss (the provider's URL), iat (now)
// and exp (in 5 minutes) unless claims set them; a claim set to nil is left
// out (so a token without exp is {"exp": nil}). alg is one of:
//
//   - RS256, RS384, RS512, PS256, PS384, PS512 (the RSA key), ES256, ES384,
//     EdDSA: real tokens, with the kid of the key in the JWKS;
//   - "none": an unsigned token (alg none, empty signature);
//   - "HS256": HMAC keyed with the secret that PublishSymmetricKey puts in
//     the JWKS;
//   - "HS256-with-public-key": HMAC-SHA256 keyed with the PEM of the RSA
//     public key, with the RSA key's kid: the classic confusion attack on a
//     verifier that lets the token choose the algorithm;
//   - "HS256-with-public-jwk": the same, keyed with the RSA key's JWK JSON.
func (p *Provider) SignWith(t testing.TB, alg string, claims map[string]any) string {
	t.Helper()
	c := maps.Clone(claims)
	if c == nil {
		c = map[string]any{}
	}
	now := time.Now()
	setDefault(c, "iss", p.URL())
	setDefault(c, "iat", now.Unix())
	setDefault(c, "exp", now.Add(5*time.Minute).Unix())
	maps.DeleteFunc(c, func(_ string, v any) bool { return v == nil })
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("oidctest: claims: %v", err)
	}
	k := p.current()
	var (
		key any
		kid string
	)
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		key, kid = k.rsa, k.rsaKID
	case "ES256":
		key, kid = k.p256, k.p256KID
	case "ES384":
		key, kid = k.p384, k.p384KID
	case "EdDSA":
		key, kid = k.ed, k.edKID
	case "none":
		return Compact(map[string]any{"alg": "none", "typ": "JWT"}, payload, nil)
	case "HS256":
		return HS256(map[string]any{"alg": "HS256", "typ": "JWT", "kid": k.octKID}, payload, k.secret)
	case "HS256-with-public-key":
		der, err := x509.MarshalPKIXPublicKey(k.rsa.Public())
		if err != nil {
			t.Fatalf("oidctest: %v", err)
		}
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		return HS256(map[string]any{"alg": "HS256", "typ": "JWT", "kid": k.rsaKID}, payload, pemBytes)
	case "HS256-with-public-jwk":
		jwk, err := jose.JSONWebKey{Key: k.rsa.Public(), KeyID: k.rsaKID, Use: "sig"}.MarshalJSON()
		if err != nil {
			t.Fatalf("oidctest: %v", err)
		}
		return HS256(map[string]any{"alg": "HS256", "typ": "JWT", "kid": k.rsaKID}, payload, jwk)
	default:
		t.Fatalf("oidctest: SignWith(%q): unknown algorithm", alg)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatalf("oidctest: signer %s: %v", alg, err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatalf("oidctest: sign %s: %v", alg, err)
	}
	token, err := obj.CompactSerialize()
	if err != nil {
		t.Fatalf("oidctest: serialize: %v", err)
	}
	return token
}

func setDefault(m map[string]any, k string, v any) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

// Compact assembles a compact JWS by hand from a header, a payload and a
// signature (nil for none), for tokens no JOSE library would sign.
func Compact(header map[string]any, payload, signature []byte) string {
	h, _ := json.Marshal(header)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(payload) + "." + enc.EncodeToString(signature)
}

// HS256 assembles a compact JWS signed with HMAC-SHA256 under key, whatever
// header says.
func HS256(header map[string]any, payload, key []byte) string {
	unsigned := Compact(header, payload, nil)
	signingInput := unsigned[:len(unsigned)-1]
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signingInput))
	return signingInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}
