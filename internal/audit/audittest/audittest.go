// Package audittest tampers with a stored audit the way an attacker would,
// so that tests can show that verification catches it.
package audittest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/audit"
)

// Rewrite replaces the audit stream with a copy in which edit has changed
// records, as an attacker with NATS admin rights can: the stream refuses to
// delete or purge records, and to be reconfigured to allow it, but not to be
// deleted whole. Rewrite reads every record, deletes the stream, creates it
// again with the same configuration and first sequence, and publishes the
// records again, each through edit, which gets its sequence and stored bytes
// and returns the bytes to store. Sequences stay as they were.
func Rewrite(t testing.TB, js jetstream.JetStream, edit func(seq uint64, data []byte) []byte) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	s, err := js.Stream(ctx, audit.Stream)
	if err != nil {
		t.Fatalf("rewrite: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("rewrite: %v", err)
	}
	var msgs []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("rewrite: read seq %d: %v", seq, err)
		}
		msgs = append(msgs, m)
	}
	if err := js.DeleteStream(ctx, audit.Stream); err != nil {
		t.Fatalf("rewrite: delete the stream: %v", err)
	}
	cfg := info.Config
	cfg.FirstSeq = info.State.FirstSeq
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatalf("rewrite: create the stream again: %v", err)
	}
	for _, m := range msgs {
		out := nats.NewMsg(m.Subject)
		out.Data = edit(m.Sequence, bytes.Clone(m.Data))
		for k, vs := range m.Header {
			for _, v := range vs {
				out.Header.Add(k, v)
			}
		}
		ack, err := js.PublishMsg(ctx, out)
		if err != nil {
			t.Fatalf("rewrite: publish seq %d again: %v", m.Sequence, err)
		}
		if ack.Sequence != m.Sequence {
			t.Fatalf("rewrite: seq %d stored again at seq %d", m.Sequence, ack.Sequence)
		}
	}
}

// EditDisk replaces old with new, which must be as long, in the audit
// stream's message blocks under a stopped corral's data directory, as an
// attacker with access to the disk can. NATS keeps a checksum of each
// message and does not serve one that fails it, so the record is then
// missing rather than changed. It fails the test unless old occurs exactly
// once.
func EditDisk(t testing.TB, dataDir string, old, new []byte) {
	t.Helper()
	if len(old) != len(new) {
		t.Fatalf("edit disk: %q and %q differ in length", old, new)
	}
	blocks, err := filepath.Glob(filepath.Join(dataDir, "jetstream", "*", "*", "streams", audit.Stream, "msgs", "*.blk"))
	if err != nil || len(blocks) == 0 {
		t.Fatalf("edit disk: no message blocks of %s under %s (%v)", audit.Stream, dataDir, err)
	}
	found := 0
	for _, path := range blocks {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("edit disk: %v", err)
		}
		n := bytes.Count(data, old)
		if n == 0 {
			continue
		}
		found += n
		if err := os.WriteFile(path, bytes.ReplaceAll(data, old, new), 0o600); err != nil {
			t.Fatalf("edit disk: %v", err)
		}
	}
	if found != 1 {
		t.Fatalf("edit disk: %q occurs %d times in %s, want once", old, found, strings.Join(blocks, ", "))
	}
}
