package a2a

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/bus/bustest"
)

// TestStoreRetention: the records' bucket keeps them MaxAge after they last
// changed (DefaultMaxAge unless set); a bucket made before it had one (no
// max age) gets it at the next start, and keeps the records it holds.
func TestStoreRetention(t *testing.T) {
	b := bustest.Open(t)
	ctx := t.Context()
	// The bucket as an older corral made it: no retention.
	if _, err := b.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, Description: "A2A context ids and push notification configs of corral tasks"}); err != nil {
		t.Fatal(err)
	}
	old, err := OpenStore(ctx, b, StoreOptions{MaxAge: 0})
	if err != nil {
		t.Fatal(err)
	}
	maxAge := func() time.Duration {
		t.Helper()
		s, err := b.JetStream().Stream(ctx, "KV_"+Bucket)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config.MaxAge
	}
	if got := maxAge(); got != DefaultMaxAge {
		t.Errorf("max age of the bucket an older corral made = %v after OpenStore, want the default %v", got, DefaultMaxAge)
	}
	if _, err := old.update(ctx, "task_1", func(r *record) error { r.ContextID = "ctx-7"; return nil }); err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(ctx, b, StoreOptions{MaxAge: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := maxAge(); got != 48*time.Hour {
		t.Errorf("max age after OpenStore(48h) = %v, want 48h", got)
	}
	if r, _, err := s.get(ctx, "task_1"); err != nil || r.ContextID != "ctx-7" {
		t.Errorf("the record stored before = %+v, %v; want it kept", r, err)
	}
}
