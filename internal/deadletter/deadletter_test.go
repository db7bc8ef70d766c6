package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/problem"
)

type auditLog struct {
	mu     sync.Mutex
	events []string
}

func (a *auditLog) Append(_ context.Context, r *audit.Record) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, r.Event+" "+r.Target)
	return "a1", nil
}

func open(t *testing.T) (*DLQ, *auditLog) {
	t.Helper()
	log := &auditLog{}
	d, err := Open(t.Context(), slog.New(slog.DiscardHandler), bustest.Open(t), log, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d, log
}

func code(err error) string {
	var pe *problem.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// TestPutRetryDiscard: an entry is put once (a Put with its id again is a
// no-op), listed and read; retry hands it to its source once, and a failed
// hand-over leaves it pending; discard tells the source and removes it;
// each is audited.
func TestPutRetryDiscard(t *testing.T) {
	d, log := open(t)
	ctx := t.Context()
	var retried, discarded []string
	fail := true
	// Like the workflow runs' handler: idempotent, refusing work that no
	// longer waits on the entry.
	d.Handle(SourceWorkflow, func(_ context.Context, e Entry) error {
		if fail || len(retried) > 0 {
			return problem.New(409, problem.Conflict, "not now")
		}
		retried = append(retried, e.Step)
		return nil
	}, func(_ context.Context, e Entry) error {
		discarded = append(discarded, e.Step)
		return nil
	})
	id := IDFor("task_1", "ship", "3")
	e := Entry{ID: id, Source: SourceWorkflow, Name: "order", Reason: "ship failed", Code: "upstream_error", Payload: json.RawMessage(`{"to":"Zürich"}`), Task: "task_1", Step: "ship", Attempts: 3, Resumable: true}
	for range 2 {
		got, err := d.Put(ctx, e)
		if err != nil || got != id {
			t.Fatalf("Put = %q, %v; want %q", got, err, id)
		}
	}
	other, err := d.Put(ctx, Entry{Source: SourceTrigger, Name: "orders-topic", Reason: "no such agent", Payload: json.RawMessage("not json")})
	if err != nil || !ValidID(other) {
		t.Fatalf("Put(trigger) = %q, %v", other, err)
	}
	if got, _, _ := d.Get(ctx, other); string(got.Payload) != `"not json"` {
		t.Errorf("a payload that is not JSON is stored as %s, want it as a JSON string", got.Payload)
	}
	all, err := d.List(ctx, Filter{})
	if err != nil || len(all.Items) != 2 || all.Next != 0 {
		t.Fatalf("List = %d entries, next %d, %v; want 2 and no next", len(all.Items), all.Next, err)
	}
	if wf, _ := d.List(ctx, Filter{Source: SourceWorkflow, Task: "task_1"}); len(wf.Items) != 1 || wf.Items[0].ID != id || wf.Items[0].State != Pending {
		t.Errorf("List(workflow, task_1) = %+v", wf)
	}
	if got := gauges(t, d); got != "task=0 trigger=1 workflow=1" {
		t.Errorf("corral_dead_letters = %s, want task=0 trigger=1 workflow=1", got)
	}
	if _, err := d.Retry(ctx, id, "admin"); code(err) != problem.Conflict {
		t.Fatalf("Retry with a failing source = %v, want its 409", err)
	}
	if got, _, _ := d.Get(ctx, id); got.State != Pending {
		t.Errorf("after a failed retry the entry is %s, want pending", got.State)
	}
	fail = false
	got, err := d.Retry(ctx, id, "admin")
	if err != nil || got.State != Retried || got.By != "admin" || got.RetriedAt == nil {
		t.Fatalf("Retry = %+v, %v", got, err)
	}
	if _, err := d.Retry(ctx, id, "admin"); code(err) != problem.Conflict {
		t.Errorf("second Retry = %v, want 409", err)
	}
	if _, err := d.Retry(ctx, other, "admin"); code(err) != problem.Conflict {
		t.Errorf("Retry of an entry not resumable = %v, want 409", err)
	}
	if len(retried) != 1 {
		t.Errorf("the source resumed %d times, want 1", len(retried))
	}
	if _, err := d.Discard(ctx, other, "admin"); err != nil {
		t.Fatalf("Discard = %v", err)
	}
	if _, _, err := d.Get(ctx, other); code(err) != problem.DeadLetterNotFound {
		t.Errorf("Get after Discard = %v, want dead_letter_not_found", err)
	}
	if len(discarded) != 0 {
		t.Errorf("discarding a trigger's entry called the workflow handler: %v", discarded)
	}
	want := []string{"dead_letter.put order", "dead_letter.put orders-topic", "dead_letter.retry order", "dead_letter.discard orders-topic"}
	if strings.Join(log.events, ",") != strings.Join(want, ",") {
		t.Errorf("audit = %v, want %v", log.events, want)
	}
}

// TestListPages: List pages newest first (by last change) with a cursor,
// filters within the pages, and reads no more than a page needs: a page of
// two out of many reads a handful of entries, not all of them, and a
// filter that matches nothing stops at MaxScan with where to go on.
func TestListPages(t *testing.T) {
	d, _ := open(t)
	ctx := t.Context()
	const n = 25
	var ids []string // in the order put
	for i := range n {
		source := SourceTrigger
		if i%5 == 0 {
			source = SourceWorkflow
		}
		id, err := d.Put(ctx, Entry{Source: source, Name: fmt.Sprint("n", i), Reason: "r"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// A discarded entry leaves a gap and a deletion marker behind.
	if _, err := d.Discard(ctx, ids[n-2], "admin"); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := n - 1; i >= 0; i-- {
		if i != n-2 {
			want = append(want, ids[i])
		}
	}

	var got []string
	var after uint64
	pages := 0
	for {
		p, err := d.List(ctx, Filter{Limit: 7, After: after})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(p.Items) > 7 {
			t.Fatalf("page %d holds %d entries, over its limit of 7", pages, len(p.Items))
		}
		for _, e := range p.Items {
			got = append(got, e.ID)
		}
		if p.Next == 0 {
			break
		}
		after = p.Next
	}
	if diff := cmp.Diff(want, got); diff != "" || pages != 4 {
		t.Errorf("every page of 7 (%d pages, want 4), newest first (-want +got):\n%s", pages, diff)
	}

	wf, err := d.List(ctx, Filter{Source: SourceWorkflow, Limit: 2})
	if err != nil || len(wf.Items) != 2 || wf.Items[0].ID != ids[20] || wf.Items[1].ID != ids[15] || wf.Next == 0 {
		t.Fatalf("List(workflow, limit 2) = %+v, %v; want n20, n15 and a next", wf, err)
	}
	rest, err := d.List(ctx, Filter{Source: SourceWorkflow, After: wf.Next})
	if err != nil || len(rest.Items) != 3 || rest.Items[0].ID != ids[10] || rest.Next != 0 {
		t.Errorf("the next page of List(workflow) = %+v, %v; want n10, n5, n0", rest, err)
	}

	// A page of two reads the newest few messages, not the queue.
	counted := &countingStream{Stream: d.stream}
	d.stream = counted
	if p, err := d.List(ctx, Filter{Limit: 2}); err != nil || len(p.Items) != 2 || p.Items[0].ID != ids[n-1] {
		t.Fatalf("List(limit 2) = %+v, %v", p, err)
	}
	if counted.gets > 12 {
		t.Errorf("List(limit 2) read %d messages of %d, want about a page's worth", counted.gets, n)
	}
}

// countingStream counts the messages read from the bucket's stream.
type countingStream struct {
	jetstream.Stream
	gets int
}

func (c *countingStream) GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	c.gets++
	return c.Stream.GetMsg(ctx, seq, opts...)
}

// TestListReadsOnlyWhatAPageNeeds: a page reads the newest entries only,
// and a filter that matches none stops at MaxScan with where to go on,
// rather than read the whole queue.
func TestListReadsOnlyWhatAPageNeeds(t *testing.T) {
	d, _ := open(t)
	ctx := t.Context()
	total := MaxScan + 500
	for i := range total {
		if _, err := d.Put(ctx, Entry{Source: SourceTrigger, Name: fmt.Sprint("n", i), Reason: "r"}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := d.List(ctx, Filter{Limit: 2})
	if err != nil || len(p.Items) != 2 || p.Items[0].Name != fmt.Sprint("n", total-1) || p.Next != uint64(total-1) {
		t.Fatalf("List(limit 2) = %d items, next %d, %v; want the newest two and next %d", len(p.Items), p.Next, err, total-1)
	}
	// Entries are sequences 1 to total: MaxScan of them, the newest, are
	// read, and the next page starts below them.
	none, err := d.List(ctx, Filter{Task: "task_none"})
	if want := uint64(total - MaxScan + 1); err != nil || len(none.Items) != 0 || none.Next != want {
		t.Fatalf("List(a task with no entries) = %d items, next %d, %v; want none and next %d, having read MaxScan", len(none.Items), none.Next, err, want)
	}
	// The next page goes on from there and reaches the end.
	last, err := d.List(ctx, Filter{Task: "task_none", After: none.Next})
	if err != nil || len(last.Items) != 0 || last.Next != 0 {
		t.Errorf("the page after = %d items, next %d, %v; want none and no next", len(last.Items), last.Next, err)
	}
}

// TestRetention: the bucket keeps entries MaxAge after they last changed;
// a queue opened with another retention changes the bucket it finds, and
// the entries stored under the old one are still there.
func TestRetention(t *testing.T) {
	b := bustest.Open(t)
	ctx := t.Context()
	logger := slog.New(slog.DiscardHandler)
	first, err := Open(ctx, logger, b, &auditLog{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if age := first.stream.CachedInfo().Config.MaxAge; age != DefaultMaxAge {
		t.Errorf("the bucket's max age = %v, want the default %v", age, DefaultMaxAge)
	}
	id, err := first.Put(ctx, Entry{Source: SourceTask, Reason: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := Open(ctx, logger, b, &auditLog{}, Options{MaxAge: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	info, err := again.stream.Info(ctx)
	if err != nil || info.Config.MaxAge != 48*time.Hour || !info.Config.AllowAtomicPublish {
		t.Fatalf("the bucket after reopening = max age %v, atomic %v (%v); want 48h, still atomic", info.Config.MaxAge, info.Config.AllowAtomicPublish, err)
	}
	if e, _, err := again.Get(ctx, id); err != nil || e.Reason != "kept" {
		t.Errorf("the entry stored before = %+v, %v; want it kept", e, err)
	}
}

// TestRetryAfterACrash: a crash between marking an entry retried and
// resuming its work leaves it retried with the work still waiting; retrying
// it again resumes the work (the handler is idempotent), where it used to
// answer "retried already" for ever.
func TestRetryAfterACrash(t *testing.T) {
	d, _ := open(t)
	ctx := t.Context()
	waiting := true
	resumed := 0
	d.Handle(SourceWorkflow, func(context.Context, Entry) error {
		if !waiting {
			return problem.New(409, problem.Conflict, "the run does not wait on it")
		}
		waiting = false
		resumed++
		return nil
	}, func(context.Context, Entry) error { return nil })
	id, err := d.Put(ctx, Entry{Source: SourceWorkflow, Name: "order", Reason: "ship failed", Task: "task_1", Step: "ship", Attempts: 3, Resumable: true})
	if err != nil {
		t.Fatal(err)
	}
	// The crash: marked retried, the handler never called.
	e, _, err := d.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	e.State = Retried
	b, _ := json.Marshal(e)
	if _, err := d.kv.Put(ctx, id, b); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Retry(ctx, id, "admin"); err != nil || got.State != Retried || resumed != 1 {
		t.Fatalf("Retry of an entry a crash left marked = %+v, %v (resumed %d times), want the work resumed", got, err, resumed)
	}
	if _, err := d.Retry(ctx, id, "admin"); code(err) != problem.Conflict || resumed != 1 {
		t.Errorf("Retry once the work goes on = %v (resumed %d times), want 409 and no second resume", err, resumed)
	}
}

// TestHostileEntries: ids that are not ids, payloads too large, entries
// without a source.
func TestHostileEntries(t *testing.T) {
	d, _ := open(t)
	ctx := t.Context()
	for _, id := range []string{"", "dlq_", "dlq_" + strings.Repeat("z", 27), "../../etc", "dlq_ILOU0000000000000000000000", strings.Repeat("x", 10000)} {
		if _, _, err := d.Get(ctx, id); code(err) != problem.DeadLetterNotFound {
			t.Errorf("Get(%.30q) = %v, want dead_letter_not_found", id, err)
		}
	}
	if _, err := d.Put(ctx, Entry{ID: "dlq_bad", Source: SourceTask}); err == nil {
		t.Error("Put with a malformed id was accepted")
	}
	if _, err := d.Put(ctx, Entry{Reason: "no source"}); err == nil {
		t.Error("Put without a source was accepted")
	}
	big := json.RawMessage(`"` + strings.Repeat("a", MaxPayload) + `"`)
	id, err := d.Put(ctx, Entry{Source: SourceTask, Payload: big})
	if err != nil {
		t.Fatal(err)
	}
	if e, _, _ := d.Get(ctx, id); !e.Truncated || len(e.Payload) != 0 {
		t.Errorf("a payload over MaxPayload is kept (%d bytes, truncated %v)", len(e.Payload), e.Truncated)
	}
}

// gauges renders the collector's samples: "task=0 trigger=1 workflow=1".
func gauges(t *testing.T, d *DLQ) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(d))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out = append(out, fmt.Sprintf("%s=%g", m.GetLabel()[0].GetValue(), m.GetGauge().GetValue()))
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}
