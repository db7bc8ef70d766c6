package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
)

// verify runs Verify over the whole stream and fails the test on an error.
func verify(t testing.TB, l *Log) Report {
	t.Helper()
	rep, err := l.Verify(t.Context(), time.Time{}, nil)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

// stored returns the record stored at seq, as stored.
func storedAt(t testing.TB, l *Log, seq uint64) []byte {
	t.Helper()
	m, err := l.stream.GetMsg(t.Context(), seq)
	if err != nil {
		t.Fatalf("GetMsg(%d): %v", seq, err)
	}
	return m.Data
}

func TestChainedIsWhatMarshalWrites(t *testing.T) {
	records := []Record{
		call("impact", "crm.get_order"),
		{ID: "x", Kind: "tool", Target: "bad\r\n\"quoted\" <html>", Arguments: json.RawMessage(`{"a": [1, 2]}`)},
	}
	for _, r := range records {
		r.Time = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
		if r.ID == "" {
			r.ID = "id1"
		}
		body, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			seq  uint64
			prev string
		}{{1, ""}, {42, digest([]byte("before"))}, {1<<64 - 1, digest(nil)}} {
			chainedRecord := r
			chainedRecord.Seq, chainedRecord.Prev = tt.seq, tt.prev
			want, err := json.Marshal(&chainedRecord)
			if err != nil {
				t.Fatal(err)
			}
			if got := chained(body, tt.seq, tt.prev); string(got) != string(want) {
				t.Errorf("chained(%d, %q) =\n%s\nwant\n%s", tt.seq, tt.prev, got, want)
			}
		}
	}
}

func TestValidDigest(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{digest([]byte("x")), true},
		{"sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true},
		{"sha256:" + "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", false},
		{"sha256:abc", false},
		{"sha512:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", false},
		{`sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde"`, false},
		{"", false},
	}
	for _, tt := range tests {
		if got := validDigest(tt.in); got != tt.want {
			t.Errorf("validDigest(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestAppendChains(t *testing.T) {
	l := open(t, bustest.Open(t))
	var rs []Record
	for i := range 5 {
		rs = append(rs, call("impact", fmt.Sprintf("crm.op%d", i)))
	}
	appendAll(t, l, rs...)
	// appendAll appended copies; read back what was stored.
	prev := ""
	for seq := uint64(1); seq <= 5; seq++ {
		data := storedAt(t, l, seq)
		var r Record
		if err := json.Unmarshal(data, &r); err != nil {
			t.Fatal(err)
		}
		if r.Seq != seq || r.Prev != prev {
			t.Errorf("record at seq %d has seq %d, prev %q; want %d, %q", seq, r.Seq, r.Prev, seq, prev)
		}
		prev = digest(data)
	}
	r := call("impact", "crm.get_order")
	if _, err := l.Append(t.Context(), &r); err != nil {
		t.Fatal(err)
	}
	if r.Seq != 6 || r.Prev != prev {
		t.Errorf("Append set seq %d, prev %q; want 6, %q", r.Seq, r.Prev, prev)
	}
	rep := verify(t, l)
	if !rep.OK || rep.Records != 6 || rep.FirstSeq != 1 || rep.LastSeq != 6 || len(rep.Problems) != 0 {
		t.Errorf("Verify = %+v, want OK over 6 records", rep)
	}
}

// TestAppendRetriedAfterChainMoved is a retried Append (same ID) after other
// records were stored: it is still stored once, and the chain holds.
func TestAppendRetriedAfterChainMoved(t *testing.T) {
	l := open(t, bustest.Open(t))
	r := call("impact", "crm.get_order")
	r.ID = "retried"
	appendAll(t, l, r, call("impact", "a.b"), call("impact", "c.d"))
	again := r
	if id, err := l.Append(t.Context(), &again); err != nil || id != "retried" {
		t.Fatalf("Append again = %q, %v; want retried", id, err)
	}
	appendAll(t, l, call("impact", "e.f"))
	if rep := verify(t, l); !rep.OK || rep.Records != 4 {
		t.Errorf("Verify = %+v, want OK over 4 records", rep)
	}
}

// TestConcurrentAppenders is two Logs on two connections to one stream,
// several goroutines each, as two corral replicas: every record is stored
// once and the chain is unbroken.
func TestConcurrentAppenders(t *testing.T) {
	first := bustest.OpenWith(t, bus.Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	second := bustest.OpenWith(t, bus.Options{URL: first.ClientURL()})
	// The log counts the races lost to the other writer.
	var debug bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&debug, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var logs []*Log
	for _, b := range []*bus.Bus{first, second} {
		l, err := Open(t.Context(), logger, b, Options{})
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, l)
	}
	const perWorker, workers = 40, 4
	var wg sync.WaitGroup
	errs := make(chan error, len(logs)*workers)
	for i, l := range logs {
		for w := range workers {
			wg.Go(func() {
				for n := range perWorker {
					r := call(fmt.Sprintf("agent-%d", i), fmt.Sprintf("t.w%d-%d", w, n))
					if _, err := l.Append(t.Context(), &r); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Append: %v", err)
	}
	t.Logf("%d appends retried after another writer stored first", strings.Count(debug.String(), "lost a race"))
	// A retried Append through the other Log, whose idea of the chain's end
	// is stale, still stores the record once.
	r := call("agent-0", "t.retried")
	if _, err := logs[0].Append(t.Context(), &r); err != nil {
		t.Fatal(err)
	}
	appendAll(t, logs[0], call("agent-0", "t.after"))
	again := r
	if id, err := logs[1].Append(t.Context(), &again); err != nil || id != r.ID {
		t.Fatalf("Append of a stored record through the other Log = %q, %v; want %q", id, err, r.ID)
	}
	const total = 2*workers*perWorker + 2
	for i, l := range logs {
		rep := verify(t, l)
		if !rep.OK || rep.Records != total || rep.LastSeq != total {
			t.Errorf("Verify through Log %d = %+v, want OK over %d records", i, rep, total)
		}
	}
}

func TestVerifyAfterOldRecordsLeft(t *testing.T) {
	// A short MaxAge removes the oldest records; only age may.
	l, err := Open(t.Context(), slog.New(slog.DiscardHandler), bustest.Open(t), Options{MaxAge: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		r := call("impact", fmt.Sprintf("crm.op%d", i))
		if _, err := l.Append(t.Context(), &r); err != nil {
			t.Fatal(err)
		}
		if i == 19 {
			// The first 20 age out while the next 20 are appended.
			waitFor(t, func() bool {
				info, err := l.stream.Info(t.Context())
				return err == nil && info.State.Msgs == 0
			})
		}
	}
	info, err := l.stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	first := info.State.FirstSeq
	if first <= 1 || info.State.LastSeq != 40 {
		t.Fatalf("first seq %d, last %d: want the oldest records gone, seq 40 kept", first, info.State.LastSeq)
	}
	rep := verify(t, l)
	want := fmt.Sprintf("chain starts at seq %d; earlier records aged out", first)
	if !rep.OK || rep.FirstSeq != first || rep.LastSeq != 40 || !contains(rep.Notes, want) {
		t.Errorf("Verify = %+v, want OK from seq %d noting %q", rep, first, want)
	}
}

// waitFor polls cond until it holds, failing the test after a minute
// (generous: CI runs loaded, with the race detector): the server ages
// records out on its own clock.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFullAuditRefusesRatherThanEvicts fills a small audit stream: the
// append that does not fit fails with ErrFull at once, and no record was
// evicted to make room. At d7dc022 the stream dropped its oldest records
// (DiscardOld) and Verify called that aging out (issue 12.1).
func TestFullAuditRefusesRatherThanEvicts(t *testing.T) {
	l, err := Open(t.Context(), slog.New(slog.DiscardHandler), bustest.Open(t), Options{MaxBytes: 4000})
	if err != nil {
		t.Fatal(err)
	}
	var stored int
	for i := range 100 {
		r := call("impact", fmt.Sprintf("crm.op%d", i))
		if _, err = l.Append(t.Context(), &r); err != nil {
			break
		}
		stored++
	}
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Append to a full stream: %v, want ErrFull", err)
	}
	info, err := l.stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.FirstSeq != 1 || info.State.Msgs != uint64(stored) {
		t.Errorf("stream holds seq %d on, %d records; want every one of the %d stored, from seq 1", info.State.FirstSeq, info.State.Msgs, stored)
	}
	if rep := verify(t, l); !rep.OK || rep.Records != uint64(stored) {
		t.Errorf("Verify = %+v, want OK over %d records", rep, stored)
	}
}

// TestVerifyReportsEvictionBySize: records gone from the front while a
// checkpoint shows they were stored within the retention did not age out;
// Verify says so and fails. At d7dc022 it noted "earlier records aged out"
// and passed.
func TestVerifyReportsEvictionBySize(t *testing.T) {
	b := bustest.Open(t)
	l, err := Open(t.Context(), slog.New(slog.DiscardHandler), b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		r := call("victim", fmt.Sprintf("crm.op%d", i))
		if _, err := l.Append(t.Context(), &r); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := l.checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The attack of issue 12.1, replayed on a stream set to evict by size.
	cfg := l.stream.CachedInfo().Config
	cfg.Discard, cfg.MaxBytes = jetstream.DiscardOld, 6000
	if _, err := b.JetStream().UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		r := call("", fmt.Sprintf("flood%d", i))
		if _, err := l.Append(t.Context(), &r); err != nil {
			t.Fatal(err)
		}
	}
	rep := verify(t, l)
	if rep.OK || len(rep.Problems) == 0 || !strings.Contains(rep.Problems[0].What, "not by age") {
		t.Errorf("Verify = %+v, want a problem: records gone, not by age", rep)
	}
	// Set back to what corral configures, the evidence is the checkpoint.
	cfg.Discard = jetstream.DiscardNew
	if _, err := b.JetStream().UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if rep := verify(t, l); rep.OK {
		t.Errorf("Verify with discard new = %+v, want the eviction still reported", rep)
	}
}

func TestVerifySince(t *testing.T) {
	l := open(t, bustest.Open(t))
	appendAll(t, l, call("impact", "a.b"), call("impact", "c.d"))
	since := time.Now()
	appendAll(t, l, call("impact", "e.f"), call("impact", "g.h"))
	rep, err := l.Verify(t.Context(), since, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Records != 2 || rep.FirstSeq != 3 || !contains(rep.Notes, "seq 2 anchors its link") {
		t.Errorf("Verify(since) = %+v, want OK over seq 3 and 4, anchored by seq 2", rep)
	}
	rep, err = l.Verify(t.Context(), time.Now().Add(time.Hour), nil)
	if err != nil || !rep.OK || rep.Records != 0 {
		t.Errorf("Verify(future) = %+v, %v; want OK over nothing", rep, err)
	}
}

func TestVerifyEmpty(t *testing.T) {
	rep := verify(t, open(t, bustest.Open(t)))
	if !rep.OK || rep.Records != 0 || !contains(rep.Notes, "the audit holds no records") {
		t.Errorf("Verify of an empty audit = %+v", rep)
	}
}

// TestVerifyUnchainedBeforeChain is an audit written before the chain: its
// records are unchained, not tampered with, and the chain takes over after.
func TestVerifyUnchainedBeforeChain(t *testing.T) {
	b := bustest.Open(t)
	l := open(t, b)
	for i := range 3 {
		r := call("impact", fmt.Sprintf("old.op%d", i))
		r.ID, r.Time = fmt.Sprintf("old%d", i), time.Now().UTC()
		publishUnchained(t, l, r)
	}
	appendAll(t, l, call("impact", "new.op"), call("impact", "new.op2"))
	rep := verify(t, l)
	if !rep.OK || rep.Records != 5 || rep.Unchained != 3 {
		t.Errorf("Verify = %+v, want OK with 3 unchained", rep)
	}
	// An unchained record after the chain began is not from before it.
	r := call("impact", "sneaked.in")
	r.ID, r.Time = "sneaked", time.Now().UTC()
	publishUnchained(t, l, r)
	rep = verify(t, l)
	if rep.OK || len(rep.Problems) != 1 || rep.Problems[0].ID != "sneaked" || rep.Problems[0].Seq != 6 {
		t.Errorf("Verify after an unchained record = %+v, want it named", rep)
	}
}

// publishUnchained stores r as corral did before the chain.
func publishUnchained(t testing.TB, l *Log, r Record) {
	t.Helper()
	msg := nats.NewMsg(subject(r.Kind, r.Agent))
	var err error
	if msg.Data, err = json.Marshal(r); err != nil {
		t.Fatal(err)
	}
	msg.Header.Set(targetHeader, r.Target)
	if _, err := l.js.PublishMsg(t.Context(), msg, jetstream.WithMsgID(r.ID)); err != nil {
		t.Fatal(err)
	}
	l.end.known = false
}

// contains reports whether one of notes contains part.
func contains(notes []string, part string) bool {
	return slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, part) })
}

// TestVerifyChecksWhereRecordsAreStored publishes records around Append,
// chained but stored where their fields do not put them, and one whose
// prev is forged: the problems come in stream order, though the record
// before the forged link is blamed only after the next record is read.
func TestVerifyChecksWhereRecordsAreStored(t *testing.T) {
	l := open(t, bustest.Open(t))
	appendAll(t, l, call("impact", "a.b"))
	prev := digest(storedAt(t, l, 1))
	publish := func(seq, says uint64, r Record, subj, target string) {
		t.Helper()
		r.ID, r.Time = fmt.Sprintf("id%d", seq), time.Date(2026, 1, 2, 3, 4, int(seq), 0, time.UTC)
		body, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(subj)
		msg.Data = chained(body, says, prev)
		if target != "" {
			msg.Header.Set(targetHeader, target)
		}
		if _, err := l.js.PublishMsg(t.Context(), msg); err != nil {
			t.Fatal(err)
		}
		prev = digest(msg.Data)
	}
	publish(2, 2, call("impact", "c.d"), subject("tool", "mailer"), "c.d")
	publish(3, 3, call("impact", "e.f"), subject("tool", "impact"), "x.y")
	prev = digest([]byte("forged"))
	publish(4, 7, call("impact", "g.h"), subject("tool", "impact"), "g.h")
	publish(5, 5, call("impact", "i.j"), subject("tool", "impact"), "i.j")

	rep := verify(t, l)
	want := []string{
		`seq 2: stored under subject "corral.audit.tool.mailer", not "corral.audit.tool.impact" as its kind and agent say`,
		"seq 3: its Corral-Target header does not match its target",
		"seq 3: changed after it was written: its digest does not match the prev stored in seq 4",
		"seq 4: says it is seq 7 but is stored at seq 4: copied or moved",
	}
	if diff := cmp.Diff(want, problems(rep)); diff != "" {
		t.Errorf("Verify problems (-want +got):\n%s", diff)
	}
}

// BenchmarkVerify walks a stream of 10000 records.
func BenchmarkVerify(b *testing.B) {
	l := open(b, bustest.Open(b))
	for i := range 10000 {
		r := call("impact", fmt.Sprintf("crm.op%d", i%50))
		if _, err := l.Append(b.Context(), &r); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if rep := verify(b, l); !rep.OK || rep.Records != 10000 {
			b.Fatalf("Verify = %+v", rep)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10000, "ns/record")
}
