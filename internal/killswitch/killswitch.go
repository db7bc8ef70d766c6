// Package killswitch stops agents: a global switch that refuses every call,
// and one per agent. Switches live in a JetStream key-value bucket and every
// replica mirrors them in memory through a watch, so a kill applied through
// any replica takes effect on all of them within the watch's latency
// (milliseconds), and checking one on the hot path costs a map lookup.
package killswitch

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/config"
)

// Bucket holds the switches that are on, keyed "all" or "agent.<name>".
const Bucket = "corral_killswitch"

const (
	keyAll      = "all"
	agentPrefix = "agent."
)

// By is who a switch is recorded as set by when the caller names nobody.
const By = "admin"

// Errors callers branch on, always wrapped with the target they concern.
var (
	ErrNotKilled     = errors.New("not on")
	ErrInvalidTarget = errors.New("invalid target")
)

// Target is what a switch stops: every agent (All) or one agent by name.
// Exactly one of the two is set.
type Target struct {
	All   bool   `json:"all,omitempty"`
	Agent string `json:"agent,omitempty"`
}

// String names the target for messages: "all agents" or "Agent/<name>".
func (t Target) String() string {
	if t.All {
		return "all agents"
	}
	return "Agent/" + t.Agent
}

// key is the target's bucket key; it fails with ErrInvalidTarget unless
// exactly one of All and Agent is set and Agent is a valid agent name.
func (t Target) key() (string, error) {
	switch {
	case t.All && t.Agent != "":
		return "", fmt.Errorf("both all and agent %q given; choose one: %w", t.Agent, ErrInvalidTarget)
	case t.All:
		return keyAll, nil
	case t.Agent == "":
		return "", fmt.Errorf("neither all nor an agent given: %w", ErrInvalidTarget)
	case !config.ValidName(t.Agent):
		return "", fmt.Errorf("agent %q is not a valid name (lowercase letters, digits and '-', at most 63): %w", t.Agent, ErrInvalidTarget)
	}
	return agentPrefix + t.Agent, nil
}

// targetOf is the inverse of key.
func targetOf(key string) (Target, bool) {
	if key == keyAll {
		return Target{All: true}, true
	}
	name, ok := strings.CutPrefix(key, agentPrefix)
	if !ok || !config.ValidName(name) {
		return Target{}, false
	}
	return Target{Agent: name}, true
}

// Switch is a kill switch that is on.
type Switch struct {
	Target
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// value is a switch as the bucket stores it: the target is its key.
type value struct {
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// loading is what Killed answers until the bucket has been read: a replica
// that does not yet know which switches are on refuses rather than let a
// killed agent through. Startup reads the bucket in milliseconds.
var loading = Switch{Target: Target{All: true}, Reason: "kill switches are still loading on this replica", By: "corral"}

// substrate is what the switches need from the bus.
type substrate interface {
	KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
	Watch(ctx context.Context, kv jetstream.KeyValue, apply func(context.Context, jetstream.KeyValueEntry), loaded func()) error
}

// Auditor records every kill and unkill.
type Auditor interface {
	Append(ctx context.Context, r *audit.Record) (string, error)
}

// Switches are the kill switches as one replica knows them.
type Switches struct {
	kv     jetstream.KeyValue
	bus    substrate
	logger *slog.Logger
	audit  Auditor // nil until WithAudit

	mu       sync.RWMutex
	isLoaded bool
	all      entry
	agents   map[string]entry // by agent name; unkilled ones stay as tombstones
	loaded   chan struct{}    // closed once the bucket has been read
}

// entry is the newest state of one key this replica knows of. Updates apply
// only if they are newer, so a late watch event never undoes a kill or an
// unkill this replica has already recorded.
type entry struct {
	rev uint64
	sw  *Switch // nil when off
}

// Open creates the bucket if needed. Call Run to mirror it.
func Open(ctx context.Context, logger *slog.Logger, s substrate) (*Switches, error) {
	kv, err := s.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "corral kill switches that are on, keyed all or agent.<name>",
	})
	if err != nil {
		return nil, fmt.Errorf("killswitch: %w", err)
	}
	return &Switches{kv: kv, bus: s, logger: logger, agents: map[string]entry{}, loaded: make(chan struct{})}, nil
}

// WithAudit makes every Kill and Unkill leave an audit record: who, which
// switch, why. It returns s.
func (s *Switches) WithAudit(a Auditor) *Switches {
	s.audit = a
	return s
}

// Run mirrors the bucket into memory until ctx ends.
func (s *Switches) Run(ctx context.Context) error {
	return s.bus.Watch(ctx, s.kv, s.observe, func() {
		s.mu.Lock()
		s.isLoaded = true
		s.mu.Unlock()
		close(s.loaded)
	})
}

// WaitLoaded blocks until the switches are in memory or ctx ends.
func (s *Switches) WaitLoaded(ctx context.Context) error {
	select {
	case <-s.loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("killswitch: waiting for switches to load: %w", ctx.Err())
	}
}

// Loaded reports whether the switches are in memory.
func (s *Switches) Loaded() bool {
	select {
	case <-s.loaded:
		return true
	default:
		return false
	}
}

func (s *Switches) observe(ctx context.Context, e jetstream.KeyValueEntry) {
	t, ok := targetOf(e.Key())
	if !ok {
		s.logger.WarnContext(ctx, "skipping kill switch with an unknown key", "key", e.Key())
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		s.record(t, entry{rev: e.Revision()})
		return
	}
	var v value
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		// An unreadable switch still stops its target: a kill must not be
		// lost to a decoding problem.
		s.logger.WarnContext(ctx, "kill switch value unreadable; treating it as on", "key", e.Key(), "revision", e.Revision(), "err", err)
		v = value{Reason: "unreadable kill switch record", By: "unknown", At: e.Created().UTC()}
	}
	s.record(t, entry{rev: e.Revision(), sw: &Switch{Target: t, Reason: v.Reason, By: v.By, At: v.At}})
}

// record stores e for t if it is newer than what is known.
func (s *Switches) record(t Target, e entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.All {
		if s.all.rev < e.rev {
			s.all = e
		}
		return
	}
	if cur, ok := s.agents[t.Agent]; !ok || cur.rev < e.rev {
		s.agents[t.Agent] = e
	}
}

// forget turns t off as of rev, the revision that was deleted: the delete
// marker, one revision later, arrives through the watch. Anything this
// replica has already seen after rev is kept.
func (s *Switches) forget(t Target, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.All {
		if s.all.rev <= rev {
			s.all = entry{rev: rev}
		}
		return
	}
	if cur := s.agents[t.Agent]; cur.rev <= rev {
		s.agents[t.Agent] = entry{rev: rev}
	}
}

// Killed reports whether agent is stopped, and by which switch: the global
// one wins over the agent's own. It is on every call's path: a read lock and
// a map lookup, no allocation. Until the bucket has been read it answers
// that everything is stopped.
func (s *Switches) Killed(agent string) (Switch, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.isLoaded {
		return loading, true
	}
	if s.all.sw != nil {
		return *s.all.sw, true
	}
	if e := s.agents[agent]; e.sw != nil {
		return *e.sw, true
	}
	return Switch{}, false
}

// Kill turns a switch on, or updates the reason of one that is on; by says
// who (By when empty). It is effective on this replica when Kill returns
// and on the others as soon as their watch delivers it. The audit record
// follows the switch: a kill is never held back by the audit.
func (s *Switches) Kill(ctx context.Context, t Target, reason, by string) (Switch, error) {
	key, err := t.key()
	if err != nil {
		return Switch{}, err
	}
	sw := Switch{Target: t, Reason: reason, By: cmp.Or(by, By), At: time.Now().UTC()}
	data, err := json.Marshal(value{Reason: sw.Reason, By: sw.By, At: sw.At})
	if err != nil {
		return Switch{}, fmt.Errorf("killswitch: encode %s: %w", t, err)
	}
	rev, err := s.kv.Put(ctx, key, data)
	if err != nil {
		return Switch{}, fmt.Errorf("killswitch: kill %s: %w", t, err)
	}
	s.record(t, entry{rev: rev, sw: &sw})
	s.note(ctx, "killswitch.kill", t, reason, sw.By, nil)
	return sw, nil
}

// maxUnkillAttempts bounds how often Unkill looks again when the switch
// changes between its read and its delete.
const maxUnkillAttempts = 5

// Unkill turns a switch off, for reason, by whom (By when empty). It
// fails with ErrNotKilled if it was not on.
func (s *Switches) Unkill(ctx context.Context, t Target, reason, by string) error {
	key, err := t.key()
	if err != nil {
		return err
	}
	for range maxUnkillAttempts {
		cur, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("kill switch for %s: %w", t, ErrNotKilled)
		}
		if err != nil {
			return fmt.Errorf("killswitch: read %s: %w", t, err)
		}
		// Guarded by the revision just read, so that of two concurrent
		// unkills exactly one succeeds and the other says it was not on.
		err = s.kv.Delete(ctx, key, jetstream.LastRevision(cur.Revision()))
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // changed meanwhile: look again
		}
		if err != nil {
			return fmt.Errorf("killswitch: unkill %s: %w", t, err)
		}
		s.forget(t, cur.Revision())
		var was *value
		if v := (value{}); json.Unmarshal(cur.Value(), &v) == nil {
			was = &v
		}
		s.note(ctx, "killswitch.unkill", t, reason, cmp.Or(by, By), was)
		return nil
	}
	return fmt.Errorf("killswitch: unkill %s: it kept changing during %d attempts", t, maxUnkillAttempts)
}

// note records a kill or an unkill in the audit: kind killswitch, the
// agent it concerns (none for the global switch), who, and why; an unkill
// also says what the switch it turned off had said. A record that cannot
// be stored is logged: the switch has changed already.
func (s *Switches) note(ctx context.Context, event string, t Target, reason, by string, was *value) {
	if s.audit == nil {
		return
	}
	scope := "agent"
	if t.All {
		scope = "all"
	}
	d := map[string]any{"scope": scope, "by": by}
	if t.Agent != "" {
		d["agent"] = t.Agent
	}
	if was != nil {
		d["was"] = map[string]any{"reason": was.Reason, "by": was.By, "at": was.At}
	}
	detail, _ := json.Marshal(d)
	rec := &audit.Record{Time: time.Now().UTC(), Kind: "killswitch", Agent: t.Agent, Target: t.String(), Edge: "api",
		Event: event, Status: "ok", Reason: reason, Detail: detail}
	if _, err := s.audit.Append(context.WithoutCancel(ctx), rec); err != nil {
		s.logger.ErrorContext(ctx, "audit record of a kill switch lost", "event", event, "target", t.String(), "by", by, "err", err)
	}
}

// List returns the switches that are on: the global one first, then the
// agents' by name.
func (s *Switches) List() []Switch {
	s.mu.RLock()
	out := make([]Switch, 0, len(s.agents)+1)
	for _, e := range s.agents {
		if e.sw != nil {
			out = append(out, *e.sw)
		}
	}
	all := s.all.sw
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Switch) int { return strings.Compare(a.Agent, b.Agent) })
	if all != nil {
		out = slices.Insert(out, 0, *all)
	}
	return out
}
