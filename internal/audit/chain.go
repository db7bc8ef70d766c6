package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
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

// wrote notes the n records this Log stored, the last at seq, and wakes Run when enough records
// await a checkpoint.
func (l *Log) wrote(seq uint64, digest string, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.written.seq, l.written.digest = seq, digest
	l.written.since += n
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
