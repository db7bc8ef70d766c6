package bus_test

import (
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/certs/certstest"
)

// tlsFiles writes a CA, a server certificate for loopback and a client
// certificate to dir.
func tlsFiles(t *testing.T) (ca, serverCert, serverKey, clientCert, clientKey string) {
	t.Helper()
	dir := t.TempDir()
	authority := certstest.NewCA(t, "nats CA")
	ca = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, authority.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	serverCert, serverKey = authority.Server(t).Write(t, dir, "server")
	clientCert, clientKey = authority.Client(t, pkix.Name{CommonName: "corral"}).Write(t, dir, "client")
	return ca, serverCert, serverKey, clientCert, clientKey
}

// TestExternalServerRequiringTLS runs a real nats-server that requires TLS
// and client certificates: corral connects with --nats-tls-*, and without
// them it is refused.
func TestExternalServerRequiringTLS(t *testing.T) {
	ca, serverCert, serverKey, clientCert, clientKey := tlsFiles(t)
	url := bustest.ExternalTLSServer(t, serverCert, serverKey, ca)
	b := bustest.OpenWith(t, bus.Options{URL: url, TLS: bus.TLS{CA: ca, Cert: clientCert, Key: clientKey}})
	if _, err := b.KeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "t"}); err != nil {
		t.Fatalf("KeyValue over TLS: %v", err)
	}
	other := filepath.Join(t.TempDir(), "other.pem")
	if err := os.WriteFile(other, certstest.NewCA(t, "other CA").PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tlsOpts := range map[string]bus.TLS{
		"no TLS":                {},
		"no client certificate": {CA: ca},
		"another CA":            {CA: other, Cert: clientCert, Key: clientKey},
	} {
		if b, err := bus.Open(t.Context(), discard(), bus.Options{URL: url, TLS: tlsOpts}); err == nil {
			b.Close()
			t.Errorf("Open(%s) succeeded against a server that requires TLS and client certificates", name)
		}
	}
	if _, err := bus.Open(t.Context(), discard(), bus.Options{URL: url, TLS: bus.TLS{CA: ca, Cert: clientCert}}); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Errorf("Open(cert without key) err = %v, want one saying they go together", err)
	}
}

// TestEmbeddedListenTLS: --nats-listen with a certificate speaks TLS only,
// and with a CA demands client certificates, on top of the password.
func TestEmbeddedListenTLS(t *testing.T) {
	ca, serverCert, serverKey, clientCert, clientKey := tlsFiles(t)
	a := bustest.OpenWith(t, bus.Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0", TLS: bus.TLS{CA: ca, Cert: serverCert, Key: serverKey}})
	url := a.ClientURL()
	if !strings.HasPrefix(url, "tls://") {
		t.Fatalf("ClientURL() = %q, want a tls:// URL", url)
	}
	b := bustest.OpenWith(t, bus.Options{URL: url, TLS: bus.TLS{CA: ca, Cert: clientCert, Key: clientKey}})
	if err := b.Ping(t.Context()); err != nil {
		t.Errorf("Ping over TLS: %v", err)
	}
	plain := strings.Replace(url, "tls://", "nats://", 1)
	for name, opts := range map[string]bus.Options{
		"plain":                 {URL: plain},
		"no client certificate": {URL: url, TLS: bus.TLS{CA: ca}},
	} {
		if b, err := bus.Open(t.Context(), discard(), opts); err == nil {
			b.Close()
			t.Errorf("Open(%s) succeeded against a listener that requires TLS and client certificates", name)
		}
	}
	if _, err := bus.Open(t.Context(), discard(), bus.Options{DataDir: t.TempDir(), TLS: bus.TLS{CA: ca}}); err == nil {
		t.Error("Open(embedded without --nats-listen, with TLS) succeeded; want an error saying TLS has nothing to secure")
	}
}
