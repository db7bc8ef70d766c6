package pipeline

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/tools"
)

// TestUnauthenticatedFloodIsBounded sends 10,000 refusals in 10 s from one
// address with a 1 MiB Idempotency-Key each, as issue 12.1's attacker did:
// the audit takes at most the burst, the rate and one sampled record a
// second, and the sampled records account for every refusal. Another
// address and an authenticated agent are not held back by the flood.
// At d7dc022 every refusal was stored in full.
func TestUnauthenticatedFloodIsBounded(t *testing.T) {
	src := &fakeSource{res: &tools.Result{Structured: json.RawMessage(`{}`), Status: 200}}
	p, aud := newTestPipeline(t, src)
	clock := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	p.now = func() time.Time { return clock }
	key := string(make([]byte, 1<<20))
	const flood = 10000
	for i := range flood {
		clock = clock.Add(time.Millisecond)
		_, err := p.Invoke(t.Context(), Action{Credential: "corral_ak_nope", Kind: "tool", Target: "erp.get", IdempotencyKey: key, Edge: "rest", RemoteAddr: "192.0.2.7:40000"})
		if err == nil {
			t.Fatalf("refusal %d: Invoke succeeded", i)
		}
	}
	stored, counted := len(aud.records), 0
	for _, r := range aud.records {
		counted += max(r.Sampled, 1)
	}
	if limit := int(refusalBurst + 10*refusalRate + 10/sampleEvery.Seconds() + 1); stored > limit {
		t.Errorf("flood of %d refusals stored %d records, want at most %d", flood, stored, limit)
	}
	// The refusals still held back are stood for by the next record.
	clock = clock.Add(time.Minute)
	if _, err := p.Invoke(t.Context(), Action{Credential: "corral_ak_nope", Kind: "tool", Target: "erp.get", Edge: "rest", RemoteAddr: "192.0.2.7:40001"}); err == nil {
		t.Fatal("Invoke succeeded")
	}
	last := aud.records[len(aud.records)-1]
	if counted+last.Sampled != flood+1 {
		t.Errorf("records stand for %d refusals, want %d", counted+last.Sampled, flood+1)
	}
	for i, who := range []Action{
		{Credential: "corral_ak_nope", RemoteAddr: "198.51.100.1:1"},
		{Credential: "corral_ak_impact", RemoteAddr: "192.0.2.7:40000", Arguments: json.RawMessage(`{"id":1}`)},
	} {
		n := len(aud.records)
		who.Kind, who.Target, who.Edge = "tool", "erp.get", "rest"
		_, _ = p.Invoke(t.Context(), who)
		if len(aud.records) != n+1 {
			t.Errorf("call %d from %s left %d records, want 1", i, who.RemoteAddr, len(aud.records)-n)
		}
	}
}

func TestRefusalLimiterForgetsIdleAddresses(t *testing.T) {
	var l refusalLimiter
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for i := range maxRefusalAddrs + 100 {
		// Past the bound, new addresses share one bucket: its burst only.
		if store, _ := l.admit(fmt.Sprintf("10.%d.%d.1:80", i/256, i%256), now); !store && i < maxRefusalAddrs+refusalBurst {
			t.Fatalf("first refusal from address %d not stored", i)
		}
	}
	if len(l.addrs) > maxRefusalAddrs+1 {
		t.Errorf("tracking %d addresses, want at most %d", len(l.addrs), maxRefusalAddrs+1)
	}
	now = now.Add(time.Hour)
	l.admit("203.0.113.9:1", now)
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
