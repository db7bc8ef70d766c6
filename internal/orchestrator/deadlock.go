package orchestrator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/audit"
)

// The wait-for graph is in the task records every replica mirrors: a task
// that waits for another (a delegation's parent for its child, an external
// agent's task whose agent waits for another task's result) names it in
// WaitingOn. Waits for a person (input, an approval) are no edges: a
// person is outside every cycle. Each replica looks for cycles (every
// 200 ms, and at every change of a task record) and breaks each by failing
// its youngest task with reason deadlock; replicas that find the same
// cycle pick the same task, and a task ends once (the journal's guard), so
// looking on every replica is idempotent.

// deadlockEvery is how often a replica looks for cycles at least.
const deadlockEvery = 200 * time.Millisecond

// detectDeadlocks breaks cycles of waits until ctx ends.
func (s *Store) detectDeadlocks(ctx context.Context) {
	svc := &Service{logger: s.logger, store: s, now: time.Now}
	tick := time.NewTicker(deadlockEvery)
	defer tick.Stop()
	for {
		for _, cycle := range waitCycles(s.waiting()) {
			svc.breakDeadlock(ctx, cycle)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.Changed():
			// A burst of changes is looked at once, a moment later.
			if sleep(ctx, 20*time.Millisecond) != nil {
				return
			}
		}
	}
}

// waiting returns the live tasks that wait for another task: the wait-for
// graph's edges. A scan without copies, made often: a replica with many
// tasks and few waits pays little.
func (s *Store) waiting() []*Task {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*Task
	for _, m := range s.tasks {
		if m.task.WaitingOn != "" && !m.task.State.Final() {
			out = append(out, m.task.clone())
		}
	}
	return out
}

// waitCycles returns the cycles of the wait-for graph among live tasks,
// each in the order of its waits, starting from its oldest task.
func waitCycles(live []*Task) [][]*Task {
	byID := make(map[string]*Task, len(live))
	for _, t := range live {
		byID[t.ID] = t
	}
	done := map[string]bool{}
	var out [][]*Task
	for _, start := range live {
		if done[start.ID] {
			continue
		}
		// Each task waits for one at most: follow the waits until a task
		// seen on this walk (a cycle), one seen before, or the end.
		onWalk := map[string]int{}
		var walk []*Task
		for t := start; t != nil && !done[t.ID]; t = byID[t.WaitingOn] {
			if i, ok := onWalk[t.ID]; ok {
				cycle := slices.Clone(walk[i:])
				oldest := 0
				for j, c := range cycle {
					if older(c, cycle[oldest]) {
						oldest = j
					}
				}
				out = append(out, append(cycle[oldest:], cycle[:oldest]...))
				break
			}
			onWalk[t.ID] = len(walk)
			walk = append(walk, t)
			if t.WaitingOn == "" {
				break
			}
		}
		for _, t := range walk {
			done[t.ID] = true
		}
	}
	return out
}

// older orders tasks by creation, then id.
func older(a, b *Task) bool {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c < 0
	}
	return a.ID < b.ID
}

// youngest is the task a deadlock fails: the last created.
func youngest(cycle []*Task) *Task {
	y := cycle[0]
	for _, t := range cycle[1:] {
		if older(y, t) {
			y = t
		}
	}
	return y
}

// describeCycle writes a cycle as people read it.
func describeCycle(cycle []*Task) string {
	parts := make([]string, 0, len(cycle)+1)
	for _, t := range append(slices.Clone(cycle), cycle[0]) {
		parts = append(parts, fmt.Sprintf("%s (agent %s)", t.ID, t.Agent))
	}
	return strings.Join(parts, " waits for ")
}

// breakDeadlock fails the youngest task of a cycle with reason deadlock,
// naming the cycle in its events (deadlockEnded: the audit, the metric).
func (s *Service) breakDeadlock(ctx context.Context, cycle []*Task) {
	victim := youngest(cycle)
	detail := "deadlock: " + describeCycle(cycle) + "; " + victim.ID + ", the youngest, is failed to break it"
	if _, err := s.stop(ctx, victim, &Stop{State: Failed, Reason: ReasonDeadlock, Detail: detail, By: "corral", Time: s.now().UTC()}); err != nil {
		s.logger.WarnContext(ctx, "breaking a deadlock; trying again", "task", victim.ID, "err", err)
	}
}

// deadlockEnded counts and audits a task ended to break a deadlock, on the
// replica that recorded its end, once (an OnEnded hook).
func (s *Store) deadlockEnded(ctx context.Context, id string, st State) {
	t, ok := s.Get(id)
	if !ok || st != Failed || t.Reason != ReasonDeadlock {
		return
	}
	s.deadlocks.Add(1)
	s.logger.WarnContext(ctx, "deadlock broken", "task", id, "detail", t.Detail)
	if s.auditor == nil {
		return
	}
	rec := &audit.Record{Time: time.Now().UTC(), Kind: "task", Event: ReasonDeadlock, Target: id, Task: id, Agent: t.Agent,
		Edge: "server", Decision: "denied", Status: "failed", Code: ReasonDeadlock, Reason: t.Detail}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := s.auditor.Append(actx, rec); err != nil {
		s.logger.WarnContext(ctx, "the audit record of a broken deadlock is lost; the task's events have it", "task", id, "err", err)
	}
}

// MaxAwait bounds how long one Await waits.
const MaxAwait = time.Minute

// Await waits up to d (at most MaxAwait) for task id to end, and returns
// it as it is then. waiter, when set, is the task on whose behalf the
// caller waits (its token's task): while the wait lasts it is an edge of
// the wait-for graph, so that two tasks waiting on each other are a
// deadlock corral breaks. The wait ends early when the waiter ends.
func (s *Service) Await(ctx context.Context, id, waiter string, d time.Duration) (*Task, error) {
	t, err := s.Get(ctx, id)
	if err != nil || t.State.Final() || d <= 0 {
		return t, err
	}
	d = min(d, MaxAwait)
	if waiter != "" && waiter != id && ValidID(waiter) {
		if _, err := s.store.update(ctx, waiter, func(w *Task) error {
			if w.State.Final() || w.Reason == ReasonAwaitingAgent || w.WaitingOn == id {
				return errSkip // ended, parked on a delegation, or waiting already
			}
			w.WaitingOn = id
			return nil
		}); err != nil {
			return nil, s.substrate(err)
		}
		defer func() {
			if _, err := s.store.update(context.WithoutCancel(ctx), waiter, func(w *Task) error {
				if w.WaitingOn != id || w.Reason == ReasonAwaitingAgent {
					return errSkip
				}
				w.WaitingOn = ""
				return nil
			}); err != nil {
				s.logger.WarnContext(ctx, "a finished wait stays in the wait-for graph", "task", waiter, "err", err)
			}
		}()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		changed := s.store.Changed()
		if t, err = s.Get(ctx, id); err != nil || t.State.Final() {
			return t, err
		}
		if waiter != "" {
			if w, ok := s.store.Get(waiter); ok && w.State.Final() {
				return t, nil
			}
		}
		select {
		case <-ctx.Done():
			return t, nil
		case <-timer.C:
			return t, nil
		case <-changed:
		}
	}
}
