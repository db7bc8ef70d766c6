package restsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// PinBucket is the object store holding pinned documents, one object per
// tool source, with the ToolSource revision it was pinned for.
const PinBucket = "corral_toolpins"

// ObjectPins keeps pins in a JetStream object store shared by every replica.
type ObjectPins struct {
	store jetstream.ObjectStore
}

var _ Pins = (*ObjectPins)(nil)

// objectStores is what OpenPins needs from the bus.
type objectStores interface {
	ObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error)
}

// OpenPins creates or opens the pin store.
func OpenPins(ctx context.Context, b objectStores) (*ObjectPins, error) {
	store, err := b.ObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      PinBucket,
		Description: "OpenAPI documents in force per tool source, pinned until their ToolSource changes",
	})
	if err != nil {
		return nil, fmt.Errorf("restsource: pins: %w", err)
	}
	return &ObjectPins{store: store}, nil
}

// Get returns the pinned document of source and the revision it was pinned for.
func (p *ObjectPins) Get(ctx context.Context, source string) ([]byte, uint64, bool, error) {
	res, err := p.store.GetBytes(ctx, source)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	info, err := p.store.GetInfo(ctx, source)
	if err != nil {
		return nil, 0, false, err
	}
	rev, err := strconv.ParseUint(info.Metadata["revision"], 10, 64)
	if err != nil {
		return nil, 0, false, fmt.Errorf("pin of %s has no revision", source)
	}
	return res, rev, true, nil
}

// Put pins doc for source at revision.
func (p *ObjectPins) Put(ctx context.Context, source string, revision uint64, doc []byte) error {
	_, err := p.store.Put(ctx, jetstream.ObjectMeta{
		Name:     source,
		Metadata: map[string]string{"revision": strconv.FormatUint(revision, 10)},
	}, bytes.NewReader(doc))
	return err
}
