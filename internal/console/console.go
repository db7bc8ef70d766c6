// Package console serves corral's web console at /ui/: a few hand-written
// JavaScript modules and a style sheet, embedded in the binary, over a
// session-authenticated window onto the control-plane API (/ui/api/v1/...
// forwards to /v1/... for the roles allowed to call it).
package console

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/telemetry"
)

//go:embed ui
var assets embed.FS

// Prefix is where the console is served.
const Prefix = "/ui/"

// CookieName is the session cookie's name.
const CookieName = "corral_console"

// CSRFHeader carries the session's CSRF token on every change.
const CSRFHeader = "X-Corral-CSRF"

// contentSecurityPolicy lets the page load its own scripts, styles and
// images and talk to its own origin, and nothing else: no inline script,
// no inline style, no frames, no plugins.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// streamRecheck is how often an open event stream checks that its session
// still stands.
const streamRecheck = 5 * time.Second

// maxSignIn caps the sign-in body: a credential, or a trusted Issuer's token.
const maxSignIn = 16 << 10

// Options configure the console.
type Options struct {
	// AdminGroups are the groups whose people are admins.
	AdminGroups []string
	// ViewerGroups are the groups whose people only read; nil is
	// DefaultViewerGroups.
	ViewerGroups []string
	// ServiceToken is an admin credential the console reads the API with
	// for viewers and approvers, and acts with for admins who signed in
	// with their own credential. It never leaves the server.
	ServiceToken string
	// OIDC, when set, offers sign-in through an identity provider.
	OIDC *OIDC
	// Audit, when set, records refused sign-ins, bounded by Refusals.
	Audit Auditor
	// Refusals bounds the audit records of refused sign-ins per source
	// address; every door that refuses strangers shares one. Nil is a
	// bound of the console's own.
	Refusals *audit.Refusals
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Auditor appends audit records (audit.Log).
type Auditor interface {
	Append(ctx context.Context, r *audit.Record) (string, error)
}

// DefaultViewerGroups is the viewer group when Options.ViewerGroups is nil.
var DefaultViewerGroups = []string{"viewers"}

// Console is the /ui/ handler.
type Console struct {
	logger   *slog.Logger
	api      http.Handler
	auth     *authenticator
	sessions *sessions
	signIns  *signInLimit
	audit    Auditor // nil: refused sign-ins are only logged
	refusals *audit.Refusals
	now      func() time.Time
	service  string
	static   http.Handler
	mux      *http.ServeMux // /ui/api/...
	pages    http.Handler   // the rest of /ui/
	oidc     *oidcFlows     // nil: no sign-in through a provider
	recheck  time.Duration  // how often a stream's session is checked
}

// New returns the console over api (the handler serving /v1/...), keeping
// its sessions in store and letting in the credentials admins, humans and
// users accept. humans and users may be nil.
func New(logger *slog.Logger, api http.Handler, store *Store, admins Admins, humans Humans, users Users, opts Options) *Console {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ViewerGroups == nil {
		opts.ViewerGroups = DefaultViewerGroups
	}
	if opts.Refusals == nil {
		opts.Refusals = &audit.Refusals{}
	}
	sub, _ := fs.Sub(assets, "ui") // the directory is embedded: never fails
	c := &Console{
		logger: logger, api: api,
		auth:     &authenticator{admins: admins, humans: humans, users: users, adminGroups: opts.AdminGroups, viewerGroups: opts.ViewerGroups},
		sessions: &sessions{kv: store.sessions, now: opts.Now},
		signIns:  &signInLimit{kv: store.signIns, now: opts.Now},
		audit:    opts.Audit,
		refusals: opts.Refusals,
		now:      opts.Now,
		service:  opts.ServiceToken,
		static:   http.StripPrefix("/ui", http.FileServerFS(sub)),
		mux:      http.NewServeMux(),
		recheck:  streamRecheck,
	}
	if opts.OIDC != nil && opts.OIDC.Issuer != "" {
		c.oidc = newOIDCFlows(*opts.OIDC, store.flows, opts.Now)
	}
	h := func(f problem.HandlerFunc) http.Handler { return problem.Handle(logger, f) }
	c.mux.Handle("GET /ui/api/oidc", h(c.oidcInfo))
	c.mux.Handle("GET /ui/api/oidc/start", h(c.oidcStart))
	c.mux.Handle("GET "+callbackPath, h(c.oidcCallback))
	c.mux.Handle("GET /ui/api/session", h(c.whoami))
	c.mux.Handle("POST /ui/api/session", h(c.signIn))
	c.mux.Handle("DELETE /ui/api/session", h(c.signOut))
	c.mux.Handle("/ui/api/session", h(problem.NotAllowed("GET", "POST", "DELETE")))
	c.mux.Handle("/ui/api/v1/", h(c.forward))
	c.mux.Handle("/ui/api/", h(func(_ http.ResponseWriter, r *http.Request) error {
		return problem.New(http.StatusNotFound, problem.NotFound, "no such endpoint: "+r.URL.Path)
	}))
	c.pages = h(func(w http.ResponseWriter, r *http.Request) error {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return problem.NotAllowed("GET")(w, r)
		}
		c.asset(w, r)
		return nil
	})
	return c
}

// Register mounts the console at /ui/ on mux.
func (c *Console) Register(mux *http.ServeMux) {
	mux.Handle(Prefix, c)
	mux.Handle("GET /ui", http.RedirectHandler(Prefix, http.StatusMovedPermanently))
}

// ServeHTTP sets the headers every console answer carries, then serves it.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
	if strings.HasPrefix(r.URL.Path, "/ui/api/") {
		c.mux.ServeHTTP(w, r)
		return
	}
	c.pages.ServeHTTP(w, r)
}

// asset serves the embedded files; any path that is not a file is the
// single page (index.html), which routes on the client.
func (c *Console) asset(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, Prefix)
	if name != "" {
		if f, err := assets.Open("ui/" + name); err == nil {
			st, err := f.Stat()
			f.Close()
			if err == nil && !st.IsDir() {
				w.Header().Set("Cache-Control", "no-cache")
				c.static.ServeHTTP(w, r)
				return
			}
		}
		if path.Ext(name) != "" {
			http.NotFound(w, r)
			return
		}
	}
	page, _ := assets.ReadFile("ui/index.html")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(page)
}

// SessionInfo answers GET and POST /ui/api/session.
type SessionInfo struct {
	Person
	// CSRF is sent back as the X-Corral-CSRF header on every change.
	CSRF    string    `json:"csrf"`
	Expires time.Time `json:"expires"`
}

// SignIn is the body of POST /ui/api/session.
type SignIn struct {
	Credential string `json:"credential"`
}

func (c *Console) signIn(w http.ResponseWriter, r *http.Request) error {
	// A cross-site form cannot send JSON, and a cross-site fetch of it
	// needs a preflight the console never answers: login CSRF is refused.
	if err := sameOrigin(r); err != nil {
		return err
	}
	if mt, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";"); strings.TrimSpace(mt) != "application/json" {
		return problem.New(http.StatusUnsupportedMediaType, problem.UnsupportedMedia, `send {"credential": "..."} as application/json`)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSignIn))
	if err != nil {
		return problem.New(http.StatusRequestEntityTooLarge, problem.RequestTooLarge, "the body is too large for a credential")
	}
	var in SignIn
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(&in); err != nil {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, `the body must be {"credential": "..."}`)
	}
	in.Credential = strings.TrimSpace(in.Credential)
	if in.Credential == "" {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "credential: the admin token, a corral human's key, or a trusted Issuer's token")
	}
	ctx := r.Context()
	keys := signInKeys(r.RemoteAddr, in.Credential)
	wait, err := c.signIns.wait(ctx, keys)
	if err != nil {
		return substrateProblem(err)
	}
	if wait > 0 {
		c.refused(ctx, r, problem.RateLimited, "console sign-in: too many failed sign-ins from this address or for this name", in.Credential)
		return &problem.Error{Status: http.StatusTooManyRequests, Code: problem.RateLimited, RetryAfter: wait,
			Detail: fmt.Sprintf("too many failed sign-ins from this address or for this name; try again in %s", wait.Round(time.Second))}
	}
	p, exp, ok := c.auth.authenticate(ctx, in.Credential)
	if !ok {
		if err := c.signIns.fail(ctx, keys); err != nil {
			// The refusal stands; only its count is lost.
			c.logger.WarnContext(ctx, "console failed sign-in not counted", "err", err)
		}
		c.refused(ctx, r, problem.Unauthenticated, "console sign-in: the credential is not valid", in.Credential)
		return problem.New(http.StatusUnauthorized, problem.Unauthenticated, "the credential is not valid: not the admin token, a live human's key, or a trusted Issuer's token")
	}
	se, err := c.startSession(w, r, p, in.Credential, exp)
	if err != nil {
		return err
	}
	return problem.WriteJSON(w, http.StatusOK, SessionInfo{Person: p, CSRF: se.csrf, Expires: se.expires})
}

// refused logs a refused sign-in and audits it, within the bound on
// unauthenticated refusals per source address (audit.Refusals) that the
// gateway and the token endpoint share: a stranger trying credentials
// grows the audit no faster than one calling tools without any.
func (c *Console) refused(ctx context.Context, r *http.Request, code, reason, credential string) {
	c.logger.InfoContext(ctx, "console sign-in refused", "code", code, "remote", r.RemoteAddr)
	if c.audit == nil {
		return
	}
	now := c.now()
	store, n := c.refusals.Admit(r.RemoteAddr, now)
	if !store {
		return // counted, and stood for by the next record from this address
	}
	if name := claimedName(credential); name != "" {
		reason += " (it claims " + name + ")"
	}
	rec := &audit.Record{Time: now.UTC(), Kind: "console", Target: "sign-in", Edge: "console", Decision: "denied", Status: "refused",
		Code: code, Reason: reason, Remote: r.RemoteAddr, RequestID: telemetry.RequestID(ctx)}
	if n > 1 {
		rec.Sampled = n
	}
	if _, err := c.audit.Append(context.WithoutCancel(ctx), rec); err != nil {
		c.logger.ErrorContext(ctx, "audit record lost", "target", rec.Target, "code", code, "err", err)
	}
}

// substrateProblem answers a failure to read or write the console's
// buckets.
func substrateProblem(err error) error {
	return &problem.Error{Status: http.StatusServiceUnavailable, Code: problem.SubstrateUnavailable, RetryAfter: time.Second,
		Detail: "the substrate (NATS JetStream) did not answer in time, as during a leader election; retry", Err: err}
}

// startSession signs p in: a new session, its cookie, a log line.
func (c *Console) startSession(w http.ResponseWriter, r *http.Request, p Person, credential string, exp time.Time) (*session, error) {
	ctx := r.Context()
	if old, err := r.Cookie(CookieName); err == nil && old.Value != "" {
		// A new sign-in replaces the old session.
		if err := c.sessions.end(ctx, old.Value); err != nil {
			return nil, substrateProblem(err)
		}
	}
	token, se, err := c.sessions.create(ctx, p, credential, exp)
	if err != nil {
		return nil, substrateProblem(err)
	}
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: token, Path: Prefix, HttpOnly: true, Secure: secure(r),
		SameSite: http.SameSiteStrictMode, Expires: se.expires,
	})
	c.logger.InfoContext(ctx, "console sign-in", "person", p.Name, "kind", p.Kind, "role", string(p.Role))
	return se, nil
}

func (c *Console) whoami(w http.ResponseWriter, r *http.Request) error {
	se, _, err := c.session(r)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return problem.WriteJSON(w, http.StatusOK, SessionInfo{Person: se.person, CSRF: se.csrf, Expires: se.expires})
}

func (c *Console) signOut(w http.ResponseWriter, r *http.Request) error {
	se, id, err := c.session(r)
	if err != nil {
		return err
	}
	if err := checkChange(r, se); err != nil {
		return err
	}
	if err := c.sessions.end(r.Context(), id); err != nil {
		return substrateProblem(err)
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: Prefix, HttpOnly: true, Secure: secure(r),
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// session finds the request's session and checks its credential again: a
// revoked key or an expired token ends the session now, and the role is
// the one the person's groups give now, on whichever replica answers.
func (c *Console) session(r *http.Request) (*session, string, error) {
	ck, err := r.Cookie(CookieName)
	if err != nil {
		return nil, "", problem.New(http.StatusUnauthorized, problem.Unauthenticated, "sign in at /ui/")
	}
	se, err := c.sessions.get(r.Context(), ck.Value)
	if errors.Is(err, errNoSession) {
		return nil, "", problem.New(http.StatusUnauthorized, problem.Unauthenticated, "the session has ended; sign in again")
	}
	if err != nil {
		return nil, "", substrateProblem(err)
	}
	p, _, ok := c.auth.authenticate(r.Context(), se.credential)
	if !ok {
		_ = c.sessions.end(r.Context(), ck.Value) // refused either way
		return nil, "", problem.New(http.StatusUnauthorized, problem.Unauthenticated, "the credential behind this session is no longer valid; sign in again")
	}
	se.person = p // groups may have changed since sign-in
	return se, ck.Value, nil
}

// checkChange guards every change: the request comes from the console's
// own origin and carries the session's CSRF token.
func checkChange(r *http.Request, se *session) error {
	if err := sameOrigin(r); err != nil {
		return err
	}
	if !se.checkCSRF(r.Header.Get(CSRFHeader)) {
		return problem.New(http.StatusForbidden, problem.CSRFFailed, "a change needs the session's CSRF token in the "+CSRFHeader+" header")
	}
	return nil
}

// sameOrigin refuses a request a browser says came from another site.
func sameOrigin(r *http.Request) error {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return problem.New(http.StatusForbidden, problem.CSRFFailed, "the request came from another site")
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || o == "null" || !strings.EqualFold(u.Host, r.Host) {
			return problem.New(http.StatusForbidden, problem.CSRFFailed, "the request's Origin is not this console's")
		}
	}
	return nil
}

// secure reports whether the browser reached corral over TLS, directly or
// through a proxy that says so: the cookie is then Secure.
//
// X-Forwarded-Proto is believed from any peer, unlike X-Forwarded-For
// (forwarded.Proxies, --trusted-proxies): it only decides the Secure flag of
// the cookies set in answer to this request and the scheme of its own OIDC
// redirect_uri, so a client that lies harms only its own sign-in, while
// requiring a trusted proxy would silently drop Secure for every deployment
// behind a proxy that does not set the flag (docs/console.md).
func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// forward sends /ui/api/v1/... to the API as /v1/... with a credential the
// API accepts, after checking the session, the role and, for a change, the
// CSRF token.
func (c *Console) forward(w http.ResponseWriter, r *http.Request) error {
	se, id, err := c.session(r)
	if err != nil {
		return err
	}
	p := strings.TrimPrefix(r.URL.Path, "/ui/api")
	if p != path.Clean(p) || strings.Contains(r.URL.RawPath, "%2") || strings.Contains(r.URL.RawPath, "%5") {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "the path must be clean: no dot segments, doubled or encoded slashes")
	}
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	if !read {
		if err := checkChange(r, se); err != nil {
			return err
		}
	}
	if !allowed(se.person.Role, r.Method, p) {
		return problem.New(http.StatusForbidden, problem.Forbidden, "the "+string(se.person.Role)+" role may not "+r.Method+" "+p)
	}
	credential := se.credential
	if se.person.Kind != "admin-token" && !isDecision(r.Method, p) {
		// People read through the console's own credential (the API keeps
		// most reads for admins), and admins act with it; decisions are
		// always made with the person's own, so the approval records them.
		credential = c.service
	}
	if credential == "" {
		return problem.New(http.StatusServiceUnavailable, problem.NotReady, "the console has no credential to read the API with")
	}
	if !read {
		c.logger.InfoContext(r.Context(), "console action", "person", se.person.Name, "role", string(se.person.Role), "method", r.Method, "path", p)
	}
	w.Header().Set("Cache-Control", "no-store") // what a person saw stays off the disk
	out := r.Clone(r.Context())
	if credential == c.service && signsReason(r.Method, p) {
		if err := nameInReason(w, out, se.person.Name); err != nil {
			return err
		}
	}
	out.URL.Path, out.URL.RawPath = p, ""
	out.RequestURI = ""
	out.Header.Del("Cookie")
	out.Header.Del(CSRFHeader)
	out.Header.Set("Authorization", "Bearer "+credential)
	if strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		// A stream outlives the request that checked the session: it ends
		// when the session does (sign-out, a revoked key, expiry).
		ctx, cancel := context.WithCancel(out.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.watch(ctx, cancel, id)
		}()
		defer func() {
			cancel()
			<-done
		}()
		out = out.WithContext(ctx)
	}
	c.api.ServeHTTP(w, out)
	return nil
}

// watch calls cancel once session id has ended (on any replica) or its
// credential is no longer valid; it returns when ctx ends. A substrate
// that does not answer leaves the stream open until the next check.
func (c *Console) watch(ctx context.Context, cancel context.CancelFunc, id string) {
	t := time.NewTicker(c.recheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			se, err := c.sessions.peek(ctx, id)
			if err != nil && !errors.Is(err, errNoSession) {
				continue
			}
			ok := err == nil
			if ok {
				_, _, ok = c.auth.authenticate(ctx, se.credential)
			}
			if !ok {
				_ = c.sessions.end(ctx, id) // ended either way
				cancel()
				return
			}
		}
	}
}

// signsReason reports whether method path is a change whose reason the
// API keeps (a kill switch on or off, a cancelled task): a person acting
// through the console's credential is named in it, since the API sees only
// the console.
func signsReason(method, path string) bool {
	if method == http.MethodDelete {
		name, agent := strings.CutPrefix(path, "/v1/killswitches/agent/")
		return path == "/v1/killswitches/all" || agent && name != "" && !strings.Contains(name, "/")
	}
	if method != http.MethodPost {
		return false
	}
	if path == "/v1/killswitches" {
		return true
	}
	id, ok := strings.CutSuffix(strings.TrimPrefix(path, "/v1/tasks/"), "/cancel")
	return ok && strings.HasPrefix(path, "/v1/tasks/") && id != "" && !strings.Contains(id, "/")
}

// maxReasonBody caps the body nameInReason reads: a reason and a name.
const maxReasonBody = 64 << 10

// nameInReason appends "(name, console)" to the reason of r's JSON body;
// an empty body (an unkill's) becomes one with that reason. A body that is
// not a JSON object goes on as it is, for the API to refuse.
func nameInReason(w http.ResponseWriter, r *http.Request, name string) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReasonBody))
	if err != nil {
		return problem.New(http.StatusRequestEntityTooLarge, problem.RequestTooLarge, fmt.Sprintf("the body exceeds %d bytes", maxReasonBody))
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) == nil && m != nil {
		var reason string
		if raw, ok := m["reason"]; !ok || json.Unmarshal(raw, &reason) == nil {
			reason = strings.TrimSpace(reason + " (" + name + ", console)")
			m["reason"], _ = json.Marshal(reason)
			body, _ = json.Marshal(m)
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// ServiceCredentials is the identity store with the console's service
// token counted as an admin token too. The token is made in memory at
// start (NewServiceToken): nothing stores it and nothing else holds it.
type ServiceCredentials struct {
	*identity.Store
	token string
}

// WithServiceToken returns store accepting token as an admin token.
func WithServiceToken(store *identity.Store, token string) ServiceCredentials {
	return ServiceCredentials{Store: store, token: token}
}

// VerifyAdmin accepts the service token, or an admin token of the store.
func (s ServiceCredentials) VerifyAdmin(token string) bool {
	if s.token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.token)) == 1 {
		return true
	}
	return s.Store.VerifyAdmin(token)
}

// NewServiceToken returns a fresh random service token.
func NewServiceToken() string { return "corral_admin_console_" + randomToken() }
