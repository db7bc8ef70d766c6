package oauth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/identity"
)

const billingDelegated = "tool:erp.* tool:crm.get_customer model:gpt-4o"

// delegatedClaims are the claims of billing's delegated token for alice.
func delegatedClaims(aud identity.Audience, ttl time.Duration, scope string) *identity.Claims {
	return &identity.Claims{
		Issuer: testIssuer, Subject: "alice", Audience: aud,
		IssuedAt: testNow.Unix(), NotBefore: testNow.Unix(), Expiry: testNow.Add(ttl).Unix(),
		ClientID: "billing", Scope: scope, Act: &identity.Actor{Subject: "billing"},
		Principal: &identity.PrincipalClaims{Issuer: idpIssuer, Groups: []string{"finance"}, Roles: []string{"approver"}},
	}
}

// mint signs claims with the world's signer, as corral would have.
func (w *world) mint(t testing.TB, c identity.Claims, ttl time.Duration) string {
	t.Helper()
	token, err := w.signer.Mint(c, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// handedOn is a delegated token for alice that agent "from" got, with scope.
func (w *world) handedOn(t testing.TB, act *identity.Actor, scope string, ttl time.Duration) string {
	return w.mint(t, identity.Claims{
		Subject: "alice", Audience: identity.Audience{testIssuer}, ClientID: act.Subject, Scope: scope, Act: act, Task: "t-1",
		Principal: &identity.PrincipalClaims{Issuer: idpIssuer, Groups: []string{"finance"}},
	}, ttl)
}

func TestTokenExchange(t *testing.T) {
	alice := func(ttl time.Duration, extra ...string) func(testing.TB, *world) request {
		return func(_ testing.TB, w *world) request {
			return request{form: exchangeForm("billing", keyBilling, w.userToken("alice", ttl), extra...)}
		}
	}
	ok := func(expires int64, scope string) *answer {
		return &answer{IssuedTokenType: TokenTypeAccessToken, TokenType: "Bearer", ExpiresIn: expires, Scope: scope}
	}
	issuer := identity.Audience{testIssuer}
	runCases(t, []tokenCase{
		{
			name: "a user's token", req: alice(time.Hour), status: 200, principal: "alice",
			answer: ok(900, billingDelegated), claims: delegatedClaims(issuer, 15*time.Minute, billingDelegated),
			check: func(t *testing.T, w *world) {
				got := w.delegations.users[0]
				if got.Subject != "alice" || got.IssuerName != "corp" {
					t.Errorf("Delegations.Scopes user = %+v, want alice from corp", got)
				}
			},
		},
		{
			name: "client_secret_basic",
			req: func(_ testing.TB, w *world) request {
				f := exchangeForm("billing", keyBilling, w.userToken("alice", time.Hour), "client_id", "", "client_secret", "")
				return request{form: f, basic: []string{"billing", keyBilling}}
			},
			status: 200, principal: "alice", claims: delegatedClaims(issuer, 15*time.Minute, billingDelegated),
		},
		{
			name: "subject_token_type access_token", status: 200, principal: "alice",
			req: alice(time.Hour, "subject_token_type", "", "subject_token_type", TokenTypeAccessToken),
		},
		{
			name: "subject_token_type id_token, requested_token_type jwt", status: 200, principal: "alice",
			req: alice(time.Hour, "subject_token_type", "", "subject_token_type", TokenTypeIDToken, "requested_token_type", TokenTypeJWT),
		},
		{
			name: "the delegated token dies with the user's", req: alice(5 * time.Minute), status: 200, principal: "alice",
			answer: ok(300, billingDelegated), claims: delegatedClaims(issuer, 5*time.Minute, billingDelegated),
		},
		{
			name: "the user's token expired", req: alice(-time.Minute),
			status: 400, code: CodeInvalidRequest, desc: "subject_token refused (expired): the token expired at 2026-05-01T11:59:00Z",
			reason: "expired: the token expired at 2026-05-01T11:59:00Z",
		},
		{
			name: "scope narrows the delegation", req: alice(time.Hour, "scope", "tool:erp.get_order model:gpt-4o"), status: 200, principal: "alice",
			answer: ok(900, "tool:erp.get_order model:gpt-4o"),
		},
		{
			name: "scope beyond what policy allows", req: alice(time.Hour, "scope", "model:gpt-4o-mini"),
			status: 400, code: CodeInvalidScope, principal: "alice",
			desc: `scope item "model:gpt-4o-mini" is not among what policy lets agent billing do for this user`,
		},
		{
			name: "scope malformed", req: alice(time.Hour, "scope", "everything"),
			status: 400, code: CodeInvalidScope, desc: `"everything"`,
		},
		{
			name: "policy allows nothing",
			req: func(_ testing.TB, w *world) request {
				return request{form: exchangeForm("empty", keyEmpty, w.userToken("alice", time.Hour))}
			},
			status: 400, code: CodeInvalidScope, desc: "policy lets agent empty do nothing for this user", agent: "empty", principal: "alice",
		},
		{
			name: "policy fails", setup: func(w *world) { w.delegations.err = errors.New("rego: eval") }, req: alice(time.Hour),
			status: 500, code: CodeServerError, desc: "policy could not say", principal: "alice",
		},
		{
			name: "task", req: alice(time.Hour, "task", "t-9"), status: 200, principal: "alice",
			claims: func() *identity.Claims {
				c := delegatedClaims(issuer, 15*time.Minute, billingDelegated)
				c.Task = "t-9"
				return c
			}(),
		},
		{
			name: "task not printable", req: alice(time.Hour, "task", "\x7f"),
			status: 400, code: CodeInvalidRequest, desc: "task must be printable",
		},
		{
			name: "the stopped agent", status: 400, code: CodeUnauthorizedClient, desc: "stopped", agent: "stopped",
			req: func(_ testing.TB, w *world) request {
				return request{form: exchangeForm("stopped", keyStopped, w.userToken("alice", time.Hour))}
			},
		},
		{
			name: "the signer fails", setup: func(w *world) { w.signer.mintErr = errors.New("hsm gone") }, req: alice(time.Hour),
			status: 500, code: CodeServerError, desc: "could not be signed", principal: "alice",
		},
		{
			name: "a signer that overshoots the user's expiry is caught", setup: func(w *world) { w.signer.skew = 5 },
			req: alice(5 * time.Minute), status: 500, code: CodeServerError, principal: "alice",
		},
	})
}

func TestTokenExchangeSubject(t *testing.T) {
	subject := func(make func(w *world) string, extra ...string) func(testing.TB, *world) request {
		return func(_ testing.TB, w *world) request {
			return request{form: exchangeForm("billing", keyBilling, make(w), extra...)}
		}
	}
	user := func(ttl time.Duration) func(w *world) string {
		return func(w *world) string { return w.userToken("alice", ttl) }
	}
	runCases(t, []tokenCase{
		{
			name: "subject_token missing", req: subject(func(*world) string { return "" }),
			status: 400, code: CodeInvalidRequest, desc: "subject_token is missing",
		},
		{
			name: "subject_token_type missing", req: subject(user(time.Hour), "subject_token_type", ""),
			status: 400, code: CodeInvalidRequest, desc: "subject_token_type is missing",
		},
		{
			name: "subject_token_type unsupported", req: subject(user(time.Hour), "subject_token_type", "", "subject_token_type", "urn:ietf:params:oauth:token-type:refresh_token"),
			status: 400, code: CodeInvalidRequest, desc: `subject_token_type "urn:ietf:params:oauth:token-type:refresh_token" is not supported`,
		},
		{
			name: "requested_token_type unsupported", req: subject(user(time.Hour), "requested_token_type", "urn:ietf:params:oauth:token-type:saml2"),
			status: 400, code: CodeInvalidRequest, desc: "requested_token_type",
		},
		{
			name: "not a JWT", req: subject(func(*world) string { return "not-a-token" }),
			status: 400, code: CodeInvalidRequest, desc: "subject_token refused (malformed)", reason: "malformed: ",
		},
		{
			name: "a tampered user token",
			req: subject(func(w *world) string {
				a, b := strings.Split(w.userToken("alice", time.Hour), "."), strings.Split(w.userToken("mallory", time.Hour), ".")
				return a[0] + "." + b[1] + "." + a[2]
			}),
			status: 400, code: CodeInvalidRequest, desc: "subject_token refused (bad_signature)", reason: "bad_signature: ",
		},
		{
			name: "an untrusted issuer",
			req: subject(func(w *world) string {
				return jws(w.idp.key, userClaims{Issuer: "https://evil.test", Sub: "alice", Exp: testNow.Add(time.Hour).Unix()})
			}),
			status: 400, code: CodeInvalidRequest, reason: `wrong_issuer: no Issuer trusts "https://evil.test"`,
		},
		{
			name: "a user token without sub",
			req: subject(func(w *world) string {
				return jws(w.idp.key, userClaims{Issuer: idpIssuer, Exp: testNow.Add(time.Hour).Unix()})
			}),
			status: 400, code: CodeInvalidRequest, reason: "missing_claim: ",
		},
		{
			name: "the issuer is unreachable", setup: func(w *world) { w.idp.down = true }, req: subject(user(time.Hour)),
			status: 503, code: CodeTemporarilyUnavailable, desc: "subject_token refused (issuer_unavailable)", reason: "issuer_unavailable: ",
		},
		{
			name: "the issuers fail without a reason", setup: func(w *world) { w.idp.err = errors.New("dial tcp: refused") }, req: subject(user(time.Hour)),
			status: 503, code: CodeTemporarilyUnavailable, desc: "could not be verified now",
		},
		{
			name: "no issuers configured", setup: func(w *world) { w.h.deps.Issuers = nil }, req: subject(user(time.Hour)),
			status: 400, code: CodeInvalidRequest, reason: "wrong_issuer: no external issuer is trusted",
		},
		{
			name: "an agent's own token is no delegation",
			req: subject(func(w *world) string {
				return w.mint(t, identity.Claims{Subject: "helper", ClientID: "helper", Audience: identity.Audience{testIssuer}}, time.Hour)
			}),
			status: 400, code: CodeInvalidRequest, reason: "missing_claim: the token has no act claim",
		},
		{
			name: "a delegated token addressed to a tool source",
			req: subject(func(w *world) string {
				return w.mint(t, identity.Claims{Subject: "alice", ClientID: "helper", Audience: identity.Audience{"erp"},
					Act: &identity.Actor{Subject: "helper"}, Principal: &identity.PrincipalClaims{Issuer: idpIssuer}}, time.Hour)
			}),
			status: 400, code: CodeInvalidRequest, reason: "wrong_audience: ",
		},
		{
			name: "a delegated token without principal",
			req: subject(func(w *world) string {
				return w.mint(t, identity.Claims{Subject: "alice", ClientID: "helper", Audience: identity.Audience{testIssuer},
					Act: &identity.Actor{Subject: "helper"}}, time.Hour)
			}),
			status: 400, code: CodeInvalidRequest, reason: "missing_claim: the delegated token has no principal",
		},
	})
}

func TestRedelegation(t *testing.T) {
	handOn := func(act *identity.Actor, scope string, ttl time.Duration, extra ...string) func(testing.TB, *world) request {
		return func(t testing.TB, w *world) request {
			return request{form: exchangeForm("helper", keyHelper, w.handedOn(t, act, scope, ttl), extra...)}
		}
	}
	billing := &identity.Actor{Subject: "billing"}
	runCases(t, []tokenCase{
		{
			// helper's policy allows erp.get_order, erp.delete_order and
			// crm.*; billing's token allowed erp.get_order and
			// crm.get_customer: helper gets the intersection.
			name:   "an agent passes a delegation on",
			req:    handOn(billing, "tool:erp.get_order tool:crm.get_customer", 10*time.Minute),
			status: 200, agent: "helper", principal: "alice",
			answer: &answer{IssuedTokenType: TokenTypeAccessToken, TokenType: "Bearer", ExpiresIn: 600, Scope: "tool:erp.get_order tool:crm.get_customer"},
			claims: &identity.Claims{
				Issuer: testIssuer, Subject: "alice", Audience: identity.Audience{testIssuer},
				IssuedAt: testNow.Unix(), NotBefore: testNow.Unix(), Expiry: testNow.Add(10 * time.Minute).Unix(),
				ClientID: "helper", Scope: "tool:erp.get_order tool:crm.get_customer", Task: "t-1",
				Act:       &identity.Actor{Subject: "helper", Act: &identity.Actor{Subject: "billing"}},
				Principal: &identity.PrincipalClaims{Issuer: idpIssuer, Groups: []string{"finance"}},
			},
			check: func(t *testing.T, w *world) {
				want := &identity.External{Issuer: idpIssuer, Subject: "alice", Groups: []string{"finance"}, Expiry: testNow.Add(10 * time.Minute).Unix()}
				if diff := cmp.Diff(want, w.delegations.users[0]); diff != "" {
					t.Errorf("Delegations.Scopes user mismatch (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "a delegation never widens", req: handOn(billing, "tool:hr.read", time.Hour),
			status: 400, code: CodeInvalidScope, desc: "policy lets agent helper do nothing for this user", agent: "helper", principal: "alice",
		},
		{
			name: "scope of a delegation passed on", req: handOn(billing, "tool:erp.*", time.Hour, "scope", "tool:erp.delete_order"),
			status: 200, agent: "helper", principal: "alice",
			answer: &answer{IssuedTokenType: TokenTypeAccessToken, TokenType: "Bearer", ExpiresIn: 900, Scope: "tool:erp.delete_order"},
		},
		{
			name: "an agent exchanging its own delegation stays once in the chain",
			req: func(t testing.TB, w *world) request {
				return request{form: exchangeForm("helper", keyHelper, w.handedOn(t, &identity.Actor{Subject: "helper", Act: billing}, "tool:erp.get_order", time.Hour), "task", "t-2")}
			},
			status: 200, agent: "helper", principal: "alice",
			check: func(t *testing.T, w *world) {
				c := claimsOf(t, lastToken(t, w))
				want := &identity.Actor{Subject: "helper", Act: billing}
				if diff := cmp.Diff(want, c.Act); diff != "" || c.Task != "t-2" {
					t.Errorf("act mismatch (-want +got):\n%s; task = %q, want t-2", diff, c.Task)
				}
			},
		},
		{
			name: "a delegation from a stopped agent", req: handOn(&identity.Actor{Subject: "stopped"}, "tool:erp.*", time.Hour),
			status: 400, code: CodeUnauthorizedClient, desc: "agent stopped, which passed on the subject token, is stopped", agent: "helper", principal: "alice",
		},
		{
			name: "a chain too long",
			req: func() func(testing.TB, *world) request {
				var act *identity.Actor
				for _, a := range []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"} {
					act = &identity.Actor{Subject: a, Act: act}
				}
				return handOn(act, "tool:erp.*", time.Hour)
			}(),
			status: 400, code: CodeInvalidRequest, desc: "longer than 8 agents", agent: "helper", principal: "alice",
		},
		{
			name: "an expired delegation", req: handOn(billing, "tool:erp.*", -time.Second),
			status: 400, code: CodeInvalidRequest, reason: "expired: ", agent: "helper",
		},
	})
}

// lastToken is the token of the world's last successful answer.
func lastToken(t testing.TB, w *world) string {
	t.Helper()
	if w.lastToken == "" {
		t.Fatal("no token was answered")
	}
	return w.lastToken
}

func TestTokenExchangeActor(t *testing.T) {
	actor := func(token func(t testing.TB, w *world) string, typ string) func(testing.TB, *world) request {
		return func(t testing.TB, w *world) request {
			return request{form: exchangeForm("billing", keyBilling, w.userToken("alice", time.Hour), "actor_token", token(t, w), "actor_token_type", typ)}
		}
	}
	key := func(k string) func(testing.TB, *world) string { return func(testing.TB, *world) string { return k } }
	access := func(agent string, ttl time.Duration) func(t testing.TB, w *world) string {
		return func(t testing.TB, w *world) string {
			return w.mint(t, identity.Claims{Subject: agent, ClientID: agent, Audience: identity.Audience{testIssuer}}, ttl)
		}
	}
	runCases(t, []tokenCase{
		{name: "the agent's own key", req: actor(key(keyBilling), TokenTypeAccessToken), status: 200, principal: "alice"},
		{name: "the agent's own access token", req: actor(access("billing", time.Hour), TokenTypeJWT), status: 200, principal: "alice"},
		{
			name: "another agent's key", req: actor(key(keyHelper), TokenTypeAccessToken),
			status: 401, code: CodeInvalidClient, desc: `actor_token belongs to another agent than client_id "billing"`,
			reason: `agent_mismatch: key h222 of agent "helper" presented with client_id "billing"`,
		},
		{
			name: "another agent's access token", req: actor(access("helper", time.Hour), TokenTypeJWT),
			status: 401, code: CodeInvalidClient, reason: `agent_mismatch: token jti-1 of agent "helper" presented with client_id "billing"`,
		},
		{
			name: "an expired access token", req: actor(access("billing", -time.Minute), TokenTypeJWT),
			status: 400, code: CodeInvalidRequest, desc: "actor_token refused (expired)", reason: "expired: ",
		},
		{
			name: "neither key nor JWT", req: actor(key("corral_ak_unknown"), TokenTypeAccessToken),
			status: 400, code: CodeInvalidRequest, reason: "malformed: neither a live agent key nor a JWT",
		},
		{
			name: "actor_token_type missing", req: actor(key(keyBilling), ""),
			status: 400, code: CodeInvalidRequest, desc: "actor_token_type is missing",
		},
		{
			name: "actor_token_type unsupported", req: actor(key(keyBilling), TokenTypeIDToken),
			status: 400, code: CodeInvalidRequest, desc: "actor_token_type",
		},
		{
			name: "actor_token_type without actor_token",
			req: func(_ testing.TB, w *world) request {
				return request{form: exchangeForm("billing", keyBilling, w.userToken("alice", time.Hour), "actor_token_type", TokenTypeJWT)}
			},
			status: 400, code: CodeInvalidRequest, desc: "actor_token_type is given without actor_token",
		},
	})
}

func TestTokenExchangeAudience(t *testing.T) {
	aud := func(extra ...string) func(testing.TB, *world) request {
		return func(_ testing.TB, w *world) request {
			return request{form: exchangeForm("billing", keyBilling, w.userToken("alice", time.Hour), extra...)}
		}
	}
	claims := func(a ...string) *identity.Claims {
		return delegatedClaims(identity.Audience(a), 15*time.Minute, billingDelegated)
	}
	runCases(t, []tokenCase{
		// A delegated token for a tool source would let the agent call the
		// upstream past policy; one naming corral too, let the upstream
		// replay it against corral.
		{name: "corral, named", req: aud("audience", testIssuer), status: 200, principal: "alice", claims: claims(testIssuer)},
		{name: "a tool source", req: aud("audience", "erp"), status: 400, code: CodeInvalidTarget, desc: `audience "erp": a delegated token is for corral`},
		{name: "corral and a tool source", req: aud("audience", testIssuer, "audience", "erp"), status: 400, code: CodeInvalidTarget, desc: `"erp"`},
		{name: "a URL", req: aud("audience", "https://other.test"), status: 400, code: CodeInvalidTarget},
		{name: "resource", req: aud("resource", "https://erp.test/"), status: 400, code: CodeInvalidTarget, desc: "resource is not supported"},
	})
}
