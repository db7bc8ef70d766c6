package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/corral-dev/corral/internal/config"
)

// issuerKind is the resource kind that trusts an external issuer.
const issuerKind = "Issuer"

const (
	// refetchEvery bounds how often an issuer's keys are fetched: an
	// unknown kid triggers a fetch at most this often, so that tokens with
	// made-up kids cannot make corral hammer the issuer.
	refetchEvery = 10 * time.Second
	// keysMaxAge is how long fetched keys are trusted before they are
	// fetched again, so that a key the provider withdrew (rotated out, or
	// compromised) stops being accepted within the hour.
	keysMaxAge = time.Hour
	// maxIssuerResponse bounds a discovery document or a JWKS.
	maxIssuerResponse = 1 << 20
	// minRSABits is the smallest RSA key trusted.
	minRSABits = 2048
)

// externalAlgs are the algorithms accepted from external issuers: never
// none, never a symmetric one.
var externalAlgs = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true,
	"ES256": true, "ES384": true,
	"EdDSA": true,
}

func isExternalAlg(alg string) bool { return externalAlgs[alg] }

// IssuerResources is what Issuers reads from the registry: Changed is
// closed, and replaced, at each change.
type IssuerResources interface {
	List(kind string) []config.Resource
	Changed() <-chan struct{}
}

// Issuers verifies users' tokens from the external issuers that Issuer
// resources trust, with their keys found by OpenID discovery or at their
// jwksURL and cached.
type Issuers struct {
	logger  *slog.Logger
	res     IssuerResources
	client  *http.Client
	now     func() time.Time
	trusted atomic.Pointer[map[string]*trustedIssuer] // by issuer URL

	loaded   chan struct{} // closed once Run has read the Issuer resources
	loadOnce sync.Once
}

// trustedIssuer is one Issuer resource in force.
type trustedIssuer struct {
	name string
	spec config.IssuerSpec
	keys *issuerKeys
}

// issuerKeys are an issuer's cached public keys. They survive a rebuild of
// the trusted set as long as the issuer and its jwksURL stay the same.
type issuerKeys struct {
	issuer, jwksURL string

	set atomic.Pointer[jwkSet]

	mu          sync.Mutex // held while fetching
	lastAttempt time.Time
	lastErr     error
}

// jwkSet is a fetched JWKS, the keys corral can use.
type jwkSet struct {
	byKID   map[string][]jose.JSONWebKey
	all     []jose.JSONWebKey
	fetched time.Time
}

// fresh reports whether the set was fetched less than keysMaxAge ago.
func (s *jwkSet) fresh(now time.Time) bool { return s != nil && now.Sub(s.fetched) < keysMaxAge }

// NewIssuers returns the trusted issuers as the registry has them now; Run
// keeps them current. A nil client means one with a 10s timeout.
func NewIssuers(logger *slog.Logger, res IssuerResources, client *http.Client) *Issuers {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	is := &Issuers{logger: logger.With("component", "issuers"), res: res, client: client, now: time.Now, loaded: make(chan struct{})}
	is.rebuild(context.Background())
	return is
}

// Run rebuilds the trusted set on every registry change until ctx ends.
func (is *Issuers) Run(ctx context.Context) error {
	for {
		changed := is.res.Changed()
		is.rebuild(ctx)
		is.loadOnce.Do(func() { close(is.loaded) })
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// WaitLoaded blocks until Run has read the Issuer resources, or ctx ends.
func (is *Issuers) WaitLoaded(ctx context.Context) error {
	select {
	case <-is.loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("identity: waiting for trusted issuers to load: %w", ctx.Err())
	}
}

// rebuild reads the Issuer resources into a new trusted set, keeping the
// cached keys of issuers that did not change.
func (is *Issuers) rebuild(ctx context.Context) {
	old := map[string]*trustedIssuer{}
	if p := is.trusted.Load(); p != nil {
		old = *p
	}
	next := map[string]*trustedIssuer{}
	for _, r := range is.res.List(issuerKind) { // sorted by name
		var spec config.IssuerSpec
		if err := json.Unmarshal(r.Spec, &spec); err != nil || spec.Issuer == "" {
			is.logger.WarnContext(ctx, "skipping unreadable issuer", "issuer", r.Metadata.Name, "err", err)
			continue
		}
		if other, dup := next[spec.Issuer]; dup {
			is.logger.WarnContext(ctx, "two issuers trust the same issuer URL; the first by name wins",
				"issuer", r.Metadata.Name, "winner", other.name, "url", spec.Issuer)
			continue
		}
		t := &trustedIssuer{name: r.Metadata.Name, spec: spec}
		if prev, ok := old[spec.Issuer]; ok && prev.spec.JWKSURL == spec.JWKSURL {
			t.keys = prev.keys
		} else {
			t.keys = &issuerKeys{issuer: spec.Issuer, jwksURL: spec.JWKSURL}
		}
		next[spec.Issuer] = t
	}
	is.trusted.Store(&next)
}

// Verify checks a user's token from a trusted issuer: the issuer is chosen
// by the token's iss, the signature checked against its keys (fetched
// again, at most every 10s, for an unknown kid), then aud, exp, nbf, iat
// and the subject claim. An issuer trusted for workloads only is not
// trusted here. Every refusal is a *TokenError.
func (is *Issuers) Verify(ctx context.Context, token string) (*External, error) {
	return is.verify(ctx, token, false)
}

// VerifyWorkload checks a workload's token (a Kubernetes service account's,
// a cloud workload identity's, a SPIFFE JWT-SVID) as Verify checks a
// user's, from an issuer trusted for workloads (use: workloads) only.
func (is *Issuers) VerifyWorkload(ctx context.Context, token string) (*External, error) {
	return is.verify(ctx, token, true)
}

// Workload reports whether iss is an issuer trusted for workloads, by its
// name; the token endpoint asks it of an unverified token to know which
// verification it needs.
func (is *Issuers) Workload(iss string) bool {
	if p := is.trusted.Load(); p != nil {
		if ti := (*p)[iss]; ti != nil {
			return ti.spec.ForWorkloads()
		}
	}
	return false
}

func (is *Issuers) verify(ctx context.Context, token string, workload bool) (*External, error) {
	jws, terr := parseCompact(token, isExternalAlg)
	if terr != nil {
		return nil, terr
	}
	var unverified struct {
		Issuer string `json:"iss"`
	}
	raw, err := b64.DecodeString(jws.payload)
	if err != nil || json.Unmarshal(raw, &unverified) != nil {
		return nil, Refused(ReasonMalformed, "claims are not a JSON object")
	}
	var ti *trustedIssuer
	if p := is.trusted.Load(); p != nil {
		ti = (*p)[unverified.Issuer]
	}
	if ti == nil {
		return nil, Refused(ReasonWrongIssuer, "issuer %q is not trusted", truncate(unverified.Issuer))
	}
	if ti.spec.ForWorkloads() != workload {
		if workload {
			return nil, Refused(ReasonWrongIssuer, "issuer %s is trusted for users' tokens, not workloads'", ti.name)
		}
		return nil, Refused(ReasonWrongIssuer, "issuer %s is trusted for workloads' tokens, not users'", ti.name)
	}
	alg := jws.header.Alg
	candidates, terr := is.keysFor(ctx, ti, jws.header.Kid)
	if terr != nil {
		return nil, terr
	}
	usable := candidates[:0:0]
	for _, k := range candidates {
		if (k.Algorithm == "" || k.Algorithm == alg) && keyFits(alg, k.Key) {
			usable = append(usable, k)
		}
	}
	if len(usable) == 0 {
		return nil, Refused(ReasonAlgNotAllowed, "issuer %s has no key %q for %s", ti.name, truncate(jws.header.Kid), alg)
	}
	parsed, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
	if err != nil {
		return nil, &TokenError{Reason: ReasonMalformed, Detail: "not a JWS corral reads", Err: err}
	}
	var payload []byte
	for _, k := range usable {
		if payload, err = parsed.Verify(k.Key); err == nil {
			break
		}
	}
	if err != nil {
		return nil, Refused(ReasonBadSignature, "signature does not match")
	}
	return externalClaims(ti, payload, is.now())
}

// externalClaims checks a verified payload's claims and reads the user's
// identity from them.
func externalClaims(ti *trustedIssuer, payload []byte, now time.Time) (*External, error) {
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil || claims == nil {
		return nil, Refused(ReasonMalformed, "claims are not a JSON object")
	}
	// The issuer was picked from the unverified claims; the verified ones
	// must say the same, exactly (JSON decoding into a struct ignores case).
	if iss, _ := claims["iss"].(string); iss != ti.spec.Issuer {
		return nil, Refused(ReasonWrongIssuer, "issuer %q is not trusted", truncate(iss))
	}
	if !audienceContains(claims["aud"], ti.spec.Audience) {
		return nil, Refused(ReasonWrongAudience, "token is not for %s", ti.spec.Audience)
	}
	exp, present, ok := numericDate(claims, "exp")
	switch {
	case !ok:
		return nil, Refused(ReasonMalformed, "exp is not a number")
	case !present:
		return nil, Refused(ReasonMissingClaim, "token has no exp")
	}
	nbf, _, ok1 := numericDate(claims, "nbf")
	iat, _, ok2 := numericDate(claims, "iat")
	if !ok1 || !ok2 {
		return nil, Refused(ReasonMalformed, "nbf or iat is not a number")
	}
	if terr := checkTimes(now, exp, nbf, iat); terr != nil {
		return nil, terr
	}
	subClaim := ti.spec.Claims.SubjectOr()
	sub, _ := claimAt(claims, subClaim).(string)
	if sub == "" {
		return nil, Refused(ReasonMissingClaim, "token has no %s", subClaim)
	}
	groups, err := stringsAt(claims, ti.spec.Claims.GroupsOr())
	if err != nil {
		return nil, err
	}
	roles, err := stringsAt(claims, ti.spec.Claims.RolesOr())
	if err != nil {
		return nil, err
	}
	return &External{
		IssuerName: ti.name,
		Issuer:     ti.spec.Issuer,
		Subject:    sub,
		Groups:     groups,
		Roles:      roles,
		Expiry:     exp,
		Claims:     claims,
	}, nil
}

// audienceContains reports whether aud, a string or a list, names want.
func audienceContains(aud any, want string) bool {
	if want == "" {
		return false
	}
	switch a := aud.(type) {
	case string:
		return a == want
	case []any:
		for _, x := range a {
			if s, ok := x.(string); ok && s == want {
				return true
			}
		}
	}
	return false
}

// numericDate reads a NumericDate claim in whole seconds. present is false
// when it is absent; ok is false when it is not a number.
func numericDate(claims map[string]any, name string) (v int64, present, ok bool) {
	x, present := claims[name]
	if !present {
		return 0, false, true
	}
	f, ok := x.(float64)
	if !ok {
		return 0, true, false
	}
	// Clamp, so that absurd dates compare as far past or far future rather
	// than wrapping around.
	const limit = 1 << 53
	return int64(math.Max(-limit, math.Min(limit, math.Floor(f)))), true, true
}

// claimAt finds a claim by name or, failing that, by a dotted path into
// nested objects ("realm_access.roles", where Keycloak puts roles). The
// whole name is tried first, since claim names may hold dots
// ("https://example.com/groups").
func claimAt(claims map[string]any, name string) any {
	if v, ok := claims[name]; ok {
		return v
	}
	var cur any = claims
	for part := range strings.SplitSeq(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = m[part]; !ok {
			return nil
		}
	}
	return cur
}

// stringsAt reads a claim that is a list of strings, a single string, or
// absent.
func stringsAt(claims map[string]any, name string) ([]string, error) {
	switch v := claimAt(claims, name).(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, Refused(ReasonMalformed, "claim %s must be a string or a list of strings", name)
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, Refused(ReasonMalformed, "claim %s must be a string or a list of strings", name)
	}
}

// keyFits reports whether key is of the type alg verifies with.
func keyFits(alg string, key any) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		return (alg == "ES256" && k.Curve == elliptic.P256()) || (alg == "ES384" && k.Curve == elliptic.P384())
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// keysFor returns the keys of ti named kid (all of them when kid is ""),
// fetching the issuer's keys when none is known by that kid and the last
// fetch is more than refetchEvery old.
func (is *Issuers) keysFor(ctx context.Context, ti *trustedIssuer, kid string) ([]jose.JSONWebKey, *TokenError) {
	ik := ti.keys
	now := is.now()
	if set := ik.set.Load(); set.fresh(now) {
		if keys := set.find(kid); len(keys) > 0 {
			return keys, nil
		}
	}
	ik.mu.Lock()
	defer ik.mu.Unlock()
	set := ik.set.Load()
	if keys := set.find(kid); len(keys) > 0 && set.fresh(now) { // fetched while we waited
		return keys, nil
	}
	if !ik.lastAttempt.IsZero() && now.Sub(ik.lastAttempt) < refetchEvery {
		if keys := set.find(kid); len(keys) > 0 {
			return keys, nil // stale, but the provider cannot be asked again yet
		}
		if ik.lastErr != nil {
			return nil, &TokenError{Reason: ReasonIssuerDown, Detail: fmt.Sprintf("keys of issuer %s are unavailable", ti.name), Err: ik.lastErr}
		}
		return nil, Refused(ReasonUnknownKey, "issuer %s has no key %q", ti.name, truncate(kid))
	}
	fetched, err := is.fetchKeys(ctx, ik)
	if err != nil {
		if ctx.Err() == nil { // the caller giving up says nothing of the issuer
			ik.lastAttempt, ik.lastErr = now, err
		}
		if keys := set.find(kid); len(keys) > 0 {
			// Keys past their age beat locking every user out while the
			// provider is down.
			is.logger.WarnContext(ctx, "issuer keys could not be refreshed; using the last ones fetched", "issuer", ti.name, "err", err)
			return keys, nil
		}
		return nil, &TokenError{Reason: ReasonIssuerDown, Detail: fmt.Sprintf("keys of issuer %s are unavailable", ti.name), Err: err}
	}
	ik.lastAttempt, ik.lastErr = now, nil
	ik.set.Store(fetched)
	is.logger.DebugContext(ctx, "fetched issuer keys", "issuer", ti.name, "keys", len(fetched.all))
	if keys := fetched.find(kid); len(keys) > 0 {
		return keys, nil
	}
	return nil, Refused(ReasonUnknownKey, "issuer %s has no key %q", ti.name, truncate(kid))
}

// find returns the keys named kid, or every key when kid is "".
func (s *jwkSet) find(kid string) []jose.JSONWebKey {
	if s == nil {
		return nil
	}
	if kid == "" {
		return s.all
	}
	return s.byKID[kid]
}

// fetchKeys finds the issuer's JWKS, by discovery unless its URL is
// configured, and reads the keys corral can use from it.
func (is *Issuers) fetchKeys(ctx context.Context, ik *issuerKeys) (*jwkSet, error) {
	jwksURL := ik.jwksURL
	if jwksURL == "" {
		var err error
		if jwksURL, err = is.discover(ctx, ik.issuer); err != nil {
			return nil, err
		}
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := is.getJSON(ctx, jwksURL, &doc); err != nil {
		return nil, err
	}
	set := &jwkSet{byKID: map[string][]jose.JSONWebKey{}, fetched: is.now()}
	for _, raw := range doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue // RFC 7517 5: ignore keys not understood
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub := k.Public() // symmetric keys become invalid here
		if !pub.Valid() || !pub.IsPublic() {
			continue
		}
		if rk, ok := pub.Key.(*rsa.PublicKey); ok && rk.N.BitLen() < minRSABits {
			continue
		}
		set.all = append(set.all, pub)
		if pub.KeyID != "" {
			set.byKID[pub.KeyID] = append(set.byKID[pub.KeyID], pub)
		}
	}
	if len(set.all) == 0 {
		return nil, fmt.Errorf("identity: issuer %s: no usable signing key at %s", ik.issuer, jwksURL)
	}
	return set, nil
}

// discover reads the issuer's OpenID configuration and returns its
// jwks_uri. The document must name the issuer exactly (OpenID Connect
// Discovery 4.3), or another party could be speaking for it.
func (is *Issuers) discover(ctx context.Context, issuer string) (string, error) {
	u := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := is.getJSON(ctx, u, &doc); err != nil {
		return "", err
	}
	if doc.Issuer != issuer {
		return "", fmt.Errorf("identity: discovery at %s names issuer %q, not %q", u, doc.Issuer, issuer)
	}
	ju, err := url.Parse(doc.JWKSURI)
	if err != nil || (ju.Scheme != "https" && ju.Scheme != "http") || ju.Host == "" {
		return "", fmt.Errorf("identity: discovery at %s: jwks_uri %q is not an http(s) URL", u, doc.JWKSURI)
	}
	if strings.HasPrefix(issuer, "https:") && ju.Scheme != "https" {
		return "", fmt.Errorf("identity: discovery at %s: jwks_uri %q is not https", u, doc.JWKSURI)
	}
	return doc.JWKSURI, nil
}

// getJSON fetches a JSON document of at most maxIssuerResponse bytes.
func (is *Issuers) getJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("identity: get %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := is.client.Do(req)
	if err != nil {
		return fmt.Errorf("identity: get %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("identity: get %s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIssuerResponse+1))
	if err != nil {
		return fmt.Errorf("identity: get %s: %w", u, err)
	}
	if len(body) > maxIssuerResponse {
		return fmt.Errorf("identity: get %s: response is larger than %d bytes", u, maxIssuerResponse)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("identity: get %s: not JSON: %w", u, err)
	}
	return nil
}
