package a2a

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
)

// fakeDNS answers from a table; anything else does not resolve.
type fakeDNS map[string][]string

func (f fakeDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range f[host] {
		out = append(out, netip.MustParseAddr(a))
	}
	if len(out) == 0 {
		return nil, errors.New("no such host")
	}
	return out, nil
}

var dns = fakeDNS{
	"hooks.example.com":        {"93.184.216.34"},
	"localhost":                {"127.0.0.1", "::1"},
	"metadata.google.internal": {"169.254.169.254"},
	"10.0.0.1.nip.io":          {"10.0.0.1"},
	"rebind.example.net":       {"93.184.216.34", "127.0.0.1"},
	"v6only.example.org":       {"::1"},
}

// TestCheckWebhookRefusesHostileTargets: loopback, private, link-local and
// metadata targets, however written (IPv6, mapped, decimal, octal, hex,
// names resolving to them), user info and other schemes are refused when
// a push config is made; a public host is accepted; the admin's setting
// lets private targets through.
func TestCheckWebhookRefusesHostileTargets(t *testing.T) {
	ctx := t.Context()
	hostile := []string{
		"http://127.0.0.1/hook", "http://127.0.0.1.:8080/hook", "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook",
		"http://[0:0:0:0:0:0:0:1]/", "http://0.0.0.0/", "http://[::]/", "http://2130706433/", "http://0x7f000001/",
		"http://0177.0.0.1/", "http://017700000001/", "http://127.1/", "http://localhost/hook", "http://localhost:9090/",
		"http://169.254.169.254/latest/meta-data/", "http://metadata.google.internal/computeMetadata/v1/",
		"http://[fd00:ec2::254]/", "http://[fe80::1%25eth0]/", "http://10.0.0.1.nip.io/", "http://192.168.0.10/",
		"http://172.31.255.255/", "http://100.64.1.1/", "http://rebind.example.net/", "http://v6only.example.org/",
		"http://user:pw@hooks.example.com/", "ftp://hooks.example.com/", "file:///etc/passwd", "gopher://hooks.example.com/",
		"hooks.example.com/hook", "", "http://", "http:///hook", "javascript:alert(1)", "http://" + strings.Repeat("a", 2100) + ".com/",
	}
	for _, u := range hostile {
		if err := checkWebhook(ctx, u, false, dns); err == nil {
			t.Errorf("checkWebhook(%q) accepted a hostile target", u)
		}
	}
	for _, u := range []string{"https://hooks.example.com/a2a?x=1", "http://93.184.216.34:8443/hook", "https://[2606:2800:220:1:248:1893:25c8:1946]/"} {
		if err := checkWebhook(ctx, u, false, dns); err != nil {
			t.Errorf("checkWebhook(%q) = %v, want accepted", u, err)
		}
	}
	if err := checkWebhook(ctx, "http://127.0.0.1:9000/hook", true, dns); err != nil {
		t.Errorf("with private targets allowed: %v", err)
	}
	if err := checkWebhook(ctx, "http://user:pw@127.0.0.1/", true, dns); err == nil {
		t.Error("user info accepted with private targets allowed")
	}
}

// TestPushClientChecksTheDialedAddress: whatever name a webhook was made
// with, the client refuses to connect to a loopback address (the check is
// on the address dialed, after DNS), and follows no redirect.
func TestPushClientChecksTheDialedAddress(t *testing.T) {
	var hits atomic.Int32
	inside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(inside.Close)
	port := inside.URL[strings.LastIndex(inside.URL, ":")+1:]
	guarded := pushClient(false)
	for _, u := range []string{inside.URL, "http://localhost:" + port, "http://[::ffff:127.0.0.1]:" + port} {
		resp, err := guarded.Post(u, "application/json", strings.NewReader("{}"))
		if err == nil {
			resp.Body.Close()
			t.Errorf("POST %s went through", u)
		} else if !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("POST %s: %v, want ErrForbiddenAddress", u, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback server got %d requests", n)
	}

	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inside.URL+"/internal", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	resp, err := pushClient(true).Post(redirector.URL, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || hits.Load() != 0 {
		t.Errorf("redirect: HTTP %d, %d requests reached its target; want the redirect unfollowed", resp.StatusCode, hits.Load())
	}
}
