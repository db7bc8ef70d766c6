package ratelimit

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"time"

	"context"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/corral-dev/corral/internal/bus"
)

// state is one counter as stored.
type state struct {
	// TAT is a rate's theoretical arrival time (GCRA), unix nanoseconds:
	// when the rate would next be idle. 0 for no rate.
	TAT int64 `json:"tat,omitempty"`
	// Slots are the in-flight slots: id -> lease end, unix nanoseconds.
	Slots map[string]int64 `json:"slots,omitempty"`
	// Write is an id unique to the write, so that a write whose
	// acknowledgement was lost is recognised (landed).
	Write string `json:"w"`
}

// prune drops the slots whose lease ended before now and returns how many
// are left.
func (s *state) prune(now time.Time) int {
	n := now.UnixNano()
	for id, until := range s.Slots {
		if until <= n {
			delete(s.Slots, id)
		}
	}
	return len(s.Slots)
}

// maxAttempts bounds the compare-and-swap loop on one counter.
const maxAttempts = 64

// readTimeout bounds one read of a counter, so that a replica of the
// bucket that just died does not hold a call for the client's 5 s.
const readTimeout = 750 * time.Millisecond

// update changes a counter with compare-and-swap, retrying when another
// call wrote it in between. change gets the current state (zero when the
// key does not exist) to modify in place, and says whether to write it.
// The first read may be answered by any replica of the bucket; after a lost
// race the counter is read from the stream's leader, as budgets do.
func (l *Limits) update(ctx context.Context, key string, change func(cur *state, exists bool) bool) error {
	fromLeader := false
	for attempt := range maxAttempts {
		var cur state
		var rev uint64
		if c, ok := l.lastWrite(key); ok && attempt == 0 {
			// The counter as this replica last wrote it: when nobody wrote
			// it since, the guarded write goes through without a read.
			cur, rev = c.st, c.rev
		} else {
			e, err := l.read(ctx, key, fromLeader)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
			case err != nil:
				return fmt.Errorf("read counter %s: %w", key, err)
			default:
				rev = e.Revision()
				if err := json.Unmarshal(e.Value(), &cur); err != nil {
					// Only a write from outside corral makes one; refusing
					// is the safe answer, and `nats kv del` the way out.
					return fmt.Errorf("counter %s is unreadable (delete the key to reset it): %w", key, err)
				}
			}
		}
		if !change(&cur, rev != 0) {
			if rev != 0 && attempt == 0 {
				// Nothing written: a refusal on a state that may be
				// stale must be confirmed against the bucket.
				if _, ok := l.lastWrite(key); ok {
					l.written.Delete(key)
					fromLeader = true
					continue
				}
			}
			return nil
		}
		cur.Write = nuid.Next()
		data, err := json.Marshal(&cur)
		if err != nil {
			return fmt.Errorf("encode counter %s: %w", key, err)
		}
		var newRev uint64
		if rev == 0 {
			newRev, err = l.kv.Create(ctx, key, data)
		} else {
			newRev, err = l.kv.Update(ctx, key, data, rev)
		}
		if err == nil {
			l.written.Store(key, &written{rev: newRev, st: cur})
			return nil
		}
		l.written.Delete(key)
		if bus.Unavailable(err) && l.landed(ctx, key, rev, data) {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("write counter %s: %w", key, err)
		}
		fromLeader = true
		wait := time.Duration(rand.Int64N(int64(min(attempt+1, 20)) * int64(250*time.Microsecond)))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("counter %s: %w", key, ctx.Err())
		case <-t.C:
		}
	}
	return fmt.Errorf("counter %s: %w (%d attempts)", key, ErrContended, maxAttempts)
}

// written is a counter as this replica last wrote it.
type written struct {
	rev uint64
	st  state
}

// lastWrite returns a copy of the counter as this replica last wrote it.
func (l *Limits) lastWrite(key string) (written, bool) {
	v, ok := l.written.Load(key)
	if !ok {
		return written{}, false
	}
	w := *v.(*written)
	w.st.Slots = maps.Clone(w.st.Slots)
	return w, true
}

// read returns a counter's entry: jetstream.ErrKeyNotFound when there is none.
func (l *Limits) read(ctx context.Context, key string, fromLeader bool) (jetstream.KeyValueEntry, error) {
	if fromLeader {
		_, e, err := l.sub.Last(ctx, l.kv, key)
		if err == nil && (e == nil || e.Operation() != jetstream.KeyValuePut) {
			return nil, jetstream.ErrKeyNotFound
		}
		return e, err
	}
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	e, err := l.kv.Get(rctx, key)
	if bus.Unavailable(err) && ctx.Err() == nil {
		return l.read(ctx, key, true)
	}
	return e, err
}

// landed reports whether a write the substrate did not acknowledge was
// stored all the same (see budget's landed).
func (l *Limits) landed(ctx context.Context, key string, rev uint64, data []byte) bool {
	e, err := l.sub.Next(ctx, l.kv, key, rev)
	return err == nil && bytes.Equal(e.Value(), data)
}

// maxValueToken is the longest each value kept readable in a key; longer
// ones are replaced by a digest (a key is at most a few hundred bytes).
const maxValueToken = 150

// keyToken is the token of one each value in a counter's key: "v" and its
// base64url, or "h" and a SHA-256 prefix when it is long.
func keyToken(v string) string {
	if len(v) <= maxValueToken {
		return "v" + base64.RawURLEncoding.EncodeToString([]byte(v))
	}
	sum := sha256.Sum256([]byte(v))
	return "h" + hex.EncodeToString(sum[:16])
}

// tokenValue reads a counter key's token back, for status: the each value,
// "" for the shared counter, or "sha256:<prefix>" for a digest. ok is false
// for a token corral does not write.
func tokenValue(tok string) (string, bool) {
	switch {
	case tok == sharedToken:
		return "", true
	case strings.HasPrefix(tok, "v"):
		b, err := base64.RawURLEncoding.Strict().DecodeString(tok[1:])
		// The decoder skips line breaks: only the canonical token is one.
		if err != nil || keyToken(string(b)) != tok {
			return "", false
		}
		return string(b), true
	case strings.HasPrefix(tok, "h") && len(tok) == 33:
		if _, err := hex.DecodeString(tok[1:]); err != nil {
			return "", false
		}
		return "sha256:" + tok[1:], true
	}
	return "", false
}
