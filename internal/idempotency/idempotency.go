// Package idempotency records the outcome of calls made with an
// Idempotency-Key, so that a retried call returns the recorded answer instead
// of acting twice. Records live in a JetStream key-value bucket shared by
// every replica and expire after a day.
package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket holds the records, keyed by a digest of agent, tool and key.
const Bucket = "corral_idempotency"

// TTL is how long a record is kept: retries come within minutes, and a day
// covers a client that retries after an outage.
const TTL = 24 * time.Hour

// MaxKey bounds an Idempotency-Key's length.
const MaxKey = 255

// MaxResult bounds a recorded result: records are single messages, and
// NATS refuses messages over its max_payload (1 MiB by default).
const MaxResult = 512 << 10

// Errors callers branch on.
var (
	// ErrConflict: the key was used before with other arguments.
	ErrConflict = errors.New("idempotency key reused with other arguments")
	// ErrInProgress: a call with this key is running now.
	ErrInProgress = errors.New("a call with this idempotency key is in progress")
)

// Record is what a finished call left.
type Record struct {
	// Digest identifies the arguments the key was first used with.
	Digest string `json:"digest"`
	// Done is false while the first call runs.
	Done bool `json:"done"`
	// Claimed is when the running call started; a claim older than its
	// lease is abandoned (its replica died) and may be taken over.
	Claimed time.Time `json:"claimed"`
	// Result is the recorded answer, as the caller stored it.
	Result json.RawMessage `json:"result,omitempty"`
	// AuditID is the audit record of the call that produced Result.
	AuditID string `json:"audit_id,omitempty"`
	// TooLarge: the call was made but its answer was over MaxResult, so
	// it cannot be replayed.
	TooLarge bool `json:"too_large,omitempty"`
}

// Claim is the right to run a call; Finish or Abandon it.
type Claim struct {
	key    string
	rev    uint64
	digest string
}

// substrate is what the store needs from the bus.
type substrate interface {
	KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
}

// Store keeps idempotency records.
type Store struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// Open creates or updates the bucket.
func Open(ctx context.Context, s substrate) (*Store, error) {
	kv, err := s.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "corral idempotency records, keyed by a digest of agent, tool and Idempotency-Key",
		TTL:         TTL,
	})
	if err != nil {
		return nil, fmt.Errorf("idempotency: %w", err)
	}
	return &Store{kv: kv, now: time.Now}, nil
}

// Key derives the bucket key for one key used by one agent on one tool:
// the same key from two agents, or for two tools, are different calls.
func Key(agent, tool, key string) string {
	sum := sha256.Sum256([]byte(agent + "\x00" + tool + "\x00" + key))
	return hex.EncodeToString(sum[:])
}

// Begin looks the key up. It returns the finished record when there is one
// for the same digest (replay it), a claim when the caller should run the
// call, ErrConflict when the key was used with other arguments, and
// ErrInProgress while another call with it runs and its lease holds.
func (s *Store) Begin(ctx context.Context, key, digest string, lease time.Duration) (*Record, *Claim, error) {
	for range 3 { // a lost race re-reads; three losses in a row is contention worth reporting
		pending, _ := json.Marshal(Record{Digest: digest, Claimed: s.now().UTC()})
		rev, err := s.kv.Create(ctx, key, pending)
		if err == nil {
			return nil, &Claim{key: key, rev: rev, digest: digest}, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, nil, fmt.Errorf("idempotency: claim: %w", err)
		}
		e, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // finished and expired, or abandoned, in between
		}
		if err != nil {
			return nil, nil, fmt.Errorf("idempotency: read: %w", err)
		}
		var r Record
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			return nil, nil, fmt.Errorf("idempotency: unreadable record: %w", err)
		}
		switch {
		case r.Digest != digest:
			return nil, nil, ErrConflict
		case r.Done:
			return &r, nil, nil
		case s.now().Sub(r.Claimed) < lease:
			return nil, nil, ErrInProgress
		}
		// The claim outlived its lease: its holder died. Take it over.
		rev, err = s.kv.Update(ctx, key, pending, e.Revision())
		if err == nil {
			return nil, &Claim{key: key, rev: rev, digest: digest}, nil
		}
	}
	return nil, nil, ErrInProgress
}

// Finish records the call's result under the claim. A nil or oversized
// result records that the call was made without its answer.
func (s *Store) Finish(ctx context.Context, c *Claim, result json.RawMessage, auditID string) error {
	tooLarge := result == nil || len(result) > MaxResult
	if tooLarge {
		result = nil
	}
	done, err := json.Marshal(Record{Digest: c.digest, Done: true, Claimed: s.now().UTC(), Result: result, AuditID: auditID, TooLarge: tooLarge})
	if err != nil {
		return fmt.Errorf("idempotency: %w", err)
	}
	if _, err := s.kv.Update(ctx, c.key, done, c.rev); err != nil {
		return fmt.Errorf("idempotency: record result: %w", err)
	}
	return nil
}

// Abandon gives the claim up without a result (the call did not reach the
// tool), so that a retry runs it.
func (s *Store) Abandon(ctx context.Context, c *Claim) error {
	if err := s.kv.Delete(ctx, c.key, jetstream.LastRevision(c.rev)); err != nil {
		return fmt.Errorf("idempotency: abandon: %w", err)
	}
	return nil
}
