package oauth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/identity"
)

// FuzzToken sends the token endpoint arbitrary bodies, content types and
// Authorization headers. It must never panic, and must always answer 200,
// 400 or 401 with a JSON body that is either a token or an OAuth error,
// audited once. It is seeded with the forms of the unit tables.
func FuzzToken(f *testing.F) {
	seed := newWorld(f)
	wl := federated(seed)
	user := seed.userToken("alice", time.Hour)
	sa := wl.token(impactSA)
	handed := seed.handedOn(f, &identity.Actor{Subject: "billing"}, "tool:erp.*", time.Hour)
	form := "application/x-www-form-urlencoded"
	for _, v := range []url.Values{
		cc("billing", keyBilling),
		cc("billing", keyBilling, "scope", "tool:erp.get_order model:gpt-*", "task", "t-1"),
		cc("billing", keyBilling, "scope", "tool:erp.get_*"),
		cc("helper", keyBilling),
		cc("ghost", keyGhost),
		cc("stopped", keyStopped),
		exchangeForm("billing", keyBilling, user),
		exchangeForm("billing", keyBilling, user, "audience", "erp", "audience", testIssuer, "scope", "tool:erp.get_order"),
		exchangeForm("billing", keyBilling, user, "actor_token", keyHelper, "actor_token_type", TokenTypeAccessToken),
		exchangeForm("helper", keyHelper, handed),
		exchangeForm("billing", keyBilling, "a.b.c", "resource", "x"),
		{"grant_type": {"password"}},
		assertion(sa),
		assertion(sa, "client_id", "impact", "scope", "tool:erp.get_order"),
		assertion(wl.token("system:serviceaccount:batch:nightly")),
		assertion("a.b.c"),
		cc("impact", "corral_ak_impact-secret"),
		{"grant_type": {GrantTokenExchange}, "subject_token": {sa}, "subject_token_type": {TokenTypeJWT}},
		{"grant_type": {GrantTokenExchange}, "subject_token": {user}, "subject_token_type": {TokenTypeJWT}, "actor_token": {sa}, "actor_token_type": {TokenTypeJWT}},
	} {
		f.Add(v.Encode(), form, "")
	}
	f.Add("grant_type=client_credentials", form, "Basic YmlsbGluZzpjb3JyYWxfYWtfYmlsbGluZy1zZWNyZXQ=")
	f.Add("grant_type=client_credentials", form+"; charset=utf-8", "Basic !!!")
	f.Add("grant_type=client_credentials&grant_type=x", form, "Bearer x")
	f.Add("%zz", form, "")
	f.Add(`{"grant_type":"client_credentials"}`, "application/json", "")
	f.Add("", "", "")

	f.Fuzz(func(t *testing.T, body, contentType, authorization string) {
		w := newWorld(t)
		federated(w)
		delete(w.keys, "corral_ak_broken-secret") // its 500 is a test of its own
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, TokenPath, strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		rec := httptest.NewRecorder()
		w.mux.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized:
		default:
			t.Fatalf("POST %q (%q, %q) = %d, want 200, 400 or 401; body %s", body, contentType, authorization, rec.Code, rec.Body)
		}
		var a answer
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
			t.Fatalf("POST %q answered %s, not JSON: %v", body, rec.Body, err)
		}
		if (rec.Code == http.StatusOK) != (a.AccessToken != "" && a.Error == "") {
			t.Fatalf("POST %q = %d with %+v: a token iff 200", body, rec.Code, a)
		}
		if n := len(w.audit.records); n != 1 {
			t.Fatalf("POST %q left %d audit records, want 1", body, n)
		}
	})
}
