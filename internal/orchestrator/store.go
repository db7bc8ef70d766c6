package orchestrator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/bus"
)

// Names in the substrate.
const (
	Bucket        = "corral_tasks"
	JournalStream = "CORRAL_JOURNAL"
	WorkStream    = "CORRAL_WORK"
	PayloadStore  = "corral_task_payloads"
	journalPrefix = "corral.task."
	workPrefix    = "corral.work."
)

// inlineMax is the largest tool result kept in the journal entry itself;
// a larger one goes to the object store and the entry keeps its name.
const inlineMax = 64 << 10

// Errors callers branch on.
var (
	ErrNotFound = errors.New("no such task")
	// ErrFenced: the journal moved on under this worker: another worker has
	// the task now, and this one must stop without acting.
	ErrFenced = errors.New("another worker has taken the task over")
	// ErrConflict: a task record changed under a guarded update too often.
	ErrConflict = errors.New("the task record keeps changing")
)

// Store keeps tasks, their journals and their work messages.
type Store struct {
	logger          *slog.Logger
	bus             *bus.Bus
	js              jetstream.JetStream
	kv              jetstream.KeyValue
	objects         jetstream.ObjectStore
	journalS, workS jetstream.Stream
	states          jetstream.KeyValue // shared task state (state.go)
	auditor         Auditor            // nil: state changes and deadlocks are not audited
	deadlocks       atomic.Int64       // deadlocks this replica broke

	mu     sync.RWMutex
	tasks  map[string]mirrored
	loaded chan struct{}
	once   sync.Once
	// changed is closed and replaced whenever a task record changes, so
	// that waiters (a run --wait, a worker's stop check) wake at once.
	changed chan struct{}

	hooksMu sync.Mutex
	onEnded []func(ctx context.Context, task string, st State)
}

type mirrored struct {
	task *Task
	rev  uint64
}

// Open creates or updates the bucket, the streams and the object store.
func Open(ctx context.Context, logger *slog.Logger, b *bus.Bus) (*Store, error) {
	s := &Store{logger: logger, bus: b, js: b.JetStream(), tasks: map[string]mirrored{}, loaded: make(chan struct{}), changed: make(chan struct{})}
	var err error
	if s.kv, err = b.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "corral tasks: state, usage and limits, keyed by task id (the journal is CORRAL_JOURNAL)",
	}); err != nil {
		return nil, fmt.Errorf("orchestrator: %w", err)
	}
	if s.journalS, err = b.Stream(ctx, jetstream.StreamConfig{
		Name:        JournalStream,
		Description: "corral task journals: every step of a task, on corral.task.<id>, before its effect",
		Subjects:    []string{journalPrefix + "*"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Duplicates:  2 * time.Minute,
	}); err != nil {
		return nil, fmt.Errorf("orchestrator: %w", err)
	}
	if s.workS, err = b.Stream(ctx, jetstream.StreamConfig{
		Name:        WorkStream,
		Description: "corral work queue: one message per task that wants a worker, on corral.work.<placement>.<id>",
		Subjects:    []string{workPrefix + "*.*"},
		Retention:   jetstream.WorkQueuePolicy,
		Duplicates:  2 * time.Minute,
	}); err != nil {
		return nil, fmt.Errorf("orchestrator: %w", err)
	}
	if s.objects, err = b.ObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      PayloadStore,
		Description: "corral task payloads too large for a journal entry",
	}); err != nil {
		return nil, fmt.Errorf("orchestrator: %w", err)
	}
	if err := s.openStates(ctx); err != nil {
		return nil, err
	}
	s.onEnded = append(s.onEnded, s.deadlockEnded)
	return s, nil
}

// Run mirrors the task bucket until ctx ends, and breaks the deadlocks
// it finds in the waits the task records name (deadlock.go).
func (s *Store) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if s.WaitLoaded(dctx) == nil {
			s.detectDeadlocks(dctx)
		}
	}()
	return s.bus.Watch(ctx, s.kv, s.observe, func() { s.once.Do(func() { close(s.loaded) }) })
}

// WaitLoaded returns once the bucket has been read, or when ctx ends.
func (s *Store) WaitLoaded(ctx context.Context) error {
	select {
	case <-s.loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Loaded reports whether the bucket has been read.
func (s *Store) Loaded() bool {
	select {
	case <-s.loaded:
		return true
	default:
		return false
	}
}

func (s *Store) observe(_ context.Context, e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		s.record(e.Key(), nil, e.Revision())
		return
	}
	var t Task
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		s.logger.Warn("unreadable task record; skipped", "task", e.Key(), "err", err)
		return
	}
	s.record(e.Key(), &t, e.Revision())
}

// record puts a task in the mirror unless the mirror has a newer revision;
// nil forgets it.
func (s *Store) record(id string, t *Task, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.tasks[id]; ok && cur.rev >= rev {
		return
	}
	if t == nil {
		delete(s.tasks, id)
	} else {
		// A copy: the writer goes on with t (update changes a fetched
		// record and returns what it wrote), and readers clone the
		// mirror's copy without a lock.
		s.tasks[id] = mirrored{task: t.clone(), rev: rev}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Changed returns a channel closed at the next change of any task record.
func (s *Store) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// Get returns a copy of a task from the mirror.
func (s *Store) Get(id string) (*Task, bool) {
	s.mu.RLock()
	m, ok := s.tasks[id]
	s.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return m.task.clone(), true
}

// stopOf returns a task's stop request, or nil: the running task's check,
// made often, so it copies nothing but the request.
func (s *Store) stopOf(id string) *Stop {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if m, ok := s.tasks[id]; ok && m.task.Stop != nil {
		st := *m.task.Stop
		return &st
	}
	return nil
}

func (t *Task) clone() *Task {
	c := *t
	c.Chain = slices.Clone(t.Chain)
	c.Placement = maps.Clone(t.Placement)
	return &c
}

// Filter selects tasks for List.
type Filter struct {
	Agent string
	State State
	Since time.Time
	// Root keeps the tasks of one task tree (docs/agents.md).
	Root string
	// After is the last id of the previous page: tasks are listed newest
	// first, and a page continues after it.
	After string
	Limit int
}

// List returns tasks matching f, newest first, and whether more follow.
func (s *Store) List(f Filter) ([]*Task, bool) {
	s.mu.RLock()
	var out []*Task
	for _, m := range s.tasks {
		t := m.task
		if (f.Agent != "" && t.Agent != f.Agent) || (f.State != "" && t.State != f.State) || t.Created.Before(f.Since) || (f.Root != "" && rootOf(t) != f.Root) {
			continue
		}
		out = append(out, t)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Task) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	if f.After != "" {
		if i := slices.IndexFunc(out, func(t *Task) bool { return t.ID == f.After }); i >= 0 {
			out = out[i+1:]
		}
	}
	more := f.Limit > 0 && len(out) > f.Limit
	if more {
		out = out[:f.Limit]
	}
	for i, t := range out {
		out[i] = t.clone()
	}
	return out, more
}

// live returns the tasks not in a final state.
func (s *Store) live() []*Task {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*Task
	for _, m := range s.tasks {
		if !m.task.State.Final() {
			out = append(out, m.task.clone())
		}
	}
	return out
}

// create stores a new task record; it fails with jetstream.ErrKeyExists
// when the id is taken.
func (s *Store) create(ctx context.Context, t *Task) error {
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("orchestrator: encode task: %w", err)
	}
	rev, err := s.kv.Create(ctx, t.ID, b)
	if err != nil {
		return err
	}
	s.record(t.ID, t, rev)
	return nil
}

// fetch reads a task record from the bucket's leader: the latest, even on
// a replica whose mirror lags.
func (s *Store) fetch(ctx context.Context, id string) (*Task, uint64, error) {
	rev, e, err := s.bus.Last(ctx, s.kv, id)
	if err != nil {
		return nil, 0, fmt.Errorf("orchestrator: read task %s: %w", id, err)
	}
	if e == nil {
		return nil, rev, ErrNotFound
	}
	var t Task
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return nil, 0, fmt.Errorf("orchestrator: task %s is unreadable: %w", id, err)
	}
	s.record(id, &t, rev)
	return &t, rev, nil
}

// update changes a task record with change, guarded by its revision: a
// concurrent writer makes it read the record again and re-apply change.
// change may return errSkip to leave the record as it is.
func (s *Store) update(ctx context.Context, id string, change func(*Task) error) (*Task, error) {
	s.mu.RLock()
	m, ok := s.tasks[id]
	s.mu.RUnlock()
	var (
		t   *Task
		rev uint64
	)
	if ok {
		t, rev = m.task.clone(), m.rev
	}
	for range 8 {
		if t == nil {
			var err error
			if t, rev, err = s.fetch(ctx, id); err != nil {
				return nil, err
			}
		}
		if err := change(t); err != nil {
			if errors.Is(err, errSkip) {
				return t, nil
			}
			return nil, err
		}
		t.Updated = time.Now().UTC()
		b, err := json.Marshal(t)
		if err != nil {
			return nil, fmt.Errorf("orchestrator: encode task: %w", err)
		}
		nrev, err := s.kv.Update(ctx, id, b, rev)
		if err == nil {
			s.record(id, t, nrev)
			return t, nil
		}
		if !wrongRevision(err) {
			return nil, fmt.Errorf("orchestrator: store task %s: %w", id, err)
		}
		t = nil // someone else wrote: read again from the leader
	}
	return nil, fmt.Errorf("orchestrator: task %s: %w", id, ErrConflict)
}

var errSkip = errors.New("no change")

func wrongRevision(err error) bool {
	var ae *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) ||
		errors.As(err, &ae) && (ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Event is one entry of a task's journal, and one event of its stream.
type Event struct {
	// Seq is the entry's sequence in the journal stream: the event id of
	// GET /v1/tasks/{id}/events, which Last-Event-ID resumes after.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Type is one of the Ev* constants.
	Type string `json:"type"`
	// Step numbers a task's model and tool calls from 1; Turn its model calls.
	Step int `json:"step,omitempty"`
	Turn int `json:"turn,omitempty"`
	// Worker is the worker that wrote the entry, for started.
	Worker string `json:"worker,omitempty"`
	State  State  `json:"state,omitempty"`
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Model is the model a step called; Tool the tool and CallID the
	// model's id for the call.
	Model  string `json:"model,omitempty"`
	Tool   string `json:"tool,omitempty"`
	CallID string `json:"call_id,omitempty"`
	// Message is the model's answer (model.answer) or a person's message
	// (message, with role user).
	Message json.RawMessage `json:"message,omitempty"`
	// Content is a tool's result as the model is given it; Ref names it in
	// the object store when it was too large to keep here.
	Content string `json:"content,omitempty"`
	Ref     string `json:"ref,omitempty"`
	IsError bool   `json:"is_error,omitempty"`
	// Code is the problem code of a refused or failed call.
	Code    string `json:"code,omitempty"`
	Usage   *Usage `json:"usage,omitempty"`
	AuditID string `json:"audit_id,omitempty"`
	// Result is the task's result, on the final state entry.
	Result json.RawMessage `json:"result,omitempty"`
	// Agent is who made an external call (call), or extended the task.
	Agent string `json:"agent,omitempty"`
	// Limits are the task's limits after an extension (extended).
	Limits *Limits `json:"limits,omitempty"`
	// Workflow is the step of a workflow run an entry is about.
	Workflow *StepEvent `json:"workflow,omitempty"`
}

// The event types.
const (
	EvState       = "state"        // the task's state changed
	EvStarted     = "started"      // a worker took the task (again, after a crash)
	EvModelCall   = "model.call"   // a model call is about to leave (intent)
	EvModelAnswer = "model.answer" // the model answered
	EvToolCall    = "tool.call"    // a tool call is about to leave (intent)
	EvToolResult  = "tool.result"  // the tool answered, or the call was refused
	EvMessage     = "message"      // a person answered a task in input-required
	EvCall        = "call"         // an external agent's call made with a token bound to the task
	EvExtended    = "extended"     // a person gave a task that escalated at a limit more room
	EvWaiting     = "waiting"      // a step waits its turn: a rate limit, an in-flight cap, a throttled backend
)

// anySeq appends without a guard.
const anySeq = ^uint64(0)

// append adds an entry to a task's journal. With expect other than anySeq
// the append succeeds only if the journal's last entry is expect (0: the
// journal is empty); otherwise it fails with ErrFenced. msgID, when set,
// makes a repeated append within two minutes a no-op.
func (s *Store) append(ctx context.Context, id string, ev *Event, expect uint64, msgID string) (uint64, error) {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if len(ev.Content) > inlineMax {
		name := fmt.Sprintf("%s/%d/%s", id, ev.Step, ev.Type)
		if _, err := s.objects.PutBytes(ctx, name, []byte(ev.Content)); err != nil {
			return 0, fmt.Errorf("orchestrator: store payload of %s: %w", id, err)
		}
		ev.Ref, ev.Content = name, ""
	}
	ev.Seq = 0
	b, err := json.Marshal(ev)
	if err != nil {
		return 0, fmt.Errorf("orchestrator: encode event: %w", err)
	}
	var opts []jetstream.PublishOpt
	if expect != anySeq {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(expect))
	}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := s.js.Publish(ctx, journalPrefix+id, b, opts...)
	if err != nil {
		if wrongRevision(err) {
			return 0, ErrFenced
		}
		return 0, fmt.Errorf("orchestrator: journal of %s: %w", id, err)
	}
	ev.Seq = ack.Sequence
	return ack.Sequence, nil
}

// content returns a tool result's content, from the object store when the
// entry names it there.
func (s *Store) content(ctx context.Context, ev *Event) (string, error) {
	if ev.Ref == "" {
		return ev.Content, nil
	}
	b, err := s.objects.GetBytes(ctx, ev.Ref)
	if err != nil {
		return "", fmt.Errorf("orchestrator: payload %s: %w", ev.Ref, err)
	}
	return string(b), nil
}

// journal reads a task's whole journal, in order.
func (s *Store) journal(ctx context.Context, id string) ([]Event, error) {
	var out []Event
	err := s.events(ctx, id, 0, true, func(ev Event) error {
		out = append(out, ev)
		return nil
	})
	return out, err
}

// events calls fn with each journal entry of a task after sequence after,
// in order. With untilNow it returns at the entry that was last when it
// started, reading entry by entry (no consumer to make and reap);
// otherwise it follows new entries with an ordered consumer until ctx ends
// or fn fails.
func (s *Store) events(ctx context.Context, id string, after uint64, untilNow bool, fn func(Event) error) error {
	subject := journalPrefix + id
	if untilNow {
		return s.readEntries(ctx, id, subject, after, fn)
	}
	// The consumer is made again after a failure (a missed heartbeat on a
	// busy machine, a leader change), from the entry after the last one
	// delivered, so that nothing is lost or repeated.
	var failures int
	for {
		done, err := s.eventsOnce(ctx, id, subject, &after, fn)
		if done || ctx.Err() != nil {
			return err
		}
		if failures++; failures > 5 {
			return err
		}
		s.logger.DebugContext(ctx, "task journal read broke off; reading on", "task", id, "after", after, "err", err)
		if serr := sleep(ctx, time.Duration(failures)*100*time.Millisecond); serr != nil {
			return serr
		}
	}
}

// eventsOnce follows with one ordered consumer, moving *after along. It
// returns done when the read is over (ctx ended, or fn failed).
func (s *Store) eventsOnce(ctx context.Context, id, subject string, after *uint64, fn func(Event) error) (bool, error) {
	// Reaped soon after the reader goes (the library's default keeps an
	// idle consumer five minutes: thousands, on a busy corral).
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, InactiveThreshold: 5 * time.Second}
	if *after > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, *after+1
	}
	c, err := s.js.OrderedConsumer(ctx, JournalStream, cfg)
	if err != nil {
		return false, fmt.Errorf("orchestrator: read journal of %s: %w", id, err)
	}
	it, err := c.Messages()
	if err != nil {
		return false, fmt.Errorf("orchestrator: read journal of %s: %w", id, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			return false, fmt.Errorf("orchestrator: read journal of %s: %w", id, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return false, fmt.Errorf("orchestrator: read journal of %s: %w", id, err)
		}
		var ev Event
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			return true, fmt.Errorf("orchestrator: journal of %s: entry %d is unreadable: %w", id, meta.Sequence.Stream, err)
		}
		ev.Seq = meta.Sequence.Stream
		*after = ev.Seq
		if err := fn(ev); err != nil {
			return true, err
		}
	}
}

// readEntries calls fn with each entry of the journal subject after
// sequence after, up to the last there is now, one direct read each.
func (s *Store) readEntries(ctx context.Context, id, subject string, after uint64, fn func(Event) error) error {
	last, err := s.lastEntry(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("orchestrator: journal of %s: %w", id, err)
	}
	for seq := after + 1; seq <= last; {
		m, err := s.journalS.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if err != nil {
			return fmt.Errorf("orchestrator: read journal of %s at %d: %w", id, seq, err)
		}
		var ev Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			return fmt.Errorf("orchestrator: journal of %s: entry %d is unreadable: %w", id, m.Sequence, err)
		}
		ev.Seq = m.Sequence
		if err := fn(ev); err != nil {
			return err
		}
		seq = m.Sequence + 1
	}
	return nil
}

// lastEntry returns the sequence of a subject's last message in the journal.
func (s *Store) lastEntry(ctx context.Context, subject string) (uint64, error) {
	m, err := s.journalS.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// placementKey names a placement in work subjects: "any" for none, else a
// digest of its sorted labels (label values may hold dots, which a subject
// token cannot).
func placementKey(labels map[string]string) string {
	if len(labels) == 0 {
		return "any"
	}
	pairs := make([][2]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		pairs = append(pairs, [2]string{k, labels[k]})
	}
	b, _ := json.Marshal(pairs) // unambiguous, whatever the values hold
	sum := sha256.Sum256(b)
	return "p" + hex.EncodeToString(sum[:8])
}

// matches reports whether a worker with labels may run work placed so.
func matches(worker, placement map[string]string) bool {
	for k, v := range placement {
		if worker[k] != v {
			return false
		}
	}
	return true
}

// dispatch puts a task on the work queue. msgID makes a repeat within two
// minutes a no-op (a retried create, a janitor racing a worker).
func (s *Store) dispatch(ctx context.Context, t *Task, msgID string) error {
	msg := &nats.Msg{Subject: workPrefix + placementKey(t.Placement) + "." + t.ID, Data: []byte(t.ID), Header: nats.Header{}}
	_, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID))
	if err != nil {
		return fmt.Errorf("orchestrator: queue task %s: %w", t.ID, err)
	}
	return nil
}

// queued reports whether the work queue holds a message for the task
// (waiting or being worked on).
func (s *Store) queued(ctx context.Context, t *Task) (bool, error) {
	_, err := s.workS.GetLastMsgForSubject(ctx, workPrefix+placementKey(t.Placement)+"."+t.ID)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	return err == nil, err
}

// settle writes a task's final state into its record, unless the record
// already has one, and tells the OnEnded hooks.
func (s *Store) settle(ctx context.Context, id string, st State, reason, detail string, result json.RawMessage, u Usage, now time.Time) error {
	ended := false
	_, err := s.update(ctx, id, func(t *Task) error {
		// update may call this again after a concurrent write: only the
		// attempt that is stored counts.
		ended = false
		if t.State.Final() {
			return errSkip
		}
		at := now.UTC()
		t.State, t.Reason, t.Detail, t.Result, t.Usage, t.Ended, t.Stop = st, reason, detail, result, u, &at, nil
		ended = true
		return nil
	})
	if err == nil && ended {
		s.hooksMu.Lock()
		hooks := slices.Clone(s.onEnded)
		s.hooksMu.Unlock()
		for _, fn := range hooks {
			fn(ctx, id, st)
		}
	}
	return err
}

// OnEnded registers fn, called on the replica that records a task's end,
// once: what waits on the task (its approvals) can be withdrawn. fn must
// not block for long. Register before Run.
func (s *Store) OnEnded(fn func(ctx context.Context, task string, st State)) {
	s.hooksMu.Lock()
	defer s.hooksMu.Unlock()
	s.onEnded = append(s.onEnded, fn)
}
