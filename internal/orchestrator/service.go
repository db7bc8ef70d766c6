package orchestrator

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
)

// MaxInput bounds a task's input, and a message to a task, in bytes.
const MaxInput = 256 << 10

// Service is what the API offers of tasks: create, read, follow, cancel,
// answer. It also admits and notes the calls external agents make with
// tokens bound to tasks (pipeline.Tasks).
type Service struct {
	logger    *slog.Logger
	store     *Store
	resources Resources
	now       func() time.Time
}

// NewService returns the task service over store.
func NewService(logger *slog.Logger, store *Store, resources Resources) *Service {
	s := &Service{logger: logger, store: store, resources: resources, now: time.Now}
	store.OnEnded(s.childEnded)
	return s
}

var _ pipeline.Tasks = (*Service)(nil)

// Request asks for a task.
type Request struct {
	Agent string
	Input json.RawMessage
	// IdempotencyKey makes a retried create return the task it made.
	IdempotencyKey string
	// Owner is whose IdempotencyKey it is (pipeline.KeyOwner or "admin").
	Owner string
	// CreatedBy is "admin" or "agent:<name>".
	CreatedBy string
	Principal *Principal
	Parent    string
	Chain     []string
	// Root is the parent's tree's root; "" for a task with no parent.
	Root string
	// Handoff: the task continues its parent's work.
	Handoff bool
	// Workflow, instead of Agent, starts a run of that Workflow.
	Workflow string
}

// Create makes a task and, for a hosted agent, queues it for a worker. It
// returns the task and whether this call created it (false: a retry with
// the same Idempotency-Key found the one made before).
func (s *Service) Create(ctx context.Context, req Request) (*Task, bool, error) {
	if req.Workflow != "" {
		return s.createRun(ctx, req)
	}
	if len(req.Input) == 0 {
		return nil, false, problem.New(http.StatusBadRequest, problem.InvalidRequest, "input: required: the task's input, a string or a JSON value")
	}
	if len(req.Input) > MaxInput {
		return nil, false, problem.New(http.StatusRequestEntityTooLarge, problem.RequestTooLarge, fmt.Sprintf("input: %d bytes, over the limit of %d", len(req.Input), MaxInput))
	}
	res, ok := s.resources.Get("Agent", req.Agent)
	if !ok {
		return nil, false, problem.New(http.StatusNotFound, problem.ResourceNotFound, "agent: no agent named "+req.Agent)
	}
	spec, ok := agentSpec(res)
	if !ok {
		return nil, false, problem.New(http.StatusInternalServerError, problem.Internal, "agent "+req.Agent+"'s resource is unreadable")
	}
	now := s.now().UTC()
	sum := sha256.Sum256(append([]byte(req.Agent+"\x00"), req.Input...))
	digest := hex.EncodeToString(sum[:])
	id := newID(now)
	if req.IdempotencyKey != "" {
		id = idFor(req.Owner, req.IdempotencyKey)
	}
	if req.Root == "" && req.Parent != "" {
		// A task opened for a parent by another door (a trigger) joins its
		// tree.
		if p, ok := s.store.Get(req.Parent); ok {
			req.Root = rootOf(p)
		}
	}
	maxTurns, maxTools, deadline, repeated := spec.Limits.Effective()
	t := &Task{
		ID: id, Agent: req.Agent, AgentUID: res.Metadata.UID, Input: req.Input, Principal: req.Principal,
		Parent: req.Parent, Chain: req.Chain, Root: cmp.Or(req.Root, id), TraceID: s.store.newTrace(req.Parent, cmp.Or(req.Root, id)), Handoff: req.Handoff, Hosted: spec.Hosted() || spec.A2A != nil, Placement: spec.Placement, State: Submitted,
		Limits:    Limits{MaxTurns: maxTurns, MaxToolCalls: maxTools, Deadline: deadline.String(), RepeatedCalls: repeated, OnExceeded: onExceeded(spec)},
		CreatedBy: req.CreatedBy, Created: now, Updated: now, InputDigest: digest,
	}
	if err := s.treeLimits(ctx, t, spec); err != nil {
		return nil, false, err
	}
	err := s.store.create(ctx, t)
	if wrongRevision(err) {
		prev, _, ferr := s.store.fetch(ctx, id)
		if ferr != nil {
			return nil, false, s.substrate(ferr)
		}
		if prev.InputDigest != digest {
			return nil, false, problem.New(http.StatusConflict, problem.IdempotencyConflict, "this Idempotency-Key made task "+id+" with another agent or input")
		}
		// The first create may have stopped before queueing: queueing
		// again is harmless (the message id dedupes, the journal guards).
		t, err = prev, nil
		if !t.Hosted || t.State != Submitted {
			return t, false, nil
		}
		return t, false, s.queue(ctx, t)
	}
	if err != nil {
		return nil, false, s.substrate(err)
	}
	if _, err := s.store.append(ctx, id, &Event{Type: EvState, State: Submitted, Time: now, Agent: req.Agent}, 0, id+"/submitted"); err != nil && !errors.Is(err, ErrFenced) {
		return nil, false, s.substrate(err)
	}
	if t.Hosted {
		if err := s.queue(ctx, t); err != nil {
			return nil, false, err
		}
	}
	return t, true, nil
}

func onExceeded(spec *config.AgentSpec) string {
	if spec.Limits == nil || spec.Limits.OnExceeded == "" {
		return config.OnExceededFail
	}
	return spec.Limits.OnExceeded
}

func (s *Service) queue(ctx context.Context, t *Task) error {
	if err := s.store.dispatch(ctx, t, t.ID+"/start"); err != nil {
		return s.substrate(err)
	}
	return nil
}

// substrate renders a failure of the substrate as 503.
func (s *Service) substrate(err error) error {
	return problem.Wrap(http.StatusServiceUnavailable, problem.SubstrateUnavailable, "the task store did not answer; retry", err)
}

// Get returns a task.
func (s *Service) Get(ctx context.Context, id string) (*Task, error) {
	if !ValidID(id) {
		return nil, notFound(id)
	}
	if t, ok := s.store.Get(id); ok {
		return s.withTrace(t), nil
	}
	// Just created on another replica, and not yet mirrored here?
	t, _, err := s.store.fetch(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, notFound(id)
	}
	if err != nil {
		return nil, s.substrate(err)
	}
	return s.withTrace(t), nil
}

// withTrace fills in the trace of a task recorded before tasks carried it,
// as its worker derives it.
func (s *Service) withTrace(t *Task) *Task {
	if t.TraceID == "" {
		t.TraceID = s.store.traceOf(t).String()
	}
	return t
}

func notFound(id string) error {
	if len(id) > 64 {
		id = id[:64] + "..."
	}
	return problem.New(http.StatusNotFound, problem.TaskNotFound, "no task "+id)
}

// List returns tasks, newest first.
func (s *Service) List(f Filter) ([]*Task, bool) {
	ts, more := s.store.List(f)
	for _, t := range ts {
		s.withTrace(t)
	}
	return ts, more
}

// Cancel ends a task: at once when no worker holds it (submitted, or
// waiting for input), else by asking its worker, which stops within a
// second. A final task is returned as it is.
func (s *Service) Cancel(ctx context.Context, id, by, detail string) (*Task, error) {
	t, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if t.State.Final() {
		return t, nil
	}
	if detail == "" {
		detail = "canceled by " + by
	}
	return s.stop(ctx, t, &Stop{State: Canceled, Reason: ReasonCanceled, Detail: detail, By: by, Time: s.now().UTC()})
}

// stop asks for a task to end so, and ends it here when no worker runs it.
func (s *Service) stop(ctx context.Context, t *Task, st *Stop) (*Task, error) {
	t, err := s.store.update(ctx, t.ID, func(t *Task) error {
		if t.State.Final() {
			return errSkip
		}
		t.Stop = st
		return nil
	})
	if err != nil {
		return nil, s.substrate(err)
	}
	if t.State.Final() || (t.Hosted && t.State == Working) {
		return t, nil // its worker sees the request
	}
	// Nobody runs it: end it here, guarded by the journal's last entry so
	// that a worker taking it at this moment either sees the end or wins.
	last, err := s.store.lastEntry(ctx, journalPrefix+t.ID)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, s.substrate(err)
	}
	if _, err := s.store.append(ctx, t.ID, &Event{Type: EvState, State: st.State, Reason: st.Reason, Detail: st.Detail, Usage: &t.Usage}, last, ""); err != nil {
		if errors.Is(err, ErrFenced) {
			return t, nil // a worker took it and will see the request
		}
		return nil, s.substrate(err)
	}
	if err := s.store.settle(ctx, t.ID, st.State, st.Reason, st.Detail, nil, t.Usage, s.now()); err != nil {
		return nil, s.substrate(err)
	}
	return s.Get(ctx, t.ID)
}

// Message answers a task waiting in input-required; its hosted agent
// goes on with the answer. key, when set, makes a retry within two
// minutes a no-op.
func (s *Service) Message(ctx context.Context, id, text, key string) (*Task, error) {
	t, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if t.State != InputRequired {
		return nil, problem.New(http.StatusConflict, problem.Conflict, fmt.Sprintf("task %s is %s: it takes messages only while input-required", id, t.State))
	}
	if t.Reason == ReasonAwaitingAgent {
		return nil, problem.New(http.StatusConflict, problem.Conflict, fmt.Sprintf("task %s waits for task %s, not for a message", id, t.WaitingOn))
	}
	if t.Workflow != "" {
		return nil, problem.New(http.StatusConflict, problem.Conflict, fmt.Sprintf("task %s is a run of workflow %s, waiting %s: it takes no messages (docs/workflows.md)", id, t.Workflow, t.Reason))
	}
	if len(text) > MaxInput {
		return nil, problem.New(http.StatusRequestEntityTooLarge, problem.RequestTooLarge, fmt.Sprintf("message: %d bytes, over the limit of %d", len(text), MaxInput))
	}
	events, err := s.store.journal(ctx, id)
	if err != nil {
		return nil, s.substrate(err)
	}
	var callID string
	for _, ev := range events {
		switch {
		case ev.Type == EvToolCall && ev.Tool == requestInput:
			callID = ev.CallID
		case ev.Type == EvMessage && ev.CallID == callID:
			callID = ""
		}
	}
	raw, _ := json.Marshal(map[string]any{"role": "user", "content": text})
	msgID := ""
	if key != "" {
		msgID = id + "/message/" + key
	}
	// The record first: a task marked working wants a worker, so a crash
	// after this write leaves it to the sweep, whose worker finds the
	// answer in the journal, or, finding none, marks the task waiting
	// again. A second answer meanwhile is refused (409), not added.
	answered := false
	t, err = s.store.update(ctx, id, func(t *Task) error {
		answered = false // set by the attempt that is stored only
		if t.State != InputRequired {
			return errSkip
		}
		t.State, t.Reason, t.Detail = Working, "", "answered; waiting for a worker"
		answered = true
		return nil
	})
	if err != nil {
		return nil, s.substrate(err)
	}
	if !answered {
		return nil, problem.New(http.StatusConflict, problem.Conflict, fmt.Sprintf("task %s is %s: it was answered meanwhile", id, t.State))
	}
	if _, err := s.store.append(ctx, id, &Event{Type: EvMessage, CallID: callID, Message: raw}, anySeq, msgID); err != nil {
		return nil, s.substrate(err)
	}
	if t.Hosted {
		if err := s.store.dispatch(ctx, t, fmt.Sprintf("%s/answer/%d", id, len(events))); err != nil {
			return nil, s.substrate(err)
		}
	}
	return t, nil
}

// Wake puts back on the queue a hosted task parked on a decision outside
// it (an approval of one of its steps), so that a worker makes the parked
// step again. A task not so parked is left alone.
func (s *Service) Wake(ctx context.Context, id, detail string) error {
	t, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if t.State != InputRequired || !wakeable(t.Reason) {
		// This replica's mirror may lag a park recorded on another one a
		// moment ago: a child that ends as its parent parks must find the
		// park, or the parent waits for the sweep. The leader has it.
		if t, _, err = s.store.fetch(ctx, id); err != nil {
			if errors.Is(err, ErrNotFound) {
				return notFound(id)
			}
			return s.substrate(err)
		}
		if t.State != InputRequired || !wakeable(t.Reason) {
			return nil
		}
	}
	t, err = s.store.update(ctx, id, func(t *Task) error {
		if t.State != InputRequired || !wakeable(t.Reason) {
			return errSkip
		}
		t.State, t.Reason, t.Detail, t.WaitingOn, t.WakeAt = Working, "", detail, "", nil
		return nil
	})
	if err != nil {
		return s.substrate(err)
	}
	if t.State != Working || !t.Hosted {
		return nil // an external agent retries its call itself
	}
	if err := s.store.dispatch(ctx, t, fmt.Sprintf("%s/wake/%d", id, t.Updated.UnixNano())); err != nil {
		return s.substrate(err)
	}
	return nil
}

// wakeAtDeadline puts back on the queue a hosted agent's task parked
// waiting for someone else (an answer, an approval, a task it delegated
// to) whose wake time, its deadline, has passed: its worker finds the
// deadline passed and ends the task as it ends a running one (or
// escalates it), and the end's hooks cancel its live children and
// withdraw its pending approvals. The record says working before the
// work message leaves (a crash between the two leaves the task to the
// sweep), written under its revision: of two replicas' scans, or a scan
// and an approval's decision (Wake), exactly one wakes the task, and
// its one worker either runs it (woken before the deadline) or ends it.
func (s *Service) wakeAtDeadline(ctx context.Context, id string) error {
	woke := false
	t, err := s.store.update(ctx, id, func(t *Task) error {
		woke = false // set by the attempt that is stored only
		if !parkedUntil(t, s.now()) {
			return errSkip
		}
		t.State, t.Reason, t.Detail, t.WaitingOn, t.WakeAt = Working, "", "its deadline has passed; waiting for a worker to end it", "", nil
		woke = true
		return nil
	})
	if err != nil {
		return s.substrate(err)
	}
	if !woke {
		return nil
	}
	if err := s.store.dispatch(ctx, t, fmt.Sprintf("%s/deadline/%d", id, t.Updated.UnixNano())); err != nil {
		return s.substrate(err)
	}
	return nil
}

// parkedUntil reports whether t is a hosted agent's task parked waiting
// for someone else whose wake time has passed at now.
func parkedUntil(t *Task, now time.Time) bool {
	if !t.Hosted || t.Workflow != "" || t.State != InputRequired || t.Stop != nil || t.WakeAt == nil {
		return false
	}
	if t.Reason != ReasonAskedForInput && !wakeable(t.Reason) {
		return false // escalated at a limit: it waits for a person, whatever the time
	}
	return now.After(*t.WakeAt)
}

// Extension is the room a person gives an escalated task: zero fields
// give as much again as the task had.
type Extension struct {
	Turns     int
	ToolCalls int
	Deadline  time.Duration
}

// Extend gives a task that escalated at one of its limits more room, once
// per escalation, and puts it back to work.
func (s *Service) Extend(ctx context.Context, id, by string, more Extension) (*Task, error) {
	t, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if t.State != InputRequired || !escalated(t.Reason) {
		return nil, problem.New(http.StatusConflict, problem.Conflict, fmt.Sprintf("task %s is %s %s: only a task waiting at a limit (escalated) can be extended", id, t.State, t.Reason))
	}
	if more.Turns < 0 || more.ToolCalls < 0 || more.Deadline < 0 {
		return nil, problem.New(http.StatusBadRequest, problem.InvalidRequest, "turns, tool_calls and deadline: more room, not less")
	}
	l := t.Limits
	d, err := time.ParseDuration(l.Deadline)
	if err != nil {
		d = config.DefaultTaskDeadline
	}
	l.MaxTurns += cmp.Or(more.Turns, l.MaxTurns)
	l.MaxToolCalls += cmp.Or(more.ToolCalls, l.MaxToolCalls)
	l.Deadline = (d + cmp.Or(more.Deadline, d)).String()
	l.Extensions++
	detail := fmt.Sprintf("extended by %s after %s: %d turns, %d tool calls, deadline %s", by, t.Reason, l.MaxTurns, l.MaxToolCalls, l.Deadline)
	msgID := fmt.Sprintf("%s/extend/%d", id, l.Extensions)
	// The record first, as in Message: a crash after it leaves the task to
	// the sweep, whose worker marks it escalated again if the journal has
	// no extension.
	extended := false
	t, err = s.store.update(ctx, id, func(t *Task) error {
		extended = false // set by the attempt that is stored only
		if t.State != InputRequired || !escalated(t.Reason) {
			return errSkip
		}
		t.Limits, t.State, t.Reason, t.Detail = l, Working, "", detail
		extended = true
		return nil
	})
	if err != nil {
		return nil, s.substrate(err)
	}
	if !extended {
		return nil, problem.New(http.StatusConflict, problem.Conflict, fmt.Sprintf("task %s is %s %s: it was extended or ended meanwhile", id, t.State, t.Reason))
	}
	if _, err := s.store.append(ctx, id, &Event{Type: EvExtended, Limits: &l, Detail: detail, Agent: by}, anySeq, msgID); err != nil {
		return nil, s.substrate(err)
	}
	if t.Hosted {
		if err := s.store.dispatch(ctx, t, msgID); err != nil {
			return nil, s.substrate(err)
		}
	}
	return t, nil
}

// Events calls fn with each event of a task after sequence after, and
// with follow, the new ones until the task has ended and its last event was
// sent, ctx ends, or fn fails; without, it returns at the last event there
// is now.
func (s *Service) Events(ctx context.Context, id string, after uint64, follow bool, fn func(Event) error) error {
	if _, err := s.Get(ctx, id); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errEnd := errors.New("ended")
	err := s.store.events(ctx, id, after, !follow, func(ev Event) error {
		if err := fn(ev); err != nil {
			return err
		}
		if ev.Type == EvState && ev.State.Final() {
			return errEnd
		}
		return nil
	})
	if errors.Is(err, errEnd) {
		return nil
	}
	return err
}

// Report lets an external agent (or an admin) end its task, or ask for
// input: state is completed, failed or input-required.
func (s *Service) Report(ctx context.Context, id, agent string, state State, result json.RawMessage, detail string) (*Task, error) {
	t, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if agent != "" && t.Agent != agent {
		return nil, notFound(id)
	}
	if t.Hosted {
		return nil, problem.New(http.StatusConflict, problem.Conflict, "task "+id+" is run by corral (agent "+t.Agent+" is hosted); it reports its own result")
	}
	if t.State.Final() {
		return nil, problem.New(http.StatusConflict, problem.TaskEnded, fmt.Sprintf("task %s has ended (%s)", id, t.State))
	}
	switch state {
	case Completed, Failed:
	case InputRequired:
	default:
		return nil, problem.New(http.StatusBadRequest, problem.InvalidRequest, "state: must be completed, failed or input-required")
	}
	if len(result) > MaxInput {
		return nil, problem.New(http.StatusRequestEntityTooLarge, problem.RequestTooLarge, fmt.Sprintf("result: over the limit of %d bytes", MaxInput))
	}
	if _, err := s.store.append(ctx, id, &Event{Type: EvState, State: state, Detail: detail, Result: result, Agent: agent, Usage: &t.Usage}, anySeq, ""); err != nil {
		return nil, s.substrate(err)
	}
	if state == InputRequired {
		t, err = s.store.update(ctx, id, func(t *Task) error {
			t.State, t.Detail = InputRequired, detail
			return nil
		})
	} else {
		err = s.store.settle(ctx, id, state, "", detail, result, t.Usage, s.now())
		if err == nil {
			t, err = s.Get(ctx, id)
		}
	}
	if err != nil {
		return nil, s.substrate(err)
	}
	return t, nil
}

// CanAct reports, as an error saying why not, whether an agent may have a
// token bound to a task: the task is the agent's, live and external.
func (s *Service) CanAct(ctx context.Context, id, agent, agentUID string) error {
	if !ValidID(id) {
		return errors.New("not a task id (task_ and 26 characters); create the task with POST /v1/tasks first")
	}
	t, err := s.Get(ctx, id)
	if err != nil {
		var pe *problem.Error
		if errors.As(err, &pe) && pe.Code == problem.TaskNotFound {
			return errors.New("no task " + id)
		}
		return err
	}
	switch {
	case t.Agent != agent || (t.AgentUID != "" && agentUID != "" && t.AgentUID != agentUID):
		return errors.New("no task " + id + " of agent " + agent)
	case t.Hosted:
		return errors.New("task " + id + " is run by corral: only its hosted loop acts in it")
	case t.State.Final():
		return fmt.Errorf("task %s has ended (%s)", id, t.State)
	}
	return nil
}

// Admit lets a call made with a token bound to a task go ahead when the
// task is the agent's, live, and within its limits (pipeline.Tasks).
func (s *Service) Admit(ctx context.Context, c pipeline.TaskCall) error {
	if !ValidID(c.Task) {
		return problem.New(http.StatusNotFound, problem.TaskNotFound, "the token's task is not a task id")
	}
	t, err := s.Get(ctx, c.Task)
	if err != nil {
		return err
	}
	if t.Agent != c.Agent || (t.AgentUID != "" && c.AgentUID != "" && t.AgentUID != c.AgentUID) {
		return problem.New(http.StatusNotFound, problem.TaskNotFound, "task "+t.ID+" is not agent "+c.Agent+"'s")
	}
	if t.Hosted {
		return problem.New(http.StatusForbidden, problem.TaskNotFound, "task "+t.ID+" is run by corral: only its hosted loop acts in it")
	}
	if t.State.Final() {
		return problem.New(http.StatusConflict, problem.TaskEnded, fmt.Sprintf("task %s has ended (%s)", t.ID, t.State))
	}
	if t.Stop != nil {
		return problem.New(http.StatusConflict, problem.TaskEnded, "task "+t.ID+" is being stopped: "+t.Stop.Detail)
	}
	if d, err := time.ParseDuration(t.Limits.Deadline); err == nil && s.now().After(t.Created.Add(d)) {
		if _, err := s.stop(ctx, t, &Stop{State: Failed, Reason: ReasonDeadline, Detail: "the task ran past its deadline", By: "corral", Time: s.now().UTC()}); err != nil {
			s.logger.WarnContext(ctx, "ending a task past its deadline", "task", t.ID, "err", err)
		}
		return problem.New(http.StatusConflict, problem.TaskEnded, "task "+t.ID+" ran past its deadline of "+t.Limits.Deadline)
	}
	switch {
	case c.Kind == "model" && t.Usage.ModelCalls >= t.Limits.MaxTurns:
		return problem.New(http.StatusTooManyRequests, problem.TaskLimit, fmt.Sprintf("task %s has used its %d model calls (maxTurns)", t.ID, t.Limits.MaxTurns))
	case c.Kind == "tool" && t.Usage.ToolCalls >= t.Limits.MaxToolCalls:
		return problem.New(http.StatusTooManyRequests, problem.TaskLimit, fmt.Sprintf("task %s has used its %d tool calls (maxToolCalls)", t.ID, t.Limits.MaxToolCalls))
	}
	if c.Kind == "model" {
		if reason, detail := s.store.treeExceeded(t, t.Usage); reason != "" {
			return problem.New(http.StatusTooManyRequests, problem.TaskLimit, detail)
		}
	}
	if t.State == Submitted || t.State == InputRequired {
		now := s.now().UTC()
		if _, err := s.store.update(ctx, t.ID, func(t *Task) error {
			if t.State != Submitted && t.State != InputRequired {
				return errSkip
			}
			t.State, t.Detail = Working, ""
			if t.Started == nil {
				t.Started = &now
			}
			return nil
		}); err != nil {
			return s.substrate(err)
		}
		if _, err := s.store.append(ctx, t.ID, &Event{Type: EvState, State: Working, Agent: c.Agent}, anySeq, ""); err != nil {
			return s.substrate(err)
		}
	}
	return nil
}

// Done notes a call an external agent made in its task: one event, and
// the task's usage (pipeline.Tasks).
func (s *Service) Done(ctx context.Context, c pipeline.TaskCall, rec *audit.Record) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	ev := &Event{Type: EvCall, Agent: c.Agent, Code: rec.Code, AuditID: rec.ID, Detail: rec.Status}
	u := Usage{}
	if c.Kind == "model" {
		ev.Model = c.Target
		u.ModelCalls, u.Turns = 1, 1
		if m := rec.Model; m != nil {
			u.InputTokens, u.OutputTokens, u.Cost = m.PromptTokens, m.CompletionTokens, m.Cost
		}
	} else if c.Kind == "tool" {
		ev.Tool = c.Target
		u.ToolCalls = 1
	} else {
		ev.Tool = c.Kind + ":" + c.Target // an agent call: no usage of its own
	}
	if rec.Decision == "denied" || rec.Code == problem.ApprovalPending {
		u = Usage{} // refused or parked calls use nothing
	}
	if rec.Code == problem.ApprovalPending {
		// The call waits for a person: so does the task, until the decision
		// (Wake).
		if _, err := s.store.update(ctx, c.Task, func(t *Task) error {
			if t.State.Final() || t.Hosted {
				return errSkip
			}
			t.State, t.Reason, t.Detail = InputRequired, ReasonAwaitingApproval, rec.Reason
			return nil
		}); err != nil {
			s.logger.WarnContext(ctx, "task not marked as waiting for an approval", "task", c.Task, "err", err)
		}
	}
	ev.Usage = &u
	if _, err := s.store.append(ctx, c.Task, ev, anySeq, ""); err != nil {
		s.logger.WarnContext(ctx, "task event of a call lost", "task", c.Task, "err", err)
	}
	if u == (Usage{}) {
		return
	}
	if _, err := s.store.update(ctx, c.Task, func(t *Task) error {
		t.Usage.Turns += u.Turns
		t.Usage.ModelCalls += u.ModelCalls
		t.Usage.ToolCalls += u.ToolCalls
		t.Usage.InputTokens += u.InputTokens
		t.Usage.OutputTokens += u.OutputTokens
		t.Usage.Cost += u.Cost
		return nil
	}); err != nil {
		s.logger.WarnContext(ctx, "task usage of a call not recorded; its event has it", "task", c.Task, "err", err)
	}
}

// ParseState reads a state filter.
func ParseState(s string) (State, error) {
	for _, st := range States {
		if strings.EqualFold(s, string(st)) {
			return st, nil
		}
	}
	names := make([]string, len(States))
	for i, st := range States {
		names[i] = string(st)
	}
	return "", fmt.Errorf("%q is not a task state (%s)", s, strings.Join(names, ", "))
}
