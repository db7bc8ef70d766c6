package audit_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/audit/audittest"
	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
)

// The tests here tamper with a stored audit as attackers would, and show
// that Verify names what they changed.

// cancelled is the record an attacker wants to change: the call that
// cancelled an order.
const cancelledSeq = 12

func record(i int) audit.Record {
	r := audit.Record{Kind: "tool", Agent: "impact", Target: fmt.Sprintf("crm.get_order_%d", i), Edge: "rest",
		Decision: "allowed", Status: "ok", DurationMS: 1.5}
	if i == cancelledSeq {
		r.Target, r.Reason = "crm.cancel_order", "customer asked"
	}
	return r
}

func openLog(t testing.TB, b *bus.Bus, opts audit.Options) *audit.Log {
	t.Helper()
	l, err := audit.Open(t.Context(), slog.New(slog.DiscardHandler), b, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

// appendRecords appends records 1 to n and returns the one at cancelledSeq.
func appendRecords(t testing.TB, l *audit.Log, from, to int) audit.Record {
	t.Helper()
	var kept audit.Record
	for i := from; i <= to; i++ {
		r := record(i)
		if _, err := l.Append(t.Context(), &r); err != nil {
			t.Fatalf("Append: %v", err)
		}
		if r.Seq != uint64(i) {
			t.Fatalf("record %d stored at seq %d", i, r.Seq)
		}
		if i == cancelledSeq {
			kept = r
		}
	}
	return kept
}

func verify(t testing.TB, l *audit.Log) audit.Report {
	t.Helper()
	rep, err := l.Verify(t.Context(), time.Time{}, nil)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

// runUntilStopped runs l.Run and returns a stop that waits for it: Run
// checkpoints what it has not covered as it stops.
func runUntilStopped(t testing.TB, l *audit.Log) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// TestTamperRewriteStream is an attacker with NATS admin rights: the stream
// refuses to delete a record, so they rewrite the whole stream with one
// record changed.
func TestTamperRewriteStream(t *testing.T) {
	b := bustest.Open(t)
	l := openLog(t, b, audit.Options{})
	cancelled := appendRecords(t, l, 1, 30)
	if rep := verify(t, l); !rep.OK || rep.Records != 30 {
		t.Fatalf("Verify before tampering = %+v, want OK over 30 records", rep)
	}

	audittest.Rewrite(t, b.JetStream(), func(seq uint64, data []byte) []byte {
		if seq == cancelledSeq {
			data = bytes.Replace(data, []byte(`"reason":"customer asked"`), []byte(`"reason":"agent's choice"`), 1)
		}
		return data
	})

	rep := verify(t, l)
	if rep.OK || len(rep.Problems) != 1 {
		t.Fatalf("Verify after tampering = %+v, want one problem", rep)
	}
	p := rep.Problems[0]
	want := audit.Problem{Seq: cancelledSeq, ID: cancelled.ID, Time: cancelled.Time, Agent: "impact", Target: "crm.cancel_order",
		What: "changed after it was written: its digest does not match the prev stored in seq 13"}
	if p != want {
		t.Errorf("problem = %+v\nwant %+v", p, want)
	}
}

// TestTamperRewriteStreamConsistently is the same attacker recomputing every
// later record's prev, so that the chain is consistent again: the
// checkpoints, kept in a stream of their own, still show it.
func TestTamperRewriteStreamConsistently(t *testing.T) {
	b := bustest.Open(t)
	l := openLog(t, b, audit.Options{CheckpointInterval: time.Hour})
	stop := runUntilStopped(t, l)
	appendRecords(t, l, 1, 30)
	stop() // checkpoints seq 30

	var prev string
	audittest.Rewrite(t, b.JetStream(), func(seq uint64, data []byte) []byte {
		if seq >= cancelledSeq {
			var r audit.Record
			if err := json.Unmarshal(data, &r); err != nil {
				t.Fatal(err)
			}
			if seq == cancelledSeq {
				r.Reason = "agent decided"
			} else {
				r.Prev = prev
			}
			var err error
			if data, err = json.Marshal(&r); err != nil {
				t.Fatal(err)
			}
		}
		prev = "sha256:" + sha256Hex(data)
		return data
	})

	rep := verify(t, l)
	if rep.OK || len(rep.Problems) != 1 {
		t.Fatalf("Verify after a consistent rewrite = %+v, want one problem", rep)
	}
	if p := rep.Problems[0]; p.Seq != 30 || !strings.HasPrefix(p.What, "does not match the checkpoint taken at") {
		t.Errorf("problem = %+v, want seq 30 not matching its checkpoint", p)
	}
}

// TestTamperEditDisk is an attacker with the disk: corral stopped, they edit
// the record's bytes in NATS's message block, keeping its length. NATS then
// finds the message's checksum wrong and no longer serves it: the record is
// missing, and Verify names its place.
func TestTamperEditDisk(t *testing.T) {
	dir := t.TempDir()
	b, err := bus.Open(t.Context(), slog.New(slog.DiscardHandler), bus.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	appendRecords(t, openLog(t, b, audit.Options{}), 1, 20)
	b.Close()

	audittest.EditDisk(t, dir, []byte(`"reason":"customer asked"`), []byte(`"reason":"agent's choice"`))

	l := openLog(t, bustest.OpenWith(t, bus.Options{DataDir: dir}), audit.Options{})
	rep := verify(t, l)
	if rep.OK || len(rep.Problems) != 1 {
		t.Fatalf("Verify after editing the disk = %+v, want one problem", rep)
	}
	want := audit.Problem{Seq: cancelledSeq,
		What: "record seq 12 is missing: deleted, or unreadable on disk (NATS does not serve a record that fails its checksum)"}
	if p := rep.Problems[0]; p != want {
		t.Errorf("problem = %+v\nwant %+v", p, want)
	}
	got, err := l.Query(t.Context(), audit.Filter{Tool: "crm.cancel_order"})
	if err != nil || len(got) != 0 {
		t.Errorf("Query for the edited record = %v, %v; want it gone", got, err)
	}
	// The audit goes on, and the rest of the chain holds.
	appendRecords(t, l, 21, 22)
	if rep := verify(t, l); len(rep.Problems) != 1 || rep.Records != 21 {
		t.Errorf("Verify after more records = %+v, want the one problem over 21 records", rep)
	}
}

// TestTamperEditDiskLastRecord edits the newest record on disk: Append can
// no longer read the end of the chain, takes its digest from the checkpoint
// Run wrote as it stopped, and goes on.
func TestTamperEditDiskLastRecord(t *testing.T) {
	dir := t.TempDir()
	b, err := bus.Open(t.Context(), slog.New(slog.DiscardHandler), bus.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	l := openLog(t, b, audit.Options{})
	stop := runUntilStopped(t, l)
	appendRecords(t, l, 1, cancelledSeq)
	stop()
	b.Close()

	audittest.EditDisk(t, dir, []byte(`"reason":"customer asked"`), []byte(`"reason":"agent's choice"`))

	l = openLog(t, bustest.OpenWith(t, bus.Options{DataDir: dir}), audit.Options{})
	r := record(cancelledSeq + 1)
	if _, err := l.Append(t.Context(), &r); err != nil {
		t.Fatalf("Append after the newest record was edited: %v", err)
	}
	if r.Seq != cancelledSeq+1 || r.Prev == "" {
		t.Errorf("Append stored seq %d with prev %q; want seq 13 chained to the checkpoint of seq 12", r.Seq, r.Prev)
	}
	rep := verify(t, l)
	if rep.OK || len(rep.Problems) != 1 || rep.Problems[0].Seq != cancelledSeq || rep.Checkpoints != 1 {
		t.Errorf("Verify = %+v, want seq 12 missing and seq 13's prev matching the checkpoint", rep)
	}
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
