package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/corral-dev/corral/internal/config"
)

// The journal entries of a remote agent's task (docs/a2a.md).
const (
	// EvAgentCall: a message is about to be sent to the remote agent (the
	// intent): its step and message id (CallID), so a worker that resumes
	// sends the same message, with the same id, again.
	EvAgentCall = "agent.call"
	// EvAgentTask: the remote agent answered the step: its task's id
	// (CallID) and state.
	EvAgentTask = "agent.task"
)

// ReasonRemote: a remote agent ended the task (failed, rejected, canceled
// on its side) or refused the message; detail says what it said.
const ReasonRemote = "remote_agent"

// RemoteAgents sends messages to remote A2A agents and reads their tasks
// (a2a.Client). Errors it returns that are *RemoteRefusal end the task;
// any other is tried again later.
type RemoteAgents interface {
	Send(ctx context.Context, agent string, spec *config.A2ASpec, m RemoteMessage) (*RemoteTask, error)
	Get(ctx context.Context, agent string, spec *config.A2ASpec, remoteID string) (*RemoteTask, error)
	Cancel(ctx context.Context, agent string, spec *config.A2ASpec, remoteID string) error
}

// RemoteMessage is a message corral sends to a remote agent for a task.
type RemoteMessage struct {
	// ID is derived from the task and the step: a resent message is the
	// same message.
	ID string
	// Task is the corral task; RemoteTask the remote one it continues.
	Task, RemoteTask, ContextID string
	Input                       json.RawMessage
	// Chain is the agents above the remote one, the task's agent last.
	Chain []string
}

// RemoteTask is a remote agent's task as corral reads it.
type RemoteTask struct {
	ID, ContextID string
	// State is the remote state in corral's terms; AuthRequired says the
	// remote waits for an authorization rather than an answer.
	State        State
	AuthRequired bool
	Detail       string
	Result       json.RawMessage
}

// RemoteRefusal is a remote agent's refusal of a message: it will not be
// accepted by sending it again.
type RemoteRefusal struct {
	Code   string // the problem code, corral's when the remote is a corral
	Detail string
}

func (e *RemoteRefusal) Error() string { return "remote agent refused: " + e.Code + ": " + e.Detail }

// Remote polling: how soon and how often a remote task still working is
// read again.
const (
	remotePollMin = 100 * time.Millisecond
	remotePollMax = 2 * time.Second
)

// remoteSpec is the spec.a2a of a task's agent, when it is a remote agent.
func (w *Worker) remoteSpec(t *Task) (*config.AgentSpec, bool) {
	res, ok := w.resources.Get("Agent", t.Agent)
	if !ok {
		return nil, false
	}
	spec, _ := agentSpec(res)
	if spec == nil || spec.A2A == nil || (t.AgentUID != "" && res.Metadata.UID != t.AgentUID) {
		return nil, false
	}
	return spec, true
}

// remoteRun is a remote agent's task as its journal tells it.
type remoteRun struct {
	w        *Worker
	t        *Task
	spec     *config.AgentSpec
	last     uint64 // the journal's last entry: appends are guarded by it
	step     int    // the last step sent (agent.call)
	answered bool   // the last step has its agent.task
	remoteID string
	ctxID    string
	answer   json.RawMessage // a person's message after the last step, to send
	// stepInput is what the last step sent (or is to send).
	stepInput json.RawMessage
	starts    int
}

// runRemote runs a task of a remote A2A agent: it sends the task's input
// (then each answer a person gives) to the remote agent, and mirrors the
// remote task's state into the task until it ends or waits for input.
// Each message is journaled before it is sent, with an id derived from
// the task and the step, so a worker that resumes after a crash sends the
// same message again (a corral on the other side, keying tasks by message
// id, makes no second task), never a new one.
func (w *Worker) runRemote(ctx context.Context, t *Task, spec *config.AgentSpec) error {
	events, err := w.store.journal(ctx, t.ID)
	if err != nil {
		return &errRetry{err}
	}
	r := &remoteRun{w: w, t: t, spec: spec}
	for _, ev := range events {
		r.last = ev.Seq
		switch ev.Type {
		case EvStarted:
			r.starts++
		case EvAgentCall:
			r.step, r.answered, r.answer, r.stepInput = ev.Step, false, nil, ev.Message
		case EvAgentTask:
			r.answered, r.remoteID = true, ev.CallID
			if ev.Detail != "" {
				r.ctxID = ev.Detail
			}
		case EvMessage:
			var m struct{ Content string }
			if json.Unmarshal(ev.Message, &m) == nil {
				r.answer, _ = json.Marshal(m.Content)
			}
		case EvState:
			if ev.State.Final() {
				return w.store.settle(ctx, t.ID, ev.State, ev.Reason, ev.Detail, ev.Result, Usage{}, w.now())
			}
		}
	}
	if r.starts >= w.opts.MaxAttempts {
		return r.end(ctx, Failed, ReasonAttempts, fmt.Sprintf("the task was started %d times without ending", r.starts), nil)
	}
	if r.step > 0 && r.answered && r.answer == nil && t.State == InputRequired {
		return errParked // still waiting for a person
	}
	if err := r.append(ctx, &Event{Type: EvStarted, Worker: w.opts.ID}); err != nil {
		return err
	}
	now := w.now().UTC()
	if t.Started == nil {
		t.Started = &now // for the deadline
	}
	if _, err := w.store.update(ctx, t.ID, func(t *Task) error {
		if t.State.Final() {
			return errSkip
		}
		t.State, t.Reason, t.Detail, t.Worker, t.Attempts = Working, "", "", w.opts.ID, r.starts+1
		if t.Started == nil {
			t.Started = &now
		}
		return nil
	}); err != nil {
		return &errRetry{err}
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go r.watch(ctx, cancel)

	rt, err := r.send(ctx)
	for err == nil && rt != nil && !rt.State.Final() && rt.State != InputRequired {
		rt, err = r.poll(ctx, rt)
	}
	if cause, ok := context.Cause(ctx).(*stopCause); ok && !errors.Is(err, ErrFenced) {
		if r.remoteID != "" {
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if cerr := w.opts.Remote.Cancel(cctx, t.Agent, spec.A2A, r.remoteID); cerr != nil {
				w.logger.WarnContext(ctx, "canceling the remote task", "task", t.ID, "remote_task", r.remoteID, "err", cerr)
			}
			ccancel()
		}
		return r.end(ctx, cause.state, cause.reason, cause.detail, nil)
	}
	var refusal *RemoteRefusal
	switch {
	case errors.As(err, &refusal):
		return r.end(ctx, Failed, ReasonRemote, fmt.Sprintf("agent %s refused the message (%s): %s", t.Agent, refusal.Code, refusal.Detail), nil)
	case err != nil:
		if errors.Is(err, ErrFenced) {
			return err
		}
		var retry *errRetry
		if errors.As(err, &retry) {
			return err
		}
		return &errRetry{err}
	}
	return r.mirror(ctx, rt)
}

// send sends the next message: the input, a person's answer, or again the
// last one when its answer was never journaled (same step, same id). With
// nothing to send it reads the remote task.
func (r *remoteRun) send(ctx context.Context) (*RemoteTask, error) {
	m := RemoteMessage{Task: r.t.ID, RemoteTask: r.remoteID, ContextID: r.ctxID, Chain: append(append([]string{}, r.t.Chain...), r.t.Agent)}
	switch {
	case r.step > 0 && !r.answered:
		m.Input = r.stepInput // its intent is in the journal already
	case r.step == 0 || r.answer != nil:
		m.Input = r.t.Input
		if r.step > 0 {
			m.Input = r.answer
		}
		r.step++
		if err := r.append(ctx, &Event{Type: EvAgentCall, Step: r.step, CallID: r.messageID(), Message: m.Input}); err != nil {
			return nil, err
		}
		r.answered, r.stepInput = false, m.Input
	default:
		return r.w.opts.Remote.Get(ctx, r.t.Agent, r.spec.A2A, r.remoteID)
	}
	m.ID = r.messageID()
	rt, err := r.w.opts.Remote.Send(ctx, r.t.Agent, r.spec.A2A, m)
	if err != nil {
		return nil, err
	}
	r.remoteID, r.ctxID = rt.ID, rt.ContextID
	if err := r.append(ctx, &Event{Type: EvAgentTask, Step: r.step, CallID: rt.ID, Detail: rt.ContextID, State: rt.State}); err != nil {
		return nil, err
	}
	r.answered, r.answer = true, nil
	return rt, nil
}

func (r *remoteRun) messageID() string { return fmt.Sprintf("%s/step/%d", r.t.ID, r.step) }

// poll reads the remote task again after a pause that grows while it
// stays the same.
func (r *remoteRun) poll(ctx context.Context, prev *RemoteTask) (*RemoteTask, error) {
	wait := remotePollMin
	for {
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
		rt, err := r.w.opts.Remote.Get(ctx, r.t.Agent, r.spec.A2A, r.remoteID)
		if err != nil {
			return nil, err
		}
		if rt.State != prev.State {
			return rt, nil
		}
		wait = min(wait*2, remotePollMax)
	}
}

// mirror makes the remote task's state the task's: its end, or its wait
// for input (the question surfaces as the task's detail).
func (r *remoteRun) mirror(ctx context.Context, rt *RemoteTask) error {
	if len(rt.Result) > MaxInput {
		return r.end(ctx, Failed, ReasonRemote, fmt.Sprintf("agent %s's result is %d bytes, over the limit of %d", r.t.Agent, len(rt.Result), MaxInput), nil)
	}
	switch rt.State {
	case Completed:
		return r.end(ctx, Completed, "", "", rt.Result)
	case Failed, Canceled, Rejected:
		detail := rt.Detail
		if detail == "" {
			detail = "agent " + r.t.Agent + " ended its task " + string(rt.State)
		}
		return r.end(ctx, rt.State, ReasonRemote, detail, rt.Result)
	case InputRequired:
		// A remote agent's AUTH_REQUIRED is answered as its INPUT_REQUIRED
		// is, by a message: corral's approvals know nothing of it.
		reason, detail := ReasonAskedForInput, rt.Detail
		if rt.AuthRequired {
			detail = "agent " + r.t.Agent + " needs an authorization: " + detail
		}
		rt.Detail = detail
		if err := r.append(ctx, &Event{Type: EvState, State: InputRequired, Reason: reason, Detail: rt.Detail}); err != nil {
			return err
		}
		if _, err := r.w.store.update(context.WithoutCancel(ctx), r.t.ID, func(t *Task) error {
			if t.State.Final() {
				return errSkip
			}
			t.State, t.Reason, t.Detail = InputRequired, reason, rt.Detail
			return nil
		}); err != nil {
			return &errRetry{err}
		}
		return errParked
	}
	return &errRetry{fmt.Errorf("remote task %s is %s", rt.ID, rt.State)}
}

func (r *remoteRun) append(ctx context.Context, ev *Event) error {
	seq, err := r.w.store.append(context.WithoutCancel(ctx), r.t.ID, ev, r.last, "")
	if err != nil {
		if errors.Is(err, ErrFenced) {
			return err
		}
		return &errRetry{err}
	}
	r.last = seq
	return nil
}

func (r *remoteRun) end(ctx context.Context, s State, reason, detail string, result json.RawMessage) error {
	ctx = context.WithoutCancel(ctx)
	if err := r.append(ctx, &Event{Type: EvState, State: s, Reason: reason, Detail: detail, Result: result, Usage: &Usage{}}); err != nil {
		return err
	}
	if err := r.w.store.settle(ctx, r.t.ID, s, reason, detail, result, Usage{}, r.w.now()); err != nil {
		return &errRetry{err}
	}
	r.w.logger.InfoContext(ctx, "remote agent's task ended", "task", r.t.ID, "agent", r.t.Agent, "state", s, "reason", reason)
	return nil
}

// watch cancels the run when the task must stop (a cancel, a kill switch,
// its deadline), as a hosted agent's run.
func (r *remoteRun) watch(ctx context.Context, cancel context.CancelCauseFunc) {
	var deadline time.Time
	if r.t.Started != nil {
		if d, err := time.ParseDuration(r.t.Limits.Deadline); err == nil && d > 0 {
			deadline = r.t.Started.Add(d)
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if cause := r.w.stopFor(r.t.ID, r.t.Agent, r.t.Chain, deadline); cause != nil {
			cancel(cause)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-r.w.store.Changed():
		case <-tick.C:
		}
	}
}
