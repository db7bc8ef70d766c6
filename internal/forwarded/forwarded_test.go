package forwarded

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func proxies(t testing.TB, list ...string) *Proxies {
	t.Helper()
	var prefixes []netip.Prefix
	for _, s := range list {
		p, err := ParsePrefix(s)
		if err != nil {
			t.Fatalf("ParsePrefix(%q) = %v", s, err)
		}
		prefixes = append(prefixes, p)
	}
	return New(prefixes)
}

// clientCases are the resolver's table, and the fuzz test's seeds. The
// trusted proxies are 10.0.0.0/8, 192.0.2.1 and fd00::/8.
var clientCases = []struct {
	name string
	peer string
	xff  []string
	want string
}{
	{"no header", "10.0.0.1:5000", nil, "10.0.0.1:5000"},
	{"one client", "10.0.0.1:5000", []string{"203.0.113.7"}, "203.0.113.7:0"},
	{"spoofed from an untrusted peer", "198.51.100.9:5000", []string{"203.0.113.7"}, "198.51.100.9:5000"},
	{"spoofed trusted address from an untrusted peer", "198.51.100.9:5000", []string{"10.0.0.2"}, "198.51.100.9:5000"},
	{"client prepends a lie", "10.0.0.1:5000", []string{"1.1.1.1, 203.0.113.7"}, "203.0.113.7:0"},
	{"chain of trusted proxies", "10.0.0.1:5000", []string{"1.1.1.1, 203.0.113.7, 10.0.0.3, 192.0.2.1"}, "203.0.113.7:0"},
	{"all trusted: the leftmost", "10.0.0.1:5000", []string{"10.0.0.9, 10.0.0.3"}, "10.0.0.9:0"},
	{"multiple headers in order", "10.0.0.1:5000", []string{"1.1.1.1", "203.0.113.7, 10.0.0.3", "10.0.0.4"}, "203.0.113.7:0"},
	{"multiple headers, last untrusted", "10.0.0.1:5000", []string{"203.0.113.7", "198.51.100.1"}, "198.51.100.1:0"},
	{"empty elements ignored", "10.0.0.1:5000", []string{" , 203.0.113.7 ,, ", ""}, "203.0.113.7:0"},
	{"only empty", "10.0.0.1:5000", []string{" , ,"}, "10.0.0.1:5000"},
	{"tabs", "10.0.0.1:5000", []string{"\t203.0.113.7\t"}, "203.0.113.7:0"},
	{"entry with a port", "10.0.0.1:5000", []string{"203.0.113.7:4444"}, "203.0.113.7:0"},
	{"IPv6 client", "10.0.0.1:5000", []string{"2001:db8::1"}, "[2001:db8::1]:0"},
	{"IPv6 bracketed", "10.0.0.1:5000", []string{"[2001:db8::1]"}, "[2001:db8::1]:0"},
	{"IPv6 bracketed with port", "10.0.0.1:5000", []string{"[2001:db8::1]:443"}, "[2001:db8::1]:0"},
	{"IPv6 zone dropped", "10.0.0.1:5000", []string{"fe80::1%eth0"}, "[fe80::1]:0"},
	{"IPv6 zone bracketed with port", "10.0.0.1:5000", []string{"[fe80::1%eth0]:80"}, "[fe80::1]:0"},
	{"IPv6 trusted peer", "[fd00::5]:5000", []string{"203.0.113.7"}, "203.0.113.7:0"},
	{"IPv6 trusted peer with a zone", "[fd00::5%eth0]:5000", []string{"203.0.113.7"}, "203.0.113.7:0"},
	{"IPv4-mapped peer", "[::ffff:10.0.0.1]:5000", []string{"203.0.113.7"}, "203.0.113.7:0"},
	{"IPv4-mapped entry is trusted", "10.0.0.1:5000", []string{"203.0.113.7, ::ffff:10.0.0.2"}, "203.0.113.7:0"},
	{"IPv4-mapped client unmapped", "10.0.0.1:5000", []string{"::ffff:203.0.113.7"}, "203.0.113.7:0"},
	{"bracketed IPv4 is garbage", "10.0.0.1:5000", []string{"[203.0.113.7]"}, "10.0.0.1:5000"},
	{"garbage", "10.0.0.1:5000", []string{"not-an-ip"}, "10.0.0.1:5000"},
	{"unknown", "10.0.0.1:5000", []string{"unknown"}, "10.0.0.1:5000"},
	{"obfuscated identifier", "10.0.0.1:5000", []string{"_hidden"}, "10.0.0.1:5000"},
	{"garbage after a client is never reached", "10.0.0.1:5000", []string{"garbage, 203.0.113.7"}, "203.0.113.7:0"},
	{"garbage stops the walk", "10.0.0.1:5000", []string{"203.0.113.7, garbage, 10.0.0.3"}, "10.0.0.1:5000"},
	{"garbage in the nearest header", "10.0.0.1:5000", []string{"203.0.113.7", "1.2.3.4.5"}, "10.0.0.1:5000"},
	{"injected newline", "10.0.0.1:5000", []string{"203.0.113.7\r\nX-Evil: 1"}, "10.0.0.1:5000"},
	{"hostname", "10.0.0.1:5000", []string{"client.example.com"}, "10.0.0.1:5000"},
	{"CIDR is not an address", "10.0.0.1:5000", []string{"203.0.113.0/24"}, "10.0.0.1:5000"},
	{"port out of range", "10.0.0.1:5000", []string{"203.0.113.7:99999"}, "10.0.0.1:5000"},
	{"unparseable peer", "@", []string{"203.0.113.7"}, "@"},
	{"peer without port", "10.0.0.1", []string{"203.0.113.7"}, "10.0.0.1"},
	{"very long chain of trusted", "10.0.0.1:5000", []string{strings.Repeat("10.0.0.7, ", 20000) + "10.0.0.8"}, "10.0.0.7:0"},
	{"very long lie before the client", "10.0.0.1:5000", []string{strings.Repeat("1.1.1.1,", 20000) + "203.0.113.7"}, "203.0.113.7:0"},
	{"very long garbage", "10.0.0.1:5000", []string{strings.Repeat("x", 1<<20)}, "10.0.0.1:5000"},
}

func TestClient(t *testing.T) {
	p := proxies(t, "10.0.0.0/8", "192.0.2.1", "fd00::/8")
	for _, tc := range clientCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Client(tc.peer, tc.xff); got != tc.want {
				t.Errorf("Client(%q, %.80q) = %q, want %q", tc.peer, tc.xff, got, tc.want)
			}
		})
	}
}

// TestClientTrustsNobody: without trusted proxies the header never counts,
// whatever the peer.
func TestClientTrustsNobody(t *testing.T) {
	var p Proxies
	for _, tc := range clientCases {
		if got := p.Client(tc.peer, tc.xff); got != tc.peer {
			t.Errorf("%s: Client(%q, %.80q) with no trusted proxies = %q, want the peer", tc.name, tc.peer, tc.xff, got)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" is an error
	}{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{" 10.1.2.3/8 ", "10.0.0.0/8"},
		{"192.0.2.1", "192.0.2.1/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"fd00::/8", "fd00::/8"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"::ffff:10.0.0.1", "10.0.0.1/32"},
		{"::ffff:0.0.0.0/95", ""},
		{"10.0.0.0/33", ""},
		{"fe80::1%eth0", ""},
		{"fe80::1%eth0/64", ""},
		{"proxy.internal", ""},
		{"", ""},
		{"10.0.0.0/", ""},
	} {
		got, err := ParsePrefix(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParsePrefix(%q) = %v, want an error", tc.in, got)
		case tc.want != "" && (err != nil || got.String() != tc.want):
			t.Errorf("ParsePrefix(%q) = %v, %v, want %s", tc.in, got, err, tc.want)
		}
	}
}

// TestHandler: the handler rewrites RemoteAddr for a trusted peer only, and
// with no trusted proxies is the next handler itself.
func TestHandler(t *testing.T) {
	var seen string
	next := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { seen = r.RemoteAddr })
	h := proxies(t, "10.0.0.0/8").Handler(next)
	for _, tc := range []struct{ peer, want string }{
		{"10.0.0.1:5000", "203.0.113.7:0"},
		{"198.51.100.9:5000", "198.51.100.9:5000"},
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = tc.peer
		req.Header.Add(Header, "1.1.1.1")
		req.Header.Add(Header, "203.0.113.7")
		h.ServeHTTP(httptest.NewRecorder(), req)
		if seen != tc.want {
			t.Errorf("from %s, the handler saw RemoteAddr %q, want %q", tc.peer, seen, tc.want)
		}
		if req.RemoteAddr != tc.peer {
			t.Errorf("the caller's request changed: RemoteAddr %q, want %q", req.RemoteAddr, tc.peer)
		}
	}
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "10.0.0.1:5000"
	req.Header.Set(Header, "203.0.113.7")
	New(nil).Handler(next).ServeHTTP(httptest.NewRecorder(), req)
	if seen != "10.0.0.1:5000" {
		t.Errorf("with no trusted proxies the handler saw %q, want the peer", seen)
	}
}

// FuzzClient: whatever the header holds, the client is the peer or an
// address in canonical host:port form that is not a trusted proxy, unless
// every entry was one; and from an untrusted peer, always the peer.
func FuzzClient(f *testing.F) {
	for _, tc := range clientCases {
		if len(tc.xff) > 0 && len(tc.xff[0]) < 1000 {
			f.Add(tc.peer, tc.xff[0], strings.Join(tc.xff[1:], "\x00"))
		}
	}
	p := proxies(f, "10.0.0.0/8", "192.0.2.1", "fd00::/8")
	f.Fuzz(func(t *testing.T, peer, first, more string) {
		xff := append([]string{first}, strings.Split(more, "\x00")...)
		got := p.Client(peer, xff)
		ap, err := netip.ParseAddrPort(peer)
		if err != nil || !p.Trusts(ap.Addr()) {
			if got != peer {
				t.Fatalf("Client(%q, %q) = %q from an untrusted peer, want the peer", peer, xff, got)
			}
			return
		}
		if got == peer {
			return
		}
		g, err := netip.ParseAddrPort(got)
		if err != nil || g.Port() != 0 || g.String() != got || g.Addr().Zone() != "" || g.Addr().Is4In6() {
			t.Fatalf("Client(%q, %q) = %q, want a canonical ip:0", peer, xff, got)
		}
		found := false
		for _, v := range xff {
			for e := range strings.SplitSeq(v, ",") {
				if ip, ok := ParseEntry(strings.Trim(e, " \t")); ok && ip == g.Addr() {
					found = true
				}
			}
		}
		if !found {
			t.Fatalf("Client(%q, %q) = %q, not an entry of the header", peer, xff, got)
		}
	})
}

// FuzzParseEntry: an entry that parses is an address with no zone and
// not IPv4-mapped, and parsing is stable on its own output.
func FuzzParseEntry(f *testing.F) {
	for _, tc := range clientCases {
		for _, v := range tc.xff {
			for e := range strings.SplitSeq(v, ",") {
				if len(e) < 1000 {
					f.Add(strings.TrimSpace(e))
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		ip, ok := ParseEntry(s)
		if !ok {
			return
		}
		if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() {
			t.Fatalf("ParseEntry(%q) = %v, want a valid address without zone or mapping", s, ip)
		}
		if again, ok := ParseEntry(ip.String()); !ok || again != ip {
			t.Fatalf("ParseEntry(%q) = %v, %v, want %v", ip.String(), again, ok, ip)
		}
	})
}
