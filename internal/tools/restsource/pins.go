package restsource

import (
	"bytes"
	"context"
	"encoding/json"
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

// Get returns the pin of source.
func (p *ObjectPins) Get(ctx context.Context, source string) (Pin, bool, error) {
	res, err := p.store.GetBytes(ctx, source)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return Pin{}, false, nil
	}
	if err != nil {
		return Pin{}, false, err
	}
	info, err := p.store.GetInfo(ctx, source)
	if err != nil {
		return Pin{}, false, err
	}
	rev, err := strconv.ParseUint(info.Metadata["revision"], 10, 64)
	if err != nil {
		return Pin{}, false, fmt.Errorf("pin of %s has no revision", source)
	}
	pin := Pin{Doc: res, Revision: rev, From: info.Metadata["from"]}
	if t := info.Metadata["targets"]; t != "" {
		if err := json.Unmarshal([]byte(t), &pin.Targets); err != nil {
			return Pin{}, false, fmt.Errorf("pin of %s: targets: %w", source, err)
		}
	}
	return pin, true, nil
}

// Put pins a document for source.
func (p *ObjectPins) Put(ctx context.Context, source string, pin Pin) error {
	meta := map[string]string{"revision": strconv.FormatUint(pin.Revision, 10), "from": pin.From}
	if len(pin.Targets) > 0 {
		t, err := json.Marshal(pin.Targets)
		if err != nil {
			return fmt.Errorf("pin of %s: targets: %w", source, err)
		}
		meta["targets"] = string(t)
	}
	_, err := p.store.Put(ctx, jetstream.ObjectMeta{Name: source, Metadata: meta}, bytes.NewReader(pin.Doc))
	return err
}
