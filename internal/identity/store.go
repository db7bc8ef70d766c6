// Package identity holds who may talk to corral: the admin token, created on
// first start and written to the data directory for the operator, and agent
// API keys, created on request and shown once. The substrate stores only
// their SHA-256 hashes, so every replica accepts every credential and none
// can reveal one; each replica mirrors the hashes in memory, so checking a
// credential costs no round trip, and a revocation reaches every replica as
// fast as the watch does.
package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket holds credential records, keyed "<kind>.<sha256 hex of the secret>".
const Bucket = "corral_identity"

// The kinds of credential, as the first part of their bucket keys.
const (
	kindAdmin = "admin"
	kindAgent = "agent"
)

// substrate is what the Store needs from the bus.
type substrate interface {
	KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
	Watch(ctx context.Context, kv jetstream.KeyValue, apply func(context.Context, jetstream.KeyValueEntry), loaded func()) error
}

// record is what the bucket keeps about one credential.
type record struct {
	Kind  string `json:"kind"`
	Agent string `json:"agent,omitempty"`
	// AgentUID is the metadata.uid of the Agent the key was made for.
	AgentUID string    `json:"agent_uid,omitempty"`
	Created  time.Time `json:"created"`
	// Name says what an admin token is for; the one in the data directory
	// is "admin.token".
	Name string `json:"name,omitempty"`
	// Expires ends an admin token's life; nil lives until revoked.
	Expires *time.Time `json:"expires,omitempty"`
	// Revoked marks a revoked admin token. The record stays, so that the
	// token file a start finds is not registered again.
	Revoked bool `json:"revoked,omitempty"`
	// Groups and SlackUser describe a human (humans.go).
	Groups    []string `json:"groups,omitempty"`
	SlackUser string   `json:"slack_user,omitempty"`
}

// Store verifies and manages credentials.
type Store struct {
	kv     jetstream.KeyValue
	bus    substrate
	logger *slog.Logger

	mu      sync.RWMutex
	records map[string]record // by bucket key; revoked ones removed
	loaded  chan struct{}
}

// Open creates or updates the identity bucket. Call Run to mirror it.
func Open(ctx context.Context, logger *slog.Logger, s substrate) (*Store, error) {
	kv, err := s.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "corral credential hashes",
	})
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return &Store{kv: kv, bus: s, logger: logger, records: map[string]record{}, loaded: make(chan struct{})}, nil
}

// Run mirrors the credential records into memory until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	return s.bus.Watch(ctx, s.kv, s.observe, func() { close(s.loaded) })
}

func (s *Store) observe(ctx context.Context, e jetstream.KeyValueEntry) {
	if strings.HasPrefix(e.Key(), kindHuman+"name.") {
		return // a human's name claim, not a credential
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.records, e.Key())
		return
	}
	var r record
	if err := json.Unmarshal(e.Value(), &r); err != nil || !strings.HasPrefix(e.Key(), r.Kind+".") {
		s.logger.WarnContext(ctx, "skipping unreadable credential record", "key", e.Key())
		return
	}
	s.records[e.Key()] = r
}

// WaitLoaded blocks until the records are in memory or ctx ends.
func (s *Store) WaitLoaded(ctx context.Context) error {
	select {
	case <-s.loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("identity: waiting for credentials to load: %w", ctx.Err())
	}
}

// lookup returns the record of a secret of the given kind.
func (s *Store) lookup(kind, secret string) (record, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.records[bucketKey(kind, secret)]
	return r, ok
}

// bucketKey is where a secret's record lives: looking a secret up by its
// hash means no comparison of secrets, and so no timing to leak.
func bucketKey(kind, secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return kind + "." + hex.EncodeToString(sum[:])
}
