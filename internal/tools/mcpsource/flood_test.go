package mcpsource

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/tools"
)

type floodStats struct {
	Lists   int  `json:"lists"`
	FloodMs int  `json:"flood_ms"`
	Done    bool `json:"done"`
}

// TestListChangedFlood: a server sending list_changed every 10 ms for 1.5 s
// gets one re-list per relistWindow, not one per notification.
func TestListChangedFlood(t *testing.T) {
	spec := &config.ToolSourceSpec{MCP: &config.MCPSource{
		Command: []string{testBinary(t, "rawserver")},
		Env:     map[string]string{"MCPSOURCE_RAW_MODE": "flood"},
	}}
	src := open(t, "t", spec, testEnv(t, nil))
	var st floodStats
	deadline := time.Now().Add(waitFor)
	for !st.Done {
		if time.Now().After(deadline) {
			t.Fatalf("the flood did not end within %v", waitFor)
		}
		res, err := src.Call(t.Context(), tools.Call{Tool: findTool(t, src, "t.stats"), Arguments: json.RawMessage(`{}`)})
		if err != nil {
			t.Fatalf("Call(t.stats) error: %v", err)
		}
		if err := json.Unmarshal(res.Structured, &st); err != nil {
			t.Fatalf("Call(t.stats) = %s: %v", res.Structured, err)
		}
	}
	// The list at connect, one at the first notification, then one per
	// window while the flood lasts, and one due at its end.
	limit := 3 + st.FloodMs/int(relistWindow.Milliseconds())
	t.Logf("150 list_changed over %d ms: %d tools/list", st.FloodMs, st.Lists)
	if st.Lists > limit {
		t.Errorf("150 list_changed over %d ms made %d tools/list, want at most %d (one per %v)", st.FloodMs, st.Lists, limit, relistWindow)
	}
}

// TestGarbageBacksOff: a stdio server that connects and then writes garbage
// is restarted with backoff: its short-lived sessions count as failures,
// not as fresh starts.
func TestGarbageBacksOff(t *testing.T) {
	starts := filepath.Join(t.TempDir(), "starts")
	spec := &config.ToolSourceSpec{MCP: &config.MCPSource{
		Command: []string{testBinary(t, "rawserver")},
		Env:     map[string]string{"MCPSOURCE_RAW_MODE": "garbage", "MCPSOURCE_RAW_STARTS": starts},
	}}
	src := open(t, "t", spec, testEnv(t, nil))
	deadline := time.Now().Add(waitFor)
	for n := 0; n < 4; n = countLines(starts) {
		if time.Now().After(deadline) {
			t.Fatalf("%d starts within %v, want 4", n, waitFor)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline: nothing to wait on from outside
	}
	src.mu.Lock()
	failures, wait := src.failures, time.Until(src.retryAt)
	src.mu.Unlock()
	if failures < 3 {
		t.Errorf("after 4 starts of a server that writes garbage, failures = %d, want at least 3 (backing off)", failures)
	}
	if wait > maxBackoff {
		t.Errorf("next restart in %v, want at most %v", wait, maxBackoff)
	}
}

func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}

func TestLostBackoff(t *testing.T) {
	s := &Source{stdio: true}
	now := time.Now()
	s.connected = now.Add(-time.Second)
	if wait := s.lostLocked(nil); wait != 0 || s.failures != 1 {
		t.Errorf("first short-lived session lost: wait %v, failures %d; want 0, 1", wait, s.failures)
	}
	var last time.Duration
	for i := 2; i <= 20; i++ {
		wait := s.lostLocked(nil)
		if wait < last/2 || wait > maxBackoff {
			t.Errorf("loss %d: wait %v after %v, want growing, at most %v", i, wait, last, maxBackoff)
		}
		last = wait
	}
	if last < maxBackoff/2 {
		t.Errorf("after 20 short-lived sessions the wait is %v, want near the cap %v", last, maxBackoff)
	}
	s.connected = now.Add(-healthyAfter)
	if wait := s.lostLocked(nil); wait != 0 || s.failures != 0 {
		t.Errorf("a session healthy for %v lost: wait %v, failures %d; want 0, 0", healthyAfter, wait, s.failures)
	}
}

func TestRelistGate(t *testing.T) {
	g := relistGate{window: time.Second}
	t0 := time.Unix(1000, 0)
	if _, later := g.ask(t0); later {
		t.Errorf("first ask: later = true, want a re-list at once")
	}
	g.ran(t0)
	if wait, later := g.ask(t0.Add(300 * time.Millisecond)); !later || wait != 700*time.Millisecond {
		t.Errorf("ask within the window = %v, %v; want 700ms, true", wait, later)
	}
	if _, later := g.ask(t0.Add(time.Second)); later {
		t.Errorf("ask at the window's end: later = true, want at once")
	}
}
