package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// CheckpointStream is the JetStream stream that holds the audit's
// checkpoints. It is a stream of its own, not records of the audit stream:
// it keeps checkpoints longer than the audit keeps records, so that an
// archive can be checked against them after its records aged out, and a
// checkpoint inside the chain would prove nothing the chain does not.
const CheckpointStream = "CORRAL_AUDIT_CHECKPOINTS"

// checkpointSubject is where checkpoints go. It lies outside corral.audit.>,
// which the audit stream takes, since two streams cannot share subjects.
const checkpointSubject = "corral.checkpoints.audit"

// Checkpoint defaults.
const (
	// DefaultCheckpointMaxAge keeps checkpoints for 400 days: archives of
	// the past year can be checked against them.
	DefaultCheckpointMaxAge = 400 * 24 * time.Hour
	// DefaultCheckpointRecords is how many records a Log stores between
	// checkpoints.
	DefaultCheckpointRecords = 1000
	// DefaultCheckpointInterval is the longest a stored record waits for a
	// checkpoint.
	DefaultCheckpointInterval = time.Minute
	// checkpointMaxBytes bounds the checkpoint stream: at one checkpoint a
	// minute, 400 days take about 150 MiB per corral process.
	checkpointMaxBytes = 1 << 30
	// finalCheckpointTimeout bounds the checkpoint Run writes as it stops.
	finalCheckpointTimeout = 5 * time.Second
)

// Checkpoint states the digest of the audit record stored at Seq, as the
// corral that stored it computed it. Kept apart from the records (and, best,
// copied off the host), checkpoints pin the chain: rewriting records up to
// Seq, however consistently, changes that digest.
type Checkpoint struct {
	Seq uint64 `json:"seq"`
	// Digest is "sha256:<hex>" of the record's stored bytes.
	Digest string    `json:"digest"`
	Time   time.Time `json:"time"`
	// Records is how many records the audit stream held when the checkpoint
	// was taken: what retention had kept by then.
	Records uint64 `json:"records"`
}

// Run publishes checkpoints until ctx ends: after every CheckpointRecords
// records this Log stores, and CheckpointInterval after a record that no
// checkpoint covers yet. As it stops it checkpoints what is left, so a clean
// shutdown leaves no record uncovered. A failed checkpoint is logged and
// tried again at the next turn; Run returns nil when ctx ends.
func (l *Log) Run(ctx context.Context) error {
	ticker := time.NewTicker(l.opts.CheckpointInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalCheckpointTimeout)
			l.checkpointLogged(final)
			cancel()
			return nil
		case <-ticker.C:
		case <-l.due:
		}
		l.checkpointLogged(ctx)
	}
}

func (l *Log) checkpointLogged(ctx context.Context) {
	if _, _, err := l.checkpoint(ctx); err != nil {
		l.logger.WarnContext(ctx, "audit checkpoint failed; trying again later", "err", err)
	}
}

// checkpoint publishes a checkpoint of the newest record this Log stored,
// unless one covers it already. ok is false when there was nothing to cover.
func (l *Log) checkpoint(ctx context.Context) (cp Checkpoint, ok bool, err error) {
	l.mu.Lock()
	w := l.written
	l.mu.Unlock()
	if w.seq == 0 || w.seq <= w.checkpointed {
		return Checkpoint{}, false, nil
	}
	info, err := l.stream.Info(ctx)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: checkpoint seq %d: %w", w.seq, err)
	}
	cp = Checkpoint{Seq: w.seq, Digest: w.digest, Time: time.Now().UTC(), Records: info.State.Msgs}
	msg := nats.NewMsg(checkpointSubject)
	if msg.Data, err = json.Marshal(cp); err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: checkpoint seq %d: %w", w.seq, err)
	}
	// Two tries at the same checkpoint (a lost answer) store one.
	id := "audit-" + strconv.FormatUint(cp.Seq, 10)
	if _, err := l.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(CheckpointStream)); err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: checkpoint seq %d: %w", w.seq, err)
	}
	l.mu.Lock()
	l.written.checkpointed = max(l.written.checkpointed, cp.Seq)
	l.written.since = 0
	l.mu.Unlock()
	return cp, true, nil
}

// lastCheckpoint is the newest checkpoint stored; ok is false when there is
// none, or it cannot be read.
func (l *Log) lastCheckpoint(ctx context.Context) (cp Checkpoint, ok bool, err error) {
	m, err := l.checkpoints.GetLastMsgForSubject(ctx, checkpointSubject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: last checkpoint: %w", err)
	}
	cp, err = parseCheckpoint(m.Data)
	return cp, err == nil, nil
}

// parseCheckpoint reads a stored checkpoint, refusing one whose digest is
// not a digest: it may be spliced into a record.
func parseCheckpoint(data []byte) (Checkpoint, error) {
	var cp Checkpoint
	if err := json.Unmarshal(data, &cp); err != nil {
		return Checkpoint{}, fmt.Errorf("not a checkpoint: %w", err)
	}
	if cp.Seq == 0 || !validDigest(cp.Digest) {
		return Checkpoint{}, errors.New("not a checkpoint: it needs a seq and a sha256 digest")
	}
	return cp, nil
}
