package budget

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
)

// unansweredKV fails its first `fails` Gets the way a read sent to a
// replica that died does (the request times out), and counts the Gets that
// had no deadline of their own.
type unansweredKV struct {
	jetstream.KeyValue
	fails      int
	gets       int
	noDeadline int
}

func (k *unansweredKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	k.gets++
	if _, ok := ctx.Deadline(); !ok {
		k.noDeadline++
	}
	if k.gets <= k.fails {
		return nil, nats.ErrTimeout
	}
	return k.KeyValue.Get(ctx, key)
}

// TestCounterReadRetries: a counter read that the substrate does not answer
// is bounded by its own short timeout and tried again, rather than holding
// the call for the client's 5 s default and failing it (issue 20.5).
func TestCounterReadRetries(t *testing.T) {
	ctx := t.Context()
	b, err := Open(ctx, slog.New(slog.DiscardHandler), bustest.Open(t), newFakeResources(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.kv.Put(ctx, "b.total", []byte(`{"calls": 3}`)); err != nil {
		t.Fatal(err)
	}
	fake := &unansweredKV{KeyValue: b.kv, fails: readAttempts - 1}
	b.kv = fake
	e, err := b.get(ctx, "b.total")
	if err != nil || string(e.Value()) != `{"calls": 3}` {
		t.Fatalf("get after %d unanswered reads = %v, %v; want the counter", fake.fails, e, err)
	}
	if fake.noDeadline > 0 {
		t.Errorf("%d of %d reads had no deadline of their own", fake.noDeadline, fake.gets)
	}

	fake.gets, fake.fails = 0, readAttempts
	if _, err := b.get(ctx, "b.total"); err == nil || fake.gets != readAttempts {
		t.Errorf("get with the substrate never answering = %v after %d reads, want an error after %d", err, fake.gets, readAttempts)
	}
}

// unackedKV stores writes but answers the first `drop` of them as timed out,
// the way a write does when the leader stores it and dies before the
// acknowledgement reaches corral.
type unackedKV struct {
	jetstream.KeyValue
	drop int
}

func (k *unackedKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := k.KeyValue.Create(ctx, key, value, opts...)
	return k.ack(rev, err)
}

func (k *unackedKV) Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error) {
	rev, err := k.KeyValue.Update(ctx, key, value, last)
	return k.ack(rev, err)
}

func (k *unackedKV) ack(rev uint64, err error) (uint64, error) {
	if err == nil && k.drop > 0 {
		k.drop--
		return 0, nats.ErrTimeout
	}
	return rev, err
}

// TestUnacknowledgedWriteCountsOnce: a counter write that was stored but
// not acknowledged is found by a read from the leader and counts as done:
// the call is neither refused after being counted nor counted twice. At
// d7dc022 the update failed (the call was refused) with the call counted.
func TestUnacknowledgedWriteCountsOnce(t *testing.T) {
	ctx := t.Context()
	b, err := Open(ctx, slog.New(slog.DiscardHandler), bustest.Open(t), newFakeResources(), nil)
	if err != nil {
		t.Fatal(err)
	}
	kv := b.kv
	b.kv = &unackedKV{KeyValue: kv, drop: 2}
	for range 2 { // a Create, then an Update
		if err := b.update(ctx, "b.total", func(cur Usage, _ bool) (Usage, bool, error) {
			return add(cur, Usage{Calls: 1}), true, nil
		}); err != nil {
			t.Fatalf("update with an unacknowledged write: %v", err)
		}
	}
	e, err := kv.Get(ctx, "b.total")
	if err != nil {
		t.Fatal(err)
	}
	if got := usageOf(t, e.Value()); got != (Usage{Calls: 2}) {
		t.Errorf("counter after two calls whose writes were not acknowledged = %s, want calls 2", e.Value())
	}
}

func usageOf(t *testing.T, data []byte) Usage {
	t.Helper()
	var u Usage
	if err := json.Unmarshal(data, &u); err != nil {
		t.Fatalf("counter %s: %v", data, err)
	}
	return u
}

// rivalKV loses the first Update to another replica that writes the same
// usage (the same call count from the same start), and answers it as timed
// out, the way a write does when the leader changes under it.
type rivalKV struct {
	jetstream.KeyValue
	raced bool
}

func (k *rivalKV) Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error) {
	if !k.raced {
		k.raced = true
		var u Usage
		if err := json.Unmarshal(value, &u); err != nil {
			return 0, err
		}
		rival, _ := json.Marshal(u) // the same usage, written by someone else
		if _, err := k.KeyValue.Update(ctx, key, rival, last); err != nil {
			return 0, err
		}
		return 0, nats.ErrTimeout
	}
	return k.KeyValue.Update(ctx, key, value, last)
}

// TestLostWriteIsNotMistakenForOurs: a write that was not stored, while
// another writer stored the same usage, is not taken as done: the call is
// refused as the substrate's failure, and the counter holds the rival's
// call only. Comparing values alone (as the first fix for issue 20.5 did)
// admitted the call uncounted.
func TestLostWriteIsNotMistakenForOurs(t *testing.T) {
	ctx := t.Context()
	b, err := Open(ctx, slog.New(slog.DiscardHandler), bustest.Open(t), newFakeResources(), nil)
	if err != nil {
		t.Fatal(err)
	}
	kv := b.kv
	inc := func(cur Usage, _ bool) (Usage, bool, error) { return add(cur, Usage{Calls: 1}), true, nil }
	if err := b.update(ctx, "b.total", inc); err != nil {
		t.Fatal(err)
	}
	b.kv = &rivalKV{KeyValue: kv}
	if err := b.update(ctx, "b.total", inc); !bus.Unavailable(err) {
		t.Fatalf("update that lost to a rival unacknowledged: %v, want the substrate's failure", err)
	}
	e, err := kv.Get(ctx, "b.total")
	if err != nil {
		t.Fatal(err)
	}
	if got := usageOf(t, e.Value()); got != (Usage{Calls: 2}) {
		t.Errorf("counter = %s, want calls 2 (one before and the rival's)", e.Value())
	}
}
