package console

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSessionsAcrossReplicas: two consoles over one substrate, as two
// replicas behind a load balancer. A session made on one works on the
// other, CSRF token included; a role change shows on both at once; a
// sign-out on either ends the session on both.
func TestSessionsAcrossReplicas(t *testing.T) {
	a := newWorld(t)
	b := a.replica()
	cookie, csrf, _ := a.signIn(t, aliceKey)
	h := map[string]string{"Cookie": cookie, CSRFHeader: csrf}

	who := b.do(t, "GET", "/ui/api/session", "", h)
	if who.status != http.StatusOK || !strings.Contains(who.body, `"csrf": "`+csrf+`"`) || !strings.Contains(who.body, `"role": "approver"`) {
		t.Fatalf("GET /ui/api/session on the other replica = %d %s, want alice's session and CSRF token", who.status, who.body)
	}
	if r := b.do(t, "POST", "/ui/api/v1/approvals/apr_1/approve", `{}`, h); r.status != http.StatusOK || len(b.calls) != 1 {
		t.Fatalf("a decision on the other replica with the first one's CSRF token = %d %s", r.status, r.body)
	}
	if r := b.do(t, "POST", "/ui/api/v1/approvals/apr_1/approve", `{}`, map[string]string{"Cookie": cookie, CSRFHeader: "guess"}); r.status != http.StatusForbidden {
		t.Errorf("a decision on the other replica with a wrong CSRF token = %d, want 403", r.status)
	}

	// Alice moves to a viewer group: both replicas see her as a viewer on
	// her next request, and neither lets her decide.
	a.humans.regroup(aliceKey, "payments-oncall", "viewers")
	for name, w := range map[string]*world{"first": a, "other": b} {
		if who := w.do(t, "GET", "/ui/api/session", "", h); !strings.Contains(who.body, `"role": "viewer"`) {
			t.Errorf("after the role change, the %s replica says %s", name, who.body)
		}
		if r := w.do(t, "POST", "/ui/api/v1/approvals/apr_1/approve", `{}`, h); r.status != http.StatusForbidden {
			t.Errorf("after the role change, a decision on the %s replica = %d, want 403", name, r.status)
		}
	}

	if r := b.do(t, "DELETE", "/ui/api/session", "", h); r.status != http.StatusNoContent {
		t.Fatalf("sign-out on the other replica = %d %s", r.status, r.body)
	}
	for name, w := range map[string]*world{"first": a, "other": b} {
		if r := w.do(t, "GET", "/ui/api/v1/tasks", "", h); r.status != http.StatusUnauthorized {
			t.Errorf("after sign-out, the %s replica answers the cookie with %d, want 401", name, r.status)
		}
	}
}

// TestSessionBucketHoldsNoSecret: the bucket keys a session by the
// SHA-256 of its token and holds neither the token nor the credential nor
// the CSRF token, in any encoding: reading the substrate signs nobody in.
func TestSessionBucketHoldsNoSecret(t *testing.T) {
	w := newWorld(t)
	cookie, csrf, _ := w.signIn(t, adminToken)
	token := strings.TrimPrefix(cookie, CookieName+"=")
	keys, err := w.store.sessions.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for k := range keys.Keys() {
		all = append(all, k)
	}
	if len(all) != 1 || all[0] != sessionKey(token) {
		t.Fatalf("bucket keys %v, want one: the token's digest %s", all, sessionKey(token))
	}
	e, err := w.store.sessions.Get(t.Context(), all[0])
	if err != nil {
		t.Fatal(err)
	}
	value := string(e.Value())
	for what, secret := range map[string]string{"session token": token, "credential": adminToken, "CSRF token": csrf} {
		for _, enc := range []string{secret, base64.StdEncoding.EncodeToString([]byte(secret)), base64.RawURLEncoding.EncodeToString([]byte(secret))} {
			if strings.Contains(value, enc) || strings.Contains(all[0], enc) {
				t.Errorf("the bucket holds the %s: %s", what, value)
			}
		}
	}
	// The digest alone does not open the session: a cookie holding it is
	// no session token.
	if a := w.do(t, "GET", "/ui/api/session", "", map[string]string{"Cookie": CookieName + "=" + all[0]}); a.status != http.StatusUnauthorized {
		t.Errorf("the bucket key as a cookie = %d, want 401", a.status)
	}
}

// TestIdleCountsEveryReplica: a person active on one replica and then the
// other stays signed in; idleness is counted from the last request on any
// replica, written at most once a touchEvery.
func TestIdleCountsEveryReplica(t *testing.T) {
	a := newWorld(t)
	b := a.replica()
	cookie, _, _ := a.signIn(t, aliceKey)
	h := map[string]string{"Cookie": cookie}
	key := sessionKey(strings.TrimPrefix(cookie, CookieName+"="))
	revision := func() uint64 {
		e, err := a.store.sessions.Get(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		return e.Revision()
	}
	signedIn := revision()
	a.now = a.now.Add(touchEvery / 2)
	if r := b.do(t, "GET", "/ui/api/session", "", h); r.status != http.StatusOK {
		t.Fatalf("half a touchEvery later: %d", r.status)
	}
	if got := revision(); got != signedIn {
		t.Errorf("a request %v after the last write wrote the session again (revision %d, was %d)", touchEvery/2, got, signedIn)
	}
	a.now = a.now.Add(20 * time.Minute)
	if r := b.do(t, "GET", "/ui/api/session", "", h); r.status != http.StatusOK {
		t.Fatalf("20 minutes later on the other replica: %d", r.status)
	}
	if got := revision(); got == signedIn {
		t.Errorf("a request 20 minutes on did not write the session's last-seen time")
	}
	a.now = a.now.Add(idleTTL - time.Minute) // 49 minutes after sign-in, 29 after the last request
	if r := a.do(t, "GET", "/ui/api/session", "", h); r.status != http.StatusOK {
		t.Fatalf("29 minutes after a request on the other replica: %d, want the session alive", r.status)
	}
	a.now = a.now.Add(idleTTL + time.Minute)
	if r := b.do(t, "GET", "/ui/api/session", "", h); r.status != http.StatusUnauthorized {
		t.Errorf("after %v idle: %d, want 401", idleTTL+time.Minute, r.status)
	}
}

// TestOIDCSignInAcrossReplicas: the provider may send the browser back to
// another replica than the one that started the sign-in; the sign-in
// completes there, once.
func TestOIDCSignInAcrossReplicas(t *testing.T) {
	p := newProvider(t)
	a := oidcConsole(t, p)
	b := &world{store: a.store}
	b.c = New(a.c.logger, http.NotFoundHandler(), a.store, fakeAdmins{}, nil, idUsers{}, Options{
		ServiceToken: service, Now: func() time.Time { return a.now },
		OIDC: &OIDC{Issuer: p.srv.URL, ClientID: "corral-console", ClientSecret: "s3cret"},
	})
	callback, state := begin(t, a, p)
	r := b.follow(t, callback, state)
	if r.status != http.StatusSeeOther {
		t.Fatalf("the callback on the other replica = %d %s", r.status, r.body)
	}
	var session string
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == CookieName {
			session = c.Name + "=" + c.Value
		}
	}
	if who := a.do(t, "GET", "/ui/api/session", "", map[string]string{"Cookie": session}); who.status != http.StatusOK {
		t.Errorf("the session the other replica made, on the first: %d %s", who.status, who.body)
	}
	for name, w := range map[string]*world{"first": a, "other": b} {
		if r := w.follow(t, callback, state); r.status != http.StatusBadRequest {
			t.Errorf("the callback replayed on the %s replica = %d, want 400", name, r.status)
		}
	}
}
