// Package ratelimit paces calls and caps how many run at once, for the
// RateLimit resources, across every replica; it also remembers which
// upstreams and models said "too many requests" and for how long.
//
// Each limit's state (a rate's theoretical arrival time, GCRA, and the
// leased slots of the calls in flight) is one entry per counter in a
// JetStream key-value bucket, changed only by writes guarded by its revision,
// so two replicas together admit no more than the limit: in-flight caps
// exactly, rates within the clock skew between replicas. A slot is leased
// for SlotLease and renewed while its call runs, so a replica that dies
// mid-call frees its slots when their leases end.
//
// Admit refuses a call over a limit at once; Wait waits its turn instead,
// for callers that can wait (a durable task's steps, in a later issue).
// docs/limits.md says what each guarantees.
package ratelimit

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/tools"
)

// Bucket holds the limits' counters, keyed "<limit>.<counter>": erp-writes._
// for a limit shared by every call it covers, erp-writes.v<base64 agent>
// for one kept per agent (each: agent).
const Bucket = "corral_ratelimits"

// The kinds of call a Subject is.
const (
	KindTool  = "tool"
	KindModel = "model"
)

// The reasons a limit refuses a call, as Refused.Reason and the metrics name them.
const (
	ReasonRate     = "rate"
	ReasonInFlight = "in_flight"
)

// SlotLease is how long an in-flight slot is held without being renewed;
// the replica holding it renews it every SlotLease/3 while the call runs.
// A replica that dies mid-call frees its slots within SlotLease.
const SlotLease = 30 * time.Second

// ErrContended is returned (wrapped) when a counter kept changing under an
// admission for longer than its bounded retries.
var ErrContended = errors.New("rate limit counter too contended")

// Subject is the call an admission is for.
type Subject struct {
	// Kind is KindTool or KindModel.
	Kind string
	// Agent is the acting agent; Principal the human or system it acts
	// for; Task the task the call is made in (empty outside one).
	Agent, Principal, Task string
	// Source and Tool are a tool call's ToolSource and tool's full name.
	Source, Tool string
	// Models are, for a model call, the Model asked for first and every
	// model it may be routed to, so that a limit on a model covers every
	// call that may reach it.
	Models []string
}

// Refused refuses a call: a limit covering it is at its rate or its cap.
// Its Error reads well as the detail of a 429 rate_limited.
type Refused struct {
	Limit string `json:"limit"`
	// Reason is ReasonRate or ReasonInFlight.
	Reason string `json:"reason"`
	// Max is the rate's requests, or the in-flight cap.
	Max int64 `json:"max"`
	// Per is the rate's period ("second", "minute"); empty for caps.
	Per string `json:"per,omitempty"`
	// RetryAfter is when a call may be admitted again: exact for a rate,
	// a guess for a cap (calls in flight end when they end).
	RetryAfter time.Duration `json:"retry_after"`
}

// Error says which limit and why: "rate limit erp-writes: 5 calls per
// second reached; retry in 200ms".
func (e *Refused) Error() string {
	if e.Reason == ReasonInFlight {
		return fmt.Sprintf("rate limit %s: %d calls in flight at once reached; retry when one ends", e.Limit, e.Max)
	}
	return fmt.Sprintf("rate limit %s: %d calls per %s reached; retry in %s", e.Limit, e.Max, e.Per, e.RetryAfter.Round(time.Millisecond))
}

// Resources is what the limits read from the registry.
type Resources interface {
	List(kind string) []config.Resource
	Changed() <-chan struct{}
}

// substrate is what the limits need from the bus.
type substrate interface {
	KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
	// Last reads a key's last entry from the stream's leader.
	Last(ctx context.Context, kv jetstream.KeyValue, key string) (uint64, jetstream.KeyValueEntry, error)
	// Next reads from the leader the first entry of a key after a revision.
	Next(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64) (jetstream.KeyValueEntry, error)
	// Watch mirrors a bucket until ctx ends.
	Watch(ctx context.Context, kv jetstream.KeyValue, apply func(context.Context, jetstream.KeyValueEntry), loaded func()) error
}

// Limits are the RateLimit resources, decoded, their shared counters and
// the upstreams known to be throttling.
type Limits struct {
	// reconciling serialises reconcile: Run's and Reload's.
	reconciling sync.Mutex
	sub         substrate
	kv          jetstream.KeyValue
	throttleKV  jetstream.KeyValue
	resources   Resources
	logger      *slog.Logger
	now         func() time.Time

	// set is the decoded limits, sorted by name, swapped whole at every
	// change so that Admit reads it without a lock.
	set atomic.Pointer[[]*limit]

	// seen is, per rate counter, the latest theoretical arrival time this
	// replica read (unix nanoseconds, *atomic.Int64). It only grows in the
	// bucket (but for refunds), so a call it already puts over the limit is
	// refused without a round trip to the substrate: a looping agent costs
	// memory reads only.
	seen sync.Map
	// written is, per counter, its state as this replica last wrote it
	// (*written), tried first by the next write: a counter used from one
	// replica costs one round trip per change, not two.
	written sync.Map

	mu    sync.Mutex
	held  map[string]map[string]bool // counter key -> slot ids this replica holds
	stats map[string]*counters       // by limit name

	throttles sync.Map // throttle key -> time.Time (until)

	loaded, throttlesLoaded chan struct{}
	loadOnce, throttleOnce  sync.Once
}

// counters are one limit's figures on this replica, for metrics and status.
type counters struct {
	admitted, delayed, refused atomic.Uint64
	inFlight                   atomic.Int64
}

// limit is one revision of a RateLimit resource.
type limit struct {
	name     string
	rev      uint64
	spec     config.RateLimitSpec
	interval time.Duration // between two calls at the rate; 0 without one
	burst    int64
	err      error // the spec could not be used; the limit covers nothing
	stats    *counters
}

// Open creates the buckets if needed and reads the RateLimit resources
// there are now. Call Run to follow their changes, renew slots and mirror
// throttles.
func Open(ctx context.Context, logger *slog.Logger, s substrate, resources Resources, now func() time.Time) (*Limits, error) {
	kv, err := s.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "corral rate limit counters, keyed <limit>.<counter>",
		History:     1,
		// Idle counters go: a rate's state matters for at most its burst
		// (under 17 hours), and a held slot is renewed every few seconds.
		TTL: 24 * time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	tkv, err := s.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      ThrottleBucket,
		Description: "corral upstreams and models throttling corral, keyed <kind>.<name>, until when",
		History:     1,
		TTL:         time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	l := &Limits{
		sub: s, kv: kv, throttleKV: tkv, resources: resources, logger: logger, now: now,
		held: map[string]map[string]bool{}, stats: map[string]*counters{},
		loaded: make(chan struct{}), throttlesLoaded: make(chan struct{}),
	}
	l.set.Store(&[]*limit{})
	l.reconcile(ctx)
	return l, nil
}

// Run follows the RateLimit resources, renews the slots of the calls in
// flight on this replica and mirrors the throttled upstreams, until ctx ends.
func (l *Limits) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = l.sub.Watch(ctx, l.throttleKV, l.applyThrottle, func() { l.throttleOnce.Do(func() { close(l.throttlesLoaded) }) })
	}()
	go func() {
		defer wg.Done()
		l.renewLoop(ctx)
	}()
	for {
		changed := l.resources.Changed()
		l.reconcile(ctx)
		l.loadOnce.Do(func() { close(l.loaded) })
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// WaitLoaded blocks until Run has taken in the RateLimit resources and the
// throttled upstreams, or ctx ends.
func (l *Limits) WaitLoaded(ctx context.Context) error {
	for _, ch := range []chan struct{}{l.loaded, l.throttlesLoaded} {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("ratelimit: waiting for rate limits to load: %w", ctx.Err())
		}
	}
	return nil
}

// Reload takes in the RateLimit resources this replica holds now, at once:
// after an apply here, the next call here is limited by what was applied,
// not only once Run sees the change.
func (l *Limits) Reload(ctx context.Context) error {
	l.reconcile(ctx)
	return nil
}

// reconcile swaps in the limits the resources declare now, decoding only
// revisions it has not seen.
func (l *Limits) reconcile(ctx context.Context) {
	l.reconciling.Lock()
	defer l.reconciling.Unlock()
	known := map[string]*limit{}
	for _, lm := range *l.set.Load() {
		known[lm.name] = lm
	}
	var next []*limit
	changed := false
	for _, res := range l.resources.List("RateLimit") {
		name, rev := res.Metadata.Name, res.Metadata.Revision
		if lm := known[name]; lm != nil && lm.rev == rev {
			next = append(next, lm)
			continue
		}
		changed = true
		lm := &limit{name: name, rev: rev, stats: l.statsOf(name)}
		if err := json.Unmarshal(res.Spec, &lm.spec); err != nil {
			lm.err = fmt.Errorf("unreadable spec: %w", err)
		} else if r := lm.spec.Rate; r != nil {
			per := time.Second
			if r.Per == config.PerMinute {
				per = time.Minute
			}
			switch {
			case r.Per != config.PerSecond && r.Per != config.PerMinute:
				lm.err = fmt.Errorf("unknown period %q", r.Per)
			case r.Requests < 1 || r.BurstOrDefault() < 1:
				lm.err = errors.New("requests and burst must be at least 1")
			default:
				lm.interval = max(per/time.Duration(r.Requests), 1)
				lm.burst = r.BurstOrDefault()
			}
		}
		if lm.spec.Rate == nil && lm.spec.InFlight == nil && lm.err == nil {
			lm.err = errors.New("neither rate nor inFlight is set")
		}
		if lm.err != nil {
			// Validation on apply rules this out; a limit that cannot be
			// enforced is said loudly rather than guessed at.
			l.logger.ErrorContext(ctx, "rate limit not enforced", "limit", name, "revision", rev, "err", lm.err)
		}
		next = append(next, lm)
	}
	if len(next) != len(known) {
		changed = true
	}
	slices.SortFunc(next, func(x, y *limit) int { return cmp.Compare(x.name, y.name) })
	l.set.Store(&next)
	if changed {
		// A rate that changed makes the arrival times read under the old
		// one meaningless here; the bucket's are still right.
		l.seen.Clear()
	}
}

func (l *Limits) statsOf(name string) *counters {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.stats[name]
	if c == nil {
		c = &counters{}
		l.stats[name] = c
	}
	return c
}

// covers reports whether the limit applies to the call s.
func (lm *limit) covers(s Subject) bool {
	sc := lm.spec.Scope
	switch {
	case lm.err != nil:
		return false
	case (sc.Tool != "" || sc.ToolSource != "" || lm.spec.Each == config.EachTool || lm.spec.Each == config.EachToolSource) && s.Kind != KindTool:
		return false
	case (sc.Model != "" || lm.spec.Each == config.EachModel) && s.Kind != KindModel:
		return false
	case sc.Agent != "" && (s.Agent == "" || !tools.Match(sc.Agent, s.Agent)):
		return false
	case sc.Principal != "" && (s.Principal == "" || !tools.Match(sc.Principal, s.Principal)):
		return false
	case sc.ToolSource != "" && !tools.Match(sc.ToolSource, s.Source):
		return false
	case sc.Tool != "" && !tools.Match(sc.Tool, s.Tool):
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

// counterKey is the key of the counter the call s counts on.
func (lm *limit) counterKey(s Subject) string {
	var v string
	switch lm.spec.Each {
	case "":
		return lm.name + "." + sharedToken
	case config.EachAgent:
		v = s.Agent
	case config.EachPrincipal:
		v = s.Principal
	case config.EachTask:
		v = s.Task
	case config.EachToolSource:
		v = s.Source
	case config.EachTool:
		v = s.Tool
	case config.EachModel:
		if len(s.Models) > 0 {
			v = s.Models[0]
		}
	}
	return lm.name + "." + keyToken(v)
}

// hold is what one admission took on one limit.
type hold struct {
	limit *limit
	key   string
	rate  bool   // a place in the rate was taken
	slot  string // the in-flight slot's id; empty without a cap
}

// Permit is what an admitted call holds: its places in the limits' rates
// and its in-flight slots. Release it when the call has ended; only the
// first Release counts, and a nil Permit (no limit covered the call) is a
// no-op.
type Permit struct {
	l     *Limits
	holds []hold
	done  atomic.Bool
}

// Admit admits the call s if every limit covering it does, taking its place
// in each limit's rate and a slot under each cap, in the order of the
// limits' names; it fails with *Refused (from the first limit that
// refused, whose counters are left as they were) and gives back what it
// had taken. When no limit covers s it returns nil, nil without touching
// the bucket. Release the permit when the call ends.
func (l *Limits) Admit(ctx context.Context, s Subject) (*Permit, error) {
	return l.admit(ctx, s, true)
}

// admit is Admit; a refusal counts as one only when refusals says so
// (Wait's turns are delays, not refusals).
func (l *Limits) admit(ctx context.Context, s Subject, refusals bool) (*Permit, error) {
	if s.Kind != KindTool && s.Kind != KindModel {
		return nil, fmt.Errorf("ratelimit: call kind %q: want %q or %q", s.Kind, KindTool, KindModel)
	}
	var covering []*limit
	for _, lm := range *l.set.Load() {
		if lm.covers(s) {
			covering = append(covering, lm)
		}
	}
	if len(covering) == 0 {
		return nil, nil
	}
	keys := make([]string, len(covering))
	now := l.now()
	// Refuse from memory what this replica already knows to be over a rate.
	for i, lm := range covering {
		keys[i] = lm.counterKey(s)
		if ref := lm.overRate(l.seenTAT(keys[i]), now); ref != nil {
			if refusals {
				lm.stats.refused.Add(1)
			}
			return nil, ref
		}
	}
	p := &Permit{l: l, holds: make([]hold, 0, len(covering))}
	for i, lm := range covering {
		h, err := l.take(ctx, lm, keys[i])
		if err == nil {
			p.holds = append(p.holds, h)
			continue
		}
		p.done.Store(true)
		for _, h := range p.holds {
			l.refund(ctx, h)
		}
		var ref *Refused
		if errors.As(err, &ref) {
			if refusals {
				lm.stats.refused.Add(1)
			}
			return nil, ref
		}
		return nil, fmt.Errorf("ratelimit: admit on %s: %w", lm.name, err)
	}
	for _, h := range p.holds {
		h.limit.stats.admitted.Add(1)
	}
	return p, nil
}

// Wait admits the call s like Admit, but when a limit refuses it, it waits
// for its turn instead of failing: the time a rate names, or until a slot
// under a cap may have freed (polling with backoff, at most a second
// apart). It returns the permit, or ctx's error when ctx ends first, or a
// substrate error. A call that waited counts as delayed on the limit that
// held it back. Waiters are not queued: under contention any of them may
// be admitted next, so durable callers that need fairness must order
// themselves.
func (l *Limits) Wait(ctx context.Context, s Subject) (*Permit, error) {
	poll := 50 * time.Millisecond
	var delayedOn *counters
	for {
		p, err := l.admit(ctx, s, false)
		var ref *Refused
		if !errors.As(err, &ref) {
			return p, err
		}
		if delayedOn == nil {
			delayedOn = l.statsOf(ref.Limit)
			delayedOn.delayed.Add(1)
		}
		wait := ref.RetryAfter
		if ref.Reason == ReasonInFlight {
			wait, poll = poll, min(poll*2, time.Second)
		}
		// Jitter spreads the waiters of one limit apart.
		wait += time.Duration(rand.Int64N(int64(wait/4) + 1))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("ratelimit: waiting for %s: %w", ref.Limit, ctx.Err())
		case <-t.C:
		}
	}
}

// releaseTimeout bounds giving back a permit. The caller's context may be
// cancelled already (the agent went away); the slots must be freed anyway.
const releaseTimeout = 10 * time.Second

// Release frees the call's in-flight slots. A slot that cannot be freed
// now (the substrate is down) is freed when its lease ends.
func (p *Permit) Release(ctx context.Context) {
	if p == nil || p.done.Swap(true) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	for _, h := range p.holds {
		if h.slot == "" {
			continue
		}
		p.l.forget(h.key, h.slot)
		h.limit.stats.inFlight.Add(-1)
		err := p.l.update(ctx, h.key, func(cur *state, exists bool) bool {
			if !exists || cur.Slots[h.slot] == 0 {
				return false
			}
			delete(cur.Slots, h.slot)
			return true
		})
		if err != nil {
			p.l.logger.WarnContext(ctx, "ratelimit: freeing an in-flight slot failed; it is freed when its lease ends", "limit", h.limit.name, "err", err)
		}
	}
}

// refund gives back a call's place in a rate and its slot: the call was
// refused by another limit and never left.
func (l *Limits) refund(ctx context.Context, h hold) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if h.slot != "" {
		l.forget(h.key, h.slot)
		h.limit.stats.inFlight.Add(-1)
	}
	var tat int64
	err := l.update(ctx, h.key, func(cur *state, exists bool) bool {
		if !exists {
			return false
		}
		if h.rate {
			cur.TAT -= int64(h.limit.interval)
			tat = cur.TAT
		}
		if h.slot != "" {
			delete(cur.Slots, h.slot)
		}
		return true
	})
	if err != nil {
		l.logger.WarnContext(ctx, "ratelimit: giving back a refused call's place failed", "limit", h.limit.name, "err", err)
	} else if h.rate {
		// The arrival time went back: what this replica read before is
		// now too late, and would refuse calls the bucket admits.
		if v, ok := l.seen.Load(h.key); ok {
			v.(*atomic.Int64).Store(tat)
		}
	}
}

// take admits one call on one limit's counter, or refuses it.
func (l *Limits) take(ctx context.Context, lm *limit, key string) (hold, error) {
	h := hold{limit: lm, key: key, rate: lm.interval > 0}
	if lm.spec.InFlight != nil {
		h.slot = nuid.Next()
	}
	var refused error
	var tat int64
	err := l.update(ctx, key, func(cur *state, _ bool) bool {
		now := l.now()
		refused = nil
		if h.rate {
			l.noteTAT(key, cur.TAT)
			if ref := lm.overRate(cur.TAT, now); ref != nil {
				refused = ref
				return false
			}
		}
		if h.slot != "" {
			live := cur.prune(now)
			if int64(live) >= *lm.spec.InFlight {
				refused = &Refused{Limit: lm.name, Reason: ReasonInFlight, Max: *lm.spec.InFlight, RetryAfter: time.Second}
				return false
			}
			if cur.Slots == nil {
				cur.Slots = map[string]int64{}
			}
			cur.Slots[h.slot] = now.Add(SlotLease).UnixNano()
		}
		if h.rate {
			cur.TAT = max(cur.TAT, now.UnixNano()) + int64(lm.interval)
			tat = cur.TAT
		}
		return true
	})
	if err != nil {
		return hold{}, err
	}
	if refused != nil {
		return hold{}, refused
	}
	if h.rate {
		l.noteTAT(key, tat)
	}
	if h.slot != "" {
		l.remember(key, h.slot)
		lm.stats.inFlight.Add(1)
	}
	return h, nil
}

// overRate is the refusal of a call arriving at now on a rate whose
// theoretical arrival time is tat (unix nanoseconds), or nil if it fits:
// GCRA admits a call when, with it, the rate is at most burst intervals
// ahead of now.
func (lm *limit) overRate(tat int64, now time.Time) *Refused {
	if lm.interval <= 0 || tat == 0 {
		return nil
	}
	ahead := max(tat, now.UnixNano()) + int64(lm.interval) - now.UnixNano()
	allowed := lm.burst * int64(lm.interval)
	if ahead <= allowed {
		return nil
	}
	return &Refused{Limit: lm.name, Reason: ReasonRate, Max: lm.spec.Rate.Requests, Per: lm.spec.Rate.Per, RetryAfter: time.Duration(ahead - allowed)}
}

// seenTAT is the latest arrival time this replica read for a rate counter.
func (l *Limits) seenTAT(key string) int64 {
	if v, ok := l.seen.Load(key); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// noteTAT records an arrival time read from the bucket (the larger one
// wins: a read may be older than another); 0 forgets it.
func (l *Limits) noteTAT(key string, tat int64) {
	v, ok := l.seen.Load(key)
	if !ok {
		if tat == 0 {
			return
		}
		v, _ = l.seen.LoadOrStore(key, new(atomic.Int64))
	}
	a := v.(*atomic.Int64)
	if tat == 0 {
		a.Store(0)
		return
	}
	for {
		old := a.Load()
		if tat <= old || a.CompareAndSwap(old, tat) {
			return
		}
	}
}

func (l *Limits) remember(key, slot string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[key] == nil {
		l.held[key] = map[string]bool{}
	}
	l.held[key][slot] = true
}

func (l *Limits) forget(key, slot string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.held[key], slot)
	if len(l.held[key]) == 0 {
		delete(l.held, key)
	}
}

// renewLoop extends the leases of the slots this replica holds, every
// SlotLease/3, until ctx ends.
func (l *Limits) renewLoop(ctx context.Context) {
	t := time.NewTicker(SlotLease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.renew(ctx)
	}
}

// renew extends the leases of the slots held here, one write per counter.
func (l *Limits) renew(ctx context.Context) {
	l.mu.Lock()
	held := make(map[string][]string, len(l.held))
	for key, slots := range l.held {
		for s := range slots {
			held[key] = append(held[key], s)
		}
	}
	l.mu.Unlock()
	for key, slots := range held {
		lost := 0
		err := l.update(ctx, key, func(cur *state, exists bool) bool {
			lost = 0
			until := l.now().Add(SlotLease).UnixNano()
			for _, s := range slots {
				if cur.Slots[s] == 0 {
					lost++ // freed meanwhile, or its lease ran out
					continue
				}
				cur.Slots[s] = until
			}
			return lost < len(slots)
		})
		if err != nil {
			l.logger.WarnContext(ctx, "ratelimit: renewing in-flight slots failed", "counter", key, "err", err)
		}
		if lost > 0 {
			// Released concurrently (harmless), or a lease that ran out
			// while this replica could not renew it: that call is no
			// longer counted, and the cap may be exceeded by it.
			l.logger.DebugContext(ctx, "ratelimit: slots gone before renewal", "counter", key, "slots", lost)
		}
	}
}

// keyToken is a counter's token for an each value: "v" and the value in
// base64url, or "h" and a digest when that would make the key too long.
// sharedToken is the counter of a limit without each.
const sharedToken = "_"
