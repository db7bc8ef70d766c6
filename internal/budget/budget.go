// Package budget caps what agents spend. Budget resources set limits on the
// tokens, cost and calls of the calls they cover, per window; a call reserves
// its worst case on every budget covering it before it leaves and settles its
// real usage afterwards. The counters live in a JetStream key-value bucket,
// so they survive restarts and every replica shares them.
//
// A reservation is a compare-and-swap on each counter: it is admitted only if
// the usage before it is under every limit (calls: if one more call still
// fits). Concurrent calls therefore overshoot a tokens or cost limit by at
// most one reservation, never more, and a calls limit not at all. If the
// process dies between reserve and settle, the worst case stays charged:
// budgets may over-count, never under-count.
package budget

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/tools"
)

// Bucket holds the counters, keyed "<budget>.<window key>": impact-daily.2026-11-21,
// tree-cap.task.<task>, lifetime.total.
const Bucket = "corral_budgets"

// The kinds of call a Subject is.
const (
	KindModel = "model"
	KindTool  = "tool"
)

// The limits, as Exceeded.Limit and the metrics' limit label name them.
const (
	LimitTokens = "tokens"
	LimitCost   = "cost"
	LimitCalls  = "calls"
)

// ErrContended is returned (wrapped) when a counter kept changing under a
// reservation for longer than its bounded retries: far more concurrent
// calls on one budget than it can admit one at a time.
var ErrContended = errors.New("budget counter too contended")

// Usage is what calls spent, or may spend: the value of a counter in the
// bucket, and the worst case and actual usage of one call.
type Usage struct {
	Tokens int64   `json:"tokens"`
	Cost   float64 `json:"cost"`
	Calls  int64   `json:"calls"`
}

// Subject is the call a reservation is for.
type Subject struct {
	// Kind is KindModel or KindTool. Tool calls are covered only by budgets
	// that limit calls, and are checked against that limit only.
	Kind string
	// Agent is the acting agent; Principal the human or system it acts for.
	Agent, Principal string
	// Task is the id of the task the call counts against; empty outside a
	// task. Budgets with window "task" keep one set of counters per value.
	Task string
	// Models are the Model the call asks for and every model it may be
	// routed to (targets, fallbacks), so that a budget on a model covers
	// every call that may reach it. Empty for tool calls.
	Models []string
}

// Exceeded refuses a call: a budget covering it has reached a limit. Its
// Error reads well as the detail of a 429 budget_exceeded.
type Exceeded struct {
	Budget string `json:"budget"`
	Window string `json:"window"`
	// Limit is LimitTokens, LimitCost or LimitCalls.
	Limit string `json:"limit"`
	// Used is the usage the call found; Max the limit.
	Used float64 `json:"used"`
	Max  float64 `json:"max"`
	// ResetAt is when the window starts again; zero for task and total
	// windows, which never do.
	ResetAt time.Time `json:"resets_at,omitzero"`
}

// Error says which budget and limit, and when it resets:
// "budget impact-daily: calls limit 1000 reached; resets at 2026-11-22T00:00:00Z".
func (e *Exceeded) Error() string {
	msg := fmt.Sprintf("budget %s: %s limit %s reached", e.Budget, e.Limit, strconv.FormatFloat(e.Max, 'f', -1, 64))
	switch {
	case !e.ResetAt.IsZero():
		return msg + "; resets at " + e.ResetAt.UTC().Format(time.RFC3339)
	case e.Window == config.WindowTask:
		return msg + " for this task"
	}
	return msg + "; it does not reset"
}

// Resources is what the budgets read from the registry.
type Resources interface {
	List(kind string) []config.Resource
	Changed() <-chan struct{}
}

// substrate is what the budgets need from the bus.
type substrate interface {
	KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
	// Last reads a key's last entry from the stream's leader.
	Last(ctx context.Context, kv jetstream.KeyValue, key string) (uint64, jetstream.KeyValueEntry, error)
	// Next reads from the leader the first entry of a key after a revision.
	Next(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64) (jetstream.KeyValueEntry, error)
}

// Budgets are the Budget resources, decoded, and their counters.
type Budgets struct {
	sub       substrate
	kv        jetstream.KeyValue
	resources Resources
	logger    *slog.Logger
	now       func() time.Time

	// set is the decoded budgets, sorted by name, swapped whole at every
	// change so that Reserve reads it without a lock.
	set atomic.Pointer[[]*budget]
	// reconciling serialises reconcile: Run's and Reload's.
	reconciling sync.Mutex

	mu       sync.Mutex
	exceeded map[limitOf]uint64 // refusals by this replica

	loaded   chan struct{} // closed once Run has read the Budget resources
	loadOnce sync.Once
}

// budget is one revision of a Budget resource.
type budget struct {
	name string
	rev  uint64
	spec config.BudgetSpec
	err  error // the spec could not be used; the budget covers nothing
}

// limitOf names one limit of one budget.
type limitOf struct{ budget, limit string }

// Open creates the bucket if needed and reads the Budget resources there are
// now. Call Run to follow their changes.
func Open(ctx context.Context, logger *slog.Logger, s substrate, resources Resources, now func() time.Time) (*Budgets, error) {
	kv, err := s.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "corral budget counters, keyed <budget>.<window key>",
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("budget: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	b := &Budgets{sub: s, kv: kv, resources: resources, logger: logger, now: now, exceeded: map[limitOf]uint64{}, loaded: make(chan struct{})}
	b.set.Store(&[]*budget{})
	b.reconcile(ctx)
	return b, nil
}

// Run follows the Budget resources until ctx ends.
func (b *Budgets) Run(ctx context.Context) error {
	for {
		changed := b.resources.Changed()
		b.reconcile(ctx)
		b.loadOnce.Do(func() { close(b.loaded) })
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// WaitLoaded blocks until Run has taken in the Budget resources, so that no
// call is let through uncounted by a budget still being read, or ctx ends.
func (b *Budgets) WaitLoaded(ctx context.Context) error {
	select {
	case <-b.loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("budget: waiting for budgets to load: %w", ctx.Err())
	}
}

// Reload takes in the Budget resources this replica holds now, at once:
// after an apply here, the next call here is counted by what was applied,
// not only once Run sees the change.
func (b *Budgets) Reload(ctx context.Context) error {
	b.reconcile(ctx)
	return nil
}

// reconcile swaps in the budgets the resources declare now, decoding only
// revisions it has not seen.
func (b *Budgets) reconcile(ctx context.Context) {
	b.reconciling.Lock()
	defer b.reconciling.Unlock()
	known := map[string]*budget{}
	for _, bg := range *b.set.Load() {
		known[bg.name] = bg
	}
	var next []*budget
	for _, res := range b.resources.List("Budget") {
		name, rev := res.Metadata.Name, res.Metadata.Revision
		if bg := known[name]; bg != nil && bg.rev == rev {
			next = append(next, bg)
			continue
		}
		bg := &budget{name: name, rev: rev}
		if err := json.Unmarshal(res.Spec, &bg.spec); err != nil {
			bg.err = fmt.Errorf("unreadable spec: %w", err)
		} else if _, _, ok := windowKey(bg.spec.Window, time.Time{}, ""); !ok {
			bg.err = fmt.Errorf("unknown window %q", bg.spec.Window)
		}
		if bg.err != nil {
			// Validation on apply rules this out; a budget that cannot be
			// enforced is said loudly rather than guessed at.
			b.logger.ErrorContext(ctx, "budget not enforced", "budget", name, "revision", rev, "err", bg.err)
		}
		next = append(next, bg)
	}
	slices.SortFunc(next, func(x, y *budget) int { return cmp.Compare(x.name, y.name) })
	b.set.Store(&next)
}

// covers reports whether the budget applies to the call s.
func (bg *budget) covers(s Subject) bool {
	sc := bg.spec.Scope
	switch {
	case bg.err != nil:
		return false
	case s.Kind == KindTool && bg.spec.Limit.Calls == nil:
		return false
	case bg.spec.Window == config.WindowTask && s.Task == "":
		return false
	case sc.Agent != "" && (s.Agent == "" || !tools.Match(sc.Agent, s.Agent)):
		return false
	case sc.Principal != "" && (s.Principal == "" || !tools.Match(sc.Principal, s.Principal)):
		return false
	case sc.Model != "" && !slices.ContainsFunc(s.Models, func(m string) bool { return m != "" && tools.Match(sc.Model, m) }):
		return false
	case sc.Task == "*":
		return s.Task != ""
	case sc.Task != "":
		return s.Task == sc.Task
	}
	return true
}

// hold is one counter a reservation charged.
type hold struct {
	budget  *budget
	key     string
	resetAt time.Time
}

// Reservation is what one call charged to the budgets covering it. Settle
// it with the real usage once the call is done, or Release it if the call
// never left. Only the first of the two counts; later calls are no-ops, so
// `defer r.Release(ctx)` after a successful Reserve, then Settle, is safe. A
// nil Reservation (no budget covered the call) is a no-op too.
type Reservation struct {
	b      *Budgets
	charge Usage
	holds  []hold

	mu   sync.Mutex
	done bool
}

// Reserve charges the worst case of the call s to every budget covering it,
// in the order of their names, and fails with *Exceeded if one has reached a
// limit; what it had already charged is then given back. A call counts as one
// call whatever worst.Calls says. When no budget covers s it returns nil, nil
// without touching the bucket.
func (b *Budgets) Reserve(ctx context.Context, s Subject, worst Usage) (*Reservation, error) {
	if s.Kind != KindModel && s.Kind != KindTool {
		return nil, fmt.Errorf("budget: call kind %q: want %q or %q", s.Kind, KindModel, KindTool)
	}
	var holds []hold
	var now time.Time
	for _, bg := range *b.set.Load() {
		if !bg.covers(s) {
			continue
		}
		if now.IsZero() {
			now = b.now()
		}
		key, resetAt, _ := windowKey(bg.spec.Window, now, s.Task)
		holds = append(holds, hold{budget: bg, key: bg.name + "." + key, resetAt: resetAt})
	}
	if len(holds) == 0 {
		return nil, nil
	}
	if math.IsInf(worst.Cost, 0) {
		return nil, fmt.Errorf("budget: the worst-case cost %v is not finite", worst.Cost)
	}
	charge := Usage{Tokens: max(worst.Tokens, 0), Cost: nonNegative(worst.Cost), Calls: 1}
	r := &Reservation{b: b, charge: charge, holds: make([]hold, 0, len(holds))}
	for _, h := range holds {
		err := b.take(ctx, h, charge, s.Kind)
		if err == nil {
			r.holds = append(r.holds, h)
			continue
		}
		if rerr := r.Release(ctx); rerr != nil {
			b.logger.WarnContext(ctx, "budget: giving back a refused call's reservations failed; they stay charged", "err", rerr)
		}
		var ex *Exceeded
		if errors.As(err, &ex) {
			b.mu.Lock()
			b.exceeded[limitOf{ex.Budget, ex.Limit}]++
			b.mu.Unlock()
			return nil, ex
		}
		return nil, fmt.Errorf("budget: reserve on %s: %w", h.budget.name, err)
	}
	return r, nil
}

// take adds charge to one counter if the usage before it is under the
// budget's limits: tokens and cost for model calls, calls for both kinds.
func (b *Budgets) take(ctx context.Context, h hold, charge Usage, kind string) error {
	lim := h.budget.spec.Limit
	refuse := func(limit string, used, most float64) error {
		return &Exceeded{Budget: h.budget.name, Window: h.budget.spec.Window, Limit: limit, Used: used, Max: most, ResetAt: h.resetAt}
	}
	return b.update(ctx, h.key, func(cur Usage, _ bool) (Usage, bool, error) {
		if kind == KindModel {
			if lim.Tokens != nil && cur.Tokens >= *lim.Tokens {
				return cur, false, refuse(LimitTokens, float64(cur.Tokens), float64(*lim.Tokens))
			}
			if lim.Cost != nil && cur.Cost >= *lim.Cost {
				return cur, false, refuse(LimitCost, cur.Cost, *lim.Cost)
			}
		}
		if lim.Calls != nil && cur.Calls+1 > *lim.Calls {
			return cur, false, refuse(LimitCalls, float64(cur.Calls), float64(*lim.Calls))
		}
		return add(cur, charge), true, nil
	})
}

// Settle replaces the reservation's worst case by the call's actual usage
// (tokens and cost; the call stays counted) on every counter it charged, in
// the window it was reserved in. If it fails, the worst case stays charged.
func (r *Reservation) Settle(ctx context.Context, actual Usage) error {
	if r == nil || !r.finish() {
		return nil
	}
	if math.IsNaN(actual.Cost) || math.IsInf(actual.Cost, 0) {
		return fmt.Errorf("budget: settle: the actual cost %v is not finite; the worst case stays charged", actual.Cost)
	}
	delta := Usage{Tokens: SatAdd(max(actual.Tokens, 0), -r.charge.Tokens), Cost: nonNegative(actual.Cost) - r.charge.Cost}
	if delta == (Usage{}) {
		return nil
	}
	return r.b.addAll(ctx, "settle", r.holds, delta)
}

// Release gives back the whole reservation, the call included: the call
// never left.
func (r *Reservation) Release(ctx context.Context) error {
	if r == nil || !r.finish() {
		return nil
	}
	return r.b.addAll(ctx, "release", r.holds, Usage{Tokens: -r.charge.Tokens, Cost: -r.charge.Cost, Calls: -1})
}

// finish marks the reservation settled or released; it reports whether this
// was the first time.
func (r *Reservation) finish() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return false
	}
	r.done = true
	return true
}

// settleTimeout bounds giving back or settling a reservation. The caller's
// context may already be cancelled (the client went away) when the call's
// usage is known; the counters must be corrected all the same.
const settleTimeout = 10 * time.Second

// addAll adds delta to every held counter, never taking one below zero.
func (b *Budgets) addAll(ctx context.Context, what string, holds []hold, delta Usage) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	var errs []error
	for _, h := range holds {
		err := b.update(ctx, h.key, func(cur Usage, exists bool) (Usage, bool, error) {
			if !exists {
				// Deleted by hand meanwhile: what the call used beyond its
				// reservation still counts; a negative delta has nothing to
				// take back from.
				return add(Usage{}, delta), delta.Tokens > 0 || delta.Cost > 0, nil
			}
			return add(cur, delta), true, nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("budget: %s on %s: %w", what, h.budget.name, err))
		}
	}
	return errors.Join(errs...)
}

// add returns cur plus delta, each counter at least zero: a counter is never
// negative, even after someone reset it by hand during a call. The sums
// saturate: a huge worst case pins a counter at its maximum instead of
// wrapping it to a negative that would admit every later call.
func add(cur, delta Usage) Usage {
	return Usage{
		Tokens: max(SatAdd(cur.Tokens, delta.Tokens), 0),
		Cost:   nonNegative(cur.Cost + delta.Cost),
		Calls:  max(SatAdd(cur.Calls, delta.Calls), 0),
	}
}

// SatAdd is a+b, saturated at the bounds of int64 instead of wrapping.
func SatAdd(a, b int64) int64 {
	s := a + b
	switch {
	case a > 0 && b > 0 && s < 0:
		return math.MaxInt64
	case a < 0 && b < 0 && s >= 0:
		return math.MinInt64
	}
	return s
}

// nonNegative is f, or 0 when f is negative or NaN.
func nonNegative(f float64) float64 {
	if f > 0 {
		return f
	}
	return 0
}

// A counter read is a direct get that any replica of the bucket may answer;
// one that has just died leaves the request unanswered until the client's
// default timeout (5 s), while another replica could answer at once. So a
// read gets readTimeout per attempt and is tried readAttempts times when the
// substrate did not answer. Writes are not retried: a write that timed out
// may have been stored, and writing again would count the call twice.
const (
	readTimeout  = 750 * time.Millisecond
	readAttempts = 4
)

// get returns a counter's entry, retrying reads the substrate did not
// answer within readTimeout.
// readCounter reads a counter, from the stream's leader when fromLeader is set:
// jetstream.ErrKeyNotFound when it does not exist or was deleted.
func (b *Budgets) readCounter(ctx context.Context, key string, fromLeader bool) (jetstream.KeyValueEntry, error) {
	if !fromLeader {
		return b.get(ctx, key)
	}
	_, e, err := b.sub.Last(ctx, b.kv, key)
	if err == nil && e == nil {
		return nil, jetstream.ErrKeyNotFound
	}
	return e, err
}

func (b *Budgets) get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	var err error
	for range readAttempts {
		actx, cancel := context.WithTimeout(ctx, readTimeout)
		var e jetstream.KeyValueEntry
		e, err = b.kv.Get(actx, key)
		cancel()
		if err == nil || !bus.Unavailable(err) || ctx.Err() != nil {
			return e, err
		}
	}
	return nil, err
}

// landed reports whether a write the substrate did not acknowledge (it timed
// out, or the leader changed under it) was stored all the same. The write
// was guarded by revision rev, so if it was stored it is the key's first
// entry after rev, read from the leader; data carries an id of its own, so
// no other writer's entry can look like it. Without this a call whose
// counter write was stored would be refused and stay counted, and one whose
// write was lost would be admitted uncounted.
func (b *Budgets) landed(ctx context.Context, key string, rev uint64, data []byte) bool {
	e, err := b.sub.Next(ctx, b.kv, key, rev)
	return err == nil && bytes.Equal(e.Value(), data)
}

// stored is a counter as written: the usage, and an id unique to the
// write, which readers of Usage ignore.
type stored struct {
	Usage
	Write string `json:"w"`
}

// maxAttempts bounds the compare-and-swap loop on one counter. Each round
// one contender wins, and refused calls stop at their first read, so even
// dozens of concurrent calls on one budget settle well within it.
const maxAttempts = 64

// update applies next to a counter with compare-and-swap, retrying when
// another call wrote it in between. next gets the current value (zero when
// the key does not exist) and returns the new one and whether to write it,
// or an error that ends the update unwritten.
func (b *Budgets) update(ctx context.Context, key string, next func(cur Usage, exists bool) (Usage, bool, error)) error {
	// After a lost race the counter is read from the stream's leader: a
	// follower may still hold the revision that lost, and every guarded
	// write against it would lose again.
	fromLeader := false
	for attempt := range maxAttempts {
		var cur Usage
		var rev uint64
		e, err := b.readCounter(ctx, key, fromLeader)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("read counter %s: %w", key, err)
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &cur); err != nil {
				// Only a write from outside corral makes one; refusing is
				// the safe answer, and `nats kv del` the way out.
				return fmt.Errorf("counter %s is unreadable (delete the key to reset it): %w", key, err)
			}
		}
		val, write, err := next(cur, rev != 0)
		if err != nil || !write {
			return err
		}
		data, err := json.Marshal(stored{Usage: val, Write: nuid.Next()})
		if err != nil {
			return fmt.Errorf("encode counter %s: %w", key, err)
		}
		if rev == 0 {
			_, err = b.kv.Create(ctx, key, data)
		} else {
			_, err = b.kv.Update(ctx, key, data, rev)
		}
		if err == nil || bus.Unavailable(err) && b.landed(ctx, key, rev, data) {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("write counter %s: %w", key, err)
		}
		// Lost the race: back off a little, at random, so that contenders
		// spread out instead of colliding again.
		fromLeader = true
		wait := time.Duration(rand.Int64N(int64(min(attempt+1, 20)) * int64(250*time.Microsecond)))
		select {
		case <-ctx.Done():
			return fmt.Errorf("counter %s: %w", key, ctx.Err())
		case <-time.After(wait):
		}
	}
	return fmt.Errorf("counter %s: %w (%d attempts)", key, ErrContended, maxAttempts)
}
