package console

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/identity"
)

const (
	adminToken = "corral_admin_secret"
	service    = "corral_admin_console_service"
	aliceKey   = "corral_hk_alice"  // approver (payments-oncall)
	victorKey  = "corral_hk_victor" // viewer
	carolKey   = "corral_hk_carol"  // admin group
	userToken  = "aaa.bbb.ccc"      // a trusted Issuer's user, approver
)

type fakeAdmins struct{}

func (fakeAdmins) VerifyAdmin(t string) bool { return t == adminToken || t == service }

// fakeHumans is a concurrency-safe set of humans' keys: streams check
// them from their own goroutines.
type fakeHumans struct {
	mu sync.Mutex
	m  map[string]identity.Human
}

func (f *fakeHumans) VerifyHuman(k string) (identity.Human, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.m[k]
	return h, ok
}

// regroup changes the groups of k's human, as recreating them would.
func (f *fakeHumans) regroup(k string, groups ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.m[k]
	h.Groups = groups
	f.m[k] = h
}

func (f *fakeHumans) revoke(k string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, k)
}

type fakeUsers struct{ expiry int64 }

func (f fakeUsers) Verify(_ context.Context, token string) (*identity.External, error) {
	if token != userToken {
		return nil, errors.New("bad token")
	}
	return &identity.External{IssuerName: "corp", Subject: "uma", Groups: []string{"payments-oncall"}, Expiry: f.expiry}, nil
}

// seen is what the fake API received.
type seen struct {
	Method, Path, Authorization, Cookie, CSRF string
	Body                                      string
}

type world struct {
	c      *Console
	store  *Store
	humans *fakeHumans
	calls  []seen
	now    time.Time
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{store: testStore(t), now: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC), humans: &fakeHumans{m: map[string]identity.Human{
		aliceKey:  {Name: "alice", Groups: []string{"payments-oncall"}},
		victorKey: {Name: "victor", Groups: []string{"payments-oncall", "viewers"}},
		carolKey:  {Name: "carol", Groups: []string{"corral-admins"}},
	}}}
	w.c = w.console(w, nil)
	return w
}

// console is a console over w's substrate, humans and clock whose API
// calls api records; opts, when set, changes its options.
func (w *world) console(api *world, opts func(*Options)) *Console {
	h := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		api.calls = append(api.calls, seen{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Cookie"), r.Header.Get(CSRFHeader), string(body)})
		rw.Header().Set("Content-Type", "application/json")
		// An agent-chosen name comes back as JSON, never as HTML.
		_ = json.NewEncoder(rw).Encode(map[string]string{"name": `<script>alert(1)</script><img src=x onerror=alert(2)>`})
	})
	o := Options{AdminGroups: []string{"corral-admins"}, ServiceToken: service, Now: func() time.Time { return w.now }}
	if opts != nil {
		opts(&o)
	}
	return New(slog.New(slog.DiscardHandler), h, w.store, fakeAdmins{}, w.humans, fakeUsers{expiry: w.now.Add(time.Hour).Unix()}, o)
}

// replica is another console over w's substrate, humans and clock: a
// second corral behind the same load balancer, with an API of its own.
func (w *world) replica() *world {
	r := &world{store: w.store, humans: w.humans}
	r.c = w.console(r, nil)
	return r
}

// testStore opens the console's buckets on an embedded JetStream of the
// test's own.
func testStore(t *testing.T) *Store {
	t.Helper()
	s, err := OpenStore(t.Context(), bustest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (w *world) do(t *testing.T, method, path, body string, header map[string]string) answer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, "http://corral.example"+path, r)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	w.c.ServeHTTP(rec, req)
	return answer{rec.Code, rec.Header(), rec.Body.String()}
}

// signIn signs in with credential and returns the cookie and CSRF token.
func (w *world) signIn(t *testing.T, credential string) (cookie, csrf string, info SessionInfo) {
	t.Helper()
	body, _ := json.Marshal(SignIn{Credential: credential})
	a := w.do(t, "POST", "/ui/api/session", string(body), map[string]string{"Content-Type": "application/json", "Origin": "http://corral.example"})
	if a.status != http.StatusOK {
		t.Fatalf("sign in: %d %s", a.status, a.body)
	}
	if err := json.Unmarshal([]byte(a.body), &info); err != nil {
		t.Fatal(err)
	}
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name == CookieName {
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != Prefix {
				t.Errorf("cookie = %+v, want HttpOnly, SameSite=Strict, Path=/ui/", c)
			}
			return CookieName + "=" + c.Value, info.CSRF, info
		}
	}
	t.Fatalf("sign in set no %s cookie: %v", CookieName, a.header)
	return "", "", info
}

func TestRoles(t *testing.T) {
	for _, tt := range []struct {
		credential string
		name       string
		role       Role
	}{
		{adminToken, "admin", Admin},
		{carolKey, "carol", Admin},
		{aliceKey, "alice", Approver},
		{victorKey, "victor", Viewer}, // in a viewer group: reads only, though payments-oncall
		{userToken, "uma (corp)", Approver},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			_, csrf, info := w.signIn(t, tt.credential)
			if info.Name != tt.name || info.Role != tt.role || csrf == "" {
				t.Errorf("signed in as %+v, want %s with role %s and a CSRF token", info, tt.name, tt.role)
			}
		})
	}
}

func TestSignInRefused(t *testing.T) {
	w := newWorld(t)
	json := map[string]string{"Content-Type": "application/json"}
	for _, tt := range []struct {
		name, body string
		header     map[string]string
		want       int
	}{
		{"unknown credential", `{"credential": "corral_hk_mallory"}`, json, http.StatusUnauthorized},
		{"agent-looking junk", `{"credential": "corral_agent_x"}`, json, http.StatusUnauthorized},
		{"empty", `{"credential": "  "}`, json, http.StatusBadRequest},
		{"not JSON", `credential=` + adminToken, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
		{"unknown field", `{"credential": "x", "role": "admin"}`, json, http.StatusBadRequest},
		{"oversized", `{"credential": "` + strings.Repeat("a", 64<<10) + `"}`, json, http.StatusRequestEntityTooLarge},
		{"cross-site origin", `{"credential": "` + adminToken + `"}`, map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, http.StatusForbidden},
		{"cross-site fetch", `{"credential": "` + adminToken + `"}`, map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := w.do(t, "POST", "/ui/api/session", tt.body, tt.header)
			if a.status != tt.want {
				t.Errorf("POST /ui/api/session = %d %s, want %d", a.status, a.body, tt.want)
			}
			if strings.Contains(a.header.Get("Set-Cookie"), CookieName+"=") {
				t.Errorf("a refused sign-in set a cookie: %s", a.header.Get("Set-Cookie"))
			}
		})
	}
}

func TestChangesNeedCSRF(t *testing.T) {
	w := newWorld(t)
	cookie, csrf, _ := w.signIn(t, adminToken)
	kill := `{"agent": "payer", "reason": "x"}`
	for _, tt := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"no token", map[string]string{"Cookie": cookie}, http.StatusForbidden},
		{"wrong token", map[string]string{"Cookie": cookie, CSRFHeader: "guess"}, http.StatusForbidden},
		{"cross-site origin", map[string]string{"Cookie": cookie, CSRFHeader: csrf, "Origin": "https://evil.example"}, http.StatusForbidden},
		{"null origin", map[string]string{"Cookie": cookie, CSRFHeader: csrf, "Origin": "null"}, http.StatusForbidden},
		{"same-site but not same-origin", map[string]string{"Cookie": cookie, CSRFHeader: csrf, "Sec-Fetch-Site": "same-site"}, http.StatusForbidden},
		{"no cookie", map[string]string{CSRFHeader: csrf}, http.StatusUnauthorized},
		{"token and origin", map[string]string{"Cookie": cookie, CSRFHeader: csrf, "Origin": "http://corral.example", "Sec-Fetch-Site": "same-origin"}, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(w.calls)
			a := w.do(t, "POST", "/ui/api/v1/killswitches", kill, tt.header)
			if a.status != tt.want {
				t.Fatalf("POST /ui/api/v1/killswitches = %d %s, want %d", a.status, a.body, tt.want)
			}
			if reached := len(w.calls) > before; reached != (tt.want == http.StatusOK) {
				t.Errorf("the API was reached: %v, want %v", reached, tt.want == http.StatusOK)
			}
		})
	}
	// Sign-out is a change too.
	if a := w.do(t, "DELETE", "/ui/api/session", "", map[string]string{"Cookie": cookie}); a.status != http.StatusForbidden {
		t.Errorf("sign-out without the CSRF token = %d, want 403", a.status)
	}
}

func TestRolesAtTheAPI(t *testing.T) {
	w := newWorld(t)
	type call struct{ method, path string }
	approve := call{"POST", "/v1/approvals/apr_1/approve"}
	deny := call{"POST", "/v1/approvals/apr_1/deny"}
	kill := call{"POST", "/v1/killswitches"}
	unkill := call{"DELETE", "/v1/killswitches/agent/payer"}
	cancel := call{"POST", "/v1/tasks/task_1/cancel"}
	accept := call{"POST", "/v1/tools/drift/banking/accept"}
	keys := call{"GET", "/v1/keys"}
	export := call{"GET", "/v1/audit/export"}
	secret := call{"GET", "/v1/resources/secrets"}
	reads := []call{{"GET", "/v1/tasks"}, {"GET", "/v1/approvals/apr_1"}, {"GET", "/v1/killswitches"}, {"GET", "/v1/audit"}, {"GET", "/v1/resources/agents"}, {"GET", "/v1/dlq"}}
	for _, tt := range []struct {
		credential string
		may        []call
		mayNot     []call
	}{
		{victorKey, reads, []call{approve, deny, kill, unkill, cancel, accept, keys, export, secret, {"POST", "/v1/approvals/apr_1/approve/x"}}},
		{aliceKey, append(reads, approve, deny), []call{kill, unkill, cancel, accept, keys, export, secret, {"POST", "/v1/tasks"}}},
		{carolKey, append(reads, approve, kill, unkill, cancel, accept, keys, export, secret), nil},
		{adminToken, append(reads, kill, unkill, cancel, keys), nil},
	} {
		cookie, csrf, info := w.signIn(t, tt.credential)
		h := map[string]string{"Cookie": cookie, CSRFHeader: csrf}
		for _, c := range tt.may {
			before := len(w.calls)
			if a := w.do(t, c.method, "/ui/api"+c.path, "", h); a.status != http.StatusOK || len(w.calls) != before+1 {
				t.Errorf("%s (%s): %s %s = %d %s, want it forwarded", info.Name, info.Role, c.method, c.path, a.status, a.body)
				continue
			}
			got := w.calls[len(w.calls)-1]
			want := "Bearer " + service
			if tt.credential == adminToken || isDecision(c.method, c.path) {
				want = "Bearer " + tt.credential // decisions are the person's own
			}
			if got.Authorization != want || got.Path != c.path || got.Cookie != "" || got.CSRF != "" {
				got.Body = ""
				t.Errorf("%s: %s %s reached the API as %+v, want path %s with %s and no cookie or CSRF token", info.Name, c.method, c.path, got, c.path, want)
			}
		}
		for _, c := range tt.mayNot {
			before := len(w.calls)
			if a := w.do(t, c.method, "/ui/api"+c.path, "", h); a.status != http.StatusForbidden || len(w.calls) != before {
				t.Errorf("%s (%s): %s %s = %d, want 403 and the API not reached", info.Name, info.Role, c.method, c.path, a.status)
			}
		}
	}
}

func TestSignOutEndsTheSession(t *testing.T) {
	w := newWorld(t)
	cookie, csrf, _ := w.signIn(t, aliceKey)
	h := map[string]string{"Cookie": cookie, CSRFHeader: csrf}
	if a := w.do(t, "GET", "/ui/api/v1/tasks", "", h); a.status != http.StatusOK {
		t.Fatalf("before sign-out: %d", a.status)
	}
	a := w.do(t, "DELETE", "/ui/api/session", "", h)
	if a.status != http.StatusNoContent || !strings.Contains(a.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("sign-out = %d %v, want 204 clearing the cookie", a.status, a.header)
	}
	// The cookie, stolen before sign-out, signs nobody in any more.
	for _, c := range []struct{ method, path string }{{"GET", "/ui/api/session"}, {"GET", "/ui/api/v1/tasks"}, {"POST", "/ui/api/v1/approvals/apr_1/approve"}} {
		before := len(w.calls)
		if a := w.do(t, c.method, c.path, "", h); a.status != http.StatusUnauthorized || len(w.calls) != before {
			t.Errorf("after sign-out %s %s = %d, want 401 and the API not reached", c.method, c.path, a.status)
		}
	}
}

func TestSessionsEnd(t *testing.T) {
	t.Run("revoked key", func(t *testing.T) {
		w := newWorld(t)
		cookie, _, _ := w.signIn(t, aliceKey)
		w.humans.revoke(aliceKey)
		if a := w.do(t, "GET", "/ui/api/v1/tasks", "", map[string]string{"Cookie": cookie}); a.status != http.StatusUnauthorized {
			t.Errorf("after the key is revoked: %d, want 401", a.status)
		}
	})
	t.Run("idle", func(t *testing.T) {
		w := newWorld(t)
		cookie, _, _ := w.signIn(t, aliceKey)
		w.now = w.now.Add(idleTTL + time.Minute)
		if a := w.do(t, "GET", "/ui/api/session", "", map[string]string{"Cookie": cookie}); a.status != http.StatusUnauthorized {
			t.Errorf("after %v idle: %d, want 401", idleTTL, a.status)
		}
	})
	t.Run("token expiry", func(t *testing.T) {
		w := newWorld(t)
		cookie, _, info := w.signIn(t, userToken)
		if !info.Expires.Equal(w.now.Add(time.Hour)) {
			t.Errorf("session expires %v, want the token's expiry %v", info.Expires, w.now.Add(time.Hour))
		}
		for i := 0; i < 3; i++ { // active, never idle, but past the token's life
			w.now = w.now.Add(25 * time.Minute)
			w.do(t, "GET", "/ui/api/session", "", map[string]string{"Cookie": cookie})
		}
		if a := w.do(t, "GET", "/ui/api/session", "", map[string]string{"Cookie": cookie}); a.status != http.StatusUnauthorized {
			t.Errorf("past the token's expiry: %d, want 401", a.status)
		}
	})
	t.Run("forged cookie", func(t *testing.T) {
		w := newWorld(t)
		w.signIn(t, adminToken)
		if a := w.do(t, "GET", "/ui/api/v1/tasks", "", map[string]string{"Cookie": CookieName + "=" + randomToken()}); a.status != http.StatusUnauthorized {
			t.Errorf("a made-up session id: %d, want 401", a.status)
		}
	})
}

func TestPathsStayInTheAPI(t *testing.T) {
	w := newWorld(t)
	cookie, _, _ := w.signIn(t, victorKey)
	for _, p := range []string{
		"/ui/api/v1/tasks/../keys", "/ui/api/v1/tasks/%2e%2e/keys", "/ui/api/v1/tasks%2F..%2Fkeys", "/ui/api/v1//keys",
		"/ui/api/v1/resources/agents/../secrets",
	} {
		before := len(w.calls)
		req := httptest.NewRequest("GET", "http://corral.example/", nil)
		req.URL.Path, req.URL.RawPath = "", ""
		req.URL.Opaque = ""
		req.RequestURI = p
		u, err := req.URL.Parse(p)
		if err != nil {
			t.Fatal(err)
		}
		req.URL = u
		req.Header.Set("Cookie", cookie)
		rec := httptest.NewRecorder()
		w.c.ServeHTTP(rec, req)
		if rec.Code == http.StatusOK || len(w.calls) != before {
			t.Errorf("GET %s = %d (API reached: %v), want refused", p, rec.Code, len(w.calls) != before)
		}
	}
}

func TestHeadersAndAssets(t *testing.T) {
	w := newWorld(t)
	for _, p := range []string{"/ui/", "/ui/tasks/task_1", "/ui/js/app.js", "/ui/style.css", "/ui/api/session"} {
		a := w.do(t, "GET", p, "", nil)
		csp := a.header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") ||
			!strings.Contains(csp, "frame-ancestors 'none'") || a.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: CSP %q, nosniff %q", p, csp, a.header.Get("X-Content-Type-Options"))
		}
	}
	page := w.do(t, "GET", "/ui/", "", nil)
	if page.status != http.StatusOK || !strings.HasPrefix(page.header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /ui/ = %d %s", page.status, page.header.Get("Content-Type"))
	}
	// No inline script or style in the page, as the CSP would refuse it.
	for _, bad := range []string{"<script>", "style=", "<style", "onclick", "onload", "http://", "https://"} {
		if strings.Contains(page.body, bad) {
			t.Errorf("index.html holds %q", bad)
		}
	}
	if a := w.do(t, "GET", "/ui/js/app.js", "", nil); !strings.Contains(a.header.Get("Content-Type"), "javascript") {
		t.Errorf("app.js served as %q", a.header.Get("Content-Type"))
	}
	if a := w.do(t, "GET", "/ui/nothing.js", "", nil); a.status != http.StatusNotFound {
		t.Errorf("a missing asset = %d, want 404", a.status)
	}
}

// TestAssetsNeverWriteHTML reads every script: data reaches the page as
// text, so none of them may use the HTML-parsing sinks.
func TestAssetsNeverWriteHTML(t *testing.T) {
	entries, err := assets.ReadDir("ui/js/views")
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"ui/js/app.js", "ui/js/dom.js"}
	for _, e := range entries {
		files = append(files, "ui/js/views/"+e.Name())
	}
	for _, f := range files {
		b, err := assets.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'"} {
			if strings.Contains(string(b), sink) {
				t.Errorf("%s uses %s", f, sink)
			}
		}
	}
}

func TestHostileDataStaysJSON(t *testing.T) {
	w := newWorld(t)
	cookie, _, _ := w.signIn(t, victorKey)
	a := w.do(t, "GET", "/ui/api/v1/resources/agents", "", map[string]string{"Cookie": cookie})
	if a.status != http.StatusOK || a.header.Get("Content-Type") != "application/json" || a.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("GET agents = %d %q nosniff %q", a.status, a.header.Get("Content-Type"), a.header.Get("X-Content-Type-Options"))
	}
}

// TestActionsNameThePerson: the API sees the console's credential when an
// admin-group person acts, so the reason it keeps names the person.
func TestActionsNameThePerson(t *testing.T) {
	w := newWorld(t)
	for _, tt := range []struct {
		credential, path, body, want string
	}{
		{carolKey, "/v1/killswitches", `{"agent": "payer", "reason": "runaway"}`, `{"agent":"payer","reason":"runaway (carol, console)"}`},
		{carolKey, "/v1/killswitches", `{"all": true}`, `{"all":true,"reason":"(carol, console)"}`},
		{carolKey, "/v1/tasks/task_1/cancel", `{"reason": "wrong input \u003cb\u003e"}`, `{"reason":"wrong input \u003cb\u003e (carol, console)"}`},
		{carolKey, "/v1/tasks/task_1/cancel", `not json`, `not json`},
		{carolKey, "/v1/killswitches", `{"reason": 7}`, `{"reason": 7}`},
		{adminToken, "/v1/killswitches", `{"agent": "payer", "reason": "runaway"}`, `{"agent": "payer", "reason": "runaway"}`},
		{carolKey, "/v1/tools/drift/banking/accept", `{"reason": "x"}`, `{"reason": "x"}`},
	} {
		cookie, csrf, _ := w.signIn(t, tt.credential)
		a := w.do(t, "POST", "/ui/api"+tt.path, tt.body, map[string]string{"Cookie": cookie, CSRFHeader: csrf})
		if a.status != http.StatusOK {
			t.Fatalf("POST %s = %d %s", tt.path, a.status, a.body)
		}
		if got := w.calls[len(w.calls)-1].Body; got != tt.want {
			t.Errorf("POST %s %s reached the API as %s, want %s", tt.path, tt.body, got, tt.want)
		}
	}
	for _, tt := range []struct{ path, body, want string }{
		{"/v1/killswitches/agent/payer", ``, `{"reason":"(carol, console)"}`},
		{"/v1/killswitches/all", `{"reason": "fixed"}`, `{"reason":"fixed (carol, console)"}`},
	} {
		cookie, csrf, _ := w.signIn(t, carolKey)
		a := w.do(t, "DELETE", "/ui/api"+tt.path, tt.body, map[string]string{"Cookie": cookie, CSRFHeader: csrf})
		if a.status != http.StatusOK {
			t.Fatalf("DELETE %s = %d %s", tt.path, a.status, a.body)
		}
		if got := w.calls[len(w.calls)-1].Body; got != tt.want {
			t.Errorf("DELETE %s %q reached the API as %s, want %s", tt.path, tt.body, got, tt.want)
		}
	}
	cookie, csrf, _ := w.signIn(t, carolKey)
	if a := w.do(t, "POST", "/ui/api/v1/killswitches", `{"reason": "`+strings.Repeat("x", 70<<10)+`"}`, map[string]string{"Cookie": cookie, CSRFHeader: csrf}); a.status != http.StatusRequestEntityTooLarge {
		t.Errorf("an oversized kill = %d, want 413", a.status)
	}
}

// TestStreamsEndWithTheSession: an event stream opened before sign-out (or
// before the key was revoked) is cut, not left streaming to whoever holds
// the cookie.
func TestStreamsEndWithTheSession(t *testing.T) {
	for _, end := range []string{"sign-out", "revoked key"} {
		t.Run(end, func(t *testing.T) {
			w := newWorld(t)
			stream := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				rw.Header().Set("Content-Type", "text/event-stream")
				rw.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(rw, "event: approval\ndata: {}\n\n")
				rw.(http.Flusher).Flush()
				<-r.Context().Done() // streams until corral or the client ends it
			})
			w.c = New(slog.New(slog.DiscardHandler), stream, w.store, fakeAdmins{}, w.humans, nil,
				Options{ServiceToken: service, Now: func() time.Time { return w.now }})
			w.c.recheck = 10 * time.Millisecond
			srv := httptest.NewServer(w.c)
			t.Cleanup(srv.Close)
			cookie, csrf, _ := w.signIn(t, aliceKey)

			req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/ui/api/v1/approvals/events", nil)
			req.Header.Set("Accept", "text/event-stream")
			req.Header.Set("Cookie", cookie)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			first := make([]byte, len("event: approval"))
			if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "event: approval" {
				t.Fatalf("the stream began %q, %v", first, err)
			}
			if end == "sign-out" {
				if a := w.do(t, "DELETE", "/ui/api/session", "", map[string]string{"Cookie": cookie, CSRFHeader: csrf}); a.status != http.StatusNoContent {
					t.Fatalf("sign-out = %d", a.status)
				}
			} else {
				w.humans.revoke(aliceKey)
			}
			ended := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, resp.Body)
				ended <- err
			}()
			select {
			case <-ended:
			case <-time.After(time.Minute): // generous: CI runs loaded, with the race detector
				t.Fatalf("after the %s the stream still runs", end)
			}
		})
	}
}
