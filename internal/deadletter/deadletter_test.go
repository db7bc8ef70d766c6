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
	d, err := Open(t.Context(), slog.New(slog.DiscardHandler), bustest.Open(t), log)
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
	if err != nil || len(all) != 2 {
		t.Fatalf("List = %d entries, %v; want 2", len(all), err)
	}
	if wf, _ := d.List(ctx, Filter{Source: SourceWorkflow, Task: "task_1"}); len(wf) != 1 || wf[0].ID != id || wf[0].State != Pending {
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
