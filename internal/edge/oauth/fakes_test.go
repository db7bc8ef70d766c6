package oauth

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/killswitch"
)

// The test world's fixed points.
const (
	testIssuer = "https://corral.test"
	idpIssuer  = "https://idp.test/realms/corp"

	keyBilling = "corral_ak_billing-secret"
	keyHelper  = "corral_ak_helper-secret"
	keyStopped = "corral_ak_stopped-secret"
	keyGhost   = "corral_ak_ghost-secret"
	keyEmpty   = "corral_ak_empty-secret"
)

var testNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// jws signs claims as a compact EdDSA JWS.
func jws(key ed25519.PrivateKey, claims any) string {
	enc := base64.RawURLEncoding
	header, _ := json.Marshal(map[string]string{"alg": "EdDSA", "typ": "JWT"})
	payload, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	input := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
	return input + "." + enc.EncodeToString(ed25519.Sign(key, []byte(input)))
}

// openJWS checks a compact JWS's signature and returns its payload.
func openJWS(pub ed25519.PublicKey, token string) ([]byte, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, identity.Refused(identity.ReasonMalformed, "not three parts")
	}
	sig, err1 := base64.RawURLEncoding.DecodeString(parts[2])
	payload, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	if err1 != nil || err2 != nil {
		return nil, identity.Refused(identity.ReasonMalformed, "bad base64")
	}
	if !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
		return nil, identity.Refused(identity.ReasonBadSignature, "the signature does not verify")
	}
	return payload, nil
}

// fakeSigner really signs, with a key of its own, on the test's clock.
type fakeSigner struct {
	key     ed25519.PrivateKey
	issuer  string
	now     func() time.Time
	mintErr error
	skew    int64 // added to exp, to play a signer that overshoots

	mu   sync.Mutex
	jtis int
}

func newSigner(now func() time.Time) *fakeSigner {
	_, key, _ := ed25519.GenerateKey(nil)
	return &fakeSigner{key: key, issuer: testIssuer, now: now}
}

func (s *fakeSigner) Issuer() string { return s.issuer }
func (s *fakeSigner) JWKS() []byte {
	return []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"AA"}]}`)
}

func (s *fakeSigner) Mint(c identity.Claims, ttl time.Duration) (string, error) {
	if s.mintErr != nil {
		return "", s.mintErr
	}
	s.mu.Lock()
	s.jtis++
	c.ID = fmt.Sprintf("jti-%d", s.jtis)
	s.mu.Unlock()
	now := s.now()
	c.Issuer, c.IssuedAt, c.NotBefore = s.issuer, now.Unix(), now.Unix()
	c.Expiry = now.Add(ttl).Unix() + s.skew
	return jws(s.key, c), nil
}

func (s *fakeSigner) Verify(token, audience string) (*identity.Claims, error) {
	payload, err := openJWS(s.key.Public().(ed25519.PublicKey), token)
	if err != nil {
		return nil, err
	}
	var c identity.Claims
	switch {
	case json.Unmarshal(payload, &c) != nil:
		return nil, identity.Refused(identity.ReasonMalformed, "claims are not JSON")
	case c.Issuer != s.issuer:
		return nil, identity.Refused(identity.ReasonWrongIssuer, "iss is %q", c.Issuer)
	case !c.Audience.Contains(audience):
		return nil, identity.Refused(identity.ReasonWrongAudience, "aud lacks %s", audience)
	case c.Expiry <= s.now().Unix():
		return nil, identity.Refused(identity.ReasonExpired, "the token expired at %d", c.Expiry)
	}
	return &c, nil
}

// userClaims are the claims of a user's token from the fake identity provider.
type userClaims struct {
	Issuer string   `json:"iss"`
	Sub    string   `json:"sub,omitempty"`
	Aud    string   `json:"aud"`
	Exp    int64    `json:"exp"`
	Groups []string `json:"groups,omitempty"`
	Roles  []string `json:"roles,omitempty"`
}

// fakeIssuers trusts one identity provider, whose key it holds.
type fakeIssuers struct {
	key  ed25519.PrivateKey
	now  func() time.Time
	down bool // the provider's keys cannot be fetched
	err  error
}

func (f *fakeIssuers) Verify(ctx context.Context, token string) (*identity.External, error) {
	if f.err != nil {
		return nil, f.err
	}
	if f.down {
		return nil, identity.Refused(identity.ReasonIssuerDown, "the issuer's keys could not be fetched")
	}
	u, ok := peek(token)
	if !ok {
		return nil, identity.Refused(identity.ReasonMalformed, "not a JWT")
	}
	if u.Issuer != idpIssuer {
		return nil, identity.Refused(identity.ReasonWrongIssuer, "no Issuer trusts %q", u.Issuer)
	}
	payload, err := openJWS(f.key.Public().(ed25519.PublicKey), token)
	if err != nil {
		return nil, err
	}
	var c userClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, identity.Refused(identity.ReasonMalformed, "claims are not JSON")
	}
	if c.Exp <= f.now().Unix() {
		return nil, identity.Refused(identity.ReasonExpired, "the token expired at %s", time.Unix(c.Exp, 0).UTC().Format(time.RFC3339))
	}
	var all map[string]any
	_ = json.Unmarshal(payload, &all)
	return &identity.External{IssuerName: "corp", Issuer: c.Issuer, Subject: c.Sub, Groups: c.Groups, Roles: c.Roles, Expiry: c.Exp, Claims: all}, nil
}

type fakeKeys map[string]identity.Key

func (k fakeKeys) VerifyKey(secret string) (identity.Key, bool) {
	key, ok := k[secret]
	return key, ok
}

type fakeResources map[string]config.Resource

func (r fakeResources) Get(kind, name string) (config.Resource, bool) {
	res, ok := r[kind+"/"+name]
	return res, ok
}

func (r fakeResources) List(kind string) []config.Resource {
	var out []config.Resource
	for k, res := range r {
		if strings.HasPrefix(k, kind+"/") {
			out = append(out, res)
		}
	}
	slices.SortFunc(out, func(a, b config.Resource) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	return out
}

type fakeKill struct {
	all    bool
	agents map[string]string // agent -> reason
}

func (k *fakeKill) Killed(agent string) (killswitch.Switch, bool) {
	if k.all {
		return killswitch.Switch{Target: killswitch.Target{All: true}, Reason: "incident 42"}, true
	}
	if reason, ok := k.agents[agent]; ok {
		return killswitch.Switch{Target: killswitch.Target{Agent: agent}, Reason: reason}, true
	}
	return killswitch.Switch{}, false
}

// fakeDelegations answers from a table, and remembers whom it was asked about.
type fakeDelegations struct {
	scopes map[string][]string
	err    error

	mu    sync.Mutex
	users []*identity.External
}

func (d *fakeDelegations) Scopes(ctx context.Context, agent, _ string, user *identity.External) ([]string, error) {
	d.mu.Lock()
	d.users = append(d.users, user)
	d.mu.Unlock()
	if d.err != nil {
		return nil, d.err
	}
	return d.scopes[agent], nil
}

// fakeAudit keeps records in memory.
type fakeAudit struct {
	mu      sync.Mutex
	records []audit.Record
	err     error
}

func (a *fakeAudit) Append(ctx context.Context, r *audit.Record) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return "", a.err
	}
	a.records = append(a.records, *r)
	return fmt.Sprintf("a%d", len(a.records)), nil
}

func (a *fakeAudit) last(t testing.TB) audit.Record {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.records) == 0 {
		t.Fatal("no audit record")
	}
	return a.records[len(a.records)-1]
}

// world is a handler over fakes, with agents, keys, a tool source, a user
// and policy.
type world struct {
	h           *Handler
	mux         *http.ServeMux
	signer      *fakeSigner
	idp         *fakeIssuers
	kill        *fakeKill
	delegations *fakeDelegations
	audit       *fakeAudit
	keys        fakeKeys
	resources   fakeResources
	lastToken   string // of the last successful answer
}

func agentResource(name string, spec config.AgentSpec) config.Resource {
	raw, _ := json.Marshal(spec)
	return config.Resource{APIVersion: config.APIVersion, Kind: "Agent", Metadata: config.Metadata{Name: name}, Spec: raw}
}

func newWorld(t testing.TB) *world {
	t.Helper()
	now := func() time.Time { return testNow }
	_, idpKey, _ := ed25519.GenerateKey(nil)
	w := &world{
		signer: newSigner(now),
		idp:    &fakeIssuers{key: idpKey, now: now},
		kill:   &fakeKill{agents: map[string]string{"stopped": "it looped"}},
		delegations: &fakeDelegations{scopes: map[string][]string{
			"billing": {"tool:erp.*", "tool:crm.get_customer", "model:gpt-4o"},
			"helper":  {"tool:erp.get_order", "tool:erp.delete_order", "tool:crm.*"},
		}},
		audit: &fakeAudit{},
		keys: fakeKeys{
			keyBilling: {ID: "b111", Agent: "billing"},
			keyHelper:  {ID: "h222", Agent: "helper"},
			keyStopped: {ID: "s333", Agent: "stopped"},
			keyGhost:   {ID: "g444", Agent: "ghost"},
			keyEmpty:   {ID: "e555", Agent: "empty"},
		},
		resources: fakeResources{
			"Agent/billing":   agentResource("billing", config.AgentSpec{Tools: []string{"erp.*", "crm.get_customer"}, Models: []string{"gpt-*"}}),
			"Agent/helper":    agentResource("helper", config.AgentSpec{Tools: []string{"erp.get_order"}}),
			"Agent/stopped":   agentResource("stopped", config.AgentSpec{Tools: []string{"erp.*"}}),
			"Agent/empty":     agentResource("empty", config.AgentSpec{}),
			"ToolSource/erp":  {Kind: "ToolSource", Metadata: config.Metadata{Name: "erp"}},
			"ToolSource/crm":  {Kind: "ToolSource", Metadata: config.Metadata{Name: "crm"}},
			"Agent/broken":    {Kind: "Agent", Metadata: config.Metadata{Name: "broken"}, Spec: json.RawMessage(`[`)},
			"Secret/erp-auth": {Kind: "Secret", Metadata: config.Metadata{Name: "erp-auth"}},
		},
	}
	w.keys["corral_ak_broken-secret"] = identity.Key{ID: "x666", Agent: "broken"}
	w.h = New(slog.New(slog.DiscardHandler), Deps{
		Keys: w.keys, Resources: w.resources, Kill: w.kill, Signer: w.signer,
		Issuers: w.idp, Delegations: w.delegations, Audit: w.audit,
	}, Options{})
	w.h.now = now
	w.mux = http.NewServeMux()
	w.h.Register(w.mux)
	return w
}

// userToken is a token of the identity provider for sub, valid for ttl.
func (w *world) userToken(sub string, ttl time.Duration) string {
	return jws(w.idp.key, userClaims{Issuer: idpIssuer, Sub: sub, Aud: "corral", Exp: testNow.Add(ttl).Unix(), Groups: []string{"finance"}, Roles: []string{"approver"}})
}

// request is one call to the token endpoint.
type request struct {
	form        url.Values
	body        string // used instead of form when set
	basic       []string
	contentType string // default form-encoded; "-" sends none
	header      http.Header
	target      string // default /oauth2/token
	method      string // default POST
}

func (w *world) do(t testing.TB, r request) *httptest.ResponseRecorder {
	t.Helper()
	body := r.body
	if body == "" {
		body = r.form.Encode()
	}
	method, target := r.method, r.target
	if method == "" {
		method = http.MethodPost
	}
	if target == "" {
		target = TokenPath
	}
	req := httptest.NewRequestWithContext(t.Context(), method, target, strings.NewReader(body))
	switch r.contentType {
	case "":
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	case "-":
	default:
		req.Header.Set("Content-Type", r.contentType)
	}
	if r.basic != nil {
		req.SetBasicAuth(url.QueryEscape(r.basic[0]), url.QueryEscape(r.basic[1]))
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	w.mux.ServeHTTP(rec, req)
	return rec
}

// answer is a token endpoint response, success or error.
type answer struct {
	AccessToken      string `json:"access_token"`
	IssuedTokenType  string `json:"issued_token_type"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int64  `json:"expires_in"`
	Scope            string `json:"scope"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

func decodeAnswer(t testing.TB, rec *httptest.ResponseRecorder) answer {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json; body %s", ct, rec.Body)
	}
	var a answer
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		t.Fatalf("decode answer: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		t.Fatalf("answer has trailing data")
	}
	return a
}

// claimsOf reads a token's claims without checking its signature.
func claimsOf(t testing.TB, token string) identity.Claims {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a compact JWS", token)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c identity.Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// cc is a client_credentials form for client_secret_post.
func cc(id, secret string, extra ...string) url.Values {
	v := url.Values{"grant_type": {GrantClientCredentials}, "client_id": {id}, "client_secret": {secret}}
	return with(v, extra...)
}

// exchange is a token exchange form for client_secret_post.
func exchangeForm(id, secret, subject string, extra ...string) url.Values {
	v := url.Values{
		"grant_type": {GrantTokenExchange}, "client_id": {id}, "client_secret": {secret},
		"subject_token": {subject}, "subject_token_type": {TokenTypeJWT},
	}
	return with(v, extra...)
}

// with adds name, value pairs to v; a pair with an empty value deletes the name.
func with(v url.Values, pairs ...string) url.Values {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			v.Del(pairs[i])
			continue
		}
		v.Add(pairs[i], pairs[i+1])
	}
	return v
}

func httpRequest(t testing.TB, form url.Values) *http.Request {
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, TokenPath, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }
