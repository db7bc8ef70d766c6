package console_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/identity/oidctest"
)

// idp is an OpenID provider that signs everyone in as uma at once: its
// authorization endpoint sends the browser straight back with a code, and
// its token endpoint checks PKCE and answers an ID token that oidctest
// signs with keys it publishes. corral trusts it through an Issuer.
type idp struct {
	srv   *httptest.Server
	keys  *oidctest.Provider
	mu    sync.Mutex
	codes map[string][2]string // code → challenge, nonce
}

const consoleClient = "corral-console"

func startIdP(t *testing.T) *idp {
	t.Helper()
	p := &idp{keys: oidctest.Start(t), codes: map[string][2]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"issuer": p.srv.URL, "jwks_uri": p.keys.JWKSURL(),
			"authorization_endpoint": p.srv.URL + "/authorize", "token_endpoint": p.srv.URL + "/token",
		})
	})
	mux.HandleFunc("GET /authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("client_id") != consoleClient || q.Get("code_challenge_method") != "S256" {
			http.Error(w, "bad authorization request", http.StatusBadRequest)
			return
		}
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		code := base64.RawURLEncoding.EncodeToString(b)
		p.mu.Lock()
		p.codes[code] = [2]string{q.Get("code_challenge"), q.Get("nonce")}
		p.mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?"+url.Values{"code": {code}, "state": {q.Get("state")}}.Encode(), http.StatusFound)
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		p.mu.Lock()
		c, ok := p.codes[r.PostForm.Get("code")]
		delete(p.codes, r.PostForm.Get("code"))
		p.mu.Unlock()
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		w.Header().Set("Content-Type", "application/json")
		if !ok || base64.RawURLEncoding.EncodeToString(sum[:]) != c[0] {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error": "invalid_grant"}`))
			return
		}
		tok := p.keys.Token(t, map[string]any{"iss": p.srv.URL, "aud": consoleClient, "sub": "uma",
			"groups": []string{"payments-oncall"}, "nonce": c[1]})
		_ = json.NewEncoder(w).Encode(map[string]string{"id_token": tok, "token_type": "Bearer"})
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

// issuerYAML is the Issuer resource that trusts the provider.
func (p *idp) issuerYAML() string {
	return `apiVersion: corral.dev/v1
kind: Issuer
metadata: {name: corp}
spec: {issuer: "` + p.srv.URL + `", jwksURL: "` + p.keys.JWKSURL() + `", audience: ` + consoleClient + `}
`
}

// TestOIDCSignInEndToEnd: a browser (a client with a cookie jar that
// follows redirects) signs in through the provider and lands signed in,
// its ID token verified by corral's trusted Issuers.
func TestOIDCSignInEndToEnd(t *testing.T) {
	w := newWorld(t)
	// The Issuer loads in the background: try again until it is trusted.
	deadline := time.Now().Add(apptest.Patience)
	for {
		who, err := signInThroughIdP(t, w.srv.URL)
		if err == nil {
			if who.Name != "uma (corp)" || who.Kind != "user" || who.Role != "approver" {
				t.Errorf("signed in as %+v, want uma (corp), a user, approver", who)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
}

type whoami struct{ Name, Kind, Role string }

func signInThroughIdP(t *testing.T, base string) (whoami, error) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/ui/api/oidc/start", nil)
	resp, err := c.Do(req)
	if err != nil {
		return whoami{}, err
	}
	page := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/ui/" || !strings.Contains(string(page), "<title>") {
		return whoami{}, fmt.Errorf("the sign-in ended at %s: %d %.300s", resp.Request.URL, resp.StatusCode, page)
	}
	req, _ = http.NewRequestWithContext(t.Context(), "GET", base+"/ui/api/session", nil)
	resp, err = c.Do(req)
	if err != nil {
		return whoami{}, err
	}
	var who whoami
	if err := json.Unmarshal(readAll(t, resp), &who); err != nil || resp.StatusCode != http.StatusOK {
		return whoami{}, fmt.Errorf("GET /ui/api/session: %d %v", resp.StatusCode, err)
	}
	return who, nil
}
