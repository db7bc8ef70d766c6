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
		// Past the bound, new addresses share one bucket. (Which are
		// stored is the global cap's: TestRefusalGlobalCap.)
		l.Admit(fmt.Sprintf("10.%d.%d.1:80", i/256, i%256), now)
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

// TestRefusalGlobalCap: refusals from many addresses, each well within its
// own rate, are stored no faster than the global rate (plus its burst and
// one sample a second); the rest are counted, and each address's next
// stored record stands for its own suppressed refusals. Before the global
// cap, 4,000 addresses stored 4,000 records in the first instant (finding
// 10: address rotation grew the audit linearly).
func TestRefusalGlobalCap(t *testing.T) {
	var l Refusals
	start := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	const addrs, seconds = 4000, 10
	stored, total := 0, 0
	for s := range seconds * 10 { // a tenth of a second a step
		now := start.Add(time.Duration(s) * 100 * time.Millisecond)
		for a := range addrs / (seconds * 10) * (s%2 + 1) {
			addr := fmt.Sprintf("10.%d.%d.1:80", (s*97+a)%addrs/256, (s*97+a)%addrs%256)
			total++
			if ok, _ := l.Admit(addr, now); ok {
				stored++
			}
		}
	}
	limit := int(RefusalGlobalBurst + seconds*RefusalGlobalRate + seconds/RefusalSample.Seconds() + 1)
	if stored > limit {
		t.Errorf("%d refusals from %d addresses stored %d records, want at most %d", total, addrs, stored, limit)
	}
	if got := l.Suppressed(); got != uint64(total-stored) {
		t.Errorf("Suppressed() = %d, want %d (every refusal not stored)", got, total-stored)
	}
	// An address whose refusals were suppressed by the global cap has them
	// counted in its next record, once the cap allows one.
	later := start.Add(time.Hour)
	l.Admit("192.0.2.1:1", start.Add(seconds*time.Second))
	if ok, _ := l.Admit("192.0.2.1:1", start.Add(seconds*time.Second)); ok {
		t.Fatal("a second refusal within the global sample interval was stored")
	}
	if ok, n := l.Admit("192.0.2.1:1", later); !ok || n != 2 {
		t.Errorf("an hour later: stored %v standing for %d, want stored standing for 2", ok, n)
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
		if got := Source(tt.in).String(); got != tt.want {
			t.Errorf("Source(%q) = %s, want %s", tt.in, got, tt.want)
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
		p := Source(addr)
		if ap, err := netip.ParseAddrPort(addr); err == nil && !p.Contains(ap.Addr().Unmap().WithZone("")) {
			t.Errorf("Source(%q) = %s, which does not hold %s", addr, p, ap.Addr())
		}
	})
}
