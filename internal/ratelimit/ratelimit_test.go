package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/config"
)

// fakeResources is a registry of RateLimits that tests edit.
type fakeResources struct {
	mu      sync.Mutex
	items   map[string]config.Resource
	changed chan struct{}
}

func newFakeResources() *fakeResources {
	return &fakeResources{items: map[string]config.Resource{}, changed: make(chan struct{})}
}

func (f *fakeResources) List(kind string) []config.Resource {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []config.Resource
	for _, r := range f.items {
		if r.Kind == kind {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeResources) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeResources) put(t testing.TB, name string, rev uint64, spec config.RateLimitSpec) {
	t.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.items[name] = config.Resource{Kind: "RateLimit", Metadata: config.Metadata{Name: name, Revision: rev}, Spec: raw}
	close(f.changed)
	f.changed = make(chan struct{})
}

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func ptr[T any](v T) *T { return &v }

// open returns Limits over b reading res, with the clock c (nil: real time).
func open(t testing.TB, b *bus.Bus, res *fakeResources, c *clock) *Limits {
	t.Helper()
	var now func() time.Time
	if c != nil {
		now = c.now
	}
	l, err := Open(t.Context(), slog.New(slog.DiscardHandler), b, res, now)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func tool(agent, name string) Subject {
	src, _, _ := cutDot(name)
	return Subject{Kind: KindTool, Agent: agent, Source: src, Tool: name}
}

func cutDot(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == '.' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func refusedReason(t testing.TB, err error) *Refused {
	t.Helper()
	var ref *Refused
	if !errors.As(err, &ref) {
		t.Fatalf("err = %v, want *Refused", err)
	}
	return ref
}

func TestRateBurstThenPace(t *testing.T) {
	b := bustest.Open(t)
	res := newFakeResources()
	res.put(t, "erp", 1, config.RateLimitSpec{Scope: config.RateLimitScope{ToolSource: "erp"}, Rate: &config.Rate{Requests: 5, Per: config.PerSecond}})
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	l := open(t, b, res, c)
	ctx := t.Context()
	for i := range 5 {
		if _, err := l.Admit(ctx, tool("a", "erp.write")); err != nil {
			t.Fatalf("call %d of the burst: %v", i+1, err)
		}
	}
	_, err := l.Admit(ctx, tool("a", "erp.write"))
	ref := refusedReason(t, err)
	if ref.Limit != "erp" || ref.Reason != ReasonRate || ref.RetryAfter != 200*time.Millisecond {
		t.Errorf("6th call refused with %+v, want erp, rate, 200ms", ref)
	}
	if got, want := ref.Error(), "rate limit erp: 5 calls per second reached; retry in 200ms"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	// Another tool source is not covered.
	if p, err := l.Admit(ctx, tool("a", "crm.read")); err != nil || p != nil {
		t.Errorf("Admit(crm.read) = %v, %v; want nil, nil (not covered)", p, err)
	}
	c.add(200 * time.Millisecond)
	if _, err := l.Admit(ctx, tool("a", "erp.write")); err != nil {
		t.Errorf("after 200ms: %v, want admitted", err)
	}
	if _, err := l.Admit(ctx, tool("a", "erp.write")); err == nil {
		t.Errorf("second call after 200ms admitted, want refused")
	}
	if got := l.statsOf("erp"); got.admitted.Load() != 6 || got.refused.Load() != 2 {
		t.Errorf("admitted, refused = %d, %d; want 6, 2", got.admitted.Load(), got.refused.Load())
	}
}

func TestInFlightCapAcrossReplicas(t *testing.T) {
	b := bustest.Open(t)
	res := newFakeResources()
	res.put(t, "two", 1, config.RateLimitSpec{InFlight: ptr[int64](2)})
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	l1, l2 := open(t, b, res, c), open(t, b, res, c)
	ctx := t.Context()

	var admitted atomic.Int64
	var permits sync.Map
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			l := l1
			if i%2 == 1 {
				l = l2
			}
			p, err := l.Admit(ctx, tool("a", "x.y"))
			if err == nil {
				admitted.Add(1)
				permits.Store(i, p)
				return
			}
			if ref := refusedReason(t, err); ref.Reason != ReasonInFlight {
				t.Errorf("refused for %q, want in_flight", ref.Reason)
			}
		})
	}
	wg.Wait()
	if got := admitted.Load(); got != 2 {
		t.Fatalf("admitted %d concurrent calls on two replicas, want exactly 2", got)
	}
	permits.Range(func(_, v any) bool {
		v.(*Permit).Release(ctx)
		v.(*Permit).Release(ctx) // a second Release is a no-op
		return true
	})
	for range 2 {
		if _, err := l2.Admit(ctx, tool("a", "x.y")); err != nil {
			t.Errorf("after release: %v, want admitted", err)
		}
	}
}

func TestSlotOfDeadReplicaFreedAfterLease(t *testing.T) {
	b := bustest.Open(t)
	res := newFakeResources()
	res.put(t, "one", 1, config.RateLimitSpec{InFlight: ptr[int64](1)})
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	dead, alive := open(t, b, res, c), open(t, b, res, c)
	ctx := t.Context()
	if _, err := dead.Admit(ctx, tool("a", "x.y")); err != nil {
		t.Fatal(err)
	}
	// The holder renews while it lives: past one lease, still held.
	c.add(SlotLease * 2 / 3)
	dead.renew(ctx)
	c.add(SlotLease * 2 / 3)
	if _, err := alive.Admit(ctx, tool("a", "x.y")); err == nil {
		t.Fatal("a renewed slot was taken over, want it still held")
	}
	// Then it dies (no more renewals): its slot is free once the lease ends.
	c.add(SlotLease/3 + time.Millisecond)
	if _, err := alive.Admit(ctx, tool("a", "x.y")); err != nil {
		t.Fatalf("after the dead replica's lease: %v, want admitted", err)
	}
}

func TestEachKeepsCountersApart(t *testing.T) {
	b := bustest.Open(t)
	res := newFakeResources()
	res.put(t, "per-agent", 1, config.RateLimitSpec{Each: config.EachAgent, Rate: &config.Rate{Requests: 1, Per: config.PerMinute}})
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	l := open(t, b, res, c)
	ctx := t.Context()
	for _, agent := range []string{"a", "b", "a/../b", ""} {
		if _, err := l.Admit(ctx, tool(agent, "x.y")); err != nil {
			t.Errorf("first call of agent %q: %v", agent, err)
		}
	}
	if _, err := l.Admit(ctx, tool("a", "x.y")); err == nil {
		t.Errorf("second call of agent a admitted, want refused")
	}
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].CounterCount != 4 {
		t.Fatalf("Status = %+v, want one limit with 4 counters", st)
	}
	values := map[string]bool{}
	for _, c := range st[0].Counters {
		values[c.Value] = true
		if c.Available == nil || *c.Available != 0 {
			t.Errorf("counter %q available = %v, want 0", c.Value, c.Available)
		}
	}
	if !values["a"] || !values["a/../b"] || !values[""] {
		t.Errorf("counter values = %v, want a, b, a/../b and the empty one", values)
	}
}

func TestRefusalGivesBackEarlierLimits(t *testing.T) {
	b := bustest.Open(t)
	res := newFakeResources()
	// "a-rate" is taken before "b-cap" refuses.
	res.put(t, "a-rate", 1, config.RateLimitSpec{Rate: &config.Rate{Requests: 1, Per: config.PerMinute, Burst: ptr[int64](2)}, InFlight: ptr[int64](5)})
	res.put(t, "b-cap", 1, config.RateLimitSpec{Scope: config.RateLimitScope{Tool: "x.write"}, InFlight: ptr[int64](1)})
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	l := open(t, b, res, c)
	ctx := t.Context()
	p, err := l.Admit(ctx, tool("a", "x.write"))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, err := l.Admit(ctx, tool("a", "x.write"))
		if ref := refusedReason(t, err); ref.Limit != "b-cap" {
			t.Fatalf("refused by %s, want b-cap", ref.Limit)
		}
	}
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st[0].Counters[0]; *got.Available != 1 || got.InFlight != 1 {
		t.Errorf("a-rate after refusals = available %d, in flight %d; want 1, 1 (the refused calls given back)", *got.Available, got.InFlight)
	}
	p.Release(ctx)
	if _, err := l.Admit(ctx, tool("a", "x.read")); err != nil {
		t.Errorf("a-rate's second place: %v, want admitted", err)
	}
}

func TestWaitTakesItsTurn(t *testing.T) {
	b := bustest.Open(t)
	res := newFakeResources()
	res.put(t, "fast", 1, config.RateLimitSpec{Rate: &config.Rate{Requests: 50, Per: config.PerSecond, Burst: ptr[int64](1)}, InFlight: ptr[int64](1)})
	l := open(t, b, res, nil)
	ctx := t.Context()
	first, err := l.Wait(ctx, tool("a", "x.y"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		p, err := l.Wait(ctx, tool("b", "x.y"))
		p.Release(ctx)
		done <- err
	}()
	first.Release(ctx)
	if err := <-done; err != nil {
		t.Fatalf("Wait = %v, want admitted once the first call ended", err)
	}
	if got := l.statsOf("fast").delayed.Load(); got > 1 {
		t.Errorf("delayed = %d, want at most 1 (one call waited)", got)
	}
	// A cancelled wait ends with the context's error.
	p, err := l.Admit(ctx, tool("a", "x.y"))
	if err != nil {
		time.Sleep(25 * time.Millisecond) // the rate's next place; not an assertion on time
		p, err = l.Wait(ctx, tool("a", "x.y"))
		if err != nil {
			t.Fatal(err)
		}
	}
	defer p.Release(ctx)
	refused := l.statsOf("fast").refused.Load()
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := l.Wait(cctx, tool("a", "x.y")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with the cap full until ctx ends = %v, want DeadlineExceeded", err)
	}
	if got := l.statsOf("fast").refused.Load(); got != refused {
		t.Errorf("refused = %d after a wait, want %d: waiting calls are delayed, not refused", got, refused)
	}
}

func TestThrottleSharedAndClamped(t *testing.T) {
	b := bustest.Open(t)
	res := newFakeResources()
	l1, l2 := open(t, b, res, nil), open(t, b, res, nil)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, l := range []*Limits{l1, l2} {
		wg.Go(func() { _ = l.Run(ctx) })
		if err := l.WaitLoaded(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := l2.Throttled(ThrottleModel, "gpt"); ok {
		t.Fatal("gpt throttled before anyone said so")
	}
	// Long enough to outlast the wait for the other replica on a loaded
	// machine: one that expired first would never be seen there.
	const throttle = 2 * time.Minute
	d, err := l1.Throttle(ctx, ThrottleModel, "gpt", throttle)
	if err != nil || d != throttle {
		t.Fatalf("Throttle = %v, %v; want %v", d, err, throttle)
	}
	if left, ok := l1.Throttled(ThrottleModel, "gpt"); !ok || left > throttle {
		t.Errorf("Throttled on the replica that saw the 429 = %v, %v; want at most %v", left, ok, throttle)
	}
	for deadline := time.Now().Add(time.Minute); ; {
		if _, ok := l2.Throttled(ThrottleModel, "gpt"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other replica never learned of the throttle")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := l2.Throttled(ThrottleSource, "gpt"); ok {
		t.Error("a model's throttle applies to a tool source of the same name")
	}
	if d, _ := l1.Throttle(ctx, ThrottleSource, "erp", 48*time.Hour); d != MaxThrottle {
		t.Errorf("Throttle(48h) = %v, want clamped to %v", d, MaxThrottle)
	}
	if d, _ := l1.Throttle(ctx, ThrottleSource, "crm", 0); d != DefaultThrottle {
		t.Errorf("Throttle(0) = %v, want %v", d, DefaultThrottle)
	}
	if got := l1.Throttles(); len(got) != 3 {
		t.Errorf("Throttles() = %v, want 3", got)
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		name  string
		scope config.RateLimitScope
		each  string
		s     Subject
		want  bool
	}{
		{"empty scope covers tools", config.RateLimitScope{}, "", tool("a", "erp.write"), true},
		{"empty scope covers models", config.RateLimitScope{}, "", Subject{Kind: KindModel, Models: []string{"gpt"}}, true},
		{"tool glob", config.RateLimitScope{Tool: "erp.create_*"}, "", tool("a", "erp.create_comment"), true},
		{"tool glob misses", config.RateLimitScope{Tool: "erp.create_*"}, "", tool("a", "erp.read"), false},
		{"source", config.RateLimitScope{ToolSource: "erp"}, "", tool("a", "erp.read"), true},
		{"source misses", config.RateLimitScope{ToolSource: "erp"}, "", tool("a", "crm.read"), false},
		{"source skips models", config.RateLimitScope{ToolSource: "erp"}, "", Subject{Kind: KindModel, Models: []string{"erp"}}, false},
		{"model covers a route's target", config.RateLimitScope{Model: "gpt-*"}, "", Subject{Kind: KindModel, Models: []string{"route", "gpt-eu"}}, true},
		{"model skips tools", config.RateLimitScope{Model: "*"}, "", tool("a", "x.y"), false},
		{"each tool skips models", config.RateLimitScope{}, config.EachTool, Subject{Kind: KindModel, Models: []string{"gpt"}}, false},
		{"agent glob", config.RateLimitScope{Agent: "support-*"}, "", tool("support-1", "x.y"), true},
		{"agent misses", config.RateLimitScope{Agent: "support-*"}, "", tool("sales", "x.y"), false},
		{"principal needs one", config.RateLimitScope{Principal: "*@example.com"}, "", tool("a", "x.y"), false},
		{"principal", config.RateLimitScope{Principal: "*@example.com"}, "", Subject{Kind: KindTool, Principal: "bob@example.com"}, true},
		{"any task", config.RateLimitScope{Task: "*"}, "", Subject{Kind: KindTool, Task: "t1"}, true},
		{"any task, none", config.RateLimitScope{Task: "*"}, "", Subject{Kind: KindTool}, false},
		{"one task", config.RateLimitScope{Task: "t1"}, "", Subject{Kind: KindTool, Task: "t2"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lm := &limit{name: "x", spec: config.RateLimitSpec{Scope: tt.scope, Each: tt.each}}
			if got := lm.covers(tt.s); got != tt.want {
				t.Errorf("covers(%+v) = %v, want %v", tt.s, got, tt.want)
			}
		})
	}
}

func TestUnreadableCounterRefuses(t *testing.T) {
	b := bustest.Open(t)
	res := newFakeResources()
	res.put(t, "one", 1, config.RateLimitSpec{InFlight: ptr[int64](1)})
	l := open(t, b, res, nil)
	if _, err := l.kv.Put(t.Context(), "one."+sharedToken, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	_, err := l.Admit(t.Context(), tool("a", "x.y"))
	var ref *Refused
	if err == nil || errors.As(err, &ref) {
		t.Fatalf("Admit over an unreadable counter = %v, want an error that is not a refusal", err)
	}
}

func TestKeyToken(t *testing.T) {
	long := string(make([]byte, 400))
	for _, v := range []string{"", "impact", "a.b*c>d", "ünï", long} {
		tok := keyToken(v)
		got, ok := tokenValue(tok)
		if !ok {
			t.Errorf("tokenValue(keyToken(%.20q)) not ok", v)
		}
		if v == long {
			if len(tok) != 33 || got[:7] != "sha256:" {
				t.Errorf("long value token %q -> %q, want a digest", tok, got)
			}
			continue
		}
		if got != v {
			t.Errorf("tokenValue(keyToken(%q)) = %q", v, got)
		}
	}
	for _, bad := range []string{"x", "v!!", "hzz", "h00"} {
		if _, ok := tokenValue(bad); ok {
			t.Errorf("tokenValue(%q) ok, want not", bad)
		}
	}
}

func FuzzTokenValue(f *testing.F) {
	for _, s := range []string{"_", "v", "vaW1wYWN0", "h0123456789abcdef0123456789abcdef", "x", "v=="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if v, ok := tokenValue(s); ok && s != sharedToken && s[0] == 'v' {
			if again := keyToken(v); len(v) <= maxValueToken && again != s {
				t.Fatalf("tokenValue(%q) = %q, whose token is %q", s, v, again)
			}
		}
		tok := keyToken(s)
		if v, ok := tokenValue(tok); !ok || (len(s) <= maxValueToken && v != s) {
			t.Fatalf("keyToken(%q) = %q does not read back: %q, %v", s, tok, v, ok)
		}
	})
}
