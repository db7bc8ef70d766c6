package bustest

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// TestStartFreshStartsAgainOnATakenPort takes the port the first plan
// chooses before the server can bind it, as an outgoing connection or
// another test binary might: the server exits, and startFresh starts it
// again on the next plan's port instead of failing the test.
func TestStartFreshStartsAgainOnATakenPort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server processes; -short skips it")
	}
	plans := 0
	servers := startFresh(t, func() []*pending {
		plans++
		port := FreePort(t)
		if plans == 1 {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() })
		}
		return []*pending{{args: []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port)}}}
	})
	if plans != 2 || servers[0].proc == nil {
		t.Fatalf("plans = %d, server started = %v; want the second plan's server", plans, servers[0].proc != nil)
	}
}

// TestStartServerSaysWhyItExited gives nats-server an argument it refuses:
// the error carries its own words, not a bare time-out.
func TestStartServerSaysWhyItExited(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a nats-server process; -short skips it")
	}
	_, err := startServer(t, []string{"--no-such-flag"})
	if err == nil || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("err = %v; want nats-server's own complaint about the flag", err)
	}
}

// TestFreePortIsBelowTheEphemeralRange: the ports FreePort gives cannot be
// the local port of an outgoing connection, and it never gives one twice.
func TestFreePortIsBelowTheEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	if low <= minPort+1000 {
		t.Skipf("the ephemeral range starts at %d, too low to choose below it", low)
	}
	seen := map[int]bool{}
	for range 200 {
		p := FreePort(t)
		if p < minPort || p >= low || seen[p] {
			t.Fatalf("FreePort = %d (given before: %v); want a new port in [%d, %d)", p, seen[p], minPort, low)
		}
		seen[p] = true
	}
}
