package ratelimit

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/config"
)

// Status is one rate limit and its current state, for `corral limits`.
type Status struct {
	Limit       string                `json:"limit"`
	Description string                `json:"description,omitempty"`
	Scope       config.RateLimitScope `json:"scope"`
	Each        string                `json:"each,omitempty"`
	Rate        *config.Rate          `json:"rate,omitempty"`
	InFlight    *int64                `json:"inFlight,omitempty"`
	// Counters are the limit's shared counters, as the stream's leader
	// holds them: one, or for a limit with each, those of up to
	// StatusCounters values; CounterCount counts them all.
	Counters     []Counter `json:"counters"`
	CounterCount int       `json:"counter_count"`
	// Replica holds this replica's counts since it started.
	Replica ReplicaCounts `json:"replica"`
	// Error says why the limit is not enforced; empty when it is.
	Error string `json:"error,omitempty"`
}

// Counter is the state of one counter of a limit.
type Counter struct {
	// Value is the each value the counter is kept for (an agent's name...);
	// empty for a limit without each, "sha256:..." for a long one.
	Value string `json:"value,omitempty"`
	// Available is how many calls the rate would admit at once now (0 to
	// burst); absent without a rate.
	Available *int64 `json:"available,omitempty"`
	// InFlight is the calls holding a slot now, on every replica.
	InFlight int       `json:"in_flight"`
	Updated  time.Time `json:"updated,omitzero"`
}

// ReplicaCounts are one replica's counts for a limit.
type ReplicaCounts struct {
	Admitted uint64 `json:"admitted"`
	Delayed  uint64 `json:"delayed"`
	Refused  uint64 `json:"refused"`
	InFlight int64  `json:"in_flight"`
}

// ThrottleStatus is a backend throttling corral now.
type ThrottleStatus struct {
	Kind  string    `json:"kind"`
	Name  string    `json:"name"`
	Until time.Time `json:"until"`
}

// StatusCounters is how many counters Status reads per limit with each.
const StatusCounters = 20

// Status reports every rate limit, by name, with its shared counters.
func (l *Limits) Status(ctx context.Context) ([]Status, error) {
	set := *l.set.Load()
	out := make([]Status, 0, len(set))
	now := l.now()
	for _, lm := range set {
		st := Status{
			Limit: lm.name, Description: lm.spec.Description, Scope: lm.spec.Scope, Each: lm.spec.Each,
			Rate: lm.spec.Rate, InFlight: lm.spec.InFlight, Counters: []Counter{},
			Replica: ReplicaCounts{
				Admitted: lm.stats.admitted.Load(), Delayed: lm.stats.delayed.Load(),
				Refused: lm.stats.refused.Load(), InFlight: lm.stats.inFlight.Load(),
			},
		}
		if lm.err != nil {
			st.Error = "not enforced: " + lm.err.Error()
			out = append(out, st)
			continue
		}
		keys, err := l.keysOf(ctx, lm)
		if err != nil {
			return nil, err
		}
		st.CounterCount = len(keys)
		if len(keys) == 0 && lm.spec.Each == "" {
			keys = []string{lm.name + "." + sharedToken} // never used: show it idle
		}
		for _, key := range keys[:min(len(keys), StatusCounters)] {
			c, err := l.counter(ctx, lm, key, now)
			if err != nil {
				return nil, err
			}
			st.Counters = append(st.Counters, c)
		}
		out = append(out, st)
	}
	return out, nil
}

// keysOf lists the limit's counter keys.
func (l *Limits) keysOf(ctx context.Context, lm *limit) ([]string, error) {
	lister, err := l.kv.ListKeysFiltered(ctx, lm.name+".>")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("ratelimit: list counters of %s: %w", lm.name, err)
	}
	defer func() { _ = lister.Stop() }()
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys, nil
}

// counter reads one counter from the stream's leader.
func (l *Limits) counter(ctx context.Context, lm *limit, key string, now time.Time) (Counter, error) {
	var c Counter
	tok := strings.TrimPrefix(key, lm.name+".")
	v, ok := tokenValue(tok)
	if !ok {
		v = "unknown:" + tok
	}
	c.Value = v
	var st state
	e, err := l.read(ctx, key, true)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return c, fmt.Errorf("ratelimit: read counter %s: %w", key, err)
	default:
		c.Updated = e.Created().UTC()
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return c, fmt.Errorf("ratelimit: counter %s is unreadable: %w", key, err)
		}
	}
	if lm.interval > 0 {
		ahead := max(st.TAT-now.UnixNano(), 0)
		avail := max(lm.burst-(ahead+int64(lm.interval)-1)/int64(lm.interval), 0)
		c.Available = &avail
	}
	c.InFlight = st.prune(now)
	return c, nil
}

// Throttles lists the backends throttling corral now, as this replica
// mirrors them.
func (l *Limits) Throttles() []ThrottleStatus {
	var out []ThrottleStatus
	now := l.now()
	l.throttles.Range(func(k, v any) bool {
		until := v.(time.Time)
		if !until.After(now) {
			return true
		}
		kind, tok, _ := strings.Cut(k.(string), ".")
		name, ok := tokenValue(tok)
		if !ok {
			name = tok
		}
		out = append(out, ThrottleStatus{Kind: kind, Name: name, Until: until.UTC()})
		return true
	})
	slices.SortFunc(out, func(a, b ThrottleStatus) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Name, b.Name))
	})
	return out
}
