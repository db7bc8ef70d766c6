package a2a

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket holds what A2A adds to a corral task: its context id and its
// push notification configs, one key per task.
const Bucket = "corral_a2a"

// DefaultMaxAge is how long a task's record is kept after it last changed
// (its first message, a push config set, an update delivered) when
// StoreOptions say nothing.
const DefaultMaxAge = 30 * 24 * time.Hour

// StoreOptions configure the store.
type StoreOptions struct {
	// MaxAge is how long a task's record is kept after it last changed;
	// 0 means DefaultMaxAge. OpenStore applies it to an existing bucket
	// too: records younger than it stay. A task whose record has gone
	// answers with its own id as its context and sends no more push
	// notifications.
	MaxAge time.Duration
}

// record is what A2A keeps of one task.
type record struct {
	ContextID string                       `json:"context_id,omitempty"`
	Push      []TaskPushNotificationConfig `json:"push,omitempty"`
	// Delivered is the last journal sequence whose updates went out to
	// the push configs: a restarted replica goes on after it.
	Delivered uint64 `json:"delivered,omitempty"`
	// Finished: the task's end was delivered; nothing more will be.
	Finished bool `json:"finished,omitempty"`
}

// maxPushConfigs bounds the webhooks of one task.
const maxPushConfigs = 10

// KeyValuer opens KV buckets (bus.Bus).
type KeyValuer interface {
	KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
}

// Store keeps the A2A records of tasks in a KV bucket shared by replicas.
type Store struct{ kv jetstream.KeyValue }

// OpenStore opens (creating) the bucket, with the retention of opts.
func OpenStore(ctx context.Context, b KeyValuer, opts StoreOptions) (*Store, error) {
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, Description: "A2A context ids and push notification configs of corral tasks",
		TTL: opts.MaxAge})
	if err != nil {
		return nil, fmt.Errorf("a2a: %w", err)
	}
	return &Store{kv: kv}, nil
}

// get returns a task's record and its revision (0: none yet).
func (s *Store) get(ctx context.Context, task string) (record, uint64, error) {
	e, err := s.kv.Get(ctx, task)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return record{}, 0, nil
	}
	if err != nil {
		return record{}, 0, err
	}
	var r record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return record{}, 0, fmt.Errorf("a2a: record of %s: %w", task, err)
	}
	return r, e.Revision(), nil
}

// update changes a task's record under its revision, retrying a lost race.
func (s *Store) update(ctx context.Context, task string, fn func(*record) error) (record, error) {
	for range 5 {
		r, rev, err := s.get(ctx, task)
		if err != nil {
			return record{}, err
		}
		if err := fn(&r); err != nil {
			return record{}, err
		}
		b, _ := json.Marshal(r)
		if rev == 0 {
			_, err = s.kv.Create(ctx, task, b)
		} else {
			_, err = s.kv.Update(ctx, task, b, rev)
		}
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return record{}, err
		}
	}
	return record{}, fmt.Errorf("a2a: record of %s: too many concurrent writers", task)
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// keys lists the tasks that have records.
func (s *Store) keys(ctx context.Context) ([]string, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for k := range lister.Keys() {
		out = append(out, k)
	}
	return out, nil
}
