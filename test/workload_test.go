package test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/identity/oidctest"
)

// balanceUpstream answers every call with a balance.
func balanceUpstream(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"balance": 120}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestIdentityWorkloadFederation drives workload identity as a Kubernetes
// deployment uses it: a local OIDC provider plays the cluster's
// service-account issuer; the agent's projected token gets a corral token
// (RFC 7523 client assertion, and RFC 8693 exchange) that calls a tool;
// tokens for an unmapped subject, for the wrong audience, expired, or from an
// untrusted issuer are refused each with its reason; once the Agent says
// keys: disabled its old key works nowhere.
func TestIdentityWorkloadFederation(t *testing.T) {
	p := startCorral(t)
	cluster := oidctest.Start(t) // the cluster's service-account issuer
	stranger := oidctest.Start(t)
	dir := t.TempDir()
	spec := writeFile(t, dir, "banking.yaml", bankingSpec)
	if stdout, stderr, exit := runCLI(t, p.env(), "tools", "import", "openapi", spec, "--name", "banking", "--base-url", balanceUpstream(t), "--apply"); exit != 0 {
		t.Fatalf("tools import: exit %d\n%s%s", exit, stdout, stderr)
	}
	resources := func(keys string) string {
		return writeFile(t, dir, "resources.yaml", fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Issuer
metadata: {name: cluster}
spec: {issuer: %q, audience: corral, use: workloads}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec:
  tools: [banking.*]
  keys: %s
  workloads:
    - {issuer: cluster, subject: "system:serviceaccount:logistics:impact"}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: batch-a}
spec: {workloads: [{subject: "system:serviceaccount:batch:*"}]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: batch-b}
spec: {workloads: [{subject: "system:serviceaccount:batch:nightly"}]}
`, cluster.URL(), keys))
	}
	if stdout, stderr, exit := runCLI(t, p.env(), "apply", "-f", resources("enabled")); exit != 0 {
		t.Fatalf("apply: exit %d\n%s%s", exit, stdout, stderr)
	}
	oldKey := createKey(t, p, "impact")

	saToken := func(claims map[string]any) string {
		c := map[string]any{"sub": "system:serviceaccount:logistics:impact", "aud": "corral",
			"kubernetes.io": map[string]any{"namespace": "logistics", "serviceaccount": map[string]any{"name": "impact"}}}
		for k, v := range claims {
			c[k] = v
		}
		return cluster.Token(t, c)
	}
	assertion := func(token string) url.Values {
		return url.Values{"grant_type": {"client_credentials"},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {token}}
	}

	// The service account's token, as a client assertion, calls a tool.
	var status int
	var tok map[string]any
	if !waitFor(startTimeout, func() bool {
		status, tok = tokenRequest(t, p, assertion(saToken(nil)), "", "")
		return status == http.StatusOK
	}) {
		t.Fatalf("client assertion: HTTP %d %v", status, tok)
	}
	if tok["scope"] != "tool:banking.*" {
		t.Errorf("scope = %v, want tool:banking.*", tok["scope"])
	}
	access := tok["access_token"].(string)
	var r response
	if !waitFor(startTimeout, func() bool {
		r = invoke(t, p, access, "banking.get_balance", `{"id": "acc-1"}`)
		return r.status == http.StatusOK
	}) {
		t.Fatalf("invoke with the federated token: HTTP %d %s", r.status, r.body)
	}

	// The same token as an RFC 8693 subject token, without any client secret.
	status, tok = tokenRequest(t, p, url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {saToken(nil)},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
	}, "", "")
	if status != http.StatusOK || tok["issued_token_type"] != "urn:ietf:params:oauth:token-type:access_token" {
		t.Fatalf("token exchange of the workload token: HTTP %d %v", status, tok)
	}

	// Refusals, each with its reason.
	bad := []struct{ name, token, reason string }{
		{"unmapped subject", saToken(map[string]any{"sub": "system:serviceaccount:logistics:other"}), "no_agent"},
		{"two agents", saToken(map[string]any{"sub": "system:serviceaccount:batch:nightly"}), "ambiguous_agent"},
		{"wrong audience", saToken(map[string]any{"aud": "https://kubernetes.default.svc"}), "wrong_audience"},
		{"expired", saToken(map[string]any{"exp": time.Now().Add(-time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix()}), "expired"},
		{"untrusted issuer", stranger.Token(t, map[string]any{"sub": "system:serviceaccount:logistics:impact", "aud": "corral"}), "wrong_issuer"},
	}
	for _, b := range bad {
		status, tok := tokenRequest(t, p, assertion(b.token), "", "")
		desc, _ := tok["error_description"].(string)
		if status != http.StatusUnauthorized || tok["error"] != "invalid_client" || !strings.Contains(desc, "("+b.reason+")") {
			t.Errorf("%s: HTTP %d %v, want 401 invalid_client naming %s", b.name, status, tok, b.reason)
		}
	}

	// The old key works until the Agent disables keys, then nowhere.
	if status, tok := tokenRequest(t, p, url.Values{"grant_type": {"client_credentials"}}, "impact", oldKey); status != http.StatusOK {
		t.Fatalf("the key before keys: disabled: HTTP %d %v", status, tok)
	}
	if stdout, stderr, exit := runCLI(t, p.env(), "apply", "-f", resources("disabled")); exit != 0 {
		t.Fatalf("apply keys: disabled: exit %d\n%s%s", exit, stdout, stderr)
	}
	if !waitFor(startTimeout, func() bool {
		status, tok = tokenRequest(t, p, url.Values{"grant_type": {"client_credentials"}}, "impact", oldKey)
		return status == http.StatusUnauthorized
	}) {
		t.Fatalf("the key after keys: disabled: HTTP %d %v, want 401", status, tok)
	}
	if desc, _ := tok["error_description"].(string); !strings.Contains(desc, "keys_disabled") {
		t.Errorf("the key after keys: disabled: %v, want the reason keys_disabled", tok)
	}
	if r := invoke(t, p, oldKey, "banking.get_balance", `{"id": "acc-1"}`); r.status != http.StatusUnauthorized || !strings.Contains(string(r.body), "keys_disabled") {
		t.Errorf("a call with the key after keys: disabled: HTTP %d %s, want 401 keys_disabled", r.status, r.body)
	}
	if status, tok := tokenRequest(t, p, assertion(saToken(nil)), "", ""); status != http.StatusOK {
		t.Errorf("the workload identity after keys: disabled: HTTP %d %v", status, tok)
	}

	// The audit names how the agent proved itself.
	out, stderr, exit := runCLI(t, p.env(), "audit", "--limit", "1000", "-o", "json")
	if exit != 0 {
		t.Fatalf("audit: exit %d %s", exit, stderr)
	}
	if !strings.Contains(out, `"credential": "workload:cluster:system:serviceaccount:logistics:impact"`) &&
		!strings.Contains(out, `"credential":"workload:cluster:system:serviceaccount:logistics:impact"`) {
		t.Errorf("the audit names no workload credential:\n%.2000s", out)
	}
}
