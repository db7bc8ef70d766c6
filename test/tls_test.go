package test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/certs/certstest"
)

// tlsClient is an HTTPS client that trusts roots and presents cert, if
// any, whether or not the server names its issuer (as a hostile client
// would). Every request makes a new connection, so a rotated server
// certificate shows at once.
func tlsClient(roots *x509.CertPool, cert *certstest.Leaf, t *testing.T) *http.Client {
	cfg := &tls.Config{RootCAs: roots}
	if cert != nil {
		c := cert.TLS(t)
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}, Timeout: httpClient.Timeout}
}

// TestIdentityTLS serves HTTPS with a certificate rotated on disk mid-run,
// and mTLS: a client certificate carrying the SPIFFE ID an Agent declares
// gets a token and calls a tool, with no key or secret anywhere; one signed
// by another CA is refused at the handshake.
func TestIdentityTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA, agentsCA, otherCA := certstest.NewCA(t, "server CA"), certstest.NewCA(t, "agents CA"), certstest.NewCA(t, "other CA")
	serverCAFile := writeFile(t, dir, "server-ca.pem", string(serverCA.PEM))
	agentsCAFile := writeFile(t, dir, "agents-ca.pem", string(agentsCA.PEM))
	first := serverCA.Server(t)
	certPath, keyPath := first.Write(t, dir, "tls")

	p := startCorral(t, "--tls-cert", certPath, "--tls-key", keyPath, "--tls-client-ca", agentsCAFile)
	if !strings.HasPrefix(p.URL, "https://") {
		t.Fatalf("corral listens on %s, want https", p.URL)
	}
	// The CLI trusts the server's CA the way any Go program does.
	env := append(p.env(), "SSL_CERT_FILE="+serverCAFile)
	spec := writeFile(t, dir, "banking.yaml", bankingSpec)
	if stdout, stderr, exit := runCLI(t, env, "tools", "import", "openapi", spec, "--name", "banking", "--base-url", balanceUpstream(t), "--apply"); exit != 0 {
		t.Fatalf("tools import over HTTPS: exit %d\n%s%s", exit, stdout, stderr)
	}
	const spiffeID = "spiffe://corp.example/ns/logistics/sa/impact"
	resources := writeFile(t, dir, "agent.yaml", fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec:
  tools: [banking.*]
  keys: disabled
  certificates: [{uri: %q}]
`, spiffeID))
	if stdout, stderr, exit := runCLI(t, env, "apply", "-f", resources); exit != 0 {
		t.Fatalf("apply: exit %d\n%s%s", exit, stdout, stderr)
	}

	serial := func() string {
		t.Helper()
		resp, err := tlsClient(serverCA.Pool(), nil, t).Get(p.URL + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz over HTTPS: %v", err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].SerialNumber.String()
	}
	if got, want := serial(), first.Cert.SerialNumber.String(); got != want {
		t.Fatalf("served certificate serial %s, want %s", got, want)
	}

	// mTLS: the SVID gets a token, and the token calls a tool.
	svid := tlsClient(serverCA.Pool(), agentsCA.Client(t, pkix.Name{CommonName: "impact"}, spiffeID), t)
	form := url.Values{"grant_type": {"client_credentials"}}
	var tok map[string]any
	var status int
	if !waitFor(startTimeout, func() bool {
		resp, err := svid.Post(p.URL+"/oauth2/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatalf("token request with the SVID: %v", err)
		}
		defer resp.Body.Close()
		status, tok = resp.StatusCode, nil
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		return status == http.StatusOK
	}) {
		t.Fatalf("token request with the SVID: HTTP %d %v", status, tok)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", p.URL+"/v1/tools/banking.get_balance/invoke", strings.NewReader(`{"arguments": {"id": "acc-1"}}`))
	req.Header.Set("Authorization", "Bearer "+tok["access_token"].(string))
	req.Header.Set("Content-Type", "application/json")
	var body []byte
	if !waitFor(startTimeout, func() bool {
		r2 := req.Clone(t.Context())
		r2.Body = io.NopCloser(strings.NewReader(`{"arguments": {"id": "acc-1"}}`))
		resp, err := svid.Do(r2)
		if err != nil {
			t.Fatalf("invoke over mTLS: %v", err)
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		status = resp.StatusCode
		return status == http.StatusOK
	}) {
		t.Fatalf("invoke with the SVID's token: HTTP %d %s", status, body)
	}

	// A certificate with the same SPIFFE ID from another CA: no handshake.
	forged := tlsClient(serverCA.Pool(), otherCA.Client(t, pkix.Name{CommonName: "impact"}, spiffeID), t)
	if resp, err := forged.Post(p.URL+"/oauth2/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode())); err == nil {
		resp.Body.Close()
		t.Errorf("another CA's certificate: HTTP %d, want the handshake refused", resp.StatusCode)
	}
	// No certificate and no secret: refused as unauthenticated, not served.
	resp, err := tlsClient(serverCA.Pool(), nil, t).Post(p.URL+"/oauth2/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("token request without certificate or secret: HTTP %d, want 401", resp.StatusCode)
	}

	// Rotation: the next certificate is written over the files; new
	// connections get it without a restart.
	second := serverCA.Server(t)
	second.Write(t, dir, "tls")
	if got, want := serial(), second.Cert.SerialNumber.String(); got != want {
		t.Errorf("after rotation the served serial is %s, want the new %s", got, want)
	}
}

// TestIdentityNATSRequiringTLS runs corral against a nats-server that
// requires TLS and client certificates.
func TestIdentityNATSRequiringTLS(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, "nats CA")
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	serverCert, serverKey := ca.Server(t).Write(t, dir, "nats")
	clientCert, clientKey := ca.Client(t, pkix.Name{CommonName: "corral"}).Write(t, dir, "corral")
	natsURL := bustest.ExternalTLSServer(t, serverCert, serverKey, caFile)

	p := startCorral(t, "--nats", natsURL, "--nats-tls-ca", caFile, "--nats-tls-cert", clientCert, "--nats-tls-key", clientKey)
	if r := request(t, "GET", p.URL+"/readyz", "", ""); r.status != http.StatusOK {
		t.Errorf("/readyz over a TLS NATS: HTTP %d %s", r.status, r.body)
	}
	agent := writeFile(t, dir, "agent.yaml", "apiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: impact}\nspec: {tools: [x.*]}\n")
	if stdout, stderr, exit := runCLI(t, p.env(), "apply", "-f", agent); exit != 0 {
		t.Fatalf("apply over a TLS NATS: exit %d\n%s%s", exit, stdout, stderr)
	}

	// Without the client certificate corral does not start, and says why.
	bad := launch(t, nil, "up", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--nats", natsURL, "--nats-tls-ca", caFile)
	if code := bad.wait(t); code == 0 {
		t.Errorf("corral without a client certificate exited 0 against a NATS that requires one")
	}
}
