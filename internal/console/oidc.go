package console

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/problem"
)

// OIDC configures sign-in through a trusted Issuer by the authorization
// code flow with PKCE. The ID token the provider returns is verified as
// every user's token is (identity.Issuers): an Issuer resource must trust
// the provider, with the client id as its audience.
type OIDC struct {
	// Issuer is the provider's issuer URL (its discovery document is at
	// Issuer/.well-known/openid-configuration).
	Issuer string
	// ClientID and ClientSecret identify corral to the provider; the
	// secret is empty for a public client.
	ClientID, ClientSecret string
	// RedirectURL is the callback the provider sends people back to;
	// "" is this request's origin + /ui/api/oidc/callback.
	RedirectURL string
	// Scopes asked for; nil is openid, profile, email.
	Scopes []string
	// HTTPClient reaches the provider; nil is a client with a 10 s timeout.
	HTTPClient *http.Client
}

// Lifetimes of a sign-in under way, and of the provider's metadata.
const (
	oidcFlowTTL     = 10 * time.Minute
	oidcMetadataTTL = time.Hour
	// maxFlowBytes bounds FlowBucket: anyone may start a sign-in, so
	// strangers must not be able to fill the substrate with them. It holds
	// some 30,000 sign-ins under way.
	maxFlowBytes   = 16 << 20
	oidcCookie     = "corral_console_oidc"
	maxTokenAnswer = 1 << 20
	callbackPath   = "/ui/api/oidc/callback"
)

// FlowBucket holds the sign-ins under way at an identity provider, so that
// the provider may send the browser back to any replica.
const FlowBucket = "corral_console_oidc_flows"

// flow is one sign-in under way, found by its state.
type flow struct {
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	Redirect string `json:"redirect"`
}

// storedFlow is a flow as FlowBucket holds it: under the SHA-256 of its
// state, sealed with a key derived from the state, which only the browser
// (its cookie) and the provider's redirect carry.
type storedFlow struct {
	Sealed  []byte    `json:"sealed"`
	Started time.Time `json:"started"`
}

// oidcFlows runs the code flow for the console.
type oidcFlows struct {
	cfg  OIDC
	now  func() time.Time
	kv   jetstream.KeyValue
	mu   sync.Mutex // guards meta and at
	meta *providerMetadata
	at   time.Time
}

type providerMetadata struct {
	Issuer                string `json:"issuer"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
}

func newOIDCFlows(cfg OIDC, kv jetstream.KeyValue, now func() time.Time) *oidcFlows {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Scopes == nil {
		cfg.Scopes = []string{"openid", "profile", "email"}
	}
	return &oidcFlows{cfg: cfg, now: now, kv: kv}
}

// errNoFlow: the state names no sign-in under way (never started, used,
// expired).
var errNoFlow = errors.New("console: no such sign-in under way")

// begin stores f and returns its state.
func (o *oidcFlows) begin(ctx context.Context, f flow) (string, error) {
	state := randomToken()
	key := sessionKey(state)
	sealed, err := seal(state, flowLabel, key, f)
	if err != nil {
		return "", fmt.Errorf("console: oidc flow: %w", err)
	}
	value, err := json.Marshal(storedFlow{Sealed: sealed, Started: o.now().UTC()})
	if err != nil {
		return "", fmt.Errorf("console: oidc flow: %w", err)
	}
	if _, err := o.kv.Create(ctx, key, value); err != nil {
		return "", fmt.Errorf("console: store oidc flow: %w", err)
	}
	return state, nil
}

// take returns the flow state names and forgets it: of two callbacks with
// one state, on one replica or two, only one gets it.
func (o *oidcFlows) take(ctx context.Context, state string) (flow, error) {
	key := sessionKey(state)
	e, err := o.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return flow{}, errNoFlow
	}
	if err != nil {
		return flow{}, fmt.Errorf("console: read oidc flow: %w", err)
	}
	// One use: the delete is guarded by the revision read, so a second
	// callback racing this one finds the key changed and fails.
	if err := o.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			return flow{}, errNoFlow
		}
		return flow{}, fmt.Errorf("console: use oidc flow: %w", err)
	}
	var sf storedFlow
	var f flow
	if json.Unmarshal(e.Value(), &sf) != nil || unseal(state, flowLabel, key, sf.Sealed, &f) != nil || o.now().Sub(sf.Started) > oidcFlowTTL {
		return flow{}, errNoFlow
	}
	return f, nil
}

// metadata reads the provider's discovery document, cached for an hour.
func (o *oidcFlows) metadata(ctx context.Context) (*providerMetadata, error) {
	o.mu.Lock()
	if o.meta != nil && o.now().Sub(o.at) < oidcMetadataTTL {
		m := o.meta
		o.mu.Unlock()
		return m, nil
	}
	o.mu.Unlock()
	u := strings.TrimSuffix(o.cfg.Issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("console: oidc discovery: %w", err)
	}
	resp, err := o.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("console: oidc discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("console: oidc discovery: %s answered %d", u, resp.StatusCode)
	}
	var m providerMetadata
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxTokenAnswer)).Decode(&m); err != nil {
		return nil, fmt.Errorf("console: oidc discovery: %w", err)
	}
	if m.Issuer != o.cfg.Issuer || !httpsOrLoopback(m.AuthorizationEndpoint) || !httpsOrLoopback(m.TokenEndpoint) {
		return nil, fmt.Errorf("console: oidc discovery: the document names issuer %q (want %q) or endpoints that are not https", m.Issuer, o.cfg.Issuer)
	}
	o.mu.Lock()
	o.meta, o.at = &m, o.now()
	o.mu.Unlock()
	return &m, nil
}

// httpsOrLoopback accepts https URLs, and http ones to the loopback
// (providers in tests and on a developer's machine).
func httpsOrLoopback(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return false
	}
	h := u.Hostname()
	return u.Scheme == "https" || (u.Scheme == "http" && (h == "127.0.0.1" || h == "localhost" || h == "::1"))
}

func pkceChallenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// start sends the browser to the provider.
func (c *Console) oidcStart(w http.ResponseWriter, r *http.Request) error {
	o := c.oidc
	if o == nil {
		return problem.New(http.StatusNotFound, problem.NotFound, "sign-in through an identity provider is not configured (--console-oidc-issuer)")
	}
	m, err := o.metadata(r.Context())
	if err != nil {
		return problem.Wrap(http.StatusBadGateway, problem.UpstreamUnavailable, "the identity provider's discovery document could not be read", err)
	}
	redirect := o.cfg.RedirectURL
	if redirect == "" {
		scheme := "http"
		if secure(r) {
			scheme = "https"
		}
		redirect = scheme + "://" + r.Host + callbackPath
	}
	f := flow{Nonce: randomToken(), Verifier: randomToken(), Redirect: redirect}
	state, err := o.begin(r.Context(), f)
	if err != nil {
		// A full bucket (strangers starting sign-ins by the thousand) or
		// the substrate failing: either way, later.
		return &problem.Error{Status: http.StatusServiceUnavailable, Code: problem.Overloaded, RetryAfter: time.Minute,
			Detail: "the sign-in could not be started: too many under way, or the substrate did not answer; try again in a minute", Err: err}
	}
	q := url.Values{
		"response_type": {"code"}, "client_id": {o.cfg.ClientID}, "redirect_uri": {redirect},
		"scope": {strings.Join(o.cfg.Scopes, " ")}, "state": {state}, "nonce": {f.Nonce},
		"code_challenge": {pkceChallenge(f.Verifier)}, "code_challenge_method": {"S256"},
	}
	sep := "?"
	if strings.Contains(m.AuthorizationEndpoint, "?") {
		sep = "&"
	}
	// The state cookie binds the callback to this browser. Lax, not
	// Strict: the callback is a navigation from the provider's site.
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: state, Path: "/ui/api/oidc/", HttpOnly: true, Secure: secure(r),
		SameSite: http.SameSiteLaxMode, MaxAge: int(oidcFlowTTL / time.Second)})
	http.Redirect(w, r, m.AuthorizationEndpoint+sep+q.Encode(), http.StatusFound)
	return nil
}

// callback takes the provider's code, exchanges it for an ID token,
// verifies the token and starts a session.
func (c *Console) oidcCallback(w http.ResponseWriter, r *http.Request) error {
	o := c.oidc
	if o == nil {
		return problem.New(http.StatusNotFound, problem.NotFound, "sign-in through an identity provider is not configured")
	}
	q := r.URL.Query()
	state := q.Get("state")
	ck, err := r.Cookie(oidcCookie)
	if state == "" || err != nil || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(state)) != 1 {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "state: this sign-in was not started in this browser; start again at /ui/")
	}
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: "", Path: "/ui/api/oidc/", HttpOnly: true, Secure: secure(r), MaxAge: -1})
	f, err := o.take(r.Context(), state)
	if errors.Is(err, errNoFlow) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "state: unknown, used or expired; start again at /ui/")
	}
	if err != nil {
		return substrateProblem(err)
	}
	if e := q.Get("error"); e != "" {
		return problem.New(http.StatusUnauthorized, problem.Unauthenticated, fmt.Sprintf("the identity provider refused: %.100s", e))
	}
	code := q.Get("code")
	if code == "" {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "code: missing")
	}
	m, err := o.metadata(r.Context())
	if err != nil {
		return problem.Wrap(http.StatusBadGateway, problem.UpstreamUnavailable, "the identity provider's discovery document could not be read", err)
	}
	idToken, err := o.exchange(r.Context(), m.TokenEndpoint, code, f)
	if err != nil {
		return problem.Wrap(http.StatusBadGateway, problem.UpstreamError, "the identity provider did not give an ID token for the code", err)
	}
	if c.auth.users == nil {
		return problem.New(http.StatusUnauthorized, problem.Unauthenticated, "no Issuer is trusted")
	}
	u, err := c.auth.users.Verify(r.Context(), idToken)
	if err != nil {
		return problem.Wrap(http.StatusUnauthorized, problem.Unauthenticated, "the ID token is not one a trusted Issuer signed for this audience", err)
	}
	if n, _ := u.Claims["nonce"].(string); subtle.ConstantTimeCompare([]byte(n), []byte(f.Nonce)) != 1 {
		return problem.New(http.StatusUnauthorized, problem.Unauthenticated, "the ID token's nonce is not this sign-in's")
	}
	p, exp, ok := c.auth.authenticate(r.Context(), idToken)
	if !ok {
		return problem.New(http.StatusUnauthorized, problem.Unauthenticated, "the ID token is not valid")
	}
	if _, err := c.startSession(w, r, p, idToken, exp); err != nil {
		return err
	}
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
	return nil
}

// exchange trades the code for the ID token at the token endpoint.
func (o *oidcFlows) exchange(ctx context.Context, endpoint, code string, f flow) (string, error) {
	form := url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {f.Redirect},
		"client_id": {o.cfg.ClientID}, "code_verifier": {f.Verifier},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if o.cfg.ClientSecret != "" {
		req.SetBasicAuth(url.QueryEscape(o.cfg.ClientID), url.QueryEscape(o.cfg.ClientSecret))
	}
	resp, err := o.cfg.HTTPClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		IDToken string `json:"id_token"`
		Error   string `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxTokenAnswer)).Decode(&out); err != nil {
		return "", fmt.Errorf("token endpoint answered %d, not JSON: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK || out.IDToken == "" {
		return "", fmt.Errorf("token endpoint answered %d %.100q and no id_token", resp.StatusCode, out.Error)
	}
	return out.IDToken, nil
}

// OIDCInfo answers GET /ui/api/oidc: whether the sign-in page offers the
// identity provider.
type OIDCInfo struct {
	Enabled bool   `json:"enabled"`
	Issuer  string `json:"issuer,omitempty"`
}

func (c *Console) oidcInfo(w http.ResponseWriter, _ *http.Request) error {
	if c.oidc == nil {
		return problem.WriteJSON(w, http.StatusOK, OIDCInfo{})
	}
	return problem.WriteJSON(w, http.StatusOK, OIDCInfo{Enabled: true, Issuer: c.oidc.cfg.Issuer})
}
