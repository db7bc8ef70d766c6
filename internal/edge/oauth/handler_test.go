package oauth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/telemetry"
)

// tokenCase is one token request and what must come of it.
type tokenCase struct {
	name  string
	setup func(w *world)
	req   func(t testing.TB, w *world) request

	status int
	code   string // the error; "" on success
	desc   string // in error_description
	// answer and claims are checked on success; the token and jti are not
	// compared.
	answer *answer
	claims *identity.Claims

	// The audit record: agent "" means billing, "-" none; target "" means
	// the one the form's grant_type names, "-" none; reason is a prefix.
	agent, principal, target, reason string
	// credential is the audit record's: how a client without a key proved itself.
	credential string
	check      func(t *testing.T, w *world)
}

// runCases runs token cases, each in a fresh world, and checks the answer,
// the claims, the audit record and that no secret leaks anywhere.
func runCases(t *testing.T, cases []tokenCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			if c.setup != nil {
				c.setup(w)
			}
			r := c.req(t, w)
			rec := w.do(t, r)
			raw := rec.Body.String()
			if rec.Code != c.status {
				t.Fatalf("POST /oauth2/token status = %d, want %d; body %s", rec.Code, c.status, raw)
			}
			for _, h := range []string{"Cache-Control: no-store", "Pragma: no-cache"} {
				k, v, _ := strings.Cut(h, ": ")
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if got, want := rec.Header().Get("WWW-Authenticate"), challenge(c.status); got != want {
				t.Errorf("WWW-Authenticate = %q, want %q", got, want)
			}
			a := decodeAnswer(t, rec)
			if c.code != "" {
				if a.Error != c.code || !strings.Contains(a.ErrorDescription, c.desc) || a.AccessToken != "" {
					t.Errorf("answer = %+v, want error %s with a description containing %q", a, c.code, c.desc)
				}
			} else {
				claims := claimsOf(t, a.AccessToken)
				w.lastToken = a.AccessToken
				a.AccessToken = ""
				if c.answer != nil {
					if diff := cmp.Diff(*c.answer, a); diff != "" {
						t.Errorf("answer mismatch (-want +got):\n%s", diff)
					}
				}
				if c.claims != nil {
					if diff := cmp.Diff(*c.claims, claims, cmpopts.IgnoreFields(identity.Claims{}, "ID")); diff != "" {
						t.Errorf("claims mismatch (-want +got):\n%s", diff)
					}
				}
			}
			checkAudit(t, w, c, r)
			noSecrets(t, w, r, raw)
			if c.check != nil {
				c.check(t, w)
			}
		})
	}
}

func challenge(status int) string {
	if status == http.StatusUnauthorized {
		return `Basic realm="corral"`
	}
	return ""
}

func checkAudit(t *testing.T, w *world, c tokenCase, r request) {
	t.Helper()
	got := w.audit.last(t)
	want := audit.Record{Time: testNow, Kind: "token", Edge: "oauth", Agent: c.agent, Principal: c.principal, Target: c.target, Code: c.code, Credential: c.credential}
	switch want.Agent {
	case "":
		want.Agent = "billing"
	case "-":
		want.Agent = ""
	}
	switch want.Target {
	case "-":
		want.Target = ""
	case "":
		want.Target = map[string]string{GrantClientCredentials: "client_credentials", GrantTokenExchange: "token_exchange"}[r.form.Get("grant_type")]
	}
	switch {
	case c.status == http.StatusOK:
		want.Decision, want.Status = "allowed", "ok"
	case c.status >= 500:
		want.Decision, want.Status = "denied", "error"
	default:
		want.Decision, want.Status = "denied", "refused"
	}
	if !strings.HasPrefix(got.Reason, c.reason) || (c.status == http.StatusOK) != (got.Reason == "") {
		t.Errorf("audit reason = %q, want it to start with %q", got.Reason, c.reason)
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(audit.Record{}, "Reason", "DurationMS", "Remote")); diff != "" {
		t.Errorf("audit record mismatch (-want +got):\n%s", diff)
	}
}

// noSecrets fails if a key, a client secret or a token from the request
// shows in the answer, or any of them in the audit.
func noSecrets(t *testing.T, w *world, r request, body string) {
	t.Helper()
	secrets := []string{}
	for k := range w.keys {
		secrets = append(secrets, k)
	}
	for _, name := range []string{"client_secret", "subject_token", "actor_token", "client_assertion"} {
		if v := r.form.Get(name); len(v) > 8 {
			secrets = append(secrets, v)
		}
	}
	records, _ := json.Marshal(w.audit.records)
	for _, s := range secrets {
		if strings.Contains(body, s) {
			t.Errorf("the answer shows a secret: %s", body)
		}
		if strings.Contains(string(records), s) {
			t.Errorf("the audit shows a secret: %s", records)
		}
	}
}

func basicHeader(raw string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(raw))}}
}

// ccClaims are the claims of billing's access token with the given scope.
func ccClaims(scope, task string) *identity.Claims {
	return &identity.Claims{
		Issuer: testIssuer, Subject: "billing", Audience: identity.Audience{testIssuer},
		IssuedAt: testNow.Unix(), NotBefore: testNow.Unix(), Expiry: testNow.Add(15 * time.Minute).Unix(),
		ClientID: "billing", Scope: scope, Task: task,
	}
}

const billingScope = "tool:erp.* tool:crm.get_customer model:gpt-*"

func TestClientCredentials(t *testing.T) {
	post := func(extra ...string) func(testing.TB, *world) request {
		return func(testing.TB, *world) request { return request{form: cc("billing", keyBilling, extra...)} }
	}
	ok := func(scope string) *answer { return &answer{TokenType: "Bearer", ExpiresIn: 900, Scope: scope} }
	runCases(t, []tokenCase{
		{
			name: "client_secret_post", req: post(), status: 200,
			answer: ok(billingScope), claims: ccClaims(billingScope, ""),
		},
		{
			name: "client_secret_basic",
			req: func(testing.TB, *world) request {
				return request{form: url.Values{"grant_type": {GrantClientCredentials}}, basic: []string{"billing", keyBilling}}
			},
			status: 200, answer: ok(billingScope), claims: ccClaims(billingScope, ""),
		},
		{
			name: "Basic credentials are form-encoded inside",
			req: func(testing.TB, *world) request {
				return request{form: url.Values{"grant_type": {GrantClientCredentials}}, header: basicHeader("bil%6Cing:" + keyBilling)}
			},
			status: 200, claims: ccClaims(billingScope, ""),
		},
		{
			name: "Basic with the same client_id in the body",
			req: func(testing.TB, *world) request {
				return request{form: url.Values{"grant_type": {GrantClientCredentials}, "client_id": {"billing"}}, basic: []string{"billing", keyBilling}}
			},
			status: 200, claims: ccClaims(billingScope, ""),
		},
		{
			name: "scope narrows to names and patterns", req: post("scope", "tool:erp.get_order model:gpt-*"), status: 200,
			answer: ok("tool:erp.get_order model:gpt-*"), claims: ccClaims("tool:erp.get_order model:gpt-*", ""),
		},
		{
			name: "scope items repeated count once", req: post("scope", "tool:crm.get_customer  tool:crm.get_customer"), status: 200,
			answer: ok("tool:crm.get_customer"),
		},
		{
			name: "blank scope means the whole scope", req: post("scope", "   "), status: 200, answer: ok(billingScope),
		},
		{
			name: "a narrower glob is not one of the patterns", req: post("scope", "tool:erp.get_*"),
			status: 400, code: CodeInvalidScope, desc: `"tool:erp.get_*"`, reason: "scope item",
		},
		{
			name: "scope outside the agent", req: post("scope", "tool:erp.get_order tool:hr.fire_everyone"),
			status: 400, code: CodeInvalidScope, desc: `"tool:hr.fire_everyone" is not among agent billing's tools and models`,
		},
		{
			name: "a tool name as a model", req: post("scope", "model:erp.get_order"),
			status: 400, code: CodeInvalidScope, desc: `"model:erp.get_order"`,
		},
		{
			name: "scope item without a kind", req: post("scope", "erp.get_order"),
			status: 400, code: CodeInvalidScope, desc: `"erp.get_order" is not tool:<name> or model:<name>`,
		},
		{
			name: "scope item with a quote", req: post("scope", `tool:"x"`),
			status: 400, code: CodeInvalidScope, desc: "is not tool:<name>",
		},
		{
			name: "too many scope items", req: post("scope", strings.Repeat("tool:erp.x ", maxScopeItems+1)),
			status: 400, code: CodeInvalidScope, desc: "more than 256 items",
		},
		{
			name: "task becomes a claim", req: post("task", "invoice run 7"), status: 200,
			claims: ccClaims(billingScope, "invoice run 7"),
		},
		{
			name: "task of 128 characters", req: post("task", strings.Repeat("é", 128)), status: 200,
			claims: ccClaims(billingScope, strings.Repeat("é", 128)),
		},
		{
			name: "task too long", req: post("task", strings.Repeat("a", 129)),
			status: 400, code: CodeInvalidRequest, desc: "task must be printable text of at most 128 characters",
		},
		{
			name: "task not printable", req: post("task", "a\nb"),
			status: 400, code: CodeInvalidRequest, desc: "task must be printable",
		},
		{
			name:   "an agent with nothing gets a token with no scope",
			req:    func(testing.TB, *world) request { return request{form: cc("empty", keyEmpty)} },
			status: 200, agent: "empty", answer: ok(""),
		},
	})
}

func TestClientAuthentication(t *testing.T) {
	form := func(v url.Values) func(testing.TB, *world) request {
		return func(testing.TB, *world) request { return request{form: v} }
	}
	grant := func() url.Values { return url.Values{"grant_type": {GrantClientCredentials}} }
	runCases(t, []tokenCase{
		{
			name: "a key of agent A presented as agent B", req: form(cc("helper", keyBilling)),
			status: 401, code: CodeInvalidClient, desc: `the client secret belongs to another agent than client_id "helper"`,
			reason: `agent_mismatch: key b111 of agent "billing" presented with client_id "helper"`,
		},
		{
			name: "a key of agent A presented as agent B with Basic",
			req: func(testing.TB, *world) request {
				return request{form: grant(), basic: []string{"helper", keyBilling}}
			},
			status: 401, code: CodeInvalidClient, reason: `agent_mismatch: key b111 of agent "billing"`,
		},
		{
			name: "not a key", req: form(cc("billing", "corral_ak_guess")),
			status: 401, code: CodeInvalidClient, desc: "client_secret is not a live agent key", agent: "-",
		},
		{
			name: "no credentials", req: form(grant()),
			status: 401, code: CodeInvalidClient, desc: "not authenticated", agent: "-",
		},
		{
			name: "no secret", req: form(with(grant(), "client_id", "billing")),
			status: 401, code: CodeInvalidClient, desc: "client_secret is missing", agent: "-",
		},
		{
			name: "no client_id", req: form(with(grant(), "client_secret", keyBilling)),
			status: 401, code: CodeInvalidClient, desc: "client_id is missing", agent: "-",
		},
		{
			name: "client_id not an agent name", req: form(cc("Billing!", keyBilling)),
			status: 401, code: CodeInvalidClient, desc: "client_id is not an agent name", agent: "-",
		},
		{
			name: "Basic and client_secret in the body",
			req: func(testing.TB, *world) request {
				return request{form: cc("billing", keyBilling), basic: []string{"billing", keyBilling}}
			},
			status: 400, code: CodeInvalidRequest, desc: "authenticated twice", agent: "-",
		},
		{
			name: "Basic and another client_id in the body",
			req: func(testing.TB, *world) request {
				return request{form: with(grant(), "client_id", "helper"), basic: []string{"billing", keyBilling}}
			},
			status: 400, code: CodeInvalidRequest, desc: "client_id in the body differs", agent: "-",
		},
		{
			name: "Bearer is not a client authentication",
			req: func(testing.TB, *world) request {
				return request{form: cc("billing", keyBilling), header: http.Header{"Authorization": {"Bearer " + keyBilling}}}
			},
			status: 401, code: CodeInvalidClient, desc: "client_secret_basic", agent: "-",
		},
		{
			name: "Basic that is not base64",
			req: func(testing.TB, *world) request {
				return request{form: grant(), header: http.Header{"Authorization": {"Basic !!!"}}}
			},
			status: 401, code: CodeInvalidClient, desc: "Basic credentials are malformed", agent: "-",
		},
		{
			name: "Basic with a bad escape",
			req: func(testing.TB, *world) request {
				return request{form: grant(), header: basicHeader("bill%zz:" + keyBilling)}
			},
			status: 401, code: CodeInvalidClient, desc: "Basic credentials are malformed", agent: "-",
		},
		{
			name: "a key whose agent is gone", req: form(cc("ghost", keyGhost)),
			status: 401, code: CodeInvalidClient, desc: `agent "ghost" does not exist`, agent: "ghost",
			reason: `unknown_agent: the key's agent "ghost" has no Agent resource`,
		},
		{
			name: "a stopped agent", req: form(cc("stopped", keyStopped)),
			status: 400, code: CodeUnauthorizedClient, desc: "agent stopped is stopped by a kill switch: it looped", agent: "stopped",
		},
		{
			name: "the global kill switch", setup: func(w *world) { w.kill.all = true }, req: form(cc("billing", keyBilling)),
			status: 400, code: CodeUnauthorizedClient, desc: "every agent is stopped by the global kill switch: incident 42",
		},
		{
			name: "an agent whose spec cannot be read", req: form(cc("broken", "corral_ak_broken-secret")),
			status: 500, code: CodeServerError, desc: "could not be read", agent: "broken",
		},
	})
}

func TestRequestErrors(t *testing.T) {
	raw := func(body string) func(testing.TB, *world) request {
		return func(testing.TB, *world) request { return request{body: body} }
	}
	key := url.QueryEscape(keyBilling)
	runCases(t, []tokenCase{
		{
			name: "grant_type missing", req: func(testing.TB, *world) request { return request{form: cc("billing", keyBilling, "grant_type", "")} },
			status: 400, code: CodeInvalidRequest, desc: "grant_type is missing", agent: "-",
		},
		{
			name: "unsupported grant type",
			req: func(testing.TB, *world) request {
				return request{form: url.Values{"grant_type": {"password"}, "client_id": {"billing"}, "client_secret": {keyBilling}}}
			},
			status: 400, code: CodeUnsupportedGrantType, desc: `grant_type "password" is not supported`, agent: "-", target: "password",
		},
		{
			name: "a long grant type is cut in the audit",
			req: func(testing.TB, *world) request {
				return request{form: url.Values{"grant_type": {strings.Repeat("g", 100)}}}
			},
			status: 400, code: CodeUnsupportedGrantType, agent: "-", target: strings.Repeat("g", 64),
		},
		{
			name: "grant_type twice", req: raw("grant_type=client_credentials&grant_type=client_credentials&client_id=billing&client_secret=" + key),
			status: 400, code: CodeInvalidRequest, desc: "grant_type is given more than once", agent: "-",
		},
		{
			name: "client_secret twice, once empty", req: raw("grant_type=client_credentials&client_id=billing&client_secret=" + key + "&client_secret="),
			status: 400, code: CodeInvalidRequest, desc: "client_secret is given more than once", agent: "-",
		},
		{
			name: "unknown parameters are ignored, even twice", req: raw("grant_type=client_credentials&client_id=billing&client_secret=" + key + "&x=1&x=2"),
			status: 200, target: "client_credentials",
		},
		{
			name: "an empty parameter counts as absent", req: raw("grant_type=client_credentials&client_id=billing&client_secret=" + key + "&scope="),
			status: 200, target: "client_credentials", answer: &answer{TokenType: "Bearer", ExpiresIn: 900, Scope: billingScope},
		},
		{
			name: "JSON body", req: func(testing.TB, *world) request {
				return request{body: `{"grant_type":"client_credentials"}`, contentType: "application/json"}
			},
			status: 400, code: CodeInvalidRequest, desc: "must be application/x-www-form-urlencoded", agent: "-",
		},
		{
			name: "no content type", req: func(testing.TB, *world) request { return request{form: cc("billing", keyBilling), contentType: "-"} },
			status: 400, code: CodeInvalidRequest, desc: "must be application/x-www-form-urlencoded", agent: "-", target: "-",
		},
		{
			name: "content type with a charset", req: func(testing.TB, *world) request {
				return request{form: cc("billing", keyBilling), contentType: "application/x-www-form-urlencoded; charset=UTF-8"}
			},
			status: 200,
		},
		{
			name: "body over 64 KiB", req: func(testing.TB, *world) request {
				return request{form: cc("billing", keyBilling, "padding", strings.Repeat("a", maxBody))}
			},
			status: 400, code: CodeInvalidRequest, desc: "larger than 64 KiB", agent: "-", target: "-",
		},
		{
			name: "parameters in the URL", req: func(testing.TB, *world) request {
				return request{form: cc("billing", keyBilling), target: TokenPath + "?client_secret=x"}
			},
			status: 400, code: CodeInvalidRequest, desc: "not in the URL", agent: "-", target: "-",
		},
		{
			name: "not form encoding", req: raw("grant_type=%zz"),
			status: 400, code: CodeInvalidRequest, desc: "not valid application/x-www-form-urlencoded", agent: "-",
		},
	})
}

func TestTokenEndpointOtherMethods(t *testing.T) {
	w := newWorld(t)
	rec := w.do(t, request{method: http.MethodGet, form: url.Values{}})
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "POST" {
		t.Fatalf("GET /oauth2/token = %d, Allow %q; want 405, Allow POST", rec.Code, rec.Header().Get("Allow"))
	}
	if a := decodeAnswer(t, rec); a.Error != CodeInvalidRequest {
		t.Errorf("GET /oauth2/token error = %q, want %q", a.Error, CodeInvalidRequest)
	}
	if len(w.audit.records) != 0 {
		t.Errorf("GET /oauth2/token left %d audit records, want none: it is no token request", len(w.audit.records))
	}
}

// TestAuditFailure: corral issues no token it cannot record, and a refusal
// is answered even when its record is lost.
func TestAuditFailure(t *testing.T) {
	w := newWorld(t)
	w.audit.err = errors.New("stream unavailable")
	rec := w.do(t, request{form: cc("billing", keyBilling)})
	a := decodeAnswer(t, rec)
	if rec.Code != http.StatusServiceUnavailable || a.Error != CodeTemporarilyUnavailable || a.AccessToken != "" {
		t.Errorf("token request with the audit down = %d %+v, want 503 %s and no token", rec.Code, a, CodeTemporarilyUnavailable)
	}
	rec = w.do(t, request{form: cc("helper", keyBilling)})
	if a := decodeAnswer(t, rec); rec.Code != http.StatusUnauthorized || a.Error != CodeInvalidClient {
		t.Errorf("refused request with the audit down = %d %+v, want 401 %s", rec.Code, a, CodeInvalidClient)
	}
}

func TestAuditRequestID(t *testing.T) {
	for _, tt := range []struct {
		name   string
		header string
		ctx    string
		want   string
	}{
		{"header", "req-1", "", "req-1"},
		{"middleware's id wins", "req-1", "mw-2", "mw-2"},
		{"an insane header is dropped", "a b", "", ""},
		{"a long header is dropped", strings.Repeat("a", 129), "", ""},
		{"none", "", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			req := httpRequest(t, cc("billing", keyBilling))
			if tt.header != "" {
				req.Header.Set(telemetry.RequestIDHeader, tt.header)
			}
			if tt.ctx != "" {
				req = req.WithContext(telemetry.WithRequestID(req.Context(), tt.ctx))
			}
			w.mux.ServeHTTP(newRecorder(), req)
			if got := w.audit.last(t).RequestID; got != tt.want {
				t.Errorf("audit RequestID = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestUnauthenticatedRefusalsBounded: token requests with a wrong secret
// from one address reach the audit at most at the shared per-address rate
// (audit.Refusals); an agent that authenticates is always recorded. At
// d7dc022 every refusal was stored in full.
func TestUnauthenticatedRefusalsBounded(t *testing.T) {
	w := newWorld(t)
	refusals := &audit.Refusals{}
	w.h.deps.Refusals = refusals
	const flood = 200
	for range flood {
		if rec := w.do(t, request{form: cc("billing", "corral_ak_wrong")}); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong secret: HTTP %d, want 401", rec.Code)
		}
	}
	stored := len(w.audit.records)
	if stored > audit.RefusalBurst+1 || uint64(flood-stored) != refusals.Suppressed() {
		t.Errorf("%d refusals stored %d records, %d suppressed; want at most %d stored, the rest counted", flood, stored, refusals.Suppressed(), int(audit.RefusalBurst)+1)
	}
	w.do(t, request{form: cc("billing", keyBilling)})
	if len(w.audit.records) != stored+1 || w.audit.last(t).Agent != "billing" {
		t.Errorf("an authenticated request after the flood left %d records, want 1", len(w.audit.records)-stored)
	}
}

// TestRecordsCarryRemote: a token request's record, refused or issued,
// names the caller's address, so the source of a flood of bad secrets can
// be found afterwards (finding 4: refusals carried no remote at 1278c17).
func TestRecordsCarryRemote(t *testing.T) {
	w := newWorld(t)
	for _, form := range []url.Values{cc("billing", "corral_ak_wrong"), cc("billing", keyBilling)} {
		w.do(t, request{form: form})
		if got := w.audit.last(t).Remote; got != "192.0.2.1:1234" { // httptest's peer
			t.Errorf("record of %s: remote = %q, want the caller's address", form.Get("client_secret"), got)
		}
	}
}
