// Package registry stores corral's declarative resources in a JetStream
// key-value bucket and keeps a copy in memory on every replica, fed by a watch
// on the bucket, so that a resource applied through any replica is live on all
// of them within a second and reads never touch the network.
package registry

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/config"
)

// Bucket is the key-value bucket that holds every resource, keyed "Kind.name".
const Bucket = "corral_resources"

// MaxApply is the most resources one Apply takes: they are stored as one
// atomic batch.
const MaxApply = bus.MaxUpdates

// history is how many revisions of each resource the bucket keeps.
const history = 10

// Result says what applying one resource did.
type Result string

// The results of Apply, as `corral apply` prints them.
const (
	Created    Result = "created"
	Configured Result = "configured"
	Unchanged  Result = "unchanged"
)

// Applied is the outcome for one resource: what was done and the resource as
// now stored, with its revision.
type Applied struct {
	Resource config.Resource `json:"resource"`
	Result   Result          `json:"result"`
}

// Errors callers branch on, always wrapped with the resource they concern.
var (
	ErrNotFound = errors.New("does not exist")
	// ErrConflict means the stored revision is not the one the caller
	// expected: someone else changed the resource in between.
	ErrConflict = errors.New("resource changed concurrently")
)

// substrate is what the registry needs from the bus.
type substrate interface {
	KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
	Watch(ctx context.Context, kv jetstream.KeyValue, apply func(context.Context, jetstream.KeyValueEntry), loaded func()) error
	Last(ctx context.Context, kv jetstream.KeyValue, key string) (uint64, jetstream.KeyValueEntry, error)
	UpdateAll(ctx context.Context, kv jetstream.KeyValue, updates []bus.Update) ([]uint64, error)
	GetRevision(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64) (jetstream.KeyValueEntry, error)
}

// Registry is the resource store of one replica.
type Registry struct {
	kv     jetstream.KeyValue
	bus    substrate
	logger *slog.Logger

	mu      sync.RWMutex
	entries map[string]entry // by key; deleted resources stay as tombstones
	// prepare is the hook SetPrepare installs; nil for none.
	prepare func(config.Resource) (config.Resource, error)

	loaded  chan struct{} // closed once the initial values are in memory
	changed chan struct{} // closed and replaced at every change; guarded by mu
}

// entry is the newest state of one key this replica knows of. Updates apply
// only if they are newer, so a late watch event never undoes a write this
// replica has already recorded.
type entry struct {
	rev uint64
	res *config.Resource // nil when deleted
}

// Open creates or updates the bucket. Call Run to start mirroring it.
func Open(ctx context.Context, logger *slog.Logger, s substrate) (*Registry, error) {
	kv, err := s.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "corral resources (Agent, ...), keyed Kind.name",
		History:     history,
	})
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return &Registry{
		kv:      kv,
		bus:     s,
		logger:  logger,
		entries: map[string]entry{},
		loaded:  make(chan struct{}),
		changed: make(chan struct{}),
	}, nil
}

// Run mirrors the bucket into memory until ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	return r.bus.Watch(ctx, r.kv, r.observe, func() { close(r.loaded) })
}

// observe records one change seen on the bucket.
func (r *Registry) observe(ctx context.Context, e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		r.record(e.Key(), entry{rev: e.Revision()})
		return
	}
	res, err := decodeEntry(e)
	if err != nil {
		r.logger.WarnContext(ctx, "skipping unreadable resource", "key", e.Key(), "revision", e.Revision(), "err", err)
		return
	}
	r.record(e.Key(), entry{rev: e.Revision(), res: &res})
}

func (r *Registry) record(key string, e entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.entries[key]; ok && cur.rev >= e.rev {
		return
	}
	r.entries[key] = e
	close(r.changed)
	r.changed = make(chan struct{})
}

// Changed returns a channel that is closed at the next change to any
// resource. Watchers take it, read what they need, then wait on it: a change
// between the two is never missed.
func (r *Registry) Changed() <-chan struct{} {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.changed
}

// Loaded reports whether the initial contents of the bucket are in memory.
func (r *Registry) Loaded() bool {
	select {
	case <-r.loaded:
		return true
	default:
		return false
	}
}

// WaitLoaded blocks until the initial contents are in memory or ctx ends.
func (r *Registry) WaitLoaded(ctx context.Context) error {
	select {
	case <-r.loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("registry: waiting for resources to load: %w", ctx.Err())
	}
}

// Get returns one resource from memory.
func (r *Registry) Get(kind, name string) (config.Resource, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.entries[key(kind, name)]
	if e.res == nil {
		return config.Resource{}, false
	}
	return *e.res, true
}

// List returns every resource of a kind from memory, sorted by name.
func (r *Registry) List(kind string) []config.Resource {
	prefix := kind + "."
	r.mu.RLock()
	var out []config.Resource
	for k, e := range r.entries {
		if e.res != nil && strings.HasPrefix(k, prefix) {
			out = append(out, *e.res)
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b config.Resource) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	return out
}

// Count returns how many resources of each kind are in memory.
func (r *Registry) Count() map[string]int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := map[string]int{}
	for _, e := range r.entries {
		if e.res != nil {
			out[e.res.Kind]++
		}
	}
	return out
}

// InvalidError is a resource that the prepare hook (see SetPrepare) refused:
// the caller's mistake, such as a Secret sealed with another key, not the
// server's. Apply stores nothing when it returns one.
type InvalidError struct {
	// Resource is the resource's ID, "Kind/name".
	Resource string
	// Index is the resource's position in the slice given to Apply, from 0.
	Index int
	// Err says what is wrong, in words fit for the client.
	Err error
}

// Error names the resource, then the problem: "Secret/x: spec.sealed: ...".
func (e *InvalidError) Error() string { return e.Resource + ": " + e.Err.Error() }

// Unwrap returns the hook's error, for errors.Is.
func (e *InvalidError) Unwrap() error { return e.Err }

// SetPrepare installs a hook that Apply runs on every resource before it
// compares it with the stored one and stores it: what the hook returns is
// what is stored and returned. The hook must be deterministic (the same input
// gives the same output) or applying a resource twice would never be
// "unchanged". Secrets use it to be sealed before they are stored. An error
// from the hook fails the whole Apply as an *InvalidError. Call it before
// Apply is first used.
func (r *Registry) SetPrepare(prepare func(config.Resource) (config.Resource, error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prepare = prepare
}

// Apply stores resources that have already been validated, all or none: the
// changed ones go to the bucket as one atomic batch, each guarded by the
// revision read just before, so a concurrent writer makes the whole apply
// fail with ErrConflict instead of being overwritten or half-applied. A
// resource that names a revision (metadata.revision) that is no longer
// current is a conflict too. Each resource goes through the prepare hook
// first, if there is one.
func (r *Registry) Apply(ctx context.Context, resources []config.Resource) ([]Applied, error) {
	r.mu.RLock()
	prepare := r.prepare
	r.mu.RUnlock()
	if prepare != nil {
		// All of them before any I/O, into a copy: the caller's slice is
		// left as it was, and a refusal costs no round trip.
		prepared := make([]config.Resource, len(resources))
		for i, res := range resources {
			p, err := prepare(res)
			if err != nil {
				return nil, &InvalidError{Resource: res.ID(), Index: i, Err: err}
			}
			if p.Kind != res.Kind || p.Metadata.Name != res.Metadata.Name {
				return nil, fmt.Errorf("registry: prepare %s: changed the kind or name to %s", res.ID(), p.ID())
			}
			prepared[i] = p
		}
		resources = prepared
	}
	out := make([]Applied, len(resources))
	var (
		updates []bus.Update
		changed []int // index in resources of each update
	)
	for i, res := range resources {
		k := key(res.Kind, res.Metadata.Name)
		last, cur, err := r.bus.Last(ctx, r.kv, k)
		if err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
		var stored *config.Resource
		if cur != nil {
			s, err := decodeEntry(cur)
			if err != nil {
				return nil, fmt.Errorf("registry: stored %s: %w", res.ID(), err)
			}
			stored = &s
		}
		if want := res.Metadata.Revision; want != 0 && (stored == nil || stored.Metadata.Revision != want) {
			var have uint64
			if stored != nil {
				have = stored.Metadata.Revision
			}
			return nil, fmt.Errorf("%s: metadata.revision is %d but the stored revision is %d: %w", res.ID(), want, have, ErrConflict)
		}
		// The uid is the server's: kept from the stored resource, new for
		// a resource created (or created again after a delete).
		if stored != nil {
			res.Metadata.UID = stored.Metadata.UID
		} else {
			res.Metadata.UID = rand.Text()
		}
		switch {
		case stored != nil && stored.SameContent(res):
			out[i] = Applied{Resource: *stored, Result: Unchanged}
			continue
		case stored != nil:
			out[i].Result = Configured
		default:
			out[i].Result = Created
		}
		value, err := encode(res)
		if err != nil {
			return nil, fmt.Errorf("registry: encode %s: %w", res.ID(), err)
		}
		updates = append(updates, bus.Update{Key: k, Value: value, Revision: last})
		changed = append(changed, i)
	}

	revs, err := r.bus.UpdateAll(ctx, r.kv, updates)
	if errors.Is(err, bus.ErrWrongRevision) {
		return nil, fmt.Errorf("another writer changed one of the resources meanwhile; nothing was stored: %w", ErrConflict)
	}
	if err != nil {
		return nil, fmt.Errorf("registry: store: %w", err)
	}
	// Read each back: its timestamp, set by JetStream, is the one every
	// replica and every restart will report as metadata.updated. From the
	// leader: a follower may not have applied the write yet.
	for j, i := range changed {
		e, err := r.bus.GetRevision(ctx, r.kv, updates[j].Key, revs[j])
		if err != nil {
			return nil, fmt.Errorf("registry: read back %s: %w", resources[i].ID(), err)
		}
		stored, err := decodeEntry(e)
		if err != nil {
			return nil, fmt.Errorf("registry: read back %s: %w", resources[i].ID(), err)
		}
		r.record(updates[j].Key, entry{rev: revs[j], res: &stored})
		out[i].Resource = stored
	}
	return out, nil
}

// Delete removes a resource. It fails with ErrNotFound if there is none.
func (r *Registry) Delete(ctx context.Context, kind, name string) error {
	k := key(kind, name)
	id := kind + "/" + name
	_, cur, err := r.bus.Last(ctx, r.kv, k) // from the leader, like Apply
	if err != nil {
		return fmt.Errorf("registry: read %s: %w", id, err)
	}
	if cur == nil {
		return fmt.Errorf("%s %w", id, ErrNotFound)
	}
	if err := r.kv.Delete(ctx, k, jetstream.LastRevision(cur.Revision())); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%s: %w", id, ErrConflict)
		}
		return fmt.Errorf("registry: delete %s: %w", id, err)
	}
	// The delete marker's revision is newer than cur's; the watch brings it.
	// Until then, a tombstone at cur's revision hides the resource here.
	r.mu.Lock()
	if e := r.entries[k]; e.rev <= cur.Revision() {
		r.entries[k] = entry{rev: cur.Revision()}
	}
	r.mu.Unlock()
	return nil
}

func key(kind, name string) string { return kind + "." + name }

// encode is the stored form: the resource without the server-set fields,
// which come from the bucket entry instead.
func encode(res config.Resource) ([]byte, error) {
	res.Metadata.Revision = 0
	res.Metadata.Updated = time.Time{}
	return json.Marshal(res)
}

func decodeEntry(e jetstream.KeyValueEntry) (config.Resource, error) {
	var res config.Resource
	if err := json.Unmarshal(e.Value(), &res); err != nil {
		return config.Resource{}, err
	}
	if key(res.Kind, res.Metadata.Name) != e.Key() {
		return config.Resource{}, fmt.Errorf("stored resource %s does not match its key", res.ID())
	}
	res.Metadata.Revision = e.Revision()
	res.Metadata.Updated = e.Created().UTC()
	return res, nil
}
