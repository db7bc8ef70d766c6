package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
)

// replica opens a task store on b whose mirror is not fed by the bucket's
// watch (Run is not called): it holds only what this replica wrote or read
// from the leader itself, which is a mirror lagging another replica's
// writes, held still, so that the test decides what each replica has seen.
func replica(t *testing.T, b *bus.Bus) (*Store, *Service) {
	t.Helper()
	s, err := Open(t.Context(), slog.New(slog.DiscardHandler), b)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s, NewService(slog.New(slog.DiscardHandler), s, nil)
}

func hostedTask(agent, parent string) *Task {
	now := time.Now().UTC()
	return &Task{ID: newID(now), Agent: agent, Parent: parent, Hosted: true, State: Working, Created: now, Updated: now}
}

// TestChildEndingAsItsParentParks: the parent runs on replica A and the
// child on replica B, and each has seen the other's task working. A records
// the parent's park, B records the child's end (which wakes the parent),
// then A looks at the child once more, each step before the other side's
// mirror could learn of it. The parent must not be left waiting for the
// sweep: B's wake finds the park, and A's look finds the end.
func TestChildEndingAsItsParentParks(t *testing.T) {
	ctx := t.Context()
	b := bustest.Open(t)
	a, svcA := replica(t, b)
	bStore, _ := replica(t, b)

	parent := hostedTask("impact", "")
	if err := a.create(ctx, parent); err != nil {
		t.Fatal(err)
	}
	child := hostedTask("negotiator", parent.ID)
	if err := bStore.create(ctx, child); err != nil {
		t.Fatal(err)
	}
	// Each replica has seen the other's task working.
	if _, _, err := a.fetch(ctx, child.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := bStore.fetch(ctx, parent.ID); err != nil {
		t.Fatal(err)
	}

	// A: the parent parks, waiting for the child (as awaitChild records it).
	if _, err := a.update(ctx, parent.ID, func(t *Task) error {
		t.State, t.Reason, t.WaitingOn = InputRequired, ReasonAwaitingAgent, child.ID
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// B: the child ends; its end wakes its parent (childEnded, an OnEnded hook).
	if err := bStore.settle(ctx, child.ID, Completed, "", "", json.RawMessage(`"done"`), Usage{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A: the parent's run looks at its child once more (awaitChild).
	if mirrored, _ := a.Get(child.ID); mirrored.State.Final() {
		t.Fatal("replica A's mirror has seen the child's end: the test does not hold the mirrors still")
	}
	end, err := svcA.latest(ctx, child.ID)
	if err != nil {
		t.Fatalf("latest(%s): %v", child.ID, err)
	}
	if end.State != Completed {
		t.Errorf("the parent's second look finds its child %s, want completed", end.State)
	}

	woken, _, err := a.fetch(ctx, parent.ID)
	if err != nil {
		t.Fatal(err)
	}
	queued, err := a.queued(ctx, woken)
	if err != nil {
		t.Fatal(err)
	}
	if woken.State != Working || !queued {
		t.Errorf("after its child ended the parent is %s %s, queued %v; want working and queued (woken at once, not by the sweep)", woken.State, woken.Reason, queued)
	}
}

// TestLatestFollowsHandoffs: the second look follows a child that handed
// its work off to the task that carries it, read from the leader as well.
func TestLatestFollowsHandoffs(t *testing.T) {
	ctx := t.Context()
	b := bustest.Open(t)
	a, svcA := replica(t, b)
	bStore, _ := replica(t, b)

	child := hostedTask("analyst", "")
	next := hostedTask("negotiator", child.ID)
	next.Handoff = true
	for _, task := range []*Task{child, next} {
		if err := bStore.create(ctx, task); err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.fetch(ctx, task.ID); err != nil {
			t.Fatal(err)
		}
	}
	handed, _ := json.Marshal(map[string]string{"handed_off_to": next.ID, "agent": next.Agent})
	if err := bStore.settle(ctx, child.ID, Completed, ReasonHandedOff, "", handed, Usage{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	check := func(want State) {
		t.Helper()
		end, err := svcA.latest(ctx, child.ID)
		if err != nil {
			t.Fatalf("latest(%s): %v", child.ID, err)
		}
		if end.ID != next.ID || end.State != want {
			t.Errorf("latest(%s) = %s %s, want %s %s", child.ID, end.ID, end.State, next.ID, want)
		}
	}
	check(Working)
	if err := bStore.settle(ctx, next.ID, Failed, ReasonRefused, "no", nil, Usage{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	check(Failed)
}

// TestWakeMeetingARunIsKept: a wake's work message that reaches the worker
// while it still runs the task (on its way to parking, before the wake's
// write reached this replica's mirror) is not dropped: the task runs
// again once it has parked, instead of waiting for the sweep.
func TestWakeMeetingARunIsKept(t *testing.T) {
	for _, tt := range []struct {
		name  string
		wake  bool  // a wake's message arrives during the first run
		first error // how the first run ends
		runs  int
	}{
		{"woken while parking", true, errParked, 2},
		{"parked, nobody woke it", false, errParked, 1},
		{"woken, but it ended", true, nil, 1},
		{"woken, but it goes back on the queue", true, &errRetry{errors.New("audit down")}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := &Worker{store: &Store{tasks: map[string]mirrored{}}, running: map[string]bool{}}
			const id = "task_01m98f27rwtfchsvm4rwm7h3h6"
			if !w.hold(id) {
				t.Fatal("hold of a task nobody runs = false")
			}
			runs := 0
			run := func(_ context.Context, got string) error {
				runs++
				if runs > 1 {
					return errParked
				}
				if tt.wake && w.hold(got) {
					t.Error("a work message for a task the worker runs took it a second time")
				}
				return tt.first
			}
			err := w.serve(t.Context(), id, run)
			if runs != tt.runs {
				t.Errorf("serve ran the task %d times, want %d", runs, tt.runs)
			}
			if tt.runs == 1 && !errors.Is(err, tt.first) && err != tt.first {
				t.Errorf("serve = %v, want %v", err, tt.first)
			}
			if !w.hold(id) {
				t.Error("the task is still held after serve returned: the next work message would be dropped")
			}
		})
	}
}

// workMessages counts the work messages queued for task id.
func workMessages(t *testing.T, s *Store, task *Task) uint64 {
	t.Helper()
	subject := workPrefix + placementKey(task.Placement) + "." + task.ID
	info, err := s.workS.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatalf("work stream info: %v", err)
	}
	return info.State.Subjects[subject]
}

// TestParkedTaskWakesAtItsDeadline: a hosted agent's task parked waiting
// for someone else (an answer, an approval, a child) with its deadline
// passed is woken by the scan (wakeDue) for its worker to end it, once,
// though two replicas scan it, each before its mirror saw the other's
// write; an approval's decision meeting the scan wakes it once too. A task
// whose deadline has not come, or that escalated at a limit, stays parked.
func TestParkedTaskWakesAtItsDeadline(t *testing.T) {
	now := time.Now().UTC()
	past, future := now.Add(-time.Second), now.Add(time.Hour)
	for _, tt := range []struct {
		name   string
		reason string
		wakeAt *time.Time
		// approvalFirst: the approval's decision wakes the task (Wake on
		// replica A) before both scans; approvalLast: after them.
		approvalFirst, approvalLast bool
		woken                       bool
	}{
		{name: "awaiting an approval, past its deadline", reason: ReasonAwaitingApproval, wakeAt: &past, woken: true},
		{name: "asked for input, past its deadline", reason: ReasonAskedForInput, wakeAt: &past, woken: true},
		{name: "awaiting a child, past its deadline", reason: ReasonAwaitingAgent, wakeAt: &past, woken: true},
		{name: "approved as the deadline came", reason: ReasonAwaitingApproval, wakeAt: &past, approvalFirst: true, woken: true},
		{name: "approved after the scans", reason: ReasonAwaitingApproval, wakeAt: &past, approvalLast: true, woken: true},
		{name: "before its deadline", reason: ReasonAwaitingApproval, wakeAt: &future},
		{name: "escalated at its deadline", reason: ReasonDeadline},
		{name: "parked by a corral before wake times", reason: ReasonAwaitingApproval},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			b := bustest.Open(t)
			a, svcA := replica(t, b)
			bStore, _ := replica(t, b)
			task := hostedTask("payer", "")
			task.State, task.Reason, task.WakeAt = InputRequired, tt.reason, tt.wakeAt
			if tt.reason == ReasonAwaitingAgent {
				task.WaitingOn = "task_01m98f27rwtfchsvm4rwm7h3h6"
			}
			if err := a.create(ctx, task); err != nil {
				t.Fatal(err)
			}
			if _, _, err := bStore.fetch(ctx, task.ID); err != nil {
				t.Fatal(err)
			}
			workerOn := func(s *Store) *Worker {
				return &Worker{logger: slog.New(slog.DiscardHandler), store: s, now: func() time.Time { return now }}
			}
			if tt.approvalFirst {
				if err := svcA.Wake(ctx, task.ID, "approval ap_1 approved"); err != nil {
					t.Fatal(err)
				}
			}
			workerOn(a).wakeDue(ctx)
			workerOn(bStore).wakeDue(ctx) // B's mirror still has the task parked
			if tt.approvalLast {
				if err := svcA.Wake(ctx, task.ID, "approval ap_1 approved"); err != nil {
					t.Fatal(err)
				}
			}

			got, _, err := a.fetch(ctx, task.ID)
			if err != nil {
				t.Fatal(err)
			}
			n := workMessages(t, a, task)
			if !tt.woken {
				if got.State != InputRequired || got.Reason != tt.reason || n != 0 {
					t.Errorf("task = %s %s with %d work messages, want still input-required %s, none queued", got.State, got.Reason, n, tt.reason)
				}
				return
			}
			if got.State != Working || got.WakeAt != nil || got.WaitingOn != "" || n != 1 {
				t.Errorf("task = %s %s (wake_at %v, waiting_on %q) with %d work messages; want working, no wake time, exactly one message", got.State, got.Reason, got.WakeAt, got.WaitingOn, n)
			}
		})
	}
}
