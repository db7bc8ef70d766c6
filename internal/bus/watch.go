package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Watch mirrors a key-value bucket into apply until ctx ends: first every
// current entry (delete markers included), then every change. loaded is
// called once, after the current entries have first been delivered.
//
// The watch starts over, replaying the bucket, after an error and at every
// reconnect, so a replica that was cut off catches up at once instead of
// waiting for the watch to notice. apply must therefore accept entries it has
// seen before, in revision order per key.
func (b *Bus) Watch(ctx context.Context, kv jetstream.KeyValue, apply func(context.Context, jetstream.KeyValueEntry), loaded func()) error {
	var once sync.Once
	markLoaded := func() { once.Do(loaded) }
	for {
		reconnected := b.reconnects()
		err := watchOnce(ctx, kv, apply, markLoaded, reconnected)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			b.logger.InfoContext(ctx, "replaying bucket after reconnect", "bucket", kv.Bucket())
			continue
		}
		b.logger.WarnContext(ctx, "bucket watch ended; restarting", "bucket", kv.Bucket(), "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// watchOnce runs one watch until ctx ends (nil), the connection reconnects
// (nil), or the watch fails (an error).
func watchOnce(ctx context.Context, kv jetstream.KeyValue, apply func(context.Context, jetstream.KeyValueEntry), loaded func(), reconnected <-chan struct{}) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", kv.Bucket(), err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e == nil { // all current entries delivered
				loaded()
				continue
			}
			apply(ctx, e)
		}
	}
}
