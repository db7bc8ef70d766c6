package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// digestPrefix starts every digest: Record.Prev and Checkpoint.Digest.
const digestPrefix = "sha256:"

// digest is "sha256:<hex>" of a stored record's bytes.
func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return digestPrefix + hex.EncodeToString(sum[:])
}

// validDigest reports whether s is a digest as digest writes it. Digests
// read back from storage are checked before they are trusted or spliced
// into a record.
func validDigest(s string) bool {
	hexPart, ok := strings.CutPrefix(s, digestPrefix)
	if !ok || len(hexPart) != 2*sha256.Size {
		return false
	}
	for i := range len(hexPart) {
		c := hexPart[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// chainEnd is the newest record of the stream as Append knows it: the next
// record is stored at seq+1 with prev digest. digest is empty when that
// record could not be read (it aged out, or fails its checksum).
type chainEnd struct {
	known  bool
	seq    uint64
	digest string
}

// written is what this Log last stored, for checkpoints: a checkpoint states
// only what its writer knows first-hand.
type written struct {
	seq    uint64
	digest string
	// checkpointed is the newest seq a checkpoint of this Log covers.
	checkpointed uint64
	// since counts the records stored since the last checkpoint.
	since int
}

// Append bounds.
const (
	// appendTimeout bounds an Append whose context has no deadline (the
	// pipeline appends after the caller may have gone), waiting for its
	// turn included.
	appendTimeout = 10 * time.Second
	// appendAttempts bounds how often Append retries after another writer
	// (another corral replica) stored a record first.
	appendAttempts = 10
)

// Append stores r and returns its ID, assigning one (and the time) if r has
// none. It returns once JetStream has acknowledged the record, so that
// nothing answered goes unrecorded; the caller decides whether a failure
// fails the call. The ID doubles as the message id, so a retried Append of
// the same record within two minutes is stored once.
//
// Append chains the record: it sets r.Seq to the stream sequence the record
// gets and r.Prev to the digest of the record stored before it. The stream
// only takes the record if its last sequence is still the one Prev names
// (optimistic concurrency), so replicas writing to one stream keep one
// chain; one Append at a time writes from a Log, and after losing a race to
// another writer it reads the new end of the chain and tries again.
func (l *Log) Append(ctx context.Context, r *Record) (string, error) {
	if r.ID == "" {
		r.ID = nuid.Next()
	}
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	// The record is bounded and encoded before waiting for the turn to
	// write; its place in the chain is spliced in once known.
	body, err := r.encode(l.maxRecord())
	if err != nil {
		return "", err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, appendTimeout)
		defer cancel()
	}
	select {
	case l.appending <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("audit: append %s: waiting for the records before it: %w", r.ID, ctx.Err())
	}
	defer func() { <-l.appending }()

	for attempt := 1; ; attempt++ {
		if !l.end.known {
			if err := l.readEnd(ctx); err != nil {
				return "", fmt.Errorf("audit: append %s: read the end of the chain: %w", r.ID, err)
			}
		}
		seq, prev := l.end.seq+1, l.end.digest
		data := chained(body, seq, prev)
		msg := nats.NewMsg(subject(r.Kind, r.Agent))
		msg.Data = data
		if headerSafe(r.Target) {
			msg.Header.Set(targetHeader, r.Target)
		}
		ack, err := l.js.PublishMsg(ctx, msg, jetstream.WithMsgID(r.ID), jetstream.WithExpectStream(Stream),
			jetstream.WithExpectLastSequence(l.end.seq))
		switch {
		case err == nil && ack.Duplicate:
			// An earlier Append of this record stored it (the caller did not
			// hear back); nothing new was stored, so the end stands.
			return r.ID, nil
		case err == nil:
			l.end = chainEnd{known: true, seq: ack.Sequence, digest: digest(data)}
			if ack.Sequence != seq {
				// The server checked the last sequence, so this cannot
				// happen; if it does, Verify will name the record.
				l.logger.ErrorContext(ctx, "audit record stored out of its place in the chain", "id", r.ID, "seq", ack.Sequence, "want_seq", seq)
			}
			l.wrote(ack.Sequence, l.end.digest)
			r.Seq, r.Prev = seq, prev
			return r.ID, nil
		}
		// Whatever happened, the end is no longer known: the record may even
		// have been stored if the answer was lost.
		l.end.known = false
		if !wrongLastSequence(err) || attempt == appendAttempts {
			return "", fmt.Errorf("audit: append %s: %w", r.ID, err)
		}
		// Another writer stored a record first. Waiting a little, more each
		// time, keeps two busy writers from colliding again and again.
		l.logger.DebugContext(ctx, "audit append lost a race to another writer; trying again", "id", r.ID, "attempt", attempt)
		if err := sleep(ctx, time.Duration(rand.Int64N(int64(attempt)*int64(time.Millisecond)))); err != nil {
			return "", fmt.Errorf("audit: append %s: %w", r.ID, err)
		}
	}
}

// maxRecord is the most bytes a record may encode to: MaxRecord, or less
// when the server takes smaller messages (room kept for the chain's seq and
// prev, the subject and headers).
func (l *Log) maxRecord() int {
	const overhead = 4 << 10
	if nc := l.js.Conn(); nc != nil {
		if mp := int(nc.MaxPayload()); mp > overhead && mp-overhead < MaxRecord {
			return mp - overhead
		}
	}
	return MaxRecord
}

// readEnd learns the end of the chain from the stream: the sequence and
// digest of its last record. It reads the last sequence first and then that
// record, so a record stored in between only makes the next publish fail
// and retry, never chain to the wrong record.
func (l *Log) readEnd(ctx context.Context) error {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return err
	}
	end := chainEnd{known: true, seq: info.State.LastSeq}
	if end.seq == 0 {
		l.end = end
		return nil
	}
	m, err := l.stream.GetMsg(ctx, end.seq)
	switch {
	case err == nil:
		end.digest = digest(m.Data)
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// The last record aged out (or fails its checksum and is not
		// served). A checkpoint may still know its digest; if none does,
		// the next record starts the chain afresh, as the first retained
		// record does.
		if cp, ok, err := l.lastCheckpoint(ctx); err != nil {
			return err
		} else if ok && cp.Seq == end.seq {
			end.digest = cp.Digest
		}
	default:
		return err
	}
	l.end = end
	return nil
}

// wrote notes a record this Log stored, and wakes Run when enough records
// await a checkpoint.
func (l *Log) wrote(seq uint64, digest string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.written.seq, l.written.digest = seq, digest
	l.written.since++
	if l.written.since >= l.opts.CheckpointRecords {
		l.written.since = 0
		select {
		case l.due <- struct{}{}:
		default: // already due
		}
	}
}

// chained returns the stored form of a record: body, the record encoded
// without Seq and Prev, with those two put first, exactly as json.Marshal
// writes them (a test holds it to that). Splicing them in keeps encoding,
// which grows with the record, out of the section where appends wait for
// one another. body starts with {"id": since a record always has an ID.
func chained(body []byte, seq uint64, prev string) []byte {
	out := make([]byte, 0, len(body)+len(prev)+40)
	out = append(out, `{"seq":`...)
	out = strconv.AppendUint(out, seq, 10)
	if prev != "" {
		// A digest is "sha256:" and hex digits: nothing to escape.
		out = append(out, `,"prev":"`...)
		out = append(out, prev...)
		out = append(out, '"')
	}
	out = append(out, ',')
	return append(out, body[1:]...)
}

// wrongLastSequence reports whether a publish was refused because another
// record was stored first.
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// sleep waits for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
