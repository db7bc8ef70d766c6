package orchestrator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"

	"github.com/corral-dev/corral/internal/deadletter"
	"github.com/corral-dev/corral/internal/problem"
)

// createRun makes a task that runs a Workflow, acting as the workflow's
// spec.agent, and queues it.
func (s *Service) createRun(ctx context.Context, req Request) (*Task, bool, error) {
	if len(req.Input) == 0 {
		return nil, false, problem.New(http.StatusBadRequest, problem.InvalidRequest, "input: required: the run's input, a string or a JSON value")
	}
	if len(req.Input) > MaxInput {
		return nil, false, problem.New(http.StatusRequestEntityTooLarge, problem.RequestTooLarge, fmt.Sprintf("input: %d bytes, over the limit of %d", len(req.Input), MaxInput))
	}
	res, ok := s.resources.Get("Workflow", req.Workflow)
	if !ok {
		return nil, false, problem.New(http.StatusNotFound, problem.ResourceNotFound, "workflow: no workflow named "+req.Workflow)
	}
	wf, ok := workflowSpec(res)
	if !ok {
		return nil, false, problem.New(http.StatusInternalServerError, problem.Internal, "workflow "+req.Workflow+"'s resource is unreadable")
	}
	if req.Agent != "" && req.Agent != wf.Agent {
		return nil, false, problem.New(http.StatusForbidden, problem.PolicyDenied, "workflow "+req.Workflow+" acts as agent "+wf.Agent+", not "+req.Agent)
	}
	ares, ok := s.resources.Get("Agent", wf.Agent)
	if !ok {
		return nil, false, problem.New(http.StatusConflict, problem.ResourceNotFound, "workflow "+req.Workflow+" acts as agent "+wf.Agent+", which does not exist")
	}
	spec, ok := agentSpec(ares)
	if !ok {
		return nil, false, problem.New(http.StatusInternalServerError, problem.Internal, "agent "+wf.Agent+"'s resource is unreadable")
	}
	now := s.now().UTC()
	sum := sha256.Sum256(append([]byte("workflow/"+req.Workflow+"\x00"), req.Input...))
	digest := hex.EncodeToString(sum[:])
	id := newID(now)
	if req.IdempotencyKey != "" {
		id = idFor(req.Owner, req.IdempotencyKey)
	}
	maxTurns, maxTools, deadline, repeated := spec.Limits.Effective()
	placement := wf.Placement
	if len(placement) == 0 {
		placement = spec.Placement
	}
	t := &Task{
		ID: id, Agent: wf.Agent, Workflow: req.Workflow, AgentUID: ares.Metadata.UID, Input: req.Input, Principal: req.Principal,
		Parent: req.Parent, Chain: req.Chain, TraceID: s.store.newTrace(req.Parent, id), Hosted: true, Placement: placement, State: Submitted,
		Limits:    Limits{MaxTurns: maxTurns, MaxToolCalls: maxTools, Deadline: deadline.String(), RepeatedCalls: repeated, OnExceeded: "fail"},
		CreatedBy: req.CreatedBy, Created: now, Updated: now, InputDigest: digest,
	}
	err := s.store.create(ctx, t)
	if wrongRevision(err) {
		prev, _, ferr := s.store.fetch(ctx, id)
		if ferr != nil {
			return nil, false, s.substrate(ferr)
		}
		if prev.InputDigest != digest {
			return nil, false, problem.New(http.StatusConflict, problem.IdempotencyConflict, "this Idempotency-Key made task "+id+" with another workflow or input")
		}
		if prev.State != Submitted {
			return prev, false, nil
		}
		return prev, false, s.queue(ctx, prev)
	}
	if err != nil {
		return nil, false, s.substrate(err)
	}
	if _, err := s.store.append(ctx, id, &Event{Type: EvState, State: Submitted, Time: now, Agent: wf.Agent, Detail: "workflow " + req.Workflow}, 0, id+"/submitted"); err != nil && !errors.Is(err, ErrFenced) {
		return nil, false, s.substrate(err)
	}
	if err := s.queue(ctx, t); err != nil {
		return nil, false, err
	}
	return t, true, nil
}

// TaskEnded is the Store.OnEnded hook: a child task that ends wakes the
// workflow run waiting on it, and a task that ends other than completed
// (canceled, failed, killed, a deadlock's victim) cancels the tasks it
// leaves running (its delegations, a run's steps' tasks), and they theirs
// in turn, since nobody waits for their results any more. A handoff
// completes its task, so the agent it handed the work to goes on.
func (s *Service) TaskEnded(ctx context.Context, id string, st State) {
	t, ok := s.store.Get(id)
	if !ok {
		return
	}
	if t.Parent != "" {
		if err := s.wakeRun(ctx, t.Parent, "task "+id+" "+string(st)); err != nil {
			s.logger.WarnContext(ctx, "waking a workflow run after its step's task ended; the sweep will", "run", t.Parent, "task", id, "err", err)
		}
	}
	if st == Completed {
		return
	}
	by := "task " + id
	if t.Workflow != "" {
		by = "workflow run " + id
	}
	for _, c := range s.store.live() {
		if c.Parent != id {
			continue
		}
		if _, err := s.Cancel(ctx, c.ID, by, "its parent task "+id+" ended "+string(st)); err != nil {
			s.logger.WarnContext(ctx, "canceling the task of an ended task", "parent", id, "task", c.ID, "err", err)
		}
	}
}

// timeOut cancels an agent step's task whose timeout has come, with reason
// step_timeout: at once when no worker holds it, else by asking its
// worker. It returns the task as it is then (completed, if it ended so
// first).
func (s *Service) timeOut(ctx context.Context, id, by, detail string) (*Task, error) {
	t, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if t.State.Final() {
		return t, nil
	}
	return s.stop(ctx, t, &Stop{State: Canceled, Reason: ReasonStepTimeout, Detail: detail, By: by, Time: s.now().UTC()})
}

// wakeRun puts a workflow run parked on its steps' tasks back on the queue.
func (s *Service) wakeRun(ctx context.Context, id, detail string) error {
	p, ok := s.store.Get(id)
	if !ok || p.Workflow == "" || p.State != InputRequired || p.Reason != ReasonAwaitingTask {
		return nil
	}
	p, err := s.store.update(ctx, id, func(t *Task) error {
		if t.State != InputRequired || t.Reason != ReasonAwaitingTask {
			return errSkip
		}
		t.State, t.Reason, t.Detail = Working, "", detail
		return nil
	})
	if err != nil {
		return err
	}
	if p.State != Working {
		return nil
	}
	return s.store.dispatch(ctx, p, fmt.Sprintf("%s/wake/%d", id, p.Updated.UnixNano()))
}

// RetryDeadLetter resumes a dead-lettered workflow run at its failed step,
// with the step's attempts anew (deadletter.Handler for source workflow).
func (s *Service) RetryDeadLetter(ctx context.Context, e deadletter.Entry) error {
	return s.resumeDeadLettered(ctx, e, &Event{Type: EvStepRetry, Detail: "retried from dead letter " + e.ID, Workflow: &StepEvent{Step: e.Step, DeadLetter: e.ID}}, "retry")
}

// DiscardDeadLetter gives a dead-lettered run up: its completed steps are
// compensated and it fails (deadletter.Handler for source workflow). A run
// no longer waiting on the entry is left alone.
func (s *Service) DiscardDeadLetter(ctx context.Context, e deadletter.Entry) error {
	err := s.resumeDeadLettered(ctx, e, &Event{Type: EvDiscarded, Detail: "dead letter " + e.ID + " discarded", Workflow: &StepEvent{Step: e.Step, DeadLetter: e.ID}}, "discard")
	var pe *problem.Error
	if errors.As(err, &pe) && pe.Code == problem.Conflict {
		return nil
	}
	return err
}

func (s *Service) resumeDeadLettered(ctx context.Context, e deadletter.Entry, ev *Event, what string) error {
	t, err := s.Get(ctx, e.Task)
	if err != nil {
		return err
	}
	if t.Workflow == "" || t.State != InputRequired || t.Reason != ReasonDeadLettered {
		return problem.New(http.StatusConflict, problem.Conflict, fmt.Sprintf("task %s is %s %s: it does not wait on dead letter %s", t.ID, t.State, t.Reason, e.ID))
	}
	// The journal first (a worker replaying it resumes), then the record.
	if _, err := s.store.append(ctx, t.ID, ev, anySeq, t.ID+"/"+what+"/"+e.ID); err != nil {
		return s.substrate(err)
	}
	t, err = s.store.update(ctx, t.ID, func(t *Task) error {
		if t.State != InputRequired || t.Reason != ReasonDeadLettered {
			return errSkip
		}
		t.State, t.Reason, t.Detail = Working, "", ev.Detail
		return nil
	})
	if err != nil {
		return s.substrate(err)
	}
	if err := s.store.dispatch(ctx, t, t.ID+"/"+what+"/"+e.ID); err != nil {
		return s.substrate(err)
	}
	return nil
}
