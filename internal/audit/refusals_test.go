package audit

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestRefusalLimiterForgetsIdleAddresses(t *testing.T) {
	var l Refusals
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for i := range maxRefusalAddrs + 100 {
		// Past the bound, new addresses share one bucket: its burst only.
		if store, _ := l.Admit(fmt.Sprintf("10.%d.%d.1:80", i/256, i%256), now); !store && i < maxRefusalAddrs+RefusalBurst {
			t.Fatalf("first refusal from address %d not stored", i)
		}
	}
	if len(l.addrs) > maxRefusalAddrs+1 {
		t.Errorf("tracking %d addresses, want at most %d", len(l.addrs), maxRefusalAddrs+1)
	}
	now = now.Add(time.Hour)
	l.Admit("203.0.113.9:1", now)
	if len(l.addrs) > 2 {
		t.Errorf("after an hour, tracking %d addresses, want the idle ones forgotten", len(l.addrs))
	}
}

func TestAddrKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.7:443", "192.0.2.7/32"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.7]:1", "192.0.2.7/32"},
		{"192.0.2.7", "192.0.2.7/32"},
		{"@", "invalid Prefix"},
		{"", "invalid Prefix"},
	}
	for _, tt := range tests {
		if got := addrKey(tt.in).String(); got != tt.want {
			t.Errorf("addrKey(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// FuzzAddrKey: any remote address maps to a prefix without panicking, and
// an address that parses maps to the prefix holding it.
func FuzzAddrKey(f *testing.F) {
	for _, s := range []string{"192.0.2.7:443", "[2001:db8::1]:80", "[::ffff:192.0.2.7]:1", "192.0.2.7", "@", "", "[fe80::1%eth0]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		p := addrKey(addr)
		if ap, err := netip.ParseAddrPort(addr); err == nil && !p.Contains(ap.Addr().Unmap().WithZone("")) {
			t.Errorf("addrKey(%q) = %s, which does not hold %s", addr, p, ap.Addr())
		}
	})
}
