package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream creates a stream, or updates its configuration to cfg, with the
// bus's replica count and file storage. Like KeyValue, it is safe to call at
// every start and from several replicas at once, and it never lowers the
// replica count of an existing stream: a replica started with a smaller
// --replicas than the stream has is refused instead.
func (b *Bus) Stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	existing, err := b.js.Stream(ctx, cfg.Name)
	switch {
	case err == nil:
		if have := existing.CachedInfo().Config.Replicas; have > b.replicas {
			return nil, fmt.Errorf("bus: stream %s has %d replicas but --replicas is %d: start corral with --replicas %d (corral never reduces replication itself)",
				cfg.Name, have, b.replicas, have)
		}
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("bus: stream %s: %w", cfg.Name, err)
	}
	cfg.Replicas = b.replicas
	cfg.Storage = jetstream.FileStorage
	// The caller states the whole configuration, so updating an existing
	// stream to it is idempotent; the server fills in the same defaults.
	s, err := b.js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: stream %s: %w", cfg.Name, err)
	}
	return s, nil
}
