package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// MaxUpdates is the most writes one UpdateAll takes: the server's default
// limit on an atomic batch.
const MaxUpdates = 1000

// ErrWrongRevision means a key no longer had the revision an update expected:
// someone else wrote it in between. Nothing of that UpdateAll was stored.
var ErrWrongRevision = errors.New("wrong revision")

// Update is one write of an atomic UpdateAll.
type Update struct {
	Key   string
	Value []byte
	// Revision is the key's last revision, its delete marker included, as
	// Last returns it; 0 if the key has never been written.
	Revision uint64
}

// Last returns a key's last revision, counting a deletion as a revision, and
// its live entry (nil when the key is deleted or has never existed).
// kv.Get cannot tell this: it hides delete markers. It reads from the
// stream's leader: a revision guard read from a lagging follower would be
// stale, and the write it guards refused as a conflict.
func (b *Bus) Last(ctx context.Context, kv jetstream.KeyValue, key string) (uint64, jetstream.KeyValueEntry, error) {
	e, err := b.leaderGet(ctx, kv, key, msgGetRequest{LastFor: kvSubject(kv, key)})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	if e.op != jetstream.KeyValuePut {
		return e.rev, nil, nil
	}
	return e.rev, e, nil
}

// UpdateAll writes every update to the bucket, or none of them: the writes go
// out as one JetStream atomic batch, each guarded by the revision its key must
// still have. It returns each update's new revision, in order. A guard that
// fails is ErrWrongRevision, and then nothing was stored.
//
// A batch the server refuses because too many are open on the stream at
// once (nats-server allows 50 per stream by default) stored nothing and is
// sent again, as a new batch, after a short pause: a burst of writers waits
// its turn instead of failing.
func (b *Bus) UpdateAll(ctx context.Context, kv jetstream.KeyValue, updates []Update) ([]uint64, error) {
	if len(updates) == 0 {
		return nil, nil
	}
	if len(updates) > MaxUpdates {
		return nil, fmt.Errorf("bus: %d updates in one batch; at most %d", len(updates), MaxUpdates)
	}
	pause := time.Millisecond
	for attempt := 1; ; attempt++ {
		revs, err := b.updateAll(ctx, kv, updates)
		var busy *jetstream.APIError
		if !errors.As(err, &busy) || busy.ErrorCode != errCodeTooManyBatches || attempt == maxBusyAttempts {
			return revs, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bus: waiting to send a batch again: %w", ctx.Err())
		case <-time.After(pause + rand.N(pause)):
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// errCodeTooManyBatches is nats-server's JSAtomicPublishTooManyInflight:
// the stream has as many open atomic batches as it allows, and refused
// this one whole. maxBusyAttempts bounds how often UpdateAll sends a batch
// so refused (about two seconds of pauses).
const errCodeTooManyBatches jetstream.ErrorCode = 10210

const maxBusyAttempts = 30

func (b *Bus) updateAll(ctx context.Context, kv jetstream.KeyValue, updates []Update) ([]uint64, error) {
	batch := nuid.Next()
	var ack pubAck
	for i, u := range updates {
		msg := nats.NewMsg(kvSubject(kv, u.Key))
		msg.Data = u.Value
		msg.Header.Set("Nats-Batch-Id", batch)
		msg.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(u.Revision, 10))
		last := i == len(updates)-1
		if last {
			msg.Header.Set("Nats-Batch-Commit", "1")
		}
		// The first message and the commit are requests, so that a batch the
		// stream refuses outright, and the outcome, are both reported.
		if i != 0 && !last {
			if err := b.conn.PublishMsg(msg); err != nil {
				return nil, fmt.Errorf("bus: publish batch: %w", err)
			}
			continue
		}
		reply, err := b.conn.RequestMsgWithContext(ctx, msg)
		if err != nil {
			return nil, fmt.Errorf("bus: publish batch: %w", err)
		}
		if len(reply.Data) == 0 { // the first message of a longer batch, accepted
			continue
		}
		ack = pubAck{}
		if err := json.Unmarshal(reply.Data, &ack); err != nil {
			return nil, fmt.Errorf("bus: batch answer %q: %w", reply.Data, err)
		}
		if ack.Error != nil {
			if ack.Error.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || ack.Error.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant {
				return nil, fmt.Errorf("bus: %s: %w", ack.Error.Description, ErrWrongRevision)
			}
			return nil, fmt.Errorf("bus: batch refused: %w", ack.Error)
		}
	}
	if ack.BatchSize != len(updates) {
		return nil, fmt.Errorf("bus: batch stored %d of %d messages", ack.BatchSize, len(updates))
	}
	// An atomic batch is stored contiguously, ending at the acknowledged sequence.
	revs := make([]uint64, len(updates))
	for i := range updates {
		revs[i] = ack.Sequence - uint64(len(updates)-1-i)
	}
	return revs, nil
}

type pubAck struct {
	Error     *jetstream.APIError `json:"error,omitempty"`
	Sequence  uint64              `json:"seq"`
	BatchSize int                 `json:"count"`
}

func kvSubject(kv jetstream.KeyValue, key string) string {
	return "$KV." + kv.Bucket() + "." + key
}
