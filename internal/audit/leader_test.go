package audit

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
)

// TestAppendThroughLeaderChanges appends from eight goroutines to an audit
// stream replicated on a three-node cluster while its leader is made to step
// down again and again: no Append fails, every record is stored once, and
// the chain verifies. At d7dc022 an append that met the change failed at
// once (no retry within the deadline), and the pipeline answered 200 with
// an empty audit id (issue 20.1, 20.2).
func TestAppendThroughLeaderChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nats-server processes; -short skips it")
	}
	urls := bustest.ExternalCluster(t, 3)
	b := bustest.OpenWith(t, bus.Options{URL: strings.Join(urls, ","), Replicas: 3})
	l, err := Open(t.Context(), slog.New(slog.DiscardHandler), b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	nc := b.JetStream().Conn()

	const workers, stepdowns = 8, 3
	var (
		stop     atomic.Bool
		appended atomic.Int64
		slowest  atomic.Int64
		wg       sync.WaitGroup
		errs     = make(chan error, workers)
	)
	for w := range workers {
		wg.Go(func() {
			for n := 0; !stop.Load(); n++ {
				r := call("agent", "t.w"+string(rune('a'+w)))
				t0 := time.Now()
				if _, err := l.Append(t.Context(), &r); err != nil {
					errs <- err
					return
				}
				if d := int64(time.Since(t0)); d > slowest.Load() {
					slowest.Store(d)
				}
				appended.Add(1)
			}
		})
	}
	for i := range stepdowns {
		before := appended.Load()
		for appended.Load() < before+50 && len(errs) == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		// Until the last election settles, a stepdown is refused (503); on a
		// loaded machine an election can take many seconds.
		var answer string
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && !strings.Contains(answer, `"success":true`); {
			resp, err := nc.RequestWithContext(t.Context(), "$JS.API.STREAM.LEADER.STEPDOWN."+Stream, nil)
			if answer = fmt.Sprint(err); err == nil {
				answer = string(resp.Data)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(answer, `"success":true`) {
			t.Fatalf("stepdown %d: %s", i, answer)
		}
	}
	before := appended.Load()
	for appended.Load() < before+50 && len(errs) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Append during leader changes: %v", err)
	}
	rep := verify(t, l)
	if !rep.OK || rep.Records != uint64(appended.Load()) {
		t.Errorf("Verify = %+v, want OK over the %d records appended", rep, appended.Load())
	}
	t.Logf("%d records appended through %d leader changes; slowest append %v", appended.Load(), stepdowns, time.Duration(slowest.Load()))
}
