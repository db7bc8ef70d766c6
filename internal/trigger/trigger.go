// Package trigger starts work when something happens. It follows the
// Trigger resources of the registry and, for each, consumes its source (a
// signed webhook, a cron schedule, a NATS subject, a RabbitMQ queue or a
// Kafka topic); it turns each event into a CloudEvent and starts exactly
// one task for it, acknowledging the source only once the task is stored.
//
// Every replica runs every trigger, and each source is consumed once: a
// JetStream durable consumer, RabbitMQ competing consumers, a Kafka
// consumer group, and for schedules a task id derived from the tick that
// makes the second replica's start a duplicate. docs/triggers.md says more.
package trigger

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// Tasks is what triggers need of the task service.
type Tasks interface {
	Create(ctx context.Context, req orchestrator.Request) (*orchestrator.Task, bool, error)
	Get(ctx context.Context, id string) (*orchestrator.Task, error)
	List(f orchestrator.Filter) ([]*orchestrator.Task, bool)
}

// WorkflowRequest asks for a run of a workflow, made at most once per
// (Owner, IdempotencyKey), as orchestrator.Request does for tasks.
type WorkflowRequest struct {
	Workflow       string
	Input          json.RawMessage
	IdempotencyKey string
	Owner          string
	CreatedBy      string
	Parent         string
	Chain          []string
}

// Workflows starts workflow runs; a trigger with start.workflow needs it.
// It returns the run's id and whether this call made it.
type Workflows interface {
	StartWorkflow(ctx context.Context, req WorkflowRequest) (id string, created bool, err error)
}

// DeadLetters keeps the events that could not start their task, for an
// operator to inspect and retry. source is "trigger", name the trigger's.
type DeadLetters interface {
	Put(ctx context.Context, source, name, reason string, payload json.RawMessage) error
}

// Resources is what the manager reads of the registry.
type Resources interface {
	List(kind string) []config.Resource
	Changed() <-chan struct{}
}

// Deps are what the manager works with. Workflows and DeadLetters may be
// nil: a workflow trigger's events are then dead-lettered, and dead
// letters are only logged and counted.
type Deps struct {
	Resources   Resources
	Tasks       Tasks
	Secret      func(ctx context.Context, ref config.SecretValue) (string, error)
	Bus         *bus.Bus // corral's own substrate, for NATS triggers without a URL
	Metrics     prometheus.Registerer
	Workflows   Workflows
	DeadLetters DeadLetters
}

// Status reports one trigger on this replica, for `corral triggers`.
type Status struct {
	Name     string `json:"name"`
	Revision uint64 `json:"revision"`
	// Source is webhook, schedule, nats, rabbitmq or kafka.
	Source string `json:"source"`
	// Start is "agent:NAME" or "workflow:NAME".
	Start string `json:"start"`
	// State is starting, running or failed (retrying).
	State string    `json:"state"`
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since"`
	// Path is where a webhook trigger takes requests.
	Path string `json:"path,omitempty"`
	// Next is a schedule's next tick.
	Next *time.Time `json:"next,omitempty"`
	// MaxConcurrent is the cap on live tasks (0: none); Live counts them.
	MaxConcurrent int `json:"max_concurrent,omitempty"`
	Live          int `json:"live"`
	// Events counts this replica's events by outcome since it started.
	Events map[string]int64 `json:"events"`
}

// The states of a trigger.
const (
	StateStarting = "starting"
	StateRunning  = "running"
	StateFailed   = "failed"
)

// Manager runs the triggers.
type Manager struct {
	logger  *slog.Logger
	deps    Deps
	metrics *metrics
	now     func() time.Time

	mu      sync.Mutex
	runners map[string]*runner
	counts  map[string]map[string]int64 // trigger -> outcome -> events, this replica
	wg      sync.WaitGroup
}

// runner owns one revision of one trigger.
type runner struct {
	name   string
	rev    uint64
	spec   *config.TriggerSpec
	kind   string
	cancel context.CancelFunc
	done   chan struct{}

	// serial makes the cap check and the create one step within this
	// replica.
	serial sync.Mutex

	mu     sync.Mutex
	state  string
	err    string
	since  time.Time
	next   *time.Time
	recent map[string]time.Time // tasks started here, maybe not yet in the mirror
}

// New returns a manager; Run starts it.
func New(logger *slog.Logger, deps Deps) *Manager {
	return &Manager{
		logger:  logger,
		deps:    deps,
		metrics: newMetrics(deps.Metrics),
		now:     time.Now,
		runners: map[string]*runner{},
		counts:  map[string]map[string]int64{},
	}
}

// Run follows Trigger resources until ctx ends, then stops every trigger
// and returns once they have stopped.
func (m *Manager) Run(ctx context.Context) error {
	defer m.stopAll()
	for {
		changed := m.deps.Resources.Changed()
		m.reconcile(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func (m *Manager) reconcile(ctx context.Context) {
	want := map[string]config.Resource{}
	for _, res := range m.deps.Resources.List("Trigger") {
		want[res.Metadata.Name] = res
	}
	// Stop what was deleted or changed, waiting without the lock: a
	// runner stopping may still count an event.
	m.mu.Lock()
	var stopping []*runner
	for name, r := range m.runners {
		if res, ok := want[name]; !ok || res.Metadata.Revision != r.rev {
			r.cancel()
			delete(m.runners, name)
			stopping = append(stopping, r)
		}
	}
	m.mu.Unlock()
	for _, r := range stopping {
		<-r.done
		m.logger.InfoContext(ctx, "trigger stopped", "trigger", r.name, "revision", r.rev)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, res := range want {
		if _, ok := m.runners[name]; ok {
			continue
		}
		var spec config.TriggerSpec
		if err := json.Unmarshal(res.Spec, &spec); err != nil {
			m.logger.ErrorContext(ctx, "trigger unreadable; skipped", "trigger", name, "err", err)
			continue
		}
		m.start(ctx, name, res.Metadata.Revision, &spec)
	}
}

// start runs a trigger's source until its context ends, retrying a source
// that fails with a backoff. m.mu is held.
func (m *Manager) start(ctx context.Context, name string, rev uint64, spec *config.TriggerSpec) {
	rctx, cancel := context.WithCancel(ctx)
	r := &runner{name: name, rev: rev, spec: spec, kind: sourceKind(spec), cancel: cancel, done: make(chan struct{}),
		state: StateStarting, since: m.now(), recent: map[string]time.Time{}}
	m.runners[name] = r
	if m.counts[name] == nil {
		m.counts[name] = map[string]int64{}
	}
	m.logger.InfoContext(ctx, "trigger started", "trigger", name, "revision", rev, "source", r.kind)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(r.done)
		backoff := time.Second
		for {
			began := m.now()
			err := m.runSource(rctx, r)
			if rctx.Err() != nil {
				return
			}
			if m.now().Sub(began) > time.Minute {
				backoff = time.Second
			}
			if err != nil {
				m.logger.WarnContext(rctx, "trigger source failed; retrying", "trigger", name, "source", r.kind, "in", backoff, "err", err)
				r.setState(StateFailed, err.Error(), m.now())
			}
			select {
			case <-rctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
		}
	}()
}

func (m *Manager) runSource(ctx context.Context, r *runner) error {
	switch r.kind {
	case "webhook":
		// Requests come through Handler; nothing to consume.
		r.setState(StateRunning, "", m.now())
		<-ctx.Done()
		return nil
	case "schedule":
		return m.runSchedule(ctx, r)
	case "nats":
		return m.runNATS(ctx, r)
	case "rabbitmq":
		return m.runRabbitMQ(ctx, r)
	case "kafka":
		return m.runKafka(ctx, r)
	}
	return fmt.Errorf("trigger %s: no source", r.name)
}

func (m *Manager) stopAll() {
	m.mu.Lock()
	for _, r := range m.runners {
		r.cancel()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

func sourceKind(spec *config.TriggerSpec) string {
	switch {
	case spec.Webhook != nil:
		return "webhook"
	case spec.Schedule != nil:
		return "schedule"
	case spec.NATS != nil:
		return "nats"
	case spec.RabbitMQ != nil:
		return "rabbitmq"
	case spec.Kafka != nil:
		return "kafka"
	}
	return ""
}

func (r *runner) setState(state, err string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != state || r.err != err {
		r.state, r.err, r.since = state, err, now
	}
}

func (r *runner) setNext(t time.Time) {
	r.mu.Lock()
	r.next = &t
	r.mu.Unlock()
}

// lookup returns the runner of a trigger.
func (m *Manager) lookup(name string) (*runner, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.runners[name]
	return r, ok
}

// count records one event's outcome.
func (m *Manager) count(trigger, outcome string) {
	m.metrics.events.WithLabelValues(trigger, outcome).Inc()
	m.mu.Lock()
	if c := m.counts[trigger]; c != nil {
		c[outcome]++
	}
	m.mu.Unlock()
}

// Status reports every trigger, sorted by name.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	runners := make([]*runner, 0, len(m.runners))
	for _, r := range m.runners {
		runners = append(runners, r)
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(runners))
	for _, r := range runners {
		out = append(out, m.status(r))
	}
	slices.SortFunc(out, func(a, b Status) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Lookup reports one trigger.
func (m *Manager) Lookup(name string) (Status, bool) {
	r, ok := m.lookup(name)
	if !ok {
		return Status{}, false
	}
	return m.status(r), true
}

func (m *Manager) status(r *runner) Status {
	st := Status{Name: r.name, Revision: r.rev, Source: r.kind, MaxConcurrent: r.spec.MaxConcurrent, Events: map[string]int64{}}
	if r.spec.Start.Agent != "" {
		st.Start = "agent:" + r.spec.Start.Agent
		st.Live = m.live(r)
	} else {
		st.Start = "workflow:" + r.spec.Start.Workflow
	}
	if r.kind == "webhook" {
		st.Path = "/hooks/" + r.name
	}
	r.mu.Lock()
	st.State, st.Error, st.Since = r.state, r.err, r.since
	if r.next != nil {
		next := *r.next
		st.Next = &next
	}
	r.mu.Unlock()
	m.mu.Lock()
	for k, v := range m.counts[r.name] {
		st.Events[k] = v
	}
	m.mu.Unlock()
	return st
}
