package certs_test

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/corral-dev/corral/internal/certs"
	"github.com/corral-dev/corral/internal/certs/certstest"
)

func TestReload(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, "test CA")
	first, second := ca.Server(t), ca.Server(t)
	certPath, keyPath := first.Write(t, dir, "server")
	pair, err := certs.Load(slog.New(slog.DiscardHandler), certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string { return pair.Current().Leaf.SerialNumber.String() }
	if got, want := serial(), first.Cert.SerialNumber.String(); got != want {
		t.Fatalf("serial = %s, want the first certificate's %s", got, want)
	}
	second.Write(t, dir, "server")
	if got, want := serial(), second.Cert.SerialNumber.String(); got != want {
		t.Errorf("after rotation serial = %s, want the second certificate's %s", got, want)
	}
	// A key that does not match its certificate (half a rotation) keeps
	// the previous pair in service.
	if err := os.WriteFile(keyPath, ca.Server(t).KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := serial(), second.Cert.SerialNumber.String(); got != want {
		t.Errorf("with a mismatched key serial = %s, want the previous %s", got, want)
	}
	// Files gone: the pair in memory goes on serving.
	os.Remove(certPath)
	if pair.Current() == nil {
		t.Error("Current() = nil with the files gone, want the last pair")
	}
}

func TestLoadRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, "test CA")
	a, b := ca.Server(t), ca.Server(t)
	certPath, _ := a.Write(t, dir, "a")
	_, otherKey := b.Write(t, dir, "b")
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("not PEM"), 0o600)
	for name, paths := range map[string][2]string{
		"missing":      {filepath.Join(dir, "nope.crt"), filepath.Join(dir, "nope.key")},
		"mismatched":   {certPath, otherKey},
		"not PEM":      {garbage, garbage},
		"key for cert": {otherKey, otherKey},
	} {
		if _, err := certs.Load(slog.New(slog.DiscardHandler), paths[0], paths[1]); err == nil {
			t.Errorf("Load(%s) = nil error, want one", name)
		}
	}
	if _, err := certs.Pool(garbage); err == nil {
		t.Error("Pool(not PEM) = nil error, want one")
	}
}

// TestMutualTLS: with client CAs, a client certificate they signed is
// verified, none at all is let through, and one from another CA fails the
// handshake.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA, otherCA := certstest.NewCA(t, "server CA"), certstest.NewCA(t, "client CA"), certstest.NewCA(t, "other CA")
	certPath, keyPath := serverCA.Server(t).Write(t, dir, "server")
	pair, err := certs.Load(slog.New(slog.DiscardHandler), certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.VerifiedChains) > 0 {
			io.WriteString(w, r.TLS.VerifiedChains[0][0].URIs[0].String())
			return
		}
		io.WriteString(w, "anonymous")
	}), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(tls.NewListener(l, certs.Server(pair, clientCA.Pool())))
	t.Cleanup(func() { srv.Close() })
	url := "https://" + l.Addr().String()
	get := func(cert *certstest.Leaf) (string, error) {
		cfg := &tls.Config{RootCAs: serverCA.Pool()}
		if cert != nil {
			// Sent whether or not the server names its issuer among the
			// CAs it accepts, as a hostile client would.
			c := cert.TLS(t)
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := c.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	const id = "spiffe://corp.test/ns/logistics/sa/impact"
	if got, err := get(clientCA.Client(t, pkix.Name{CommonName: "impact"}, id)); err != nil || got != id {
		t.Errorf("with a client certificate: %q, %v; want %s", got, err, id)
	}
	if got, err := get(nil); err != nil || got != "anonymous" {
		t.Errorf("without a client certificate: %q, %v; want anonymous", got, err)
	}
	if got, err := get(otherCA.Client(t, pkix.Name{CommonName: "impact"}, id)); err == nil {
		t.Errorf("with another CA's certificate: %q, want a failed handshake", got)
	} else if cve := (&tls.CertificateVerificationError{}); errors.As(err, &cve) {
		t.Errorf("the client refused the server, not the server the client: %v", err)
	}
}
