package console

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// substrate is what the console's store needs from the bus.
type substrate interface {
	KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
}

// Store is where the console keeps what every replica must share: the
// sessions (SessionBucket), the count of failed sign-ins (SignInBucket)
// and the sign-ins under way at an identity provider (FlowBucket).
type Store struct {
	sessions jetstream.KeyValue
	signIns  jetstream.KeyValue
	flows    jetstream.KeyValue
}

// OpenStore creates or updates the console's buckets.
func OpenStore(ctx context.Context, s substrate) (*Store, error) {
	sessions, err := s.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      SessionBucket,
		Description: "corral console sessions, keyed by the SHA-256 of the session token",
		TTL:         maxTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	signIns, err := s.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      SignInBucket,
		Description: "corral console failed sign-ins, per source address and per claimed name",
		TTL:         signInWindow,
		MaxBytes:    maxSignInBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	flows, err := s.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      FlowBucket,
		Description: "corral console sign-ins under way at an identity provider, keyed by the SHA-256 of their state",
		TTL:         oidcFlowTTL,
		MaxBytes:    maxFlowBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	return &Store{sessions: sessions, signIns: signIns, flows: flows}, nil
}
