package oauth

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
)

const (
	k8sIssuer = "https://k8s.test"
	impactSA  = "system:serviceaccount:logistics:impact"
)

// fakeWorkloads verifies workload tokens signed with its key, for audience
// "corral", on the test's clock; its Issuer resource is called k8s.
type fakeWorkloads struct {
	key ed25519.PrivateKey
	now func() time.Time
}

type workloadClaims struct {
	Issuer string `json:"iss"`
	Sub    string `json:"sub"`
	Aud    string `json:"aud"`
	Exp    int64  `json:"exp"`
}

func (f *fakeWorkloads) Workload(iss string) bool { return iss == k8sIssuer }

func (f *fakeWorkloads) VerifyWorkload(_ context.Context, token string) (*identity.External, error) {
	u, ok := peek(token)
	if !ok {
		return nil, identity.Refused(identity.ReasonMalformed, "not a JWT")
	}
	if u.Issuer != k8sIssuer {
		return nil, identity.Refused(identity.ReasonWrongIssuer, "issuer %q is not trusted", u.Issuer)
	}
	payload, err := openJWS(f.key.Public().(ed25519.PublicKey), token)
	if err != nil {
		return nil, err
	}
	var c workloadClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, identity.Refused(identity.ReasonMalformed, "claims are not JSON")
	}
	if c.Aud != "corral" {
		return nil, identity.Refused(identity.ReasonWrongAudience, "token is not for corral")
	}
	if c.Exp <= f.now().Unix() {
		return nil, identity.Refused(identity.ReasonExpired, "token expired")
	}
	return &identity.External{IssuerName: "k8s", Issuer: c.Issuer, Subject: c.Sub, Expiry: c.Exp}, nil
}

// federated adds workload issuers and agents that declare workloads and
// certificates to the world.
func federated(w *world) *fakeWorkloads {
	// One key for every world, so that the fuzz seeds' tokens verify.
	key := ed25519.NewKeyFromSeed([]byte("corral workload issuer test key!"))
	wl := &fakeWorkloads{key: key, now: func() time.Time { return testNow }}
	w.h.deps.Workloads = wl
	w.resources["Agent/impact"] = agentResource("impact", config.AgentSpec{
		Tools: []string{"erp.*"}, Keys: config.KeysDisabled,
		Workloads:    []config.WorkloadIdentity{{Issuer: "k8s", Subject: impactSA}},
		Certificates: []config.CertificateIdentity{{URI: "spiffe://corp.test/ns/logistics/sa/impact"}},
	})
	w.resources["Agent/batch"] = agentResource("batch", config.AgentSpec{
		Tools:     []string{"erp.get_order"},
		Workloads: []config.WorkloadIdentity{{Subject: "system:serviceaccount:batch:*"}},
	})
	w.resources["Agent/batch-too"] = agentResource("batch-too", config.AgentSpec{
		Workloads: []config.WorkloadIdentity{{Subject: "system:serviceaccount:batch:nightly"}},
	})
	w.resources["Agent/elsewhere"] = agentResource("elsewhere", config.AgentSpec{
		Workloads:    []config.WorkloadIdentity{{Issuer: "other", Subject: "system:serviceaccount:x:y"}},
		Certificates: []config.CertificateIdentity{{Subject: "CN=elsewhere,O=Corp"}},
	})
	w.keys["corral_ak_impact-secret"] = identity.Key{ID: "i777", Agent: "impact"}
	w.kill.agents["halted"] = "incident"
	w.resources["Agent/halted"] = agentResource("halted", config.AgentSpec{
		Workloads: []config.WorkloadIdentity{{Subject: "system:serviceaccount:halted:sa"}},
	})
	return wl
}

func (f *fakeWorkloads) token(sub string, mod ...func(*workloadClaims)) string {
	c := workloadClaims{Issuer: k8sIssuer, Sub: sub, Aud: "corral", Exp: testNow.Add(time.Hour).Unix()}
	for _, m := range mod {
		m(&c)
	}
	return jws(f.key, c)
}

func assertion(token string, extra ...string) url.Values {
	v := url.Values{"grant_type": {GrantClientCredentials}, "client_assertion_type": {AssertionJWTBearer}, "client_assertion": {token}}
	return with(v, extra...)
}

func TestWorkloadFederation(t *testing.T) {
	impactClaims := func(task string) *identity.Claims {
		return &identity.Claims{
			Issuer: testIssuer, Subject: "impact", Audience: identity.Audience{testIssuer},
			IssuedAt: testNow.Unix(), NotBefore: testNow.Unix(), Expiry: testNow.Add(15 * time.Minute).Unix(),
			ClientID: "impact", Scope: "tool:erp.*", Task: task,
			Proof: &identity.Proof{Method: identity.ProofWorkload, Issuer: "k8s", Subject: impactSA},
		}
	}
	byAssertion := func(sub string, extra ...string) func(testing.TB, *world) request {
		return func(_ testing.TB, w *world) request {
			return request{form: assertion(federated(w).token(sub), extra...)}
		}
	}
	withClaims := func(mod func(*workloadClaims)) func(testing.TB, *world) request {
		return func(_ testing.TB, w *world) request {
			return request{form: assertion(federated(w).token(impactSA, mod))}
		}
	}
	runCases(t, []tokenCase{
		{
			name: "client assertion of a mapped service account", req: byAssertion(impactSA, "task", "t-9"), status: 200,
			agent: "impact", credential: "workload:k8s:" + impactSA,
			answer: &answer{TokenType: "Bearer", ExpiresIn: 900, Scope: "tool:erp.*"}, claims: impactClaims("t-9"),
		},
		{
			name: "client assertion with the agent's client_id", req: byAssertion(impactSA, "client_id", "impact"), status: 200,
			agent: "impact", credential: "workload:k8s:" + impactSA, claims: impactClaims(""),
		},
		{
			name: "a glob subject", req: byAssertion("system:serviceaccount:batch:daily"), status: 200,
			agent: "batch", credential: "workload:k8s:system:serviceaccount:batch:daily",
		},
		{
			name: "an unmapped subject", req: byAssertion("system:serviceaccount:logistics:other"),
			status: 401, code: CodeInvalidClient, desc: "(no_agent)", agent: "-", reason: "no_agent",
			credential: "workload:k8s:system:serviceaccount:logistics:other",
		},
		{
			name: "a subject two agents declare", req: byAssertion("system:serviceaccount:batch:nightly"),
			status: 401, code: CodeInvalidClient, desc: "batch, batch-too", agent: "-", reason: "ambiguous_agent",
			credential: "workload:k8s:system:serviceaccount:batch:nightly",
		},
		{
			name: "a declaration for another issuer", req: byAssertion("system:serviceaccount:x:y"),
			status: 401, code: CodeInvalidClient, desc: "(no_agent)", agent: "-", reason: "no_agent",
			credential: "workload:k8s:system:serviceaccount:x:y",
		},
		{
			name: "the wrong audience", req: withClaims(func(c *workloadClaims) { c.Aud = "kubernetes" }),
			status: 401, code: CodeInvalidClient, desc: "(wrong_audience)", agent: "-", reason: "wrong_audience",
		},
		{
			name: "expired", req: withClaims(func(c *workloadClaims) { c.Exp = testNow.Add(-time.Minute).Unix() }),
			status: 401, code: CodeInvalidClient, desc: "(expired)", agent: "-", reason: "expired",
		},
		{
			name: "an untrusted issuer", req: withClaims(func(c *workloadClaims) { c.Issuer = "https://evil.test" }),
			status: 401, code: CodeInvalidClient, desc: "(wrong_issuer)", agent: "-", reason: "wrong_issuer",
		},
		{
			name: "another agent's client_id", req: byAssertion(impactSA, "client_id", "billing"),
			status: 401, code: CodeInvalidClient, desc: `client_id "billing"`, agent: "impact", reason: "agent_mismatch",
			credential: "workload:k8s:" + impactSA,
		},
		{
			name: "a stopped agent", req: byAssertion("system:serviceaccount:halted:sa"),
			status: 400, code: CodeUnauthorizedClient, desc: "kill switch", agent: "halted", credential: "workload:k8s:system:serviceaccount:halted:sa",
		},
		{
			name: "no workload issuer trusted",
			req: func(_ testing.TB, w *world) request {
				wl := federated(w)
				w.h.deps.Workloads = nil
				return request{form: assertion(wl.token(impactSA))}
			},
			status: 401, code: CodeInvalidClient, desc: "no issuer is trusted for workloads", agent: "-", reason: "wrong_issuer",
		},
		{
			name: "a forged assertion",
			req: func(_ testing.TB, w *world) request {
				federated(w)
				_, other, _ := ed25519.GenerateKey(nil)
				return request{form: assertion(jws(other, workloadClaims{Issuer: k8sIssuer, Sub: impactSA, Aud: "corral", Exp: testNow.Add(time.Hour).Unix()}))}
			},
			status: 401, code: CodeInvalidClient, desc: "(bad_signature)", agent: "-", reason: "bad_signature",
		},
		{
			name: "an assertion and a secret", req: byAssertion(impactSA, "client_secret", keyBilling, "client_id", "billing"),
			status: 400, code: CodeInvalidRequest, desc: "authenticated twice", agent: "-",
		},
		{
			name: "another assertion type", req: func(_ testing.TB, w *world) request {
				f := assertion(federated(w).token(impactSA))
				f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
				return request{form: f}
			},
			status: 400, code: CodeInvalidRequest, desc: "not supported", agent: "-",
		},
		{
			name: "an assertion type without assertion", req: func(_ testing.TB, w *world) request {
				return request{form: url.Values{"grant_type": {GrantClientCredentials}, "client_assertion_type": {AssertionJWTBearer}}}
			},
			status: 400, code: CodeInvalidRequest, desc: "without client_assertion", agent: "-",
		},
		{
			name: "a key of an agent with keys disabled",
			req: func(_ testing.TB, w *world) request {
				federated(w)
				return request{form: cc("impact", "corral_ak_impact-secret")}
			},
			status: 401, code: CodeInvalidClient, desc: "keys: disabled", agent: "impact", reason: "keys_disabled",
		},
		{
			name: "token exchange: the workload token as subject",
			req: func(_ testing.TB, w *world) request {
				wl := federated(w)
				return request{form: url.Values{"grant_type": {GrantTokenExchange}, "subject_token": {wl.token(impactSA)}, "subject_token_type": {TokenTypeJWT}}}
			},
			status: 200, agent: "impact", credential: "workload:k8s:" + impactSA,
			answer: &answer{IssuedTokenType: TokenTypeAccessToken, TokenType: "Bearer", ExpiresIn: 900, Scope: "tool:erp.*"},
			claims: impactClaims(""),
		},
		{
			name: "token exchange: the workload token as actor for a user",
			setup: func(w *world) {
				w.delegations.scopes["impact"] = []string{"tool:erp.get_order"}
			},
			req: func(_ testing.TB, w *world) request {
				wl := federated(w)
				return request{form: url.Values{
					"grant_type": {GrantTokenExchange}, "subject_token": {w.userToken("alice", time.Hour)}, "subject_token_type": {TokenTypeJWT},
					"actor_token": {wl.token(impactSA)}, "actor_token_type": {TokenTypeJWT},
				}}
			},
			status: 200, agent: "impact", principal: "alice", credential: "workload:k8s:" + impactSA,
			check: func(t *testing.T, w *world) {
				c := claimsOf(t, w.lastToken)
				if c.Subject != "alice" || c.Act == nil || c.Act.Subject != "impact" || c.Proof == nil || c.Proof.Subject != impactSA {
					t.Errorf("delegated claims = %+v, want sub alice, act impact, proof %s", c, impactSA)
				}
			},
		},
		{
			name: "token exchange: a key client with the workload token of another agent as actor",
			req: func(_ testing.TB, w *world) request {
				wl := federated(w)
				return request{form: exchangeForm("billing", keyBilling, w.userToken("alice", time.Hour),
					"actor_token", wl.token(impactSA), "actor_token_type", TokenTypeJWT)}
			},
			status: 401, code: CodeInvalidClient, desc: "another agent", reason: "agent_mismatch", principal: "",
		},
		{
			name: "token exchange: an unmapped workload as subject",
			req: func(_ testing.TB, w *world) request {
				wl := federated(w)
				return request{form: url.Values{"grant_type": {GrantTokenExchange}, "subject_token": {wl.token("system:serviceaccount:x:nobody")}, "subject_token_type": {TokenTypeJWT}}}
			},
			status: 401, code: CodeInvalidClient, desc: "(no_agent)", agent: "-", reason: "no_agent",
			credential: "workload:k8s:system:serviceaccount:x:nobody",
		},
	})
}

// tlsRequest is a token request over a TLS connection whose client
// presented cert; verified says whether the handshake verified it.
func tlsRequest(t *testing.T, form url.Values, cert *x509.Certificate, verified bool) *httptest.ResponseRecorder {
	t.Helper()
	w := newWorld(t)
	federated(w)
	req := httpRequest(t, form)
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
	if verified {
		req.TLS.VerifiedChains = [][]*x509.Certificate{{cert}}
	}
	rec := newRecorder()
	w.mux.ServeHTTP(rec, req)
	return rec
}

func TestClientCertificate(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://corp.test/ns/logistics/sa/impact")
	other, _ := url.Parse("spiffe://corp.test/ns/logistics/sa/other")
	cases := []struct {
		name     string
		cert     *x509.Certificate
		verified bool
		form     url.Values
		status   int
		want     string // agent, or error description
	}{
		{"a SPIFFE ID an Agent declares", &x509.Certificate{URIs: []*url.URL{spiffe}}, true, url.Values{"grant_type": {GrantClientCredentials}}, 200, "impact"},
		{"with its client_id", &x509.Certificate{URIs: []*url.URL{spiffe}}, true, url.Values{"grant_type": {GrantClientCredentials}, "client_id": {"impact"}}, 200, "impact"},
		{"a subject DN an Agent declares", &x509.Certificate{Subject: pkix.Name{CommonName: "elsewhere", Organization: []string{"Corp"}}}, true, url.Values{"grant_type": {GrantClientCredentials}}, 200, "elsewhere"},
		{"another agent's client_id", &x509.Certificate{URIs: []*url.URL{spiffe}}, true, url.Values{"grant_type": {GrantClientCredentials}, "client_id": {"billing"}}, 401, "another agent"},
		{"an undeclared SPIFFE ID", &x509.Certificate{URIs: []*url.URL{other}}, true, url.Values{"grant_type": {GrantClientCredentials}}, 401, "no_agent"},
		{"a certificate the handshake did not verify", &x509.Certificate{URIs: []*url.URL{spiffe}}, false, url.Values{"grant_type": {GrantClientCredentials}}, 401, "not authenticated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := tlsRequest(t, c.form, c.cert, c.verified)
			if rec.Code != c.status {
				t.Fatalf("status = %d, want %d: %s", rec.Code, c.status, rec.Body)
			}
			a := decodeAnswer(t, rec)
			if c.status == 200 {
				claims := claimsOf(t, a.AccessToken)
				if claims.Subject != c.want || claims.Proof == nil || claims.Proof.Method != identity.ProofCertificate {
					t.Errorf("claims = %+v, want sub %s with a certificate proof", claims, c.want)
				}
				return
			}
			if !strings.Contains(a.ErrorDescription, c.want) {
				t.Errorf("error_description = %q, want it to contain %q", a.ErrorDescription, c.want)
			}
		})
	}
}
