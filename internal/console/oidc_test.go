package console

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/identity"
)

// provider is a small OpenID provider: discovery, an authorization
// endpoint the test follows by hand, and a token endpoint that checks
// PKCE and answers an ID token carrying the nonce it was given.
type provider struct {
	srv *httptest.Server
	mu  sync.Mutex
	// codes: code → the challenge and nonce the authorization saw.
	codes     map[string][2]string
	tokenErr  bool
	badNonce  bool
	gotSecret string
}

func newProvider(t *testing.T) *provider {
	p := &provider{codes: map[string][2]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"issuer": "` + p.srv.URL + `", "authorization_endpoint": "` + p.srv.URL + `/authorize", "token_endpoint": "` + p.srv.URL + `/token"}`))
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		_, p.gotSecret, _ = r.BasicAuth()
		p.mu.Lock()
		c, ok := p.codes[r.PostForm.Get("code")]
		delete(p.codes, r.PostForm.Get("code"))
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if !ok || p.tokenErr || pkceChallenge(r.PostForm.Get("code_verifier")) != c[0] || r.PostForm.Get("client_id") != "corral-console" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error": "invalid_grant"}`))
			return
		}
		nonce := c[1]
		if p.badNonce {
			nonce = "someone-elses"
		}
		_, _ = w.Write([]byte(`{"id_token": "idt.` + nonce + `.sig", "token_type": "Bearer"}`))
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

// authorize is what the provider does when the person signs in: it
// remembers the challenge and nonce and sends the browser back.
func (p *provider) authorize(t *testing.T, location string) (callback string) {
	t.Helper()
	u, err := url.Parse(location)
	if err != nil || !strings.HasPrefix(location, p.srv.URL+"/authorize?") {
		t.Fatalf("sent to %q, want the provider's authorization endpoint", location)
	}
	q := u.Query()
	for _, k := range []string{"state", "nonce", "code_challenge", "redirect_uri"} {
		if q.Get(k) == "" {
			t.Fatalf("the authorization request has no %s: %s", k, location)
		}
	}
	if q.Get("code_challenge_method") != "S256" || q.Get("response_type") != "code" || q.Get("client_id") != "corral-console" {
		t.Fatalf("authorization request %v", q)
	}
	code := randomToken()
	p.mu.Lock()
	p.codes[code] = [2]string{q.Get("code_challenge"), q.Get("nonce")}
	p.mu.Unlock()
	return q.Get("redirect_uri") + "?" + url.Values{"code": {code}, "state": {q.Get("state")}}.Encode()
}

// idUsers verifies the provider's made-up ID tokens: idt.<nonce>.sig.
type idUsers struct{}

func (idUsers) Verify(_ context.Context, token string) (*identity.External, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != "idt" {
		return nil, errors.New("not an ID token")
	}
	return &identity.External{IssuerName: "corp", Subject: "uma", Groups: []string{"payments-oncall"},
		Expiry: time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC).Unix(), Claims: map[string]any{"nonce": parts[1]}}, nil
}

func oidcConsole(t *testing.T, p *provider) *world {
	t.Helper()
	w := &world{store: testStore(t), now: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	api := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.calls = append(w.calls, seen{r.Method, r.URL.Path, r.Header.Get("Authorization"), "", "", ""})
	})
	w.c = New(slog.New(slog.DiscardHandler), api, w.store, fakeAdmins{}, nil, idUsers{}, Options{
		ServiceToken: service, Now: func() time.Time { return w.now },
		OIDC: &OIDC{Issuer: p.srv.URL, ClientID: "corral-console", ClientSecret: "s3cret"},
	})
	return w
}

// begin starts a sign-in and returns the provider's callback URL and the
// state cookie.
func begin(t *testing.T, w *world, p *provider) (callback, stateCookie string) {
	t.Helper()
	a := w.do(t, "GET", "/ui/api/oidc/start", "", nil)
	if a.status != http.StatusFound {
		t.Fatalf("start = %d %s", a.status, a.body)
	}
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name == oidcCookie {
			if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
				t.Errorf("state cookie %+v, want HttpOnly, SameSite=Lax", c)
			}
			stateCookie = c.Name + "=" + c.Value
		}
	}
	return p.authorize(t, a.header.Get("Location")), stateCookie
}

func (w *world) follow(t *testing.T, callback, cookie string) answer {
	t.Helper()
	u, _ := url.Parse(callback)
	h := map[string]string{}
	if cookie != "" {
		h["Cookie"] = cookie
	}
	return w.do(t, "GET", u.RequestURI(), "", h)
}

func TestOIDCSignIn(t *testing.T) {
	p := newProvider(t)
	w := oidcConsole(t, p)
	if a := w.do(t, "GET", "/ui/api/oidc", "", nil); !strings.Contains(a.body, `"enabled": true`) {
		t.Fatalf("GET /ui/api/oidc = %s", a.body)
	}
	callback, state := begin(t, w, p)
	if !strings.HasPrefix(callback, "http://corral.example/ui/api/oidc/callback?") {
		t.Fatalf("callback %q, want this console's", callback)
	}
	a := w.follow(t, callback, state)
	if a.status != http.StatusSeeOther || a.header.Get("Location") != Prefix {
		t.Fatalf("callback = %d %s %s", a.status, a.header.Get("Location"), a.body)
	}
	if p.gotSecret != "s3cret" {
		t.Errorf("the token endpoint got client secret %q", p.gotSecret)
	}
	var session string
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name == CookieName {
			session = c.Name + "=" + c.Value
		}
	}
	who := w.do(t, "GET", "/ui/api/session", "", map[string]string{"Cookie": session})
	if who.status != http.StatusOK || !strings.Contains(who.body, `"name": "uma (corp)"`) || !strings.Contains(who.body, `"role": "approver"`) {
		t.Fatalf("after the callback: %d %s", who.status, who.body)
	}
	// The state is spent: the same callback again signs nobody in.
	if a := w.follow(t, callback, state); a.status != http.StatusBadRequest {
		t.Errorf("a replayed callback = %d, want 400", a.status)
	}
}

func TestOIDCCallbackRefused(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mangle func(p *provider, callback, state string) (string, string)
		want   int
	}{
		{"no state cookie (another browser)", func(_ *provider, cb, _ string) (string, string) { return cb, "" }, http.StatusBadRequest},
		{"state cookie of another sign-in", func(_ *provider, cb, _ string) (string, string) { return cb, oidcCookie + "=" + randomToken() }, http.StatusBadRequest},
		{"forged state", func(_ *provider, cb, _ string) (string, string) {
			s := randomToken()
			u, _ := url.Parse(cb)
			q := u.Query()
			q.Set("state", s)
			u.RawQuery = q.Encode()
			return u.String(), oidcCookie + "=" + s
		}, http.StatusBadRequest},
		{"stolen code", func(_ *provider, cb, st string) (string, string) {
			u, _ := url.Parse(cb)
			q := u.Query()
			q.Set("code", "someone-elses-code")
			u.RawQuery = q.Encode()
			return u.String(), st
		}, http.StatusBadGateway},
		{"provider error", func(_ *provider, cb, st string) (string, string) {
			u, _ := url.Parse(cb)
			q := u.Query()
			q.Del("code")
			q.Set("error", "access_denied")
			u.RawQuery = q.Encode()
			return u.String(), st
		}, http.StatusUnauthorized},
		{"token endpoint refuses", func(p *provider, cb, st string) (string, string) { p.tokenErr = true; return cb, st }, http.StatusBadGateway},
		{"nonce of another sign-in", func(p *provider, cb, st string) (string, string) { p.badNonce = true; return cb, st }, http.StatusUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newProvider(t)
			w := oidcConsole(t, p)
			cb, st := begin(t, w, p)
			cb, st = tt.mangle(p, cb, st)
			a := w.follow(t, cb, st)
			if a.status != tt.want {
				t.Errorf("callback = %d %s, want %d", a.status, a.body, tt.want)
			}
			if strings.Contains(strings.Join(a.header["Set-Cookie"], "\n"), CookieName+"=") {
				t.Errorf("a refused callback set a session cookie: %v", a.header["Set-Cookie"])
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		p := newProvider(t)
		w := oidcConsole(t, p)
		cb, st := begin(t, w, p)
		w.now = w.now.Add(oidcFlowTTL + time.Second)
		if a := w.follow(t, cb, st); a.status != http.StatusBadRequest {
			t.Errorf("a callback after %v = %d, want 400", oidcFlowTTL, a.status)
		}
	})
}

func TestOIDCNotConfigured(t *testing.T) {
	w := newWorld(t)
	if a := w.do(t, "GET", "/ui/api/oidc", "", nil); !strings.Contains(a.body, `"enabled": false`) {
		t.Errorf("GET /ui/api/oidc = %s", a.body)
	}
	for _, p := range []string{"/ui/api/oidc/start", "/ui/api/oidc/callback?code=x&state=y"} {
		if a := w.do(t, "GET", p, "", nil); a.status != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", p, a.status)
		}
	}
}
