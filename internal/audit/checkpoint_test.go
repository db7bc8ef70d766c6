package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/bus/bustest"
)

func openWith(t testing.TB, opts Options) *Log {
	t.Helper()
	l, err := Open(t.Context(), slog.New(slog.DiscardHandler), bustest.Open(t), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

// run runs l.Run until the test ends, or until the returned stop is called,
// which waits for it.
func run(t testing.TB, l *Log) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// nextCheckpoints reads n checkpoints from the checkpoint stream in order,
// waiting for them up to a deadline.
type checkpointReader struct {
	msgs jetstream.MessagesContext
}

func readCheckpoints(t testing.TB, l *Log) *checkpointReader {
	t.Helper()
	cons, err := l.checkpoints.OrderedConsumer(t.Context(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(msgs.Stop)
	return &checkpointReader{msgs: msgs}
}

func (r *checkpointReader) next(t testing.TB) Checkpoint {
	t.Helper()
	stop := time.AfterFunc(time.Minute, r.msgs.Stop) // generous: CI runs loaded, with the race detector
	defer stop.Stop()
	m, err := r.msgs.Next()
	if err != nil {
		t.Fatalf("no checkpoint within a minute: %v", err)
	}
	cp, err := parseCheckpoint(m.Data())
	if err != nil {
		t.Fatalf("checkpoint %s: %v", m.Data(), err)
	}
	return cp
}

func TestCheckpoint(t *testing.T) {
	l := open(t, bustest.Open(t))
	if _, ok, err := l.checkpoint(t.Context()); ok || err != nil {
		t.Fatalf("checkpoint with nothing written = %v, %v; want nothing", ok, err)
	}
	appendAll(t, l, call("impact", "a.b"), call("impact", "c.d"))
	before := time.Now()
	cp, ok, err := l.checkpoint(t.Context())
	if err != nil || !ok {
		t.Fatalf("checkpoint = %v, %v", ok, err)
	}
	want := Checkpoint{Seq: 2, Digest: digest(storedAt(t, l, 2)), Time: cp.Time, Records: 2}
	if cp != want || cp.Time.Before(before) {
		t.Errorf("checkpoint = %+v, want %+v at about now", cp, want)
	}
	if _, ok, err := l.checkpoint(t.Context()); ok || err != nil {
		t.Errorf("checkpoint again = %v, %v; want nothing new", ok, err)
	}
	got, ok, err := l.lastCheckpoint(t.Context())
	if err != nil || !ok || got.Seq != 2 || got.Digest != want.Digest || !got.Time.Equal(cp.Time) {
		t.Errorf("lastCheckpoint = %+v, %v, %v; want %+v", got, ok, err, cp)
	}
	rep := verify(t, l)
	if !rep.OK || rep.Checkpoints != 1 || contains(rep.Notes, "no checkpoint covers") {
		t.Errorf("Verify = %+v, want OK with the checkpoint matched and the newest covered", rep)
	}
}

func TestRunCheckpointsEveryNRecords(t *testing.T) {
	l := openWith(t, Options{CheckpointRecords: 5, CheckpointInterval: time.Hour})
	cps := readCheckpoints(t, l)
	stop := run(t, l)
	for i := range 5 {
		appendAll(t, l, call("impact", fmt.Sprintf("t.op%d", i)))
	}
	// Run wakes after the fifth record; later ones may have come by then.
	first := cps.next(t)
	if first.Seq < 5 || first.Digest != digest(storedAt(t, l, first.Seq)) {
		t.Errorf("first checkpoint = %+v, want seq 5 or later with its digest", first)
	}
	appendAll(t, l, call("impact", "t.last"))
	stop()
	final := cps.next(t)
	if final.Seq != 6 || final.Digest != digest(storedAt(t, l, 6)) {
		t.Errorf("checkpoint as Run stops = %+v, want seq 6 with its digest", final)
	}
	if rep := verify(t, l); !rep.OK || rep.Checkpoints != 2 {
		t.Errorf("Verify = %+v, want OK with 2 checkpoints matched", rep)
	}
}

func TestRunCheckpointsAfterInterval(t *testing.T) {
	l := openWith(t, Options{CheckpointInterval: 20 * time.Millisecond})
	cps := readCheckpoints(t, l)
	run(t, l)
	appendAll(t, l, call("impact", "a.b"))
	if cp := cps.next(t); cp.Seq != 1 {
		t.Errorf("checkpoint after the interval = %+v, want seq 1", cp)
	}
}

func TestOpenCheckpointStream(t *testing.T) {
	l := openWith(t, Options{MaxAge: 1000 * 24 * time.Hour})
	info, err := l.checkpoints.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.MaxAge != 1000*24*time.Hour || !c.DenyDelete || !c.DenyPurge || c.Subjects[0] != checkpointSubject {
		t.Errorf("checkpoint stream config = max age %v, deny delete %v, deny purge %v, subjects %v; want the audit's max age, both denied",
			c.MaxAge, c.DenyDelete, c.DenyPurge, c.Subjects)
	}
	if l := openWith(t, Options{}); l.opts.CheckpointMaxAge != DefaultCheckpointMaxAge {
		t.Errorf("default checkpoint max age = %v, want %v", l.opts.CheckpointMaxAge, DefaultCheckpointMaxAge)
	}
}

func TestParseCheckpointRefusesForgedDigest(t *testing.T) {
	for _, data := range []string{
		`{"seq": 3, "digest": "sha256:\",\"agent\":\"x"}`,
		`{"seq": 3}`,
		`{"digest": "` + digest(nil) + `"}`,
		`null`,
	} {
		if cp, err := parseCheckpoint([]byte(data)); err == nil {
			t.Errorf("parseCheckpoint(%s) = %+v, want an error", data, cp)
		}
	}
	good, _ := json.Marshal(Checkpoint{Seq: 3, Digest: digest(nil)})
	if _, err := parseCheckpoint(good); err != nil {
		t.Errorf("parseCheckpoint(%s): %v", good, err)
	}
}
