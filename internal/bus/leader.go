package bus

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/textproto"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Reads that must see the latest write go to the stream's leader. A KV
// bucket allows direct gets, which any replica of the stream answers, and a
// follower may answer before it has applied a write that was just
// acknowledged: a read-back of that write then finds nothing (issue 20.4),
// and a revision guard read that way is stale. STREAM.MSG.GET, unlike
// DIRECT.GET, is answered by the leader alone.

// leaderTimeout bounds a leader read whose context has no deadline, as the
// jetstream client bounds its own requests.
const leaderTimeout = 5 * time.Second

// msgGetRequest and msgGetResponse are the JetStream API's STREAM.MSG.GET.
type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
}

type msgGetResponse struct {
	Error   *jetstream.APIError `json:"error,omitempty"`
	Message *struct {
		Subject  string    `json:"subject"`
		Sequence uint64    `json:"seq"`
		Header   []byte    `json:"hdrs,omitempty"`
		Data     []byte    `json:"data,omitempty"`
		Time     time.Time `json:"time"`
	} `json:"message,omitempty"`
}

// leaderGet asks the leader of kv's stream for one message: by sequence, or
// the last on a key's subject. It returns jetstream.ErrMsgNotFound when
// there is none.
func (b *Bus) leaderGet(ctx context.Context, kv jetstream.KeyValue, key string, req msgGetRequest) (*leaderEntry, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		// As jetstream's own requests: a leader that died does not answer.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, leaderTimeout)
		defer cancel()
	}
	reply, err := b.conn.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+kv.Bucket(), body)
	if err != nil {
		return nil, fmt.Errorf("bus: read %s from the leader: %w", key, err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("bus: read %s from the leader: answer %q: %w", key, reply.Data, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, fmt.Errorf("bus: read %s from the leader: %w", key, resp.Error)
	}
	m := resp.Message
	if m == nil || m.Subject != kvSubject(kv, key) {
		return nil, fmt.Errorf("bus: read %s from the leader: %w", key, jetstream.ErrMsgNotFound)
	}
	op, err := Operation(m.Header)
	if err != nil {
		return nil, fmt.Errorf("bus: read %s from the leader: headers: %w", key, err)
	}
	return &leaderEntry{bucket: kv.Bucket(), key: key, value: m.Data, rev: m.Sequence, created: m.Time, op: op}, nil
}

// GetRevision reads revision rev of key from the stream's leader, so it
// finds a write that was just acknowledged. It returns
// jetstream.ErrKeyNotFound if that revision is not key's or is a deletion.
func (b *Bus) GetRevision(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64) (jetstream.KeyValueEntry, error) {
	e, err := b.leaderGet(ctx, kv, key, msgGetRequest{Seq: rev})
	if err == nil && e.op != jetstream.KeyValuePut {
		err = jetstream.ErrKeyNotFound
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, jetstream.ErrKeyNotFound
		}
		return nil, err
	}
	return e, nil
}

// Next reads from the stream's leader the first entry of key stored after
// revision rev (a deletion included), or jetstream.ErrKeyNotFound when there
// is none. A write guarded by rev (an Update with last revision rev) that
// was stored is exactly that entry, since the guard admits one write: so a
// writer that did not hear back can tell whether its write landed.
func (b *Bus) Next(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64) (jetstream.KeyValueEntry, error) {
	e, err := b.leaderGet(ctx, kv, key, msgGetRequest{Seq: rev + 1, NextFor: kvSubject(kv, key)})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, jetstream.ErrKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Operation reads the KV-Operation header of a stored message's headers (as
// STREAM.MSG.GET returns them): a put when there is none.
func Operation(hdrs []byte) (jetstream.KeyValueOp, error) {
	if len(hdrs) == 0 {
		return jetstream.KeyValuePut, nil
	}
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(hdrs)))
	if _, err := r.ReadLine(); err != nil { // NATS/1.0
		return 0, err
	}
	h, err := r.ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return 0, err
	}
	switch h.Get("KV-Operation") {
	case "DEL":
		return jetstream.KeyValueDelete, nil
	case "PURGE":
		return jetstream.KeyValuePurge, nil
	default:
		return jetstream.KeyValuePut, nil
	}
}

// leaderEntry is a KV entry read from the stream's leader.
type leaderEntry struct {
	bucket, key string
	value       []byte
	rev         uint64
	created     time.Time
	op          jetstream.KeyValueOp
}

var _ jetstream.KeyValueEntry = (*leaderEntry)(nil)

func (e *leaderEntry) Bucket() string                  { return e.bucket }
func (e *leaderEntry) Key() string                     { return e.key }
func (e *leaderEntry) Value() []byte                   { return e.value }
func (e *leaderEntry) Revision() uint64                { return e.rev }
func (e *leaderEntry) Created() time.Time              { return e.created }
func (e *leaderEntry) Delta() uint64                   { return 0 }
func (e *leaderEntry) Operation() jetstream.KeyValueOp { return e.op }
