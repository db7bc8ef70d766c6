package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/deadletter"
	"github.com/corral-dev/corral/internal/expr"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
)

// DeadLetters is where a step failing past its retries is put.
type DeadLetters interface {
	Put(ctx context.Context, e deadletter.Entry) (string, error)
}

// WithDeadLetters gives the worker the dead-letter queue; without it a
// step failing past its retries fails its run (after compensation) only.
func (w *Worker) WithDeadLetters(d DeadLetters) *Worker {
	w.dlq = d
	return w
}

// wfRunner is one worker's turn at a workflow run.
type wfRunner struct {
	w      *Worker
	task   *Task
	wf     *config.WorkflowSpec
	r      *run // the agent's credentials, for the steps' Actions
	svc    *Service
	logger *slog.Logger

	mu sync.Mutex // guards j and appends: steps run at once
	j  *wfRun
	// stateMu orders the run's state changes (two steps parking at once).
	stateMu sync.Mutex
}

// runWorkflow runs a workflow run from its journal until it ends, parks
// (on a step's task, an approval, a dead letter) or is lost.
func (w *Worker) runWorkflow(ctx context.Context, t *Task) error {
	events, err := w.store.journal(ctx, t.ID)
	if err != nil {
		return &errRetry{err}
	}
	j := replayRun(events)
	x := &wfRunner{w: w, task: t, j: j, logger: w.logger.With("task", t.ID, "workflow", t.Workflow),
		svc: &Service{logger: w.logger, store: w.store, resources: w.resources, now: w.now}}
	if j.state.Final() {
		return w.store.settle(ctx, t.ID, j.state, j.reason, "", j.result, j.usage, w.now())
	}
	res, ok := w.resources.Get("Workflow", t.Workflow)
	wf, _ := workflowSpec(res)
	ares, aok := w.resources.Get("Agent", t.Agent)
	spec, _ := agentSpec(ares)
	x.r = &run{w: w, task: t, spec: spec, logger: x.logger}
	if !ok || wf == nil {
		return x.end(ctx, Failed, ReasonWorkflowGone, "workflow "+t.Workflow+" no longer exists", nil)
	}
	if !aok || spec == nil || (t.AgentUID != "" && ares.Metadata.UID != t.AgentUID) {
		return x.end(ctx, Failed, ReasonAgentGone, "agent "+t.Agent+", whom the run acts as, is gone (deleted or recreated)", nil)
	}
	x.wf = wf
	if j.starts >= w.opts.MaxAttempts {
		return x.end(ctx, Failed, ReasonAttempts, fmt.Sprintf("the run was started %d times without ending", j.starts), nil)
	}
	if err := x.append(ctx, &Event{Type: EvStarted, Worker: w.opts.ID}); err != nil {
		return err
	}
	now := w.now().UTC()
	if j.firstRun.IsZero() {
		j.firstRun = now
	}
	j.starts++
	if _, err := w.store.update(ctx, t.ID, func(t *Task) error {
		if t.State.Final() {
			return errSkip
		}
		t.State, t.Reason, t.Detail, t.Worker, t.Attempts = Working, "", "", w.opts.ID, j.starts
		if t.Started == nil {
			t.Started = &now
		}
		return nil
	}); err != nil {
		return &errRetry{err}
	}
	j.state = Working
	if j.starts > 1 {
		w.resumes.Add(1)
		x.logger.InfoContext(ctx, "resuming workflow run from its journal", "attempt", j.starts)
	}
	return x.loop(ctx)
}

// append journals an entry, guarded by the last one this worker knows.
func (x *wfRunner) append(ctx context.Context, ev *Event) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	seq, err := x.w.store.append(context.WithoutCancel(ctx), x.task.ID, ev, x.j.last, "")
	if err != nil {
		if errors.Is(err, ErrFenced) {
			return err
		}
		return &errRetry{err}
	}
	x.j.last = seq
	return nil
}

// deadline is when the run must end: its limit after its first start.
func (x *wfRunner) deadline() time.Time {
	d, err := time.ParseDuration(x.task.Limits.Deadline)
	if err != nil || d <= 0 {
		d = config.DefaultTaskDeadline
	}
	return x.j.firstRun.Add(d)
}

// loop runs the steps that are ready, together, until the run ends or
// parks.
func (x *wfRunner) loop(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	var watching sync.WaitGroup
	defer watching.Wait()
	defer cancel(nil)
	watching.Go(func() { x.watch(ctx, cancel) })
	for {
		if cause, ok := context.Cause(ctx).(*stopCause); ok {
			return x.end(ctx, cause.state, cause.reason, cause.detail, nil)
		}
		if ctx.Err() != nil {
			return &errRetry{ctx.Err()}
		}
		x.mu.Lock()
		failed, discarded := x.j.failed, x.j.discarded
		x.mu.Unlock()
		if failed != "" {
			err := x.fail(ctx, failed, discarded)
			if sc := (*stopCause)(nil); errors.As(err, &sc) {
				return x.end(ctx, sc.state, sc.reason, sc.detail, nil)
			}
			if errors.Is(err, errGoOn) {
				continue
			}
			return err
		}
		ready, waiting, err := x.plan(ctx)
		if err != nil {
			return err
		}
		x.mu.Lock()
		failed = x.j.failed
		x.mu.Unlock()
		if failed != "" {
			// plan settled a step as failed past its retries (an agent
			// step's task, a condition that cannot be evaluated): the run
			// fails, rather than finish with the steps that are done.
			continue
		}
		if len(ready) == 0 {
			if len(waiting) == 0 {
				return x.finish(ctx)
			}
			// A task that ends soon is waited for here: parking costs a
			// park and a wake, and a wake that comes while this worker
			// still hands the run back waits for the sweep.
			if x.awaitTasks(ctx, waiting, parkAfter) || ctx.Err() != nil {
				continue // a task ended; or the run must stop (the loop's top)
			}
			if err := x.parkOnTasks(ctx, waiting); !errors.Is(err, errGoOn) {
				return err
			}
			continue
		}
		errs := make([]error, len(ready))
		var wg sync.WaitGroup
		for i, name := range ready {
			st, _ := x.wf.Step(name)
			wg.Go(func() { errs[i] = x.runStep(ctx, st) })
		}
		wg.Wait()
		if cause, ok := context.Cause(ctx).(*stopCause); ok && !slices.ContainsFunc(errs, func(err error) bool { return errors.Is(err, ErrFenced) }) {
			return x.end(ctx, cause.state, cause.reason, cause.detail, nil)
		}
		for _, err := range errs {
			if sc := (*stopCause)(nil); errors.As(err, &sc) {
				return x.end(ctx, sc.state, sc.reason, sc.detail, nil)
			}
		}
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
	}
}

// watch cancels the run's context when the run must stop (a cancel, a
// kill switch, its deadline), so that a step's backoff does not hold it.
func (x *wfRunner) watch(ctx context.Context, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if cause := x.w.stopFor(x.task.ID, x.task.Agent, x.task.Chain, x.deadline()); cause != nil {
			cancel(cause)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-x.w.store.Changed():
		case <-tick.C:
		}
	}
}

// parkAfter is how long a run waits, holding its worker, for its steps'
// tasks before it parks.
const parkAfter = 2 * time.Second

// awaitTasks waits up to d for one of the steps' tasks to end, or for one
// of those steps' timeouts to come, and reports whether either did.
func (x *wfRunner) awaitTasks(ctx context.Context, waiting []string, d time.Duration) bool {
	var timeout <-chan time.Time
	if due := x.firstTimeout(waiting); !due.IsZero() {
		until := due.Sub(x.w.now())
		if until <= 0 {
			return true
		}
		if until < d {
			t := time.NewTimer(until)
			defer t.Stop()
			timeout = t.C
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		changed := x.w.store.Changed()
		for _, name := range waiting {
			x.mu.Lock()
			child := x.j.step(name).child
			x.mu.Unlock()
			if c, ok := x.w.store.Get(child); ok && c.State.Final() {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return false
		case <-timeout:
			return true
		case <-changed:
		}
	}
}

// stepTimeout is when the current attempt of an agent step times out: as
// its start recorded it, or, for a journal written before starts recorded
// it, its start's time and the step's timeout now.
func (x *wfRunner) stepTimeout(st *config.WorkflowStep, s *stepState) time.Time {
	if !s.deadline.IsZero() || s.started.IsZero() {
		return s.deadline
	}
	return s.started.Add(st.AgentStepTimeout(x.agentOf(st.Agent)))
}

// firstTimeout is the first of the waiting steps' timeouts (zero: none).
func (x *wfRunner) firstTimeout(waiting []string) time.Time {
	var first time.Time
	for _, name := range waiting {
		st, ok := x.wf.Step(name)
		if !ok {
			continue
		}
		x.mu.Lock()
		due := x.stepTimeout(st, x.j.step(name))
		x.mu.Unlock()
		if !due.IsZero() && (first.IsZero() || due.Before(first)) {
			first = due
		}
	}
	return first
}

// agentOf is an agent's spec, nil when it is gone.
func (x *wfRunner) agentOf(name string) *config.AgentSpec {
	res, ok := x.w.resources.Get("Agent", name)
	if !ok {
		return nil
	}
	spec, _ := agentSpec(res)
	return spec
}

// errGoOn: a step's task ended while the run was parking on it; the run
// goes on instead.
var errGoOn = errors.New("a task the run waits on has ended")

// plan settles the steps that can be settled without acting (skipped ones,
// agent steps whose task ended) and returns those ready to act and the
// agent steps whose tasks still run.
func (x *wfRunner) plan(ctx context.Context) (ready, waiting []string, err error) {
	for changed := true; changed; {
		changed = false
		for i := range x.wf.Steps {
			st := &x.wf.Steps[i]
			x.mu.Lock()
			s := x.j.step(st.Name)
			status, open, kind, child := s.status, s.open, s.kind, s.child
			x.mu.Unlock()
			switch status {
			case stepDone, stepSkipped, stepExhausted:
				continue
			case stepRunning:
				if open && kind == "agent" {
					settled, err := x.childEnded(ctx, st, child)
					if err != nil {
						return nil, nil, err
					}
					if settled {
						changed = true
					} else if !slices.Contains(waiting, st.Name) {
						waiting = append(waiting, st.Name)
					}
					continue
				}
			}
			runs, skip, why := x.enabled(st)
			if skip {
				if err := x.append(ctx, &Event{Type: EvStepSkipped, Detail: why, Workflow: &StepEvent{Step: st.Name}}); err != nil {
					return nil, nil, err
				}
				x.mu.Lock()
				x.j.step(st.Name).status = stepSkipped
				x.mu.Unlock()
				changed = true
				continue
			}
			if !runs {
				continue
			}
			if st.When != "" && status == "" {
				ok, err := x.condition(ctx, st)
				if retryLater(err) {
					return nil, nil, err
				}
				if err != nil {
					if ferr := x.exhaust(ctx, st, 0, codeExpression, "when: "+err.Error()); ferr != nil {
						return nil, nil, ferr
					}
					return nil, nil, nil
				}
				if !ok {
					if err := x.append(ctx, &Event{Type: EvStepSkipped, Detail: "when is false: " + st.When, Workflow: &StepEvent{Step: st.Name}}); err != nil {
						return nil, nil, err
					}
					x.mu.Lock()
					x.j.step(st.Name).status = stepSkipped
					x.mu.Unlock()
					changed = true
					continue
				}
			}
			if !slices.Contains(ready, st.Name) {
				ready = append(ready, st.Name)
			}
		}
		if len(ready) > 0 {
			break
		}
	}
	return ready, waiting, nil
}

// enabled says whether a step's needs let it run now (runs), or never
// (skip, with why): it runs once every need has ended and at least one
// completed and, if that one returned a routing slip, chose it.
func (x *wfRunner) enabled(st *config.WorkflowStep) (runs, skip bool, why string) {
	if len(st.Needs) == 0 {
		return true, false, ""
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	leads := false
	for _, n := range st.Needs {
		s := x.j.step(n)
		switch s.status {
		case stepDone:
			if !s.slip || slices.Contains(s.next, st.Name) {
				leads = true
			}
		case stepSkipped:
		default:
			return false, false, ""
		}
	}
	if !leads {
		return false, true, "no path leads to it: every step it needs was skipped or chose other steps"
	}
	return true, false, ""
}

// vars are what a step's expressions see: the run's input, the steps so
// far, the output being compensated, and, when one of them reads it, the
// tree's shared state as it is now (docs/agents.md#shared-state), read
// from the bucket's leader.
func (x *wfRunner) vars(ctx context.Context, output json.RawMessage, progs ...*expr.Program) (expr.Vars, error) {
	var state any
	if slices.ContainsFunc(progs, (*expr.Program).UsesState) {
		st, err := x.w.store.readState(ctx, rootOf(x.task))
		if err != nil {
			return nil, &errRetry{err}
		}
		state = decodeJSON(st.Document)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return expr.Vars{expr.Input: decodeJSON(x.task.Input), expr.Steps: x.j.stepsVar(), expr.Output: decodeJSON(output),
		expr.State: state}, nil
}

func (x *wfRunner) condition(ctx context.Context, st *config.WorkflowStep) (bool, error) {
	p, err := expr.Compile(st.When, true)
	if err != nil {
		return false, err
	}
	vars, err := x.vars(ctx, nil, p)
	if err != nil {
		return false, err
	}
	return p.Bool(ctx, vars)
}

// retryLater reports whether err is the substrate's, not the expression's:
// the step is tried again later rather than failed.
func retryLater(err error) bool {
	var r *errRetry
	return errors.As(err, &r)
}

// evalAction evaluates a step's (or compensation's) input or arguments.
func (x *wfRunner) evalAction(ctx context.Context, a config.StepAction, output json.RawMessage) (json.RawMessage, error) {
	if a.Agent != "" {
		p, err := expr.Compile(a.Input, false)
		if err != nil {
			return nil, fmt.Errorf("input: %w", err)
		}
		vars, err := x.vars(ctx, output, p)
		if err != nil {
			return nil, err
		}
		return p.Eval(ctx, vars)
	}
	progs := map[string]*expr.Program{}
	for k, src := range a.Arguments {
		p, err := expr.Compile(src, false)
		if err != nil {
			return nil, fmt.Errorf("arguments.%s: %w", k, err)
		}
		progs[k] = p
	}
	vars, err := x.vars(ctx, output, slices.Collect(maps.Values(progs))...)
	if err != nil {
		return nil, err
	}
	args := map[string]json.RawMessage{}
	for k, p := range progs {
		v, err := p.Eval(ctx, vars)
		if err != nil {
			return nil, fmt.Errorf("arguments.%s: %w", k, err)
		}
		args[k] = v
	}
	return json.Marshal(args)
}

func stepAction(st *config.WorkflowStep) config.StepAction {
	return config.StepAction{Agent: st.Agent, Input: st.Input, Tool: st.Tool, Arguments: st.Arguments}
}

// runStep runs a ready step: a tool call with its retries, or the start of
// an agent step's task (its end is found by plan).
func (x *wfRunner) runStep(ctx context.Context, st *config.WorkflowStep) error {
	attempts, backoff, retryOn := st.Retry.Effective()
	if len(retryOn) == 0 {
		retryOn = defaultRetryOn
	}
	for {
		x.mu.Lock()
		s := x.j.step(st.Name)
		attempt, open, key, budgetFrom := s.attempt, s.open, s.key, s.budgetFrom
		x.mu.Unlock()
		resume := open
		if !open {
			attempt++
			if attempt-budgetFrom >= attempts {
				return nil // settled by exhaust already
			}
		}
		if st.Agent != "" {
			return x.startChild(ctx, st, attempt, open)
		}
		args, err := x.evalAction(ctx, stepAction(st), nil)
		if err != nil {
			if retryLater(err) {
				return err
			}
			return x.exhaust(ctx, st, attempt, codeExpression, err.Error())
		}
		if !open {
			key = fmt.Sprintf("%s/wf/%s/%d", x.task.ID, st.Name, attempt)
			if err := x.append(ctx, &Event{Type: EvStepStart, Tool: st.Tool, Workflow: &StepEvent{Step: st.Name, Attempt: attempt, Kind: "tool", Key: key}}); err != nil {
				return err
			}
			x.mu.Lock()
			s.status, s.attempt, s.open, s.kind, s.key = stepRunning, attempt, true, "tool", key
			x.mu.Unlock()
		}
		out, code, detail, err := x.callTool(ctx, st.Tool, args, key, attempt, resume, st.Timeout)
		if err != nil {
			return err // parked, stopped, fenced, or to retry later
		}
		if code == "" {
			return x.stepDone(ctx, st, attempt, out)
		}
		last := attempt-budgetFrom+1 >= attempts || !slices.Contains(retryOn, code)
		if last {
			return x.exhaust(ctx, st, attempt, code, detail)
		}
		if err := x.append(ctx, &Event{Type: EvStepFailed, Tool: st.Tool, Code: code, Detail: detail, Workflow: &StepEvent{Step: st.Name, Attempt: attempt}}); err != nil {
			return err
		}
		x.mu.Lock()
		s.open = false
		x.mu.Unlock()
		wait := backoff << min(attempt-budgetFrom, 10)
		x.logger.InfoContext(ctx, "workflow step failed; trying again", "step", st.Name, "attempt", attempt, "code", code, "wait", wait)
		if err := sleep(ctx, wait); err != nil {
			return &errRetry{err}
		}
	}
}

// callTool makes a tool call through the pipeline, as the run's agent,
// with the step's Idempotency-Key. A failure the step may retry or fail
// on is returned as its code and detail; err is for the run (parked on an
// approval, stopped, to retry later).
func (x *wfRunner) callTool(ctx context.Context, tool string, args json.RawMessage, key string, attempt int, resume bool, timeout string) (json.RawMessage, string, string, error) {
	for {
		tok, err := x.r.credential()
		if err != nil {
			return nil, "", "", &errRetry{err}
		}
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if d, err := time.ParseDuration(timeout); err == nil && d > 0 {
			cctx, cancel = context.WithTimeout(ctx, d)
		}
		out, err := x.w.gateway.Invoke(cctx, pipeline.Action{
			Credential: tok, Kind: "tool", Target: tool, Arguments: args,
			IdempotencyKey: key, Edge: "workflow", Step: strings.TrimPrefix(key, x.task.ID+"/wf/"), Resume: resume,
		})
		timedOut := cctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			if out.Result != nil && out.Result.IsError {
				return nil, codeToolError, fmt.Sprintf("%s answered with an error (HTTP %d): %s", tool, out.Result.Status, truncateText(string(toolOutput(out)), 300)), nil
			}
			return toolOutput(out), "", "", nil
		}
		if timedOut {
			return nil, problem.UpstreamTimeout, fmt.Sprintf("%s did not answer within the step's timeout", tool), nil
		}
		if ctx.Err() != nil {
			return nil, "", "", &errRetry{ctx.Err()}
		}
		var pe *problem.Error
		if !errors.As(err, &pe) {
			return nil, "", "", &errRetry{err}
		}
		switch {
		case pe.Code == problem.ApprovalPending:
			return nil, "", "", x.park(ctx, ReasonAwaitingApproval, "approval "+pe.ApprovalID+": "+pe.Detail)
		case pe.Code == problem.Killed:
			return nil, "", "", &stopCause{state: Canceled, reason: ReasonKilled, detail: pe.Detail}
		case pe.Code == problem.BudgetExceeded:
			return nil, "", "", &stopCause{state: Failed, reason: ReasonBudgetExceeded, detail: pe.Detail}
		case pe.Code == problem.Unauthenticated:
			return nil, "", "", &stopCause{state: Failed, reason: ReasonAgentGone, detail: pe.Detail}
		}
		if wait, ok := throttled(err); ok {
			// Waiting its turn is no failed attempt.
			if err := sleep(ctx, wait); err != nil {
				return nil, "", "", &errRetry{err}
			}
			resume = true
			continue
		}
		return nil, pe.Code, pe.Detail, nil
	}
}

// toolOutput is a tool's answer as a step's output: its structured value,
// else its content.
func toolOutput(out *pipeline.Outcome) json.RawMessage {
	if out == nil || out.Result == nil {
		return json.RawMessage("null")
	}
	if len(out.Result.Structured) > 0 {
		return out.Result.Structured
	}
	b, err := json.Marshal(out.Result.Content)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

func truncateText(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// stepDone records a step's output, after checking its routing slip.
func (x *wfRunner) stepDone(ctx context.Context, st *config.WorkflowStep, attempt int, out json.RawMessage) error {
	if len(out) > MaxInput {
		// The journal keeps outputs inline, and later steps read them.
		return x.exhaust(ctx, st, attempt, codeOutputTooLarge, fmt.Sprintf("the step's output is %d bytes, over the limit of %d", len(out), MaxInput))
	}
	next, hasSlip, err := ParseSlip(out)
	if err == nil && hasSlip {
		err = checkSlip(x.wf, st.Name, next)
	}
	if err != nil {
		detail := err.Error()
		if ps := (*problemSlip)(nil); errors.As(err, &ps) {
			detail = ps.detail
		}
		return x.exhaust(ctx, st, attempt, problem.RoutingSlipInvalid, detail)
	}
	if hasSlip && next == nil {
		next = []string{}
	}
	if err := x.append(ctx, &Event{Type: EvStepDone, Workflow: &StepEvent{Step: st.Name, Attempt: attempt, Output: out, Next: next}}); err != nil {
		return err
	}
	x.mu.Lock()
	s := x.j.step(st.Name)
	s.status, s.open, s.output, s.next, s.slip = stepDone, false, out, next, hasSlip
	x.j.order = append(x.j.order, st.Name)
	x.mu.Unlock()
	return nil
}

// exhaust records a step's last failed attempt and puts it in the
// dead-letter queue; the loop then compensates or parks the run.
func (x *wfRunner) exhaust(ctx context.Context, st *config.WorkflowStep, attempt int, code, detail string) error {
	if err := x.append(ctx, &Event{Type: EvStepFailed, Reason: reasonExhausted, Tool: st.Tool, Code: code, Detail: detail, Workflow: &StepEvent{Step: st.Name, Attempt: attempt}}); err != nil {
		return err
	}
	x.mu.Lock()
	s := x.j.step(st.Name)
	s.status, s.open, s.code, s.detail = stepExhausted, false, code, detail
	s.attempt = max(s.attempt, attempt)
	x.j.failed = st.Name
	x.mu.Unlock()
	return nil
}

// startChild opens (or, after a crash, finds) the task of an agent step's
// attempt; plan waits for its end.
func (x *wfRunner) startChild(ctx context.Context, st *config.WorkflowStep, attempt int, open bool) error {
	input, err := x.evalAction(ctx, stepAction(st), nil)
	if err != nil {
		if retryLater(err) {
			return err
		}
		return x.exhaust(ctx, st, attempt, codeExpression, err.Error())
	}
	key := fmt.Sprintf("%s/wf/%s/%d", x.task.ID, st.Name, attempt)
	owner := "workflow:" + x.task.ID
	child := idFor(owner, key)
	if !open {
		// The attempt's deadline goes to the journal with its start, before
		// the task exists: a worker that takes the run over keeps it.
		now := x.w.now().UTC()
		deadline := now.Add(st.AgentStepTimeout(x.agentOf(st.Agent)))
		if err := x.append(ctx, &Event{Type: EvStepStart, Agent: st.Agent, Time: now,
			Workflow: &StepEvent{Step: st.Name, Attempt: attempt, Kind: "agent", Child: child, Deadline: &deadline}}); err != nil {
			return err
		}
		x.mu.Lock()
		s := x.j.step(st.Name)
		s.status, s.attempt, s.open, s.kind, s.child = stepRunning, attempt, true, "agent", child
		s.deadline, s.started = deadline, now
		x.mu.Unlock()
	}
	if failure, err := x.openChild(ctx, st.Name, st.Agent, input, key, owner); err != nil || failure != nil {
		if failure != nil {
			return x.exhaust(ctx, st, attempt, failure.Code, failure.Detail)
		}
		return err
	}
	return nil
}

// openChild creates a step's (or compensation's) task, once: the key
// names the same task on every attempt to create it.
// A task that cannot be made (no such agent) is returned as failure.
func (x *wfRunner) openChild(ctx context.Context, step, agent string, input json.RawMessage, key, owner string) (*problem.Error, error) {
	// The run is a process manager, not an agent waiting in the chain: its
	// steps' tasks get the run's chain (from the event or the task that
	// started it) as it is, under the rule of every agent call.
	if pe := CheckChain(x.task.Chain, agent, 0); pe != nil {
		var refused *problem.Error
		if errors.As(pe, &refused) {
			return refused, nil
		}
		return nil, pe
	}
	_, _, err := x.svc.Create(ctx, Request{
		Agent: agent, Input: input, IdempotencyKey: key, Owner: owner, CreatedBy: "workflow:" + x.task.Workflow,
		Principal: x.task.Principal, Parent: x.task.ID, Chain: x.task.Chain,
	})
	if err != nil {
		var pe *problem.Error
		if errors.As(err, &pe) && !transient(err) {
			x.logger.WarnContext(ctx, "a workflow step's task cannot be created", "step", step, "err", err)
			return pe, nil
		}
		return nil, &errRetry{err}
	}
	return nil, nil
}

// childEnded looks at an agent step's task: once it has ended, the step
// is done (completed) or its attempt failed, and it reports settled. A
// task still running past the step's timeout is canceled, and the attempt
// fails with upstream_timeout.
func (x *wfRunner) childEnded(ctx context.Context, st *config.WorkflowStep, child string) (bool, error) {
	x.mu.Lock()
	s := x.j.step(st.Name)
	attempt, due := s.attempt, x.stepTimeout(st, s)
	x.mu.Unlock()
	late := !due.IsZero() && !x.w.now().Before(due)
	timedOut := func(what string) string {
		return fmt.Sprintf("task %s of agent %s did not end within the step's timeout (its deadline was %s); %s",
			child, st.Agent, due.UTC().Format(time.RFC3339), what)
	}
	c, ok := x.w.store.Get(child)
	if !ok {
		var err error
		c, _, err = x.w.store.fetch(ctx, child)
		if errors.Is(err, ErrNotFound) {
			if late {
				// Journaled, never made, and too late to make now.
				return true, x.attemptFailed(ctx, st, child, problem.UpstreamTimeout, timedOut("it was never made"))
			}
			// Journaled, not yet made: a crash came between the two.
			return false, x.startChild(ctx, st, attempt, true)
		} else if err != nil {
			return false, &errRetry{err}
		}
	}
	if !c.State.Final() {
		if !late {
			return false, nil
		}
		// The stop is recorded first: a crash after it finds the task
		// canceled for the timeout, or still stopping, and fails the
		// attempt the same way.
		var err error
		if c, err = x.svc.timeOut(ctx, child, "workflow run "+x.task.ID, fmt.Sprintf("step %s of workflow run %s timed out", st.Name, x.task.ID)); err != nil {
			return false, &errRetry{err}
		}
		if c.State != Completed {
			return true, x.attemptFailed(ctx, st, child, problem.UpstreamTimeout, timedOut("it was canceled"))
		}
	}
	if c.State == Completed {
		return true, x.stepDone(ctx, st, attempt, c.Result)
	}
	if c.Reason == ReasonStepTimeout {
		return true, x.attemptFailed(ctx, st, child, problem.UpstreamTimeout, timedOut("it was canceled"))
	}
	detail := fmt.Sprintf("task %s of agent %s %s", child, st.Agent, c.State)
	if c.Reason != "" {
		detail += " (" + c.Reason + ")"
	}
	if c.Detail != "" {
		detail += ": " + c.Detail
	}
	return true, x.attemptFailed(ctx, st, child, codeTaskFailed, detail)
}

// attemptFailed ends an agent step's attempt that failed with code: the
// step is exhausted (past its attempts, or code is not one to retry on),
// or it is tried again after its backoff.
func (x *wfRunner) attemptFailed(ctx context.Context, st *config.WorkflowStep, child, code, detail string) error {
	x.mu.Lock()
	s := x.j.step(st.Name)
	attempt, budgetFrom := s.attempt, s.budgetFrom
	x.mu.Unlock()
	attempts, backoff, retryOn := st.Retry.Effective()
	if len(retryOn) == 0 {
		retryOn = defaultRetryOn
	}
	if attempt-budgetFrom+1 >= attempts || !slices.Contains(retryOn, code) {
		return x.exhaust(ctx, st, attempt, code, detail)
	}
	if err := x.append(ctx, &Event{Type: EvStepFailed, Agent: st.Agent, Code: code, Detail: detail, Workflow: &StepEvent{Step: st.Name, Attempt: attempt, Child: child}}); err != nil {
		return err
	}
	x.mu.Lock()
	s.open = false
	x.mu.Unlock()
	if err := sleep(ctx, backoff<<min(attempt-budgetFrom, 10)); err != nil {
		return &errRetry{err}
	}
	return x.startChild(ctx, st, attempt+1, false)
}

// parkOnTasks parks the run while its steps' tasks run; their ends wake
// it (Service.TaskEnded). A task that ended meanwhile wakes it at once.
// A worker wakes it at the first of its steps' timeouts, or at its own
// deadline, should no task end before (Worker.wakeDue).
func (x *wfRunner) parkOnTasks(ctx context.Context, waiting []string) error {
	wake := x.deadline()
	if due := x.firstTimeout(waiting); !due.IsZero() && due.Before(wake) {
		wake = due
	}
	if err := x.parkUntil(ctx, ReasonAwaitingTask, "waiting for the tasks of steps "+strings.Join(waiting, ", "), wake); err != nil && !errors.Is(err, errParked) {
		return err
	}
	for _, name := range waiting {
		x.mu.Lock()
		child := x.j.step(name).child
		x.mu.Unlock()
		if c, _, err := x.w.store.fetch(ctx, child); err != nil || c.State.Final() {
			return x.unpark(ctx, "task "+child+" ended")
		}
	}
	if !x.w.now().Before(wake) {
		return x.unpark(ctx, "a step's timeout or the run's deadline has come")
	}
	return errParked
}

// unpark takes back a run that parked on a task which ended meanwhile
// (its end's hook may have found the run not yet parked): errGoOn.
func (x *wfRunner) unpark(ctx context.Context, detail string) error {
	if _, err := x.w.store.update(context.WithoutCancel(ctx), x.task.ID, func(t *Task) error {
		if t.State.Final() {
			return errSkip
		}
		t.State, t.Reason, t.Detail = Working, "", detail
		return nil
	}); err != nil {
		return &errRetry{err}
	}
	if err := x.append(ctx, &Event{Type: EvState, State: Working, Detail: detail}); err != nil {
		return err
	}
	x.stateMu.Lock()
	x.j.state, x.j.reason = Working, ""
	x.stateMu.Unlock()
	return errGoOn
}

// park puts the run in input-required for reason.
func (x *wfRunner) park(ctx context.Context, reason, detail string) error {
	return x.parkUntil(ctx, reason, detail, time.Time{})
}

// parkUntil is park with a time at which a worker wakes the run (zero:
// none), kept in its record.
func (x *wfRunner) parkUntil(ctx context.Context, reason, detail string, wake time.Time) error {
	var wakeAt *time.Time
	if !wake.IsZero() {
		w := wake.UTC()
		wakeAt = &w
	}
	x.stateMu.Lock()
	defer x.stateMu.Unlock()
	if x.j.state != InputRequired || x.j.reason != reason {
		if err := x.append(ctx, &Event{Type: EvState, State: InputRequired, Reason: reason, Detail: detail}); err != nil {
			return err
		}
		x.j.state, x.j.reason = InputRequired, reason
	}
	if _, err := x.w.store.update(context.WithoutCancel(ctx), x.task.ID, func(t *Task) error {
		if t.State.Final() {
			return errSkip
		}
		t.State, t.Reason, t.Detail, t.Usage, t.WakeAt = InputRequired, reason, detail, x.j.usage, wakeAt
		return nil
	}); err != nil {
		return &errRetry{err}
	}
	return errParked
}

// fail handles a step that failed past its retries: into the dead-letter
// queue, then the run parks there (onFailure: deadletter, until a person
// retries or discards it) or is compensated and fails.
func (x *wfRunner) fail(ctx context.Context, step string, discarded bool) error {
	st, _ := x.wf.Step(step)
	x.mu.Lock()
	s := x.j.step(step)
	attempt, code, detail, budgetFrom, entry := s.attempt, s.code, s.detail, s.budgetFrom, x.j.deadLetter
	x.mu.Unlock()
	park := x.wf.OnFailure == config.OnFailureDeadLetter && !discarded
	reason := fmt.Sprintf("step %s failed after %d attempt(s): %s: %s", step, attempt-budgetFrom+1, code, detail)
	if entry == "" && x.w.dlq != nil {
		var payload json.RawMessage
		if st != nil {
			payload, _ = x.evalAction(ctx, stepAction(st), nil)
		}
		id, err := x.w.dlq.Put(ctx, deadletter.Entry{
			ID: deadletter.IDFor(x.task.ID, step, fmt.Sprint(attempt)), Source: deadletter.SourceWorkflow, Name: x.task.Workflow,
			Reason: reason, Code: code, Payload: payload, Task: x.task.ID, Step: step, Attempts: attempt - budgetFrom + 1, Resumable: park,
		})
		if err != nil {
			return &errRetry{err}
		}
		if err := x.append(ctx, &Event{Type: EvDeadLettered, Code: code, Detail: reason, Workflow: &StepEvent{Step: step, DeadLetter: id}}); err != nil {
			return err
		}
		x.mu.Lock()
		x.j.deadLetter = id
		x.mu.Unlock()
		entry = id
	}
	if park {
		return x.parkDeadLettered(ctx)
	}
	compensated, err := x.compensate(ctx)
	if err != nil {
		return err
	}
	if len(compensated) > 0 {
		reason += "; compensated: " + strings.Join(compensated, ", ")
	}
	if entry != "" {
		reason += "; dead letter " + entry
	}
	return x.end(ctx, Failed, ReasonStepFailed, reason, nil)
}

func (x *wfRunner) parkDeadLettered(ctx context.Context) error {
	x.mu.Lock()
	step, entry := x.j.failed, x.j.deadLetter
	s := x.j.step(step)
	detail := fmt.Sprintf("step %s failed past its retries (%s: %s); dead letter %s: corral dlq retry %s resumes it at the step, corral dlq discard %s compensates and fails it", step, s.code, s.detail, entry, entry, entry)
	x.mu.Unlock()
	return x.park(ctx, ReasonDeadLettered, detail)
}

// compensate undoes the completed steps that declare a compensation, in
// reverse order of completion, each once: its intent is journaled first
// and a compensation begun before a crash is finished, not begun again.
func (x *wfRunner) compensate(ctx context.Context) ([]string, error) {
	x.mu.Lock()
	order := slices.Clone(x.j.order)
	x.mu.Unlock()
	var done []string
	for i := len(order) - 1; i >= 0; i-- {
		name := order[i]
		st, ok := x.wf.Step(name)
		if !ok || st.Compensate == nil {
			continue
		}
		x.mu.Lock()
		s := x.j.step(name)
		compDone, compOpen, key, output := s.compDone, s.compOpen, s.compKey, s.output
		x.mu.Unlock()
		if compDone {
			done = append(done, name)
			continue
		}
		c := *st.Compensate
		args, err := x.evalAction(ctx, c, output)
		if retryLater(err) {
			return nil, err
		}
		if err != nil {
			if err := x.compensated(ctx, name, nil, codeExpression+": "+err.Error()); err != nil {
				return nil, err
			}
			continue
		}
		if c.Agent != "" {
			settled, err := x.compensateByTask(ctx, name, c, args, compOpen)
			if err != nil || !settled {
				return nil, err
			}
			done = append(done, name)
			continue
		}
		if !compOpen {
			key = fmt.Sprintf("%s/wf/%s/compensate", x.task.ID, name)
			if err := x.append(ctx, &Event{Type: EvCompensateStart, Tool: c.Tool, Workflow: &StepEvent{Step: name, Kind: "tool", Key: key}}); err != nil {
				return nil, err
			}
			x.mu.Lock()
			s.compOpen, s.compKey = true, key
			x.mu.Unlock()
		}
		var out json.RawMessage
		var code, detail string
		for attempt := 0; ; attempt++ {
			out, code, detail, err = x.callTool(ctx, c.Tool, args, key, 1, true, st.Timeout)
			if err != nil {
				return nil, err
			}
			if code == "" || !slices.Contains(defaultRetryOn, code) || attempt >= 4 {
				break
			}
			if err := sleep(ctx, time.Duration(1<<attempt)*200*time.Millisecond); err != nil {
				return nil, &errRetry{err}
			}
		}
		failure := ""
		if code != "" {
			failure = code + ": " + detail
		}
		if err := x.compensated(ctx, name, out, failure); err != nil {
			return nil, err
		}
		done = append(done, name)
	}
	return done, nil
}

// compensateByTask runs an agent compensation: its task is made once;
// the run parks until it ends.
func (x *wfRunner) compensateByTask(ctx context.Context, name string, c config.StepAction, input json.RawMessage, open bool) (bool, error) {
	key := fmt.Sprintf("%s/wf/%s/compensate", x.task.ID, name)
	owner := "workflow:" + x.task.ID
	child := idFor(owner, key)
	if !open {
		if err := x.append(ctx, &Event{Type: EvCompensateStart, Agent: c.Agent, Workflow: &StepEvent{Step: name, Kind: "agent", Child: child}}); err != nil {
			return false, err
		}
		x.mu.Lock()
		s := x.j.step(name)
		s.compOpen, s.compChild = true, child
		x.mu.Unlock()
	}
	t, _, err := x.w.store.fetch(ctx, child)
	if errors.Is(err, ErrNotFound) {
		failure, oerr := x.openChild(ctx, name, c.Agent, input, key, owner)
		if oerr != nil {
			return false, oerr
		}
		if failure != nil {
			return true, x.compensated(ctx, name, nil, "its task cannot be made: "+failure.Detail)
		}
		t, _, err = x.w.store.fetch(ctx, child)
	}
	if err != nil {
		return false, &errRetry{err}
	}
	if !t.State.Final() {
		return false, x.parkOnTasksChild(ctx, name, child)
	}
	failure := ""
	if t.State != Completed {
		failure = fmt.Sprintf("task %s %s %s", child, t.State, t.Detail)
	}
	return true, x.compensated(ctx, name, t.Result, failure)
}

func (x *wfRunner) parkOnTasksChild(ctx context.Context, name, child string) error {
	// Woken at the run's deadline at the latest, which ends it.
	if err := x.parkUntil(ctx, ReasonAwaitingTask, "compensating step "+name+": waiting for task "+child, x.deadline()); err != nil && !errors.Is(err, errParked) {
		return err
	}
	if c, _, err := x.w.store.fetch(ctx, child); err != nil || c.State.Final() {
		return x.unpark(ctx, "task "+child+" ended")
	}
	return errParked
}

// compensated records a compensation's end; failure is empty when it worked.
func (x *wfRunner) compensated(ctx context.Context, name string, out json.RawMessage, failure string) error {
	if len(out) > MaxInput {
		out = nil // recorded in the audit; too large for the journal
	}
	ev := &Event{Type: EvCompensateDone, Detail: "compensated step " + name, Workflow: &StepEvent{Step: name, Output: out}}
	if failure != "" {
		ev.IsError, ev.Detail = true, "the compensation of step "+name+" failed: "+failure
		x.logger.WarnContext(ctx, "a compensation failed; the others go on", "step", name, "failure", failure)
	}
	if err := x.append(ctx, ev); err != nil {
		return err
	}
	x.mu.Lock()
	s := x.j.step(name)
	s.compOpen, s.compDone, s.compFailed = false, true, failure != ""
	x.mu.Unlock()
	return nil
}

// finish completes the run with its output.
func (x *wfRunner) finish(ctx context.Context) error {
	var result json.RawMessage
	if x.wf.Output != "" {
		p, err := expr.Compile(x.wf.Output, false)
		var vars expr.Vars
		if err == nil {
			if vars, err = x.vars(ctx, nil, p); err != nil {
				return err
			}
			result, err = p.Eval(ctx, vars)
		}
		if err != nil {
			return x.end(ctx, Failed, codeExpression, "output: "+err.Error(), nil)
		}
	} else {
		outs := map[string]json.RawMessage{}
		x.mu.Lock()
		for name, s := range x.j.steps {
			if s.status == stepDone {
				outs[name] = s.output
			}
		}
		x.mu.Unlock()
		result, _ = json.Marshal(outs)
	}
	return x.end(ctx, Completed, "", "", result)
}

// end records the run's final state: in the journal, then its record.
func (x *wfRunner) end(ctx context.Context, s State, reason, detail string, result json.RawMessage) error {
	ctx = context.WithoutCancel(ctx)
	if err := x.append(ctx, &Event{Type: EvState, State: s, Reason: reason, Detail: detail, Result: result, Usage: &x.j.usage}); err != nil {
		return err
	}
	x.j.state, x.j.result = s, result
	if err := x.w.store.settle(ctx, x.task.ID, s, reason, detail, result, x.j.usage, x.w.now()); err != nil {
		return &errRetry{err}
	}
	x.logger.InfoContext(ctx, "workflow run ended", "state", s, "reason", reason)
	return nil
}
