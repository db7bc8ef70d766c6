package audit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Append bounds.
const (
	// appendTimeout bounds an Append whose context has no deadline (the
	// pipeline appends after the caller may have gone), waiting for its
	// turn and retries included.
	appendTimeout = 10 * time.Second
	// attemptTimeout bounds one try to learn the end of the chain or to
	// store a batch. It is much shorter than appendTimeout, so that when
	// the stream's leader is gone Append asks again, and a new leader is
	// used within about this long of its election.
	attemptTimeout = time.Second
	// maxBackoff bounds the wait between tries after a failure.
	maxBackoff = 250 * time.Millisecond
	// maxBatch is the most records one JetStream atomic batch stores: the
	// server's limit on a batch is 1000 messages.
	maxBatch = 256
	// maxBatchBytes bounds the records of one batch.
	maxBatchBytes = 4 << 20
)

// ErrFull means the audit stream has reached its size limit. Records are
// never evicted to make room (only age removes them), so nothing more can be
// recorded until an operator raises the limit or records age out.
var ErrFull = errors.New("audit: the audit stream is full")

// ErrUnavailable means the audit could not be written within the deadline:
// JetStream has no leader for the stream, or did not answer.
var ErrUnavailable = errors.New("audit: the audit stream is unavailable")

// pending is a record waiting to be stored.
type pending struct {
	r        *Record
	body     []byte
	deadline time.Time
	done     chan error // buffered: the writer never waits for the caller
}

// Append stores r and returns its ID, assigning one (and the time) if r has
// none. It returns once JetStream has acknowledged the record, so that
// nothing answered goes unrecorded; the caller decides whether a failure
// fails the call. The ID doubles as the message id, so a retried Append of
// the same record within two minutes is stored once.
//
// Append chains the record: it sets r.Seq to the stream sequence the record
// gets and r.Prev to the digest of the record stored before it. The stream
// only takes the record if its last sequence is still the one the chain
// names (optimistic concurrency), so replicas writing to one stream keep one
// chain.
//
// Appends share their writes (group commit): the Append whose turn it is to
// write takes every record queued meanwhile and publishes them back to back,
// each chained to the one before it and guarded by the sequence that one
// gets. Concurrent appends thus cost one round trip, and the chain stays
// linear. (docs/audit.md says why this is not a JetStream atomic batch: on
// a single-replica file stream each atomic batch is staged in a file store
// of its own and synced, which made batches slower than single appends.) A failed write (another
// replica stored first, the stream's leader changed, the meta leader is
// gone) is tried again, each try bounded by attemptTimeout, until the
// deadline: ctx's, or appendTimeout.
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
	deadline, _ := ctx.Deadline()
	p := &pending{r: r, body: body, deadline: deadline, done: make(chan error, 1)}
	l.qmu.Lock()
	l.queue = append(l.queue, p)
	l.qmu.Unlock()

	select {
	case err := <-p.done: // another Append wrote it
		return result(r, err)
	case l.appending <- struct{}{}:
	case <-ctx.Done():
		if l.unqueue(p) {
			return "", fmt.Errorf("audit: append %s: waiting for the records before it: %w: %w", r.ID, ErrUnavailable, ctx.Err())
		}
		// A writer took it and may still store it; the caller's deadline
		// has passed all the same (done is buffered: the writer never waits).
		return "", fmt.Errorf("audit: append %s: %w: %w", r.ID, ErrUnavailable, ctx.Err())
	}
	// This Append's turn: write what is queued, batch after batch, until
	// its own record is written (a writer before it may have taken it).
	defer func() { <-l.appending }()
	for {
		select {
		case err := <-p.done:
			return result(r, err)
		default:
		}
		batch := l.take()
		if len(batch) == 0 {
			// Not done and not queued cannot be: a writer fills done before
			// it gives up its turn.
			return result(r, <-p.done)
		}
		l.writeBatch(ctx, batch)
	}
}

// result is Append's answer for a record once its write ended.
func result(r *Record, err error) (string, error) {
	if err != nil {
		return "", fmt.Errorf("audit: append %s: %w", r.ID, err)
	}
	return r.ID, nil
}

// take removes the oldest queued records from the queue, at most maxBatch
// and maxBatchBytes (but at least one).
func (l *Log) take() []*pending {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	n, size := 0, 0
	for n < len(l.queue) && n < maxBatch {
		size += len(l.queue[n].body)
		if n > 0 && size > maxBatchBytes {
			break
		}
		n++
	}
	batch := make([]*pending, n)
	copy(batch, l.queue)
	l.queue = append(l.queue[:0], l.queue[n:]...)
	return batch
}

// unqueue removes p from the queue, reporting whether it was still there.
func (l *Log) unqueue(p *pending) bool {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	for i, q := range l.queue {
		if q == p {
			l.queue = append(l.queue[:i], l.queue[i+1:]...)
			return true
		}
	}
	return false
}

// writeBatch stores batch, trying again after failures that may pass, until
// the latest deadline of its records (not the writer's: the others wait on
// it), and tells each record how it went.
func (l *Log) writeBatch(ctx context.Context, batch []*pending) {
	deadline := batch[0].deadline
	for _, p := range batch[1:] {
		if p.deadline.After(deadline) {
			deadline = p.deadline
		}
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	l.store(ctx, batch)
}

// store writes batch as one chained run of records, trying again until ctx
// ends after another writer stored first or the substrate failed in a way
// that may pass (no leader, a timeout). Each record is told how it went.
func (l *Log) store(ctx context.Context, batch []*pending) {
	var err error
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		batch, err = l.storeOnce(actx, batch)
		cancel()
		switch {
		case len(batch) == 0:
			if attempt > 1 {
				l.logger.InfoContext(ctx, "audit append succeeded after retrying", "attempts", attempt)
			}
			return
		case errors.Is(err, ErrFull), permanent(err):
			fail(batch, err)
			return
		}
		// Another writer stored a record first, or the substrate failed.
		// Waiting a little, more each time, keeps two busy writers from
		// colliding again and again; a failure waits longer, for a leader.
		backoff := time.Duration(attempt) * time.Millisecond
		if wrongLastSequence(err) {
			l.logger.DebugContext(ctx, "audit append lost a race to another writer; trying again", "records", len(batch), "attempt", attempt)
		} else {
			backoff = min(maxBackoff, 25*backoff)
			l.logger.DebugContext(ctx, "audit append failed; trying again", "records", len(batch), "attempt", attempt, "err", err)
		}
		if serr := sleep(ctx, time.Duration(rand.Int64N(int64(backoff)))); serr != nil {
			fail(batch, fmt.Errorf("%w after %d tries: %w", ErrUnavailable, attempt, err))
			return
		}
	}
}

func fail(batch []*pending, err error) {
	for _, p := range batch {
		p.done <- err
	}
}

// storeOnce makes one try at storing batch at the end of the chain: the
// records are published back to back without waiting for each answer (one
// round trip for all), each chained to the one before and guarded by that
// one's sequence and id, so that a record another writer slips in between
// makes the rest fail rather than break the chain. It returns the records
// not stored, from the first that failed, and why.
func (l *Log) storeOnce(ctx context.Context, batch []*pending) ([]*pending, error) {
	if !l.end.known {
		if err := l.readEnd(ctx); err != nil {
			return batch, fmt.Errorf("read the end of the chain: %w", err)
		}
	}
	type sent struct {
		data   []byte
		prev   string
		future jetstream.PubAckFuture
	}
	out := make([]sent, 0, len(batch))
	base := l.end.seq
	seq, prev := base, l.end.digest
	var err error
	for _, p := range batch {
		data := chained(p.body, seq+1, prev)
		m := nats.NewMsg(subject(p.r.Kind, p.r.Agent))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, p.r.ID)
		m.Header.Set(jetstream.ExpectedStreamHeader, Stream)
		m.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(seq, 10))
		if seq > base {
			// The sequence alone would let a record through after the one
			// before it failed and another writer's took its place.
			m.Header.Set(jetstream.ExpectedLastMsgIDHeader, batch[seq-base-1].r.ID)
		}
		if headerSafe(p.r.Target) {
			m.Header.Set(targetHeader, p.r.Target)
		}
		if p.r.Phase == PhaseIntent {
			m.Header.Set(phaseHeader, PhaseIntent)
		}
		if headerSafe(p.r.Intent) && p.r.Intent != "" {
			m.Header.Set(intentHeader, p.r.Intent)
		}
		var f jetstream.PubAckFuture
		if len(batch) == 1 {
			// Alone, a plain request is quicker than the asynchronous
			// machinery (about 3x on the embedded server).
			f = syncPublish(ctx, l.js, m)
		} else if f, err = l.js.PublishMsgAsync(m); err != nil {
			break
		}
		out = append(out, sent{data: data, prev: prev, future: f})
		seq, prev = seq+1, digest(data)
	}
	// Whatever happens, the end is no longer known until the answers say:
	// records may even have been stored if their answers were lost.
	l.end.known = false
	for i, s := range out {
		ack, aerr := wait(ctx, s.future)
		switch {
		case aerr != nil:
			return batch[i:], classify(aerr)
		case ack.Duplicate:
			// An earlier Append of this record stored it (its caller did
			// not hear back). The records after it were chained to a copy
			// that was not stored, so their guards refuse them: try them
			// again on the chain's real end.
			batch[i].done <- nil
			return batch[i+1:], nil
		}
		if want := base + uint64(i) + 1; ack.Sequence != want {
			// The server checked the last sequence, so this cannot happen;
			// if it does, Verify will name the record.
			l.logger.ErrorContext(ctx, "audit record stored out of its place in the chain", "id", batch[i].r.ID, "seq", ack.Sequence, "want_seq", want)
		}
		l.end = chainEnd{known: true, seq: ack.Sequence, digest: digest(s.data)}
		batch[i].r.Seq, batch[i].r.Prev = ack.Sequence, s.prev
		l.wrote(ack.Sequence, l.end.digest, 1)
		batch[i].done <- nil
	}
	if err != nil {
		return batch[len(out):], fmt.Errorf("publish: %w", err)
	}
	return nil, nil
}

// syncPublish publishes m and waits for its answer, handing it over as an
// answered future.
func syncPublish(ctx context.Context, js jetstream.JetStream, m *nats.Msg) jetstream.PubAckFuture {
	f := &answered{ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1), msg: m}
	if ack, err := js.PublishMsg(ctx, m); err != nil {
		f.err <- err
	} else {
		f.ok <- ack
	}
	return f
}

// answered is a PubAckFuture whose answer is in.
type answered struct {
	ok  chan *jetstream.PubAck
	err chan error
	msg *nats.Msg
}

var _ jetstream.PubAckFuture = (*answered)(nil)

func (a *answered) Ok() <-chan *jetstream.PubAck { return a.ok }
func (a *answered) Err() <-chan error            { return a.err }
func (a *answered) Msg() *nats.Msg               { return a.msg }

// wait returns the answer to an asynchronous publish.
func wait(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// JetStream error codes Append tells apart.
const (
	codeStoreFailed           = 10077 // "maximum bytes exceeded" and the like
	codeInsufficientResources = 10023
)

// classify wraps a publish error with what Append makes of it.
func classify(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case codeStoreFailed, codeInsufficientResources:
			return fmt.Errorf("%w: %w", ErrFull, err)
		}
	}
	return err
}

// permanent reports whether a failure will not pass by trying again.
func permanent(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubject)
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
