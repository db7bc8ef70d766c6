package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Range bounds what is read by the time it was stored. A zero Since starts
// at the oldest record kept; a zero Until ends at the newest.
type Range struct {
	Since, Until time.Time
}

// Export calls fn with every record stored within rg, oldest first, exactly
// as stored: the bytes the chain's digests are over, so that an archive of
// them can be verified offline (VerifyArchive). It reads what the stream
// held when it started, holding one batch of records in memory at a time,
// and stops at the first error fn returns.
func (l *Log) Export(ctx context.Context, rg Range, fn func(seq uint64, data []byte) error) error {
	if err := l.export(ctx, l.stream, rg, fn); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}

// ExportCheckpoints is Export for the checkpoints: one JSON Checkpoint per
// call, as stored. Kept off the host, they let an archive be checked even
// against a rewrite of the whole audit stream.
func (l *Log) ExportCheckpoints(ctx context.Context, rg Range, fn func(seq uint64, data []byte) error) error {
	if err := l.export(ctx, l.checkpoints, rg, fn); err != nil {
		return fmt.Errorf("audit: export checkpoints: %w", err)
	}
	return nil
}

func (l *Log) export(ctx context.Context, stream jetstream.Stream, rg Range, fn func(seq uint64, data []byte) error) error {
	info, err := stream.Info(ctx)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{}
	if !rg.Since.IsZero() {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &rg.Since
	}
	return l.scan(ctx, stream, cfg, info.State.LastSeq, func(m jetstream.Msg, meta *jetstream.MsgMetadata) error {
		if !rg.Until.IsZero() && meta.Timestamp.After(rg.Until) {
			return errStop
		}
		return fn(meta.Sequence.Stream, m.Data())
	})
}

// errStop ends a scan early without an error.
var errStop = errors.New("stop")

// scan delivers the messages of stream from cfg's start through seq last,
// in order, to fn, until fn returns an error (errStop ends it quietly). An
// ordered consumer fetches them in batches, so memory stays bounded however
// many there are.
func (l *Log) scan(ctx context.Context, stream jetstream.Stream, cfg jetstream.OrderedConsumerConfig, last uint64,
	fn func(jetstream.Msg, *jetstream.MsgMetadata) error,
) error {
	if last == 0 {
		return nil
	}
	// The server would keep a consumer it no longer hears from for this
	// long; scan deletes its own when done, so this only covers a crash.
	cfg.InactiveThreshold = 30 * time.Second
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	msgs, err := cons.Messages()
	if err != nil {
		return err
	}
	defer func() {
		msgs.Stop()
		l.deleteConsumer(ctx, stream, cons)
	}()
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return nil
	}
	// Next blocks until a message comes; ending the context stops it.
	stop := context.AfterFunc(ctx, msgs.Stop)
	defer stop()
	for {
		m, err := msgs.Next()
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return err
		}
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		seq := meta.Sequence.Stream
		if seq > last {
			return nil // stored after the scan started
		}
		if err := fn(m, meta); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
		// Records leave the stream only from the front, so the pending
		// count never promises one that will not come.
		if seq == last || meta.NumPending == 0 {
			return nil
		}
	}
}
