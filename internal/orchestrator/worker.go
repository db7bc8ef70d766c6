package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/killswitch"
)

// KillSwitches says whether an agent is stopped.
type KillSwitches interface {
	Killed(agent string) (killswitch.Switch, bool)
}

// WorkerOptions configure a worker.
type WorkerOptions struct {
	// ID names the worker in task records and events; "" is host-pid.
	ID string
	// Labels say where the worker runs (region=eu): it takes only work
	// whose placement they include.
	Labels map[string]string
	// Slots bounds the tasks it runs at once; 0 is 64.
	Slots int
	// Lease is how long a task stays with a worker that stops renewing it:
	// the work message's ack deadline. 0 is 2 s; the worker renews it
	// every quarter of it.
	Lease time.Duration
	// MaxAttempts bounds how often a task is started before it fails with
	// too_many_attempts; 0 is 20.
	MaxAttempts int
	// Remote sends the tasks of remote A2A agents (spec.a2a) to them; nil
	// fails such tasks.
	Remote RemoteAgents
}

// Worker takes tasks off the work queue and runs their hosted agents.
type Worker struct {
	opts      WorkerOptions
	logger    *slog.Logger
	store     *Store
	gateway   Gateway
	mint      Minter
	resources Resources
	agents    AgentLister
	kill      KillSwitches
	now       func() time.Time

	mu sync.Mutex
	// running holds the tasks this worker runs now; true: a work message
	// for the task came meanwhile (a wake that met the run), so the task
	// runs again if it parks (hold, release).
	running map[string]bool
	resumes atomic.Int64 // tasks taken over from their journal
	turns   turns        // tasks waiting on a limit, in order
	dlq     DeadLetters  // where failed workflow steps go (WithDeadLetters)
}

// AgentLister lists Agent resources, for the placements work may carry.
type AgentLister interface {
	List(kind string) []config.Resource
}

// NewWorker returns a worker; Run starts it.
func NewWorker(logger *slog.Logger, store *Store, gateway Gateway, mint Minter, resources Resources, agents AgentLister, kill KillSwitches, opts WorkerOptions) *Worker {
	if opts.ID == "" {
		host, _ := os.Hostname()
		opts.ID = host + "-" + strconv.Itoa(os.Getpid())
	}
	if opts.Slots <= 0 {
		opts.Slots = 64
	}
	if opts.Lease <= 0 {
		opts.Lease = 2 * time.Second
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 20
	}
	return &Worker{opts: opts, logger: logger, store: store, gateway: gateway, mint: mint, resources: resources, agents: agents,
		kill: kill, now: time.Now, running: map[string]bool{}}
}

// ID names the worker.
func (w *Worker) ID() string { return w.opts.ID }

// Run takes work until ctx ends, then waits for its running tasks to
// hand their work back.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.store.WaitLoaded(ctx); err != nil {
		return nil
	}
	w.logger.InfoContext(ctx, "worker taking tasks", "worker", w.opts.ID, "labels", labelsString(w.opts.Labels), "slots", w.opts.Slots)
	slots := make(chan struct{}, w.opts.Slots)
	var wg sync.WaitGroup
	defer wg.Wait()
	pulling := map[string]context.CancelFunc{} // placement key -> its puller
	defer func() {
		for _, stop := range pulling {
			stop()
		}
	}()
	janitor := time.NewTicker(10 * time.Second)
	defer janitor.Stop()
	rescan := time.NewTicker(2 * time.Second)
	defer rescan.Stop()
	for {
		for key := range w.placements() {
			if pulling[key] != nil {
				continue
			}
			pctx, stop := context.WithCancel(ctx)
			pulling[key] = stop
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.pull(pctx, key, slots, &wg)
			}()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-rescan.C:
			w.wakeDue(ctx)
		case <-janitor.C:
			w.sweep(ctx)
		}
	}
}

// placements returns the placement keys this worker serves: those of the
// agents and live tasks whose placement its labels include.
func (w *Worker) placements() map[string]bool {
	out := map[string]bool{"any": true}
	for _, res := range w.agents.List("Agent") {
		spec, ok := agentSpec(res)
		if ok && spec.Hosted() && matches(w.opts.Labels, spec.Placement) {
			out[placementKey(spec.Placement)] = true
		}
	}
	for _, t := range w.store.live() {
		if t.Hosted && matches(w.opts.Labels, t.Placement) {
			out[placementKey(t.Placement)] = true
		}
	}
	return out
}

// pull fetches work of one placement while slots are free.
func (w *Worker) pull(ctx context.Context, key string, slots chan struct{}, wg *sync.WaitGroup) {
	cons, err := w.consumer(ctx, key)
	for err != nil {
		w.logger.WarnContext(ctx, "work queue consumer unavailable; retrying", "placement", key, "err", err)
		if sleep(ctx, time.Second) != nil {
			return
		}
		cons, err = w.consumer(ctx, key)
	}
	for ctx.Err() == nil {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		// One message per free slot: Next returns as soon as one is there
		// (a batch would wait for the rest, and a prefetch would hold
		// tasks no slot is free for while their leases run).
		msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			<-slots
			if ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
				w.logger.WarnContext(ctx, "fetching work", "placement", key, "err", err)
				_ = sleep(ctx, 500*time.Millisecond)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			w.handle(ctx, msg)
		}()
	}
}

// consumer is the durable consumer all workers share for one placement.
func (w *Worker) consumer(ctx context.Context, key string) (jetstream.Consumer, error) {
	return w.store.workS.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       "work_" + key,
		Description:   "corral workers taking tasks placed " + key,
		FilterSubject: workPrefix + key + ".*",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.opts.Lease,
		MaxDeliver:    -1,
		MaxAckPending: 100000,
	})
}

// handle runs one task its work message names, holding the message (the
// lease) while it runs.
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) {
	id := string(msg.Data())
	if !ValidID(id) {
		_ = msg.Term()
		return
	}
	if !w.hold(id) {
		_ = msg.Ack() // this worker runs the task already, and knows it was woken
		return
	}
	hctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		t := time.NewTicker(w.opts.Lease / 4)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	err := w.serve(hctx, id, w.runTask)
	var retry *errRetry
	switch {
	case err == nil, errors.Is(err, errParked), errors.Is(err, ErrFenced), errors.Is(err, ErrNotFound):
		if err := msg.Ack(); err != nil {
			w.logger.WarnContext(ctx, "acknowledging work; it may be delivered again, which is harmless", "task", id, "err", err)
		}
	case errors.As(err, &retry) && ctx.Err() != nil:
		_ = msg.Nak() // shutting down: another worker takes it now
	default:
		w.logger.WarnContext(ctx, "task goes back on the queue", "task", id, "err", err)
		_ = msg.NakWithDelay(time.Second)
	}
}

// hold marks task id as run by this worker. It reports false when the
// worker runs it already: the work message is then a wake (a child ended,
// an approval was decided, an answer came) that met the run on its way to
// parking, and it is noted so that the run goes on (serve).
func (w *Worker) hold(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.running[id]; ok {
		w.running[id] = true
		return false
	}
	w.running[id] = false
	return true
}

// release lets go of task id, unless its run parked and a wake came while
// it ran: then the task stays held, and release reports that it is to run
// again. The check and the letting go are one step under w.mu, so a wake
// either finds the task held (and is noted) or finds it free (and runs
// it): it is never dropped between the two.
func (w *Worker) release(id string, parked bool) (again bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if parked && w.running[id] {
		w.running[id] = false
		return true
	}
	delete(w.running, id)
	return false
}

// serve runs task id, which hold has marked, with run until it ends, is
// lost, or parks with no wake behind it, and then releases it. A task
// woken while it parked (its record says working again, or a wake's work
// message met the run) runs again here.
func (w *Worker) serve(ctx context.Context, id string, run func(context.Context, string) error) error {
	for i := 0; ; i++ {
		err := run(ctx, id)
		parked := errors.Is(err, errParked)
		if parked && i < 3 && w.woken(id) {
			continue
		}
		if !w.release(id, parked) {
			return err
		}
	}
}

// runTask takes a task, replays its journal and runs its loop.
func (w *Worker) runTask(ctx context.Context, id string) error {
	t, ok := w.store.Get(id)
	if !ok {
		var err error
		if t, _, err = w.store.fetch(ctx, id); err != nil {
			return err
		}
	}
	if t.State.Final() || !t.Hosted {
		return nil
	}
	if t.Workflow != "" {
		return w.runWorkflow(ctx, t) // workflowrun.go
	}
	if spec, ok := w.remoteSpec(t); ok && w.opts.Remote != nil {
		return w.runRemote(ctx, t, spec)
	}
	logger := w.logger.With("task", id, "agent", t.Agent)
	ctx = w.traceContext(ctx, t)
	events, err := w.store.journal(ctx, id)
	if err != nil {
		return &errRetry{err}
	}
	res, ok := w.resources.Get("Agent", t.Agent)
	spec, _ := agentSpec(res)
	r := &run{w: w, task: t, logger: logger}
	if r.c, err = replay(ctx, t, instructions(spec), events, w.store.content); err != nil {
		return err
	}
	if r.c.state.Final() {
		// The journal ended it; a crash kept the record from saying so.
		return w.store.settle(ctx, id, r.c.state, "", "", r.c.result, r.c.usage, w.now())
	}
	if r.c.limits != nil {
		t.Limits = *r.c.limits
	}
	atLimit := r.c.state == InputRequired && escalated(r.c.reason)
	if r.c.waiting != "" && !atLimit {
		// Woken while the person's answer is still missing: at its
		// deadline (wakeDue), which ends it (or escalates it) as it would
		// a running task.
		if cause := w.stopFor(id, t.Agent, t.Chain, r.deadline()); cause != nil {
			return r.stopped(ctx, cause)
		}
	}
	if r.c.waiting != "" || atLimit {
		// Waiting for a person. A record that says otherwise was marked
		// working by an answer or an extension whose journal entry a
		// crash kept from being written, or by a wake at a deadline this
		// worker's clock has not reached: it says waiting again, so that
		// the person can answer again.
		var wakeAt *time.Time
		if !atLimit {
			wakeAt = timePtr(r.deadline())
		}
		if t.State != InputRequired {
			if _, err := w.store.update(ctx, id, func(t *Task) error {
				if t.State.Final() {
					return errSkip
				}
				t.State, t.Reason, t.Detail, t.WakeAt = InputRequired, r.c.reason, r.c.detail, wakeAt
				return nil
			}); err != nil {
				return &errRetry{err}
			}
		}
		return errParked
	}
	if !ok || spec == nil || !spec.Hosted() || (t.AgentUID != "" && res.Metadata.UID != t.AgentUID) {
		r.spec = &config.AgentSpec{}
		return r.end(ctx, Failed, ReasonAgentGone, "agent "+t.Agent+" is no longer a hosted agent (deleted, recreated or changed)", nil)
	}
	r.spec = spec
	if r.c.starts >= w.opts.MaxAttempts {
		return r.end(ctx, Failed, ReasonAttempts, fmt.Sprintf("the task was started %d times without ending", r.c.starts), nil)
	}
	if err := r.appendEvent(ctx, &Event{Type: EvStarted, Worker: w.opts.ID}); err != nil {
		return err
	}
	now := w.now().UTC()
	if r.c.firstRun.IsZero() {
		r.c.firstRun = now
	}
	r.c.starts++
	deadline := r.deadline()
	_, err = w.store.update(ctx, id, func(t *Task) error {
		if t.State.Final() {
			return errSkip
		}
		t.State, t.Reason, t.Detail, t.Worker, t.Attempts, t.WakeAt = Working, "", "", w.opts.ID, r.c.starts, nil
		if t.Started == nil {
			t.Started = &now
		}
		t.Deadline = &deadline
		return nil
	})
	if err != nil {
		return &errRetry{err}
	}
	r.c.state = Working
	if r.c.starts > 1 {
		w.resumes.Add(1)
		logger.InfoContext(ctx, "resuming task from its journal", "attempt", r.c.starts, "steps", r.c.step)
	}
	defer r.inflight.Wait()
	defer r.endTurn()
	if err := r.greetHandoff(ctx); err != nil {
		return err
	}
	return r.execute(ctx)
}

// agentSpec decodes an Agent's spec.
func agentSpec(res config.Resource) (*config.AgentSpec, bool) {
	var spec config.AgentSpec
	if len(res.Spec) == 0 || json.Unmarshal(res.Spec, &spec) != nil {
		return nil, false
	}
	return &spec, true
}

func instructions(spec *config.AgentSpec) string {
	if spec == nil {
		return ""
	}
	return spec.Instructions
}

// stopFor says why a running task must stop now, or nil: a stop request
// in its record, a kill switch over its agent or an agent above it in its
// chain (stopping an agent stops the work it handed on), its deadline.
func (w *Worker) stopFor(id, agent string, chain []string, deadline time.Time) *stopCause {
	if st := w.store.stopOf(id); st != nil {
		return &stopCause{state: st.State, reason: st.Reason, detail: st.Detail}
	}
	for _, above := range chain {
		if sw, on := w.kill.Killed(above); on && !sw.All {
			detail := "agent " + above + ", which handed this work to " + agent + ", is stopped by a kill switch"
			if sw.Reason != "" {
				detail += ": " + sw.Reason
			}
			return &stopCause{state: Canceled, reason: ReasonKilled, detail: detail}
		}
	}
	if sw, on := w.kill.Killed(agent); on {
		detail := "agent " + agent + " is stopped by a kill switch"
		if sw.All {
			detail = "every agent is stopped by the global kill switch"
		}
		if sw.Reason != "" {
			detail += ": " + sw.Reason
		}
		return &stopCause{state: Canceled, reason: ReasonKilled, detail: detail}
	}
	if !deadline.IsZero() && w.now().After(deadline) {
		return &stopCause{state: Failed, reason: ReasonDeadline, detail: "the task ran past its deadline of " + deadline.UTC().Format(time.RFC3339)}
	}
	return nil
}

// sweep puts back on the queue the live tasks that want a worker but have
// no work message: their creator or last worker died between writing the
// record and queueing the work. Duplicates are harmless: the journal's
// guard lets one worker run a task.
func (w *Worker) sweep(ctx context.Context) {
	cutoff := w.now().Add(-10 * time.Second)
	for _, t := range w.store.live() {
		if !t.Hosted || t.Updated.After(cutoff) || !matches(w.opts.Labels, t.Placement) {
			continue
		}
		if t.State == InputRequired && t.Reason == ReasonAwaitingAgent && t.Stop == nil && t.WaitingOn != "" {
			// Waiting for a task whose end's wake may have been lost (its
			// replica died first): wake it if that task has ended.
			if w.childDone(ctx, t.WaitingOn) {
				if err := w.service().Wake(ctx, t.ID, "task "+t.WaitingOn+" ended"); err != nil {
					w.logger.WarnContext(ctx, "waking a task whose child ended", "task", t.ID, "err", err)
				}
			}
			continue
		}
		if t.State == InputRequired && t.Stop == nil {
			continue // parked; a message or a stop re-queues it
		}
		queued, err := w.store.queued(ctx, t)
		if err != nil || queued {
			continue
		}
		w.logger.InfoContext(ctx, "re-queueing a task that has no work message", "task", t.ID, "state", t.State)
		if err := w.store.dispatch(ctx, t, t.ID+"/sweep/"+strconv.FormatInt(w.now().Unix()/60, 10)); err != nil {
			w.logger.WarnContext(ctx, "re-queueing task", "task", t.ID, "err", err)
		}
	}
}

// wakeDue puts back on the queue the parked tasks whose wake time has
// come. A workflow run parked on its steps' tasks wakes at a step's
// timeout or its own deadline, though no task has ended: its worker
// cancels what timed out. A run parked with no wake time (by a corral
// before step timeouts) is woken once it has been parked a while: it
// parks again with one, or its steps time out, counted from their starts.
// An agent's task waiting for an answer, an approval or a task it
// delegated to wakes at its deadline, and its worker ends it.
func (w *Worker) wakeDue(ctx context.Context) {
	now := w.now()
	for _, t := range w.store.live() {
		if !matches(w.opts.Labels, t.Placement) {
			continue
		}
		if parkedUntil(t, now) {
			if err := w.service().wakeAtDeadline(ctx, t.ID); err != nil {
				w.logger.WarnContext(ctx, "waking a parked task at its deadline; the next scan tries again", "task", t.ID, "err", err)
			}
			continue
		}
		if t.Workflow == "" || t.State != InputRequired || t.Reason != ReasonAwaitingTask {
			continue
		}
		if (t.WakeAt == nil && now.Sub(t.Updated) < parkedLongAgo) || (t.WakeAt != nil && now.Before(*t.WakeAt)) {
			continue
		}
		if err := w.service().wakeRun(ctx, t.ID, "a step's timeout or the run's deadline has come"); err != nil {
			w.logger.WarnContext(ctx, "waking a workflow run at its wake time; the next scan tries again", "task", t.ID, "err", err)
		}
	}
}

// parkedLongAgo is how long a run parked with no wake time waits before
// wakeDue wakes it.
const parkedLongAgo = 10 * time.Second

// woken reports whether a task that parked wants a worker again.
func (w *Worker) woken(id string) bool {
	t, ok := w.store.Get(id)
	return ok && t.Hosted && t.State == Working
}

// childDone reports whether the task id has ended, its handoffs followed.
func (w *Worker) childDone(ctx context.Context, id string) bool {
	s := w.service()
	t, err := s.Get(ctx, id)
	if err != nil {
		return false
	}
	end, err := s.outcome(ctx, t)
	return err == nil && end.State.Final()
}

// service is the task service over the worker's store.
func (w *Worker) service() *Service {
	return &Service{logger: w.logger, store: w.store, resources: w.resources, now: w.now}
}

// labelsString renders labels for logs: "region=eu,tier=gold".
func labelsString(l map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}
