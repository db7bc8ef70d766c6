package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ObjectStore creates an object store, or opens it, with the bus's replica
// count and file storage; for payloads larger than a message (documents,
// transcripts). Like KeyValue it never lowers an existing store's replicas.
func (b *Bus) ObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	existing, err := b.js.ObjectStore(ctx, cfg.Bucket)
	switch {
	case err == nil:
		status, err := existing.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("bus: object store %s: %w", cfg.Bucket, err)
		}
		if have := status.Replicas(); have > b.replicas {
			return nil, fmt.Errorf("bus: object store %s has %d replicas but --replicas is %d: start corral with --replicas %d (corral never reduces replication itself)",
				cfg.Bucket, have, b.replicas, have)
		}
		if status.Replicas() == b.replicas {
			return existing, nil
		}
	case !errors.Is(err, jetstream.ErrBucketNotFound):
		return nil, fmt.Errorf("bus: object store %s: %w", cfg.Bucket, err)
	}
	cfg.Replicas = b.replicas
	cfg.Storage = jetstream.FileStorage
	s, err := b.js.CreateOrUpdateObjectStore(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: object store %s: %w", cfg.Bucket, err)
	}
	return s, nil
}
