package test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/corral-dev/corral/internal/identity/oidctest"
)

// bankingSpec describes the upstream of the identity tests.
const bankingSpec = `openapi: 3.0.3
info: {title: banking, version: "1"}
paths:
  /accounts/{id}/balance:
    get:
      operationId: get_balance
      parameters: [{name: id, in: path, required: true, schema: {type: string}}]
      responses: {"200": {description: the balance}}
`

// identityUpstream is an upstream that verifies corral's identity token the
// way docs/tokens.md tells upstreams to: with the JWKS, checking iss, aud
// and exp; it records who it was told acts.
type identityUpstream struct {
	jwksURL, issuer, audience string

	mu   sync.Mutex
	seen []seenIdentity
}

type seenIdentity struct {
	Sub, Act, ClientID string
	Err                string
}

func (u *identityUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	who := u.verify(r.Header.Get("Corral-Identity"))
	u.mu.Lock()
	u.seen = append(u.seen, who)
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"balance": 120, "for": %q}`, who.Sub)
}

func (u *identityUpstream) verify(token string) seenIdentity {
	fail := func(format string, a ...any) seenIdentity { return seenIdentity{Err: fmt.Sprintf(format, a...)} }
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return fail("parse: %v", err)
	}
	resp, err := http.Get(u.jwksURL)
	if err != nil {
		return fail("jwks: %v", err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return fail("jwks: %v", err)
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) == 0 {
		return fail("no key %s in the JWKS", jws.Signatures[0].Header.KeyID)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		return fail("verify: %v", err)
	}
	var c struct {
		Iss, Sub, Aud string
		Exp           int64
		ClientID      string `json:"client_id"`
		Act           *struct{ Sub string }
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return fail("claims: %v", err)
	}
	if c.Iss != u.issuer || c.Aud != u.audience || time.Unix(c.Exp, 0).Before(time.Now()) {
		return fail("iss %q aud %q exp %d: not for me", c.Iss, c.Aud, c.Exp)
	}
	s := seenIdentity{Sub: c.Sub, ClientID: c.ClientID}
	if c.Act != nil {
		s.Act = c.Act.Sub
	}
	return s
}

func (u *identityUpstream) last() seenIdentity {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return seenIdentity{Err: "no call"}
	}
	return u.seen[len(u.seen)-1]
}

// tokenRequest posts a form to /oauth2/token and decodes the answer.
func tokenRequest(t *testing.T, p *proc, form url.Values, user, pass string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "POST", p.URL+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("/oauth2/token answered HTTP %d with no JSON: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

// createKey makes an agent key with the CLI.
func createKey(t *testing.T, p *proc, agent string) string {
	t.Helper()
	out, stderr, exit := runCLI(t, p.env(), "keys", "create", "--agent", agent, "-o", "json")
	var key struct {
		Key string `json:"key"`
	}
	if exit != 0 || json.Unmarshal([]byte(out), &key) != nil {
		t.Fatalf("keys create --agent %s: exit %d %s %s", agent, exit, out, stderr)
	}
	return key.Key
}

// TestTokensAndDelegation drives the token service as agents and upstreams
// use it: an agent trades its key for a short-lived token and calls a tool
// with it; it exchanges a user's token from a trusted OIDC provider for a
// delegated one; the upstream verifies, with corral's JWKS, the identity
// token each call carries and reads the user and the agent from it.
func TestTokensAndDelegation(t *testing.T) {
	p := startCorral(t)
	idp := oidctest.Start(t)
	up := &identityUpstream{jwksURL: p.URL + "/.well-known/jwks.json", issuer: p.URL, audience: "banking"}
	upstream := httptest.NewServer(up)
	t.Cleanup(upstream.Close)

	dir := t.TempDir()
	spec := writeFile(t, dir, "banking.yaml", bankingSpec)
	if stdout, stderr, exit := runCLI(t, p.env(), "tools", "import", "openapi", spec, "--name", "banking", "--base-url", upstream.URL, "--apply"); exit != 0 {
		t.Fatalf("tools import: exit %d\n%s%s", exit, stdout, stderr)
	}
	resources := writeFile(t, dir, "resources.yaml", fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Issuer
metadata: {name: corp}
spec: {issuer: %q, audience: corral}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: teller}
spec: {tools: [banking.*]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: auditor}
spec: {tools: [banking.get_balance]}
`, idp.URL()))
	if stdout, stderr, exit := runCLI(t, p.env(), "apply", "-f", resources); exit != 0 {
		t.Fatalf("apply: exit %d\n%s%s", exit, stdout, stderr)
	}
	key := createKey(t, p, "teller")

	// client_credentials, with HTTP Basic: a token scoped to the agent's tools.
	status, tok := tokenRequest(t, p, url.Values{"grant_type": {"client_credentials"}}, "teller", key)
	if status != http.StatusOK || tok["token_type"] != "Bearer" || tok["scope"] != "tool:banking.*" {
		t.Fatalf("client_credentials: HTTP %d %v", status, tok)
	}
	access := tok["access_token"].(string)
	var r response
	if !waitFor(startTimeout, func() bool {
		r = invoke(t, p, access, "banking.get_balance", `{"id": "acc-1"}`)
		return r.status == http.StatusOK
	}) {
		t.Fatalf("invoke with the access token: HTTP %d %s", r.status, r.body)
	}
	if got := up.last(); got.Err != "" || got.Sub != "teller" || got.ClientID != "teller" || got.Act != "" {
		t.Errorf("upstream saw %+v for the agent's own token, want sub teller and no act", got)
	}

	// Token exchange: alice's token from the trusted provider, bound to a
	// task the agent started; a task that is not one is refused.
	created := request(t, "POST", p.URL+"/v1/tasks", key, `{"input": "pay invoice 42"}`)
	var task struct{ ID string }
	if created.status != http.StatusCreated || json.Unmarshal(created.body, &task) != nil {
		t.Fatalf("the agent starts a task: HTTP %d %s", created.status, created.body)
	}
	user := idp.Token(t, map[string]any{"sub": "alice", "aud": "corral", "groups": []string{"treasury"}})
	exchange := func(task string) (int, map[string]any) {
		return tokenRequest(t, p, url.Values{
			"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token":      {user},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
			"client_id":          {"teller"},
			"client_secret":      {key},
			"task":               {task},
		}, "", "")
	}
	if status, tok := exchange("task-42"); status != http.StatusBadRequest || tok["error"] != "invalid_request" {
		t.Errorf("token exchange bound to a task that does not exist: HTTP %d %v, want 400 invalid_request", status, tok)
	}
	status, tok = exchange(task.ID)
	if status != http.StatusOK || tok["issued_token_type"] != "urn:ietf:params:oauth:token-type:access_token" {
		t.Fatalf("token exchange: HTTP %d %v", status, tok)
	}
	delegated := tok["access_token"].(string)
	if r := invoke(t, p, delegated, "banking.get_balance", `{"id": "acc-1"}`); r.status != http.StatusOK {
		t.Fatalf("invoke with the delegated token: HTTP %d %s", r.status, r.body)
	}
	if got := up.last(); got.Err != "" || got.Sub != "alice" || got.Act != "teller" || got.ClientID != "teller" {
		t.Errorf("upstream saw %+v for the delegated token, want sub alice, act teller", got)
	}

	// Refusals: each token is refused with 401 and a reason of its own.
	forged := forger(t, p)
	now := time.Now()
	valid := map[string]any{"iss": p.URL, "aud": p.URL, "sub": "teller", "client_id": "teller", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": "t1"}
	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for k, v := range valid {
			c[k] = v
		}
		c[k] = v
		return c
	}
	parts := strings.Split(access, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(mustDecode(t, parts[1]), `"teller"`, `"admin0"`, 1))) + "." + parts[2]
	bad := []struct {
		name, token, reason string
	}{
		{"expired", forged.sign(with("exp", now.Add(-time.Hour).Unix())), "expired"},
		{"not yet valid", forged.sign(with("nbf", now.Add(time.Hour).Unix())), "not_yet_valid"},
		{"wrong audience", forged.sign(with("aud", "banking")), "wrong_audience"},
		{"wrong issuer", forged.sign(with("iss", "https://evil.example")), "wrong_issuer"},
		{"tampered", tampered, "bad_signature"},
		{"alg none", forged.none(valid), "alg_none"},
		{"HS256 with the public key", forged.hs256(valid), "alg_not_allowed"},
	}
	for _, b := range bad {
		r := invoke(t, p, b.token, "banking.get_balance", `{"id": "acc-1"}`)
		if r.status != http.StatusUnauthorized || code(r) != "unauthenticated" || !strings.Contains(string(r.body), b.reason) {
			t.Errorf("%s token: HTTP %d %s, want 401 unauthenticated naming %s", b.name, r.status, r.body, b.reason)
		}
	}
	// Agent A's key presented for agent B.
	status, tok = tokenRequest(t, p, url.Values{"grant_type": {"client_credentials"}}, "auditor", key)
	if status != http.StatusUnauthorized || tok["error"] != "invalid_client" {
		t.Errorf("teller's key presented as auditor: HTTP %d %v, want 401 invalid_client", status, tok)
	}

	out, stderr, exit := runCLI(t, p.env(), "audit", "--limit", "1000", "-o", "json")
	if exit != 0 {
		t.Fatalf("audit: exit %d %s", exit, stderr)
	}
	var records struct {
		Records []struct {
			Kind, Code, Reason, Principal, Agent string
		} `json:"records"`
	}
	if err := json.Unmarshal([]byte(out), &records); err != nil {
		t.Fatalf("audit -o json: %v\n%s", err, out)
	}
	var reasons []string
	delegatedCall := false
	for _, rec := range records.Records {
		if rec.Code == "unauthenticated" || rec.Code == "invalid_client" {
			reason, _, _ := strings.Cut(rec.Reason, ":")
			reasons = append(reasons, reason)
		}
		if rec.Kind == "tool" && rec.Principal == "alice" && rec.Agent == "teller" {
			delegatedCall = true
		}
	}
	for _, want := range []string{"expired", "not_yet_valid", "wrong_audience", "wrong_issuer", "bad_signature", "alg_none", "alg_not_allowed", "agent_mismatch"} {
		if !slices.Contains(reasons, want) {
			t.Errorf("the audit has no refusal with reason %s; reasons: %v", want, reasons)
		}
	}
	if !delegatedCall {
		t.Errorf("the audit has no call by teller for alice:\n%s", out)
	}
}

func mustDecode(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tokenForger makes tokens an attacker (or a clock) could present: signed
// with corral's real key but wrong claims, unsigned, or HMAC-signed with the
// public key.
type tokenForger struct {
	t      *testing.T
	kid    string
	key    ed25519.PrivateKey
	public []byte
}

// forger reads the replica's signing key from its data directory.
func forger(t *testing.T, p *proc) *tokenForger {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(p.Data, "signing-keys", "*.jwk"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no signing key under %s: %v", p.Data, err)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(data); err != nil {
		t.Fatalf("%s: %v", files[0], err)
	}
	priv, ok := jwk.Key.(ed25519.PrivateKey)
	if !ok {
		t.Fatalf("%s holds a %T, want an Ed25519 private key", files[0], jwk.Key)
	}
	return &tokenForger{t: t, kid: jwk.KeyID, key: priv, public: priv.Public().(ed25519.PublicKey)}
}

func (f *tokenForger) claims(c map[string]any) []byte {
	b, err := json.Marshal(c)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func (f *tokenForger) sign(claims map[string]any) string {
	header := map[string]any{"alg": "EdDSA", "kid": f.kid, "typ": "JWT"}
	unsigned := oidctest.Compact(header, f.claims(claims), nil)
	signingInput := unsigned[:len(unsigned)-1]
	return oidctest.Compact(header, f.claims(claims), ed25519.Sign(f.key, []byte(signingInput)))
}

func (f *tokenForger) none(claims map[string]any) string {
	return oidctest.Compact(map[string]any{"alg": "none", "typ": "JWT"}, f.claims(claims), nil)
}

func (f *tokenForger) hs256(claims map[string]any) string {
	return oidctest.HS256(map[string]any{"alg": "HS256", "kid": f.kid, "typ": "JWT"}, f.claims(claims), f.public)
}
