package budget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/config"
)

// fakeResources is a registry of Budgets that tests edit.
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

// put stores a Budget written as YAML-ish JSON; a nil spec deletes it.
func (f *fakeResources) put(t testing.TB, name string, rev uint64, spec *config.BudgetSpec) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if spec == nil {
		delete(f.items, name)
	} else {
		raw, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		f.items[name] = config.Resource{Kind: "Budget", Metadata: config.Metadata{Name: name, Revision: rev}, Spec: raw}
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// countingBus hands out buckets that count their reads and writes, to show
// which paths touch the substrate.
type countingBus struct {
	substrate
	ops atomic.Int64
}

func (c *countingBus) KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := c.substrate.KeyValue(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &countingKV{KeyValue: kv, ops: &c.ops}, nil
}

type countingKV struct {
	jetstream.KeyValue
	ops *atomic.Int64
}

func (k *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	k.ops.Add(1)
	return k.KeyValue.Get(ctx, key)
}

func (k *countingKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	k.ops.Add(1)
	return k.KeyValue.Create(ctx, key, value, opts...)
}

func (k *countingKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	k.ops.Add(1)
	return k.KeyValue.Update(ctx, key, value, rev)
}

// open opens budgets over s and runs them until the test ends.
func open(t testing.TB, s substrate, res Resources, now func() time.Time) *Budgets {
	t.Helper()
	b, err := Open(t.Context(), slog.New(slog.DiscardHandler), s, res, now)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return b
}

func ptr[T any](v T) *T { return &v }

// eventually polls cond until it holds or a minute has passed: generous,
// so that a loaded CI machine does not fail a correctness test.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// counter reads a counter straight from the bucket.
func counter(t *testing.T, b *Budgets, key string) Usage {
	t.Helper()
	u, err := b.read(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var (
	day       = time.Date(2026, 11, 21, 14, 30, 0, 0, time.UTC)
	modelCall = Subject{Kind: KindModel, Agent: "impact", Principal: "alice", Models: []string{"gpt-eu"}}
	toolCall  = Subject{Kind: KindTool, Agent: "impact", Principal: "alice"}
)

// race makes n calls of s at once, spread over the instances, and returns
// how many were let through and how many refused as exceeded.
func race(t *testing.T, instances []*Budgets, n int, s Subject) (passed, refused int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := instances[i%len(instances)].Reserve(t.Context(), s, Usage{Tokens: 10})
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		var ex *Exceeded
		switch {
		case err == nil:
			passed++
		case errors.As(err, &ex) && ex.Limit == LimitCalls:
			refused++
		default:
			t.Errorf("Reserve = %v, want nil or a calls limit", err)
		}
	}
	return passed, refused
}

func TestConcurrentCallsAreCappedExactly(t *testing.T) {
	res := newFakeResources()
	res.put(t, "five", 1, &config.BudgetSpec{Window: config.WindowDay, Limit: config.BudgetLimit{Calls: ptr[int64](5)}})
	b := open(t, bustest.Open(t), res, newClock(day).now)

	passed, refused := race(t, []*Budgets{b}, 20, modelCall)
	if passed != 5 || refused != 15 {
		t.Errorf("20 concurrent calls against calls: 5: %d passed, %d refused; want 5 and 15", passed, refused)
	}
	if got := counter(t, b, "five.2026-11-21"); got.Calls != 5 || got.Tokens != 50 {
		t.Errorf("counter after the race = %+v, want 5 calls and their 50 tokens", got)
	}
}

// TestConcurrentCallsAcrossReplicas runs the same race through two replicas:
// two Budgets on two NATS connections to one server.
func TestConcurrentCallsAcrossReplicas(t *testing.T) {
	first := bustest.OpenWith(t, bus.Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	second := bustest.OpenWith(t, bus.Options{URL: first.ClientURL()})
	res := newFakeResources()
	res.put(t, "five", 1, &config.BudgetSpec{Scope: config.BudgetScope{Agent: "impact"}, Window: config.WindowTotal, Limit: config.BudgetLimit{Calls: ptr[int64](5)}})
	clk := newClock(day)
	one, two := open(t, first, res, clk.now), open(t, second, res, clk.now)

	passed, refused := race(t, []*Budgets{one, two}, 20, modelCall)
	if passed != 5 || refused != 15 {
		t.Errorf("20 concurrent calls on two replicas against calls: 5: %d passed, %d refused; want 5 and 15", passed, refused)
	}
	if got := counter(t, two, "five.total"); got.Calls != 5 {
		t.Errorf("counter seen by the second replica = %+v, want 5 calls", got)
	}
}

func TestSettleAndRelease(t *testing.T) {
	res := newFakeResources()
	res.put(t, "daily", 1, &config.BudgetSpec{Window: config.WindowDay, Limit: config.BudgetLimit{Tokens: ptr[int64](10000)}})
	b := open(t, bustest.Open(t), res, newClock(day).now)
	ctx := t.Context()
	const key = "daily.2026-11-21"
	want := func(step string, u Usage) {
		t.Helper()
		got := counter(t, b, key)
		got.Cost = float64(int64(got.Cost*1e9+0.5)) / 1e9 // compare money to the nano
		if got != u {
			t.Errorf("%s: counter = %+v, want %+v", step, got, u)
		}
	}

	r, err := b.Reserve(ctx, modelCall, Usage{Tokens: 1000, Cost: 0.5, Calls: 7})
	if err != nil || r == nil {
		t.Fatalf("Reserve = %v, %v; want a reservation", r, err)
	}
	want("reserved: the worst case, and one call whatever worst.Calls says", Usage{Tokens: 1000, Cost: 0.5, Calls: 1})
	if err := r.Settle(ctx, Usage{Tokens: 300, Cost: 0.1}); err != nil {
		t.Fatal(err)
	}
	want("settled: the actual usage", Usage{Tokens: 300, Cost: 0.1, Calls: 1})
	if err := r.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Settle(ctx, Usage{Tokens: 5}); err != nil {
		t.Fatal(err)
	}
	want("release and settle after a settle do nothing", Usage{Tokens: 300, Cost: 0.1, Calls: 1})

	r, err = b.Reserve(ctx, modelCall, Usage{Tokens: 2000, Cost: 1})
	if err != nil {
		t.Fatal(err)
	}
	want("second reservation", Usage{Tokens: 2300, Cost: 1.1, Calls: 2})
	if err := r.Release(ctx); err != nil {
		t.Fatal(err)
	}
	want("released: as if the call never was", Usage{Tokens: 300, Cost: 0.1, Calls: 1})

	r, err = b.Reserve(ctx, modelCall, Usage{Tokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Settle(ctx, Usage{Tokens: 250, Cost: 0.2}); err != nil {
		t.Fatal(err)
	}
	want("settled above the worst case (a provider overran max_tokens)", Usage{Tokens: 550, Cost: 0.3, Calls: 2})

	// A cancelled request still settles: the usage is real.
	r, err = b.Reserve(ctx, modelCall, Usage{Tokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := r.Settle(cancelled, Usage{Tokens: 50}); err != nil {
		t.Errorf("Settle with a cancelled context = %v, want it done all the same", err)
	}
	want("settled under a cancelled context", Usage{Tokens: 600, Cost: 0.3, Calls: 3})

	var none *Reservation
	if err := none.Settle(ctx, Usage{Tokens: 1}); err != nil {
		t.Errorf("nil Reservation.Settle = %v", err)
	}
	if err := none.Release(ctx); err != nil {
		t.Errorf("nil Reservation.Release = %v", err)
	}
}

func TestOvershootIsAtMostOneReservation(t *testing.T) {
	res := newFakeResources()
	res.put(t, "small", 1, &config.BudgetSpec{Window: config.WindowDay, Limit: config.BudgetLimit{Tokens: ptr[int64](100), Cost: ptr(1.0)}})
	b := open(t, bustest.Open(t), res, newClock(day).now)
	ctx := t.Context()

	for i, worst := range []int64{60, 60} {
		if _, err := b.Reserve(ctx, modelCall, Usage{Tokens: worst}); err != nil {
			t.Fatalf("Reserve #%d with %d used before = %v, want it let through", i+1, 60*i, err)
		}
	}
	_, err := b.Reserve(ctx, modelCall, Usage{Tokens: 1})
	want := &Exceeded{Budget: "small", Window: "day", Limit: LimitTokens, Used: 120, Max: 100, ResetAt: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)}
	var got *Exceeded
	if !errors.As(err, &got) {
		t.Fatalf("Reserve past the limit = %v, want *Exceeded", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Reserve past the limit (-want +got):\n%s", diff)
	}
	if msg := err.Error(); msg != "budget small: tokens limit 100 reached; resets at 2026-11-22T00:00:00Z" {
		t.Errorf("Exceeded.Error() = %q", msg)
	}
	if u := counter(t, b, "small.2026-11-21"); u.Tokens != 120 || u.Calls != 2 {
		t.Errorf("counter = %+v, want the two admitted calls only", u)
	}
}

func TestExceededError(t *testing.T) {
	tests := []struct {
		e    Exceeded
		want string
	}{
		{Exceeded{Budget: "impact-daily", Window: "day", Limit: LimitCalls, Used: 1000, Max: 1000, ResetAt: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)},
			"budget impact-daily: calls limit 1000 reached; resets at 2026-11-22T00:00:00Z"},
		{Exceeded{Budget: "eu", Window: "month", Limit: LimitCost, Used: 5.01, Max: 5.5, ResetAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.FixedZone("CET", 3600))},
			"budget eu: cost limit 5.5 reached; resets at 2026-11-30T23:00:00Z"},
		{Exceeded{Budget: "tree", Window: "task", Limit: LimitTokens, Used: 5000, Max: 5000},
			"budget tree: tokens limit 5000 reached for this task"},
		{Exceeded{Budget: "lifetime", Window: "total", Limit: LimitTokens, Used: 1e9, Max: 1e9},
			"budget lifetime: tokens limit 1000000000 reached; it does not reset"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestWindowRollover(t *testing.T) {
	res := newFakeResources()
	res.put(t, "one-a-day", 1, &config.BudgetSpec{Window: config.WindowDay, Limit: config.BudgetLimit{Calls: ptr[int64](1)}})
	res.put(t, "hourly", 1, &config.BudgetSpec{Window: config.WindowHour, Limit: config.BudgetLimit{Tokens: ptr[int64](1_000_000)}})
	clk := newClock(time.Date(2026, 11, 21, 23, 59, 0, 0, time.UTC))
	b := open(t, bustest.Open(t), res, clk.now)
	ctx := t.Context()

	late, err := b.Reserve(ctx, modelCall, Usage{Tokens: 500})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Reserve(ctx, modelCall, Usage{Tokens: 500})
	if err == nil || err.Error() != "budget one-a-day: calls limit 1 reached; resets at 2026-11-22T00:00:00Z" {
		t.Errorf("second call of the day = %v, want the calls limit, resetting at midnight", err)
	}

	clk.set(time.Date(2026, 11, 22, 0, 0, 1, 0, time.UTC))
	early, err := b.Reserve(ctx, modelCall, Usage{Tokens: 500})
	if err != nil {
		t.Fatalf("first call of the next day = %v, want it let through", err)
	}
	// The call reserved before midnight settles in the window it was
	// reserved in.
	if err := late.Settle(ctx, Usage{Tokens: 100}); err != nil {
		t.Fatal(err)
	}
	if err := early.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]Usage{
		"one-a-day.2026-11-21": {Tokens: 100, Calls: 1},
		"hourly.2026-11-21T23": {Tokens: 100, Calls: 1},
		"one-a-day.2026-11-22": {},
		"hourly.2026-11-22T00": {},
	} {
		if got := counter(t, b, key); got != want {
			t.Errorf("counter %s = %+v, want %+v", key, got, want)
		}
	}
}

func TestWindowKey(t *testing.T) {
	tests := []struct {
		window, task string
		now          time.Time
		key          string
		reset        time.Time
	}{
		{"hour", "", time.Date(2026, 11, 21, 14, 5, 0, 0, time.UTC), "2026-11-21T14", time.Date(2026, 11, 21, 15, 0, 0, 0, time.UTC)},
		{"hour", "", time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC), "2026-12-31T23", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"day", "", time.Date(2026, 11, 21, 1, 0, 0, 0, time.FixedZone("CET", 3600)), "2026-11-21", time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)},
		{"day", "", time.Date(2026, 11, 21, 0, 30, 0, 0, time.FixedZone("CET", 3600)), "2026-11-20", time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)},
		{"month", "", time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC), "2026-12", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"month", "", time.Date(2028, 2, 29, 12, 0, 0, 0, time.UTC), "2028-02", time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC)},
		{"total", "", day, "total", time.Time{}},
		{"task", "t-42_a", day, "task.t-42_a", time.Time{}},
		{"task", "tasks/42", day, "task.=dGFza3MvNDI", time.Time{}},
	}
	for _, tt := range tests {
		key, reset, ok := windowKey(tt.window, tt.now, tt.task)
		if !ok || key != tt.key || !reset.Equal(tt.reset) {
			t.Errorf("windowKey(%s, %s, %q) = %s, %s, %v; want %s, %s, true", tt.window, tt.now, tt.task, key, reset, ok, tt.key, tt.reset)
		}
	}
	if _, _, ok := windowKey("week", day, ""); ok {
		t.Errorf("windowKey(week) ok, want an unknown window")
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		name   string
		spec   config.BudgetSpec
		call   Subject
		covers bool
	}{
		{"empty scope covers a model call", config.BudgetSpec{Window: "day", Limit: config.BudgetLimit{Tokens: ptr[int64](1)}}, modelCall, true},
		{"a budget without calls does not cover tool calls", config.BudgetSpec{Window: "day", Limit: config.BudgetLimit{Tokens: ptr[int64](1), Cost: ptr(1.0)}}, toolCall, false},
		{"a budget with calls covers tool calls", config.BudgetSpec{Window: "day", Limit: config.BudgetLimit{Tokens: ptr[int64](1), Calls: ptr[int64](1)}}, toolCall, true},
		{"agent by name", config.BudgetSpec{Scope: config.BudgetScope{Agent: "impact"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, modelCall, true},
		{"another agent", config.BudgetSpec{Scope: config.BudgetScope{Agent: "mailer"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, modelCall, false},
		{"agent glob", config.BudgetSpec{Scope: config.BudgetScope{Agent: "imp*"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, modelCall, true},
		{"a glob needs an agent", config.BudgetSpec{Scope: config.BudgetScope{Agent: "*"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, Subject{Kind: KindModel, Models: []string{"gpt-eu"}}, false},
		{"principal glob", config.BudgetSpec{Scope: config.BudgetScope{Principal: "*@example.com"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, Subject{Kind: KindTool, Principal: "bob@example.com"}, true},
		{"principal glob, other domain", config.BudgetSpec{Scope: config.BudgetScope{Principal: "*@example.com"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, Subject{Kind: KindTool, Principal: "bob@example.org"}, false},
		{"model asked for", config.BudgetSpec{Scope: config.BudgetScope{Model: "gpt-eu"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, modelCall, true},
		{"model a route may reach", config.BudgetSpec{Scope: config.BudgetScope{Model: "claude-*"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, Subject{Kind: KindModel, Models: []string{"smart", "gpt-eu", "claude-eu"}}, true},
		{"model the call cannot reach", config.BudgetSpec{Scope: config.BudgetScope{Model: "claude-*"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, modelCall, false},
		{"a model scope never covers tool calls", config.BudgetSpec{Scope: config.BudgetScope{Model: "*"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, toolCall, false},
		{"any task", config.BudgetSpec{Scope: config.BudgetScope{Task: "*"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, Subject{Kind: KindTool, Task: "t1"}, true},
		{"any task, outside a task", config.BudgetSpec{Scope: config.BudgetScope{Task: "*"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, toolCall, false},
		{"one task", config.BudgetSpec{Scope: config.BudgetScope{Task: "t1"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, Subject{Kind: KindTool, Task: "t1"}, true},
		{"another task", config.BudgetSpec{Scope: config.BudgetScope{Task: "t1"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, Subject{Kind: KindTool, Task: "t2"}, false},
		{"task window outside a task", config.BudgetSpec{Window: "task", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, toolCall, false},
		{"task window in a task", config.BudgetSpec{Window: "task", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, Subject{Kind: KindTool, Task: "t2"}, true},
		{"every field must match", config.BudgetSpec{Scope: config.BudgetScope{Agent: "impact", Principal: "bob"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}}, modelCall, false},
		{"every field matches", config.BudgetSpec{Scope: config.BudgetScope{Agent: "impact", Principal: "alice", Model: "gpt-*", Task: "*"}, Window: "day", Limit: config.BudgetLimit{Calls: ptr[int64](1)}},
			Subject{Kind: KindModel, Agent: "impact", Principal: "alice", Task: "t", Models: []string{"gpt-eu"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bg := &budget{name: "b", spec: tt.spec}
			if got := bg.covers(tt.call); got != tt.covers {
				t.Errorf("covers(%+v) of %+v = %v, want %v", tt.call, tt.spec, got, tt.covers)
			}
		})
	}
	broken := &budget{name: "b", err: errors.New("unreadable"), spec: config.BudgetSpec{Window: "day"}}
	if broken.covers(modelCall) {
		t.Errorf("a budget that cannot be enforced covers calls")
	}
}

func TestToolCallsCountCallsOnly(t *testing.T) {
	res := newFakeResources()
	res.put(t, "runaway", 1, &config.BudgetSpec{Scope: config.BudgetScope{Agent: "impact"}, Window: config.WindowTotal,
		Limit: config.BudgetLimit{Tokens: ptr[int64](100), Calls: ptr[int64](3)}})
	res.put(t, "tokens-only", 1, &config.BudgetSpec{Window: config.WindowTotal, Limit: config.BudgetLimit{Tokens: ptr[int64](100)}})
	b := open(t, bustest.Open(t), res, newClock(day).now)
	ctx := t.Context()

	if _, err := b.Reserve(ctx, modelCall, Usage{Tokens: 150}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Reserve(ctx, modelCall, Usage{Tokens: 1}); err == nil {
		t.Fatalf("model call past the tokens limit let through")
	}
	// Tokens are spent, yet tool calls go on until the calls limit.
	for i := range 2 {
		r, err := b.Reserve(ctx, toolCall, Usage{})
		if err != nil || r == nil {
			t.Fatalf("tool call %d = %v, %v; want a reservation on runaway", i+1, r, err)
		}
		if err := r.Settle(ctx, Usage{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := b.Reserve(ctx, toolCall, Usage{})
	if err == nil || err.Error() != "budget runaway: calls limit 3 reached; it does not reset" {
		t.Errorf("fourth call = %v, want runaway's calls limit", err)
	}
	if got := counter(t, b, "tokens-only.total"); got != (Usage{Tokens: 150, Calls: 1}) {
		t.Errorf("tokens-only counter = %+v, want the model call alone", got)
	}
}

func TestRefusalGivesBackEarlierBudgets(t *testing.T) {
	res := newFakeResources()
	res.put(t, "a-roomy", 1, &config.BudgetSpec{Window: config.WindowTotal, Limit: config.BudgetLimit{Calls: ptr[int64](100)}})
	res.put(t, "b-tight", 1, &config.BudgetSpec{Window: config.WindowTotal, Limit: config.BudgetLimit{Calls: ptr[int64](1)}})
	b := open(t, bustest.Open(t), res, newClock(day).now)
	ctx := t.Context()

	if _, err := b.Reserve(ctx, modelCall, Usage{Tokens: 10}); err != nil {
		t.Fatal(err)
	}
	_, err := b.Reserve(ctx, modelCall, Usage{Tokens: 10})
	var ex *Exceeded
	if !errors.As(err, &ex) || ex.Budget != "b-tight" {
		t.Fatalf("second call = %v, want b-tight exceeded", err)
	}
	if got := counter(t, b, "a-roomy.total"); got != (Usage{Tokens: 10, Calls: 1}) {
		t.Errorf("a-roomy after the refusal = %+v, want the first call only", got)
	}
}

func TestTaskWindows(t *testing.T) {
	res := newFakeResources()
	res.put(t, "per-task", 1, &config.BudgetSpec{Window: config.WindowTask, Limit: config.BudgetLimit{Calls: ptr[int64](2)}})
	b := open(t, bustest.Open(t), res, newClock(day).now)
	ctx := t.Context()
	call := func(task string) error {
		_, err := b.Reserve(ctx, Subject{Kind: KindTool, Agent: "impact", Task: task}, Usage{})
		return err
	}

	for _, task := range []string{"t-1", "t-1", "t/2"} {
		if err := call(task); err != nil {
			t.Fatalf("call in %s = %v", task, err)
		}
	}
	if err := call("t-1"); err == nil || err.Error() != "budget per-task: calls limit 2 reached for this task" {
		t.Errorf("third call in t-1 = %v, want the task's calls limit", err)
	}
	if r, err := b.Reserve(ctx, toolCall, Usage{}); r != nil || err != nil {
		t.Errorf("call outside a task = %v, %v; want no budget covering it", r, err)
	}

	st, err := b.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].TaskCount != 2 || len(st[0].Tasks) != 2 || st[0].Used != nil || st[0].Key != "" || !st[0].ResetsAt.IsZero() {
		t.Fatalf("Status = %+v, want per-task with two tasks", st)
	}
	var got []string
	for _, tu := range st[0].Tasks {
		got = append(got, fmt.Sprintf("%s:%d", tu.Task, tu.Used.Calls))
	}
	// Newest first: t/2 was charged last; t-1's refused call wrote nothing.
	if diff := cmp.Diff([]string{"t/2:1", "t-1:2"}, got); diff != "" {
		t.Errorf("Status tasks (-want +got):\n%s", diff)
	}
}

func TestCountersSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	res := newFakeResources()
	res.put(t, "daily", 1, &config.BudgetSpec{Window: config.WindowDay, Limit: config.BudgetLimit{Calls: ptr[int64](2)}})
	clk := newClock(day)

	first, err := bus.Open(t.Context(), slog.New(slog.DiscardHandler), bus.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(t.Context(), slog.New(slog.DiscardHandler), first, res, clk.now)
	if err != nil {
		first.Close()
		t.Fatal(err)
	}
	_, err = b.Reserve(t.Context(), modelCall, Usage{Tokens: 7})
	first.Close()
	if err != nil {
		t.Fatal(err)
	}

	again := open(t, bustest.OpenWith(t, bus.Options{DataDir: dir}), res, clk.now)
	if got := counter(t, again, "daily.2026-11-21"); got != (Usage{Tokens: 7, Calls: 1}) {
		t.Errorf("counter after a restart = %+v, want the call reserved before it", got)
	}
	if _, err := again.Reserve(t.Context(), modelCall, Usage{}); err != nil {
		t.Fatal(err)
	}
	if _, err := again.Reserve(t.Context(), modelCall, Usage{}); err == nil {
		t.Errorf("third call of the day after a restart let through; the limit is 2")
	}
}

func TestBudgetChangesWhileRunning(t *testing.T) {
	res := newFakeResources()
	res.put(t, "cap", 1, &config.BudgetSpec{Window: config.WindowTotal, Limit: config.BudgetLimit{Calls: ptr[int64](1)}})
	b := open(t, bustest.Open(t), res, newClock(day).now)
	ctx := t.Context()

	if _, err := b.Reserve(ctx, modelCall, Usage{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Reserve(ctx, modelCall, Usage{}); err == nil {
		t.Fatal("second call let through; the limit is 1")
	}
	decoded := (*b.set.Load())[0]

	// Something else changes: the budget is not decoded again.
	res.put(t, "other", 1, &config.BudgetSpec{Scope: config.BudgetScope{Agent: "mailer"}, Window: config.WindowTotal, Limit: config.BudgetLimit{Calls: ptr[int64](1)}})
	eventually(t, "other budget loaded", func() bool { return len(*b.set.Load()) == 2 })
	if (*b.set.Load())[0] != decoded {
		t.Errorf("budget cap decoded again though its revision did not change")
	}

	res.put(t, "cap", 2, &config.BudgetSpec{Window: config.WindowTotal, Limit: config.BudgetLimit{Calls: ptr[int64](3)}})
	eventually(t, "raised limit applied", func() bool {
		r, err := b.Reserve(ctx, modelCall, Usage{})
		return err == nil && r != nil
	})

	res.put(t, "cap", 0, nil)
	eventually(t, "deleted budget no longer applies", func() bool {
		r, err := b.Reserve(ctx, modelCall, Usage{})
		return err == nil && r == nil
	})
}

func TestUncoveredCallsDoNotTouchTheBucket(t *testing.T) {
	res := newFakeResources()
	res.put(t, "mailer", 1, &config.BudgetSpec{Scope: config.BudgetScope{Agent: "mailer"}, Window: config.WindowDay, Limit: config.BudgetLimit{Calls: ptr[int64](1)}})
	res.put(t, "model-tokens", 1, &config.BudgetSpec{Window: config.WindowDay, Limit: config.BudgetLimit{Tokens: ptr[int64](1)}})
	cb := &countingBus{substrate: bustest.Open(t)}
	b := open(t, cb, res, newClock(day).now)

	before := cb.ops.Load()
	for _, s := range []Subject{toolCall, {Kind: KindTool, Agent: "impact", Task: "t"}} {
		r, err := b.Reserve(t.Context(), s, Usage{Tokens: 10})
		if r != nil || err != nil {
			t.Errorf("Reserve(%+v) = %v, %v; want nil, nil", s, r, err)
		}
	}
	if n := cb.ops.Load() - before; n != 0 {
		t.Errorf("uncovered calls made %d bucket operations, want none", n)
	}
	if _, err := b.Reserve(t.Context(), Subject{Kind: "agent"}, Usage{}); err == nil {
		t.Errorf("Reserve of an unknown kind of call succeeded")
	}
}

func TestStatus(t *testing.T) {
	res := newFakeResources()
	res.put(t, "impact-daily", 3, &config.BudgetSpec{Scope: config.BudgetScope{Agent: "impact"}, Window: config.WindowDay,
		Limit: config.BudgetLimit{Tokens: ptr[int64](200000), Cost: ptr(5.0), Calls: ptr[int64](1000)}})
	res.put(t, "lifetime", 1, &config.BudgetSpec{Window: config.WindowTotal, Limit: config.BudgetLimit{Cost: ptr(100.0)}})
	res.mu.Lock()
	res.items["broken"] = config.Resource{Kind: "Budget", Metadata: config.Metadata{Name: "broken", Revision: 1}, Spec: json.RawMessage(`{"window":"week","limit":{"calls":1}}`)}
	res.mu.Unlock()
	b := open(t, bustest.Open(t), res, newClock(day).now)
	ctx := t.Context()

	r, err := b.Reserve(ctx, modelCall, Usage{Tokens: 1500, Cost: 0.25})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Settle(ctx, Usage{Tokens: 1200, Cost: 0.125}); err != nil {
		t.Fatal(err)
	}
	got, err := b.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Status{
		{Budget: "broken", Window: "week", Limit: config.BudgetLimit{Calls: ptr[int64](1)}, Error: `not enforced: unknown window "week"`},
		{Budget: "impact-daily", Scope: config.BudgetScope{Agent: "impact"}, Window: "day",
			Limit: config.BudgetLimit{Tokens: ptr[int64](200000), Cost: ptr(5.0), Calls: ptr[int64](1000)},
			Key:   "2026-11-21", Used: &Usage{Tokens: 1200, Cost: 0.125, Calls: 1}, ResetsAt: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)},
		{Budget: "lifetime", Window: "total", Limit: config.BudgetLimit{Cost: ptr(100.0)}, Key: "total", Used: &Usage{Tokens: 1200, Cost: 0.125, Calls: 1}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Status (-want +got):\n%s", diff)
	}
	data, err := json.Marshal(got[1])
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"budget":"impact-daily","scope":{"agent":"impact"},"window":"day","limit":{"tokens":200000,"cost":5,"calls":1000},"key":"2026-11-21","used":{"tokens":1200,"cost":0.125,"calls":1},"resets_at":"2026-11-22T00:00:00Z"}`
	if string(data) != wantJSON {
		t.Errorf("Status JSON = %s\nwant %s", data, wantJSON)
	}
}

func TestUnreadableCounterRefuses(t *testing.T) {
	res := newFakeResources()
	res.put(t, "daily", 1, &config.BudgetSpec{Window: config.WindowDay, Limit: config.BudgetLimit{Calls: ptr[int64](10)}})
	bb := bustest.Open(t)
	b := open(t, bb, res, newClock(day).now)
	if _, err := b.kv.Put(t.Context(), "daily.2026-11-21", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	_, err := b.Reserve(t.Context(), modelCall, Usage{})
	if err == nil || !strings.Contains(err.Error(), "unreadable (delete the key to reset it)") {
		t.Errorf("Reserve over an unreadable counter = %v, want a refusal saying how to reset it", err)
	}
}

func BenchmarkReserveUncovered(b *testing.B) {
	res := newFakeResources()
	for i := range 20 {
		res.put(b, fmt.Sprintf("agent-%d", i), 1, &config.BudgetSpec{Scope: config.BudgetScope{Agent: fmt.Sprintf("agent-%d", i)}, Window: config.WindowDay, Limit: config.BudgetLimit{Calls: ptr[int64](1)}})
	}
	bgs, err := Open(b.Context(), slog.New(slog.DiscardHandler), bustest.Open(b), res, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if r, err := bgs.Reserve(b.Context(), modelCall, Usage{Tokens: 100}); r != nil || err != nil {
			b.Fatal(r, err)
		}
	}
}

// BenchmarkReserveSettle is one covered call's round trips: a reservation
// and its settlement on one budget.
func BenchmarkReserveSettle(b *testing.B) {
	res := newFakeResources()
	res.put(b, "daily", 1, &config.BudgetSpec{Window: config.WindowDay, Limit: config.BudgetLimit{Tokens: ptr[int64](1 << 60)}})
	bgs, err := Open(b.Context(), slog.New(slog.DiscardHandler), bustest.Open(b), res, nil)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		r, err := bgs.Reserve(b.Context(), modelCall, Usage{Tokens: 100})
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Settle(b.Context(), Usage{Tokens: 50}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHugeWorstCasesSaturate: reservations near the int64 range pin the
// counter at its maximum instead of wrapping it to a negative that would let
// every later call through (issue 22, item 2).
func TestHugeWorstCasesSaturate(t *testing.T) {
	res := newFakeResources()
	res.put(t, "small", 1, &config.BudgetSpec{Window: config.WindowDay, Limit: config.BudgetLimit{Tokens: ptr[int64](10000)}})
	b := open(t, bustest.Open(t), res, newClock(day).now)
	ctx := t.Context()

	huge := int64(math.MaxInt64 - 10)
	r, err := b.Reserve(ctx, modelCall, Usage{Tokens: 100})
	if err != nil {
		t.Fatalf("Reserve(100) = %v", err)
	}
	if err := r.Settle(ctx, Usage{Tokens: huge}); err != nil {
		t.Fatalf("Settle(%d) = %v", huge, err)
	}
	if u := counter(t, b, "small.2026-11-21"); u.Tokens != huge {
		t.Fatalf("counter after settling %d = %+v", huge, u)
	}
	// A second huge charge would wrap below zero without saturation.
	if err := b.addAll(ctx, "test", r.holds, Usage{Tokens: huge}); err != nil {
		t.Fatal(err)
	}
	if u := counter(t, b, "small.2026-11-21"); u.Tokens != math.MaxInt64 {
		t.Errorf("counter after two huge charges = %+v, want tokens pinned at %d", u, int64(math.MaxInt64))
	}
	if _, err := b.Reserve(ctx, modelCall, Usage{Tokens: 1}); err == nil {
		t.Error("Reserve on a saturated counter was let through, want it refused")
	}
}

func TestSatAdd(t *testing.T) {
	tests := []struct{ a, b, want int64 }{
		{1, 2, 3},
		{math.MaxInt64, 1, math.MaxInt64},
		{math.MaxInt64, math.MaxInt64, math.MaxInt64},
		{math.MinInt64, -1, math.MinInt64},
		{math.MaxInt64, -math.MaxInt64, 0},
		{-5, 3, -2},
	}
	for _, tt := range tests {
		if got := SatAdd(tt.a, tt.b); got != tt.want {
			t.Errorf("SatAdd(%d, %d) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
