package approval

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/bus"
)

// Bucket holds approvals, keyed "a.<id>", and the index of calls to their
// latest approval, keyed "call.<binding>".
const Bucket = "corral_approvals"

const (
	approvalPrefix = "a."
	callPrefix     = "call."
)

// Defaults of Options.
const (
	DefaultRetention = 24 * time.Hour
	DefaultSweep     = time.Second
)

// maxAttempts bounds how often a guarded write reads again after losing a
// race with another writer.
const maxAttempts = 8

var validID = regexp.MustCompile(`^[A-Za-z0-9]{1,64}$`)

// ValidID reports whether id has the form of an approval id; anything
// else is answered as not found without a lookup.
func ValidID(id string) bool { return validID.MatchString(id) }

// substrate is what the store needs from the bus.
type substrate interface {
	KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
	Watch(ctx context.Context, kv jetstream.KeyValue, apply func(context.Context, jetstream.KeyValueEntry), loaded func()) error
	Last(ctx context.Context, kv jetstream.KeyValue, key string) (uint64, jetstream.KeyValueEntry, error)
	UpdateAll(ctx context.Context, kv jetstream.KeyValue, updates []bus.Update) ([]uint64, error)
}

// Auditor appends audit records.
type Auditor interface {
	Append(ctx context.Context, r *audit.Record) (string, error)
}

// Options tune a Store.
type Options struct {
	// Audit receives a record of every step; nil: none (tests).
	Audit Auditor
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Retention is how long an approval that ended (decided, expired,
	// executed) is kept, answering retries of its call; 0: a day.
	Retention time.Duration
	// Sweep is how often every replica looks for approvals past their
	// expiry or retention; 0: a second.
	Sweep time.Duration
}

// Store is the approvals as one replica knows them.
type Store struct {
	kv     jetstream.KeyValue
	bus    substrate
	logger *slog.Logger
	opts   Options

	mu      sync.RWMutex
	entries map[string]entry // by id
	subs    map[chan Approval]struct{}
	hooks   []func(context.Context, Approval)
	created []func(context.Context, Approval)
	loaded  chan struct{}
}

// entry is the newest state of one approval this replica knows of; a nil
// approval is a deletion at rev.
type entry struct {
	rev uint64
	a   *Approval
}

// Open creates the bucket if needed. Call Run to mirror it and sweep.
func Open(ctx context.Context, logger *slog.Logger, s substrate, opts Options) (*Store, error) {
	kv, err := s.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "corral approvals (a.<id>) and the calls they bind (call.<binding>)",
	})
	if err != nil {
		return nil, fmt.Errorf("approval: %w", err)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.Retention = cmp.Or(opts.Retention, DefaultRetention)
	opts.Sweep = cmp.Or(opts.Sweep, DefaultSweep)
	return &Store{kv: kv, bus: s, logger: logger, opts: opts, entries: map[string]entry{},
		subs: map[chan Approval]struct{}{}, loaded: make(chan struct{})}, nil
}

// OnDecision registers fn, called on the replica that records a decision
// that ends a pending approval (approved, denied) and on the one whose
// sweep records its expiry: exactly once per approval in the cluster,
// after the write. fn must not block for long. Register before Run.
func (s *Store) OnDecision(fn func(ctx context.Context, a Approval)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = append(s.hooks, fn)
}

// OnRequest registers fn, called on the replica that creates an approval,
// once, after it is stored: notifiers announce it from there. fn must not
// block for long. Register before Run.
func (s *Store) OnRequest(fn func(ctx context.Context, a Approval)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.created = append(s.created, fn)
}

// Run mirrors the bucket and sweeps it until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if s.WaitLoaded(ctx) != nil {
			return
		}
		t := time.NewTicker(s.opts.Sweep)
		defer t.Stop()
		for {
			if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.logger.WarnContext(ctx, "sweeping approvals", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	err := s.bus.Watch(ctx, s.kv, s.observe, func() { close(s.loaded) })
	<-done
	return err
}

// WaitLoaded blocks until the approvals are in memory or ctx ends.
func (s *Store) WaitLoaded(ctx context.Context) error {
	select {
	case <-s.loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("approval: waiting for approvals to load: %w", ctx.Err())
	}
}

func (s *Store) observe(ctx context.Context, e jetstream.KeyValueEntry) {
	id, ok := strings.CutPrefix(e.Key(), approvalPrefix)
	if !ok {
		return // the call index is read from the leader when needed
	}
	if e.Operation() != jetstream.KeyValuePut {
		s.record(id, entry{rev: e.Revision()})
		return
	}
	a, err := decode(e)
	if err != nil {
		s.logger.WarnContext(ctx, "skipping unreadable approval", "key", e.Key(), "err", err)
		return
	}
	s.record(id, entry{rev: e.Revision(), a: a})
}

// record stores e if it is newer than what is known, and tells the
// subscribers.
func (s *Store) record(id string, e entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.entries[id]; ok && cur.rev >= e.rev {
		return
	}
	if e.a == nil {
		delete(s.entries, id)
		return
	}
	s.entries[id] = e
	for ch := range s.subs {
		select {
		case ch <- *e.a:
		default:
			// A subscriber that does not keep up is cut off, not silently
			// skipped: its stream ends and the client reconnects.
			delete(s.subs, ch)
			close(ch)
		}
	}
}

func decode(e jetstream.KeyValueEntry) (*Approval, error) {
	var a Approval
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return nil, err
	}
	if !a.State.Valid() || !ValidID(a.ID) {
		return nil, fmt.Errorf("approval %q in state %q", a.ID, a.State)
	}
	a.Revision = e.Revision()
	return &a, nil
}

// Subscribe returns a channel of every approval as it is created or
// changes, on this replica's mirror (so decisions made on other replicas
// too), and a function to stop. The channel is closed if its reader falls
// more than buffer approvals behind.
func (s *Store) Subscribe(buffer int) (<-chan Approval, func()) {
	ch := make(chan Approval, max(buffer, 1))
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.subs[ch]; ok {
			delete(s.subs, ch)
			close(ch)
		}
	}
}

// Get returns an approval as this replica's mirror has it.
func (s *Store) Get(id string) (Approval, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.entries[id]
	if !ok {
		return Approval{}, false
	}
	return *e.a, true
}

// Filter selects approvals for List.
type Filter struct {
	State State  // "": any
	Agent string // "": any
	// After is the id the previous page ended with.
	After string
	Limit int
}

// List returns approvals, newest first, and whether more follow. A page
// costs one pass over the mirror and keeps only the Limit newest matches
// it has seen, so the first page of 100,000 pending approvals neither
// copies nor sorts them all (bench/README.md, "Pending approvals").
func (s *Store) List(f Filter) ([]Approval, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var cursor *Approval
	if f.After != "" {
		e, ok := s.entries[f.After]
		if !ok {
			return nil, false
		}
		cursor = e.a
	}
	keep := f.Limit + 1 // one more than a page says whether more follow
	if f.Limit <= 0 {
		keep = math.MaxInt
	}
	// page holds the newest matches seen so far, newest first.
	page := make([]*Approval, 0, min(keep, len(s.entries), 1024))
	if f.Limit <= 0 {
		// Everything: collected, then sorted once.
		for _, e := range s.entries {
			if s.matches(e.a, f, cursor) {
				page = append(page, e.a)
			}
		}
		slices.SortFunc(page, newestFirst)
	}
	for _, e := range s.entries {
		a := e.a
		if f.Limit <= 0 || !s.matches(a, f, cursor) {
			continue
		}
		if len(page) == keep {
			if newestFirst(a, page[keep-1]) > 0 {
				continue // older than every approval the page keeps
			}
			page = page[:keep-1]
		}
		i, _ := slices.BinarySearchFunc(page, a, newestFirst)
		page = slices.Insert(page, i, a)
	}
	more := f.Limit > 0 && len(page) > f.Limit
	if more {
		page = page[:f.Limit]
	}
	out := make([]Approval, len(page))
	for i, a := range page {
		out[i] = *a
	}
	return out, more
}

// matches reports whether a passes f's filters and comes after its cursor.
func (s *Store) matches(a *Approval, f Filter, cursor *Approval) bool {
	return (f.State == "" || a.State == f.State) && (f.Agent == "" || a.Action.Agent == f.Agent) &&
		(cursor == nil || newestFirst(a, cursor) > 0)
}

// newestFirst orders approvals newest first, ties by id.
func newestFirst(a, b *Approval) int {
	if c := b.Created.Compare(a.Created); c != 0 {
		return c
	}
	return strings.Compare(b.ID, a.ID)
}

// read returns the approval from the stream's leader, with its revision.
func (s *Store) read(ctx context.Context, id string) (*Approval, uint64, error) {
	rev, e, err := s.bus.Last(ctx, s.kv, approvalPrefix+id)
	if err != nil {
		return nil, 0, fmt.Errorf("approval: read %s: %w", id, err)
	}
	if e == nil {
		return nil, rev, fmt.Errorf("approval %s: %w", id, ErrNotFound)
	}
	a, err := decode(e)
	if err != nil {
		return nil, 0, fmt.Errorf("approval: read %s: %w", id, err)
	}
	return a, rev, nil
}

// write stores a guarded by rev; bus.ErrWrongRevision when another writer
// was first.
func (s *Store) write(ctx context.Context, a *Approval, rev uint64) error {
	data, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("approval: encode %s: %w", a.ID, err)
	}
	revs, err := s.bus.UpdateAll(ctx, s.kv, []bus.Update{{Key: approvalPrefix + a.ID, Value: data, Revision: rev}})
	if err != nil {
		return fmt.Errorf("approval: write %s: %w", a.ID, err)
	}
	a.Revision = revs[0]
	s.record(a.ID, entry{rev: revs[0], a: ptr(*a)})
	return nil
}

// ptr copies v to the heap.
func ptr[T any](v T) *T { return &v }

// update reads id from the leader, lets change modify it and writes it
// back guarded by the revision read, again if another writer was first.
// change returns an error to stop without writing.
func (s *Store) update(ctx context.Context, id string, change func(a *Approval) error) (*Approval, error) {
	for range maxAttempts {
		a, rev, err := s.read(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := change(a); err != nil {
			return a, err
		}
		err = s.write(ctx, a, rev)
		if errors.Is(err, bus.ErrWrongRevision) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return a, nil
	}
	return nil, fmt.Errorf("approval %s: it kept changing during %d attempts", id, maxAttempts)
}

// Request is a call that policy wants approved.
type Request struct {
	Action         Action
	Requester      string
	Reasons        []string
	PolicyRevision string
	Rules          Rules
	// RequestID names the HTTP request, for the audit.
	RequestID string
	// Resume is set when the orchestrator repeats a step whose worker
	// died: an execution claimed but not finished is taken over.
	Resume bool
}

// Gate finds the approval of the request's call, creating a pending one if
// there is none, and says whether the call may run now. It returns the
// approval and nil only when this call has claimed an approved approval
// for its one execution (call Finish with the outcome); otherwise the
// approval and ErrPending, ErrDenied, ErrExpired or ErrUsed. The same call
// always finds the same approval while it is pending, and afterwards for
// Retention.
func (s *Store) Gate(ctx context.Context, req Request) (Approval, error) {
	key := callPrefix + req.Action.Binding()
	for range maxAttempts {
		irev, ie, err := s.bus.Last(ctx, s.kv, key)
		if err != nil {
			return Approval{}, fmt.Errorf("approval: read call index: %w", err)
		}
		if ie != nil {
			a, rev, err := s.read(ctx, string(ie.Value()))
			switch {
			case errors.Is(err, ErrNotFound):
				// Pruned: a new approval.
			case err != nil:
				return Approval{}, err
			case a.Action.Binding() != req.Action.Binding():
				return Approval{}, fmt.Errorf("approval %s: the call index names an approval of another call", a.ID)
			default:
				out, err, again := s.gateExisting(ctx, a, rev, req)
				if again {
					continue
				}
				if err == nil || !errors.Is(err, errRenew) {
					return out, err
				}
			}
		}
		a, err := s.create(ctx, key, irev, req)
		if errors.Is(err, bus.ErrWrongRevision) {
			continue // another replica created it first: read it
		}
		if err != nil {
			return Approval{}, err
		}
		return *a, fmt.Errorf("approval %s: %w", a.ID, ErrPending)
	}
	return Approval{}, fmt.Errorf("approval: the call's approval kept changing during %d attempts", maxAttempts)
}

// errRenew says the call's approval is one a new request replaces.
var errRenew = errors.New("renew")

// gateExisting applies the gate to the approval the call already has;
// again asks Gate to read once more (another writer was first).
func (s *Store) gateExisting(ctx context.Context, a *Approval, rev uint64, req Request) (Approval, error, bool) {
	now := s.opts.Now()
	switch a.State {
	case Pending:
		if !a.due(now) {
			return *a, fmt.Errorf("approval %s: %w", a.ID, ErrPending), false
		}
		if err := s.expire(ctx, a, rev); errors.Is(err, bus.ErrWrongRevision) {
			return Approval{}, nil, true
		} else if err != nil {
			return Approval{}, err, false
		}
		return *a, fmt.Errorf("approval %s: %w", a.ID, ErrExpired), false
	case Approved:
		a.State = Executed
		a.Execution = &Execution{At: now.UTC(), RequestID: req.RequestID}
		if err := s.write(ctx, a, rev); errors.Is(err, bus.ErrWrongRevision) {
			return Approval{}, nil, true
		} else if err != nil {
			return Approval{}, err, false
		}
		return *a, nil, false
	case Executed:
		if req.Resume && a.Execution != nil && a.Execution.Status == "" {
			// The worker that claimed it died while the call ran: its step
			// repeats with the same Idempotency-Key, which the idempotency
			// stage keeps to one effect upstream.
			return *a, nil, false
		}
		return *a, fmt.Errorf("approval %s: %w", a.ID, ErrUsed), false
	case Denied:
		return *a, fmt.Errorf("approval %s: %w", a.ID, ErrDenied), false
	case Expired:
		return *a, fmt.Errorf("approval %s: %w", a.ID, ErrExpired), false
	}
	return *a, errRenew, false
}

// create stores a new pending approval and points the call's index at it,
// both or neither.
func (s *Store) create(ctx context.Context, key string, irev uint64, req Request) (*Approval, error) {
	now := s.opts.Now().UTC()
	ttl := cmp.Or(req.Rules.TTL, DefaultTTL)
	a := &Approval{
		ID: nuid.Next(), State: Pending, Action: req.Action, Requester: req.Requester,
		// Copies: the caller's slices are the audit record's too, which
		// bounds its fields in place.
		Reasons: slices.Clone(req.Reasons), PolicyRevision: req.PolicyRevision,
		Approvers: slices.Clone(req.Rules.Approvers), Quorum: max(req.Rules.Quorum, 1),
		Created: now, Expires: now.Add(ttl),
	}
	data, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("approval: encode: %w", err)
	}
	revs, err := s.bus.UpdateAll(ctx, s.kv, []bus.Update{
		{Key: key, Value: []byte(a.ID), Revision: irev},
		{Key: approvalPrefix + a.ID, Value: data},
	})
	if err != nil {
		return nil, fmt.Errorf("approval: create: %w", err)
	}
	a.Revision = revs[1]
	s.record(a.ID, entry{rev: revs[1], a: ptr(*a)})
	s.audit(ctx, a, "approval.requested", req.Requester, "", req.RequestID)
	s.mu.RLock()
	hooks := slices.Clone(s.created)
	s.mu.RUnlock()
	for _, fn := range hooks {
		fn(ctx, *a)
	}
	return a, nil
}

// Decide records p's verdict on approval id. It fails with ErrNotFound,
// ErrExpired, ErrClosed, ErrNotApprover, ErrOwnAction or ErrAlreadyDecided
// (wrapped) when p may not decide it now.
func (s *Store) Decide(ctx context.Context, id string, p Person, v Verdict, comment, via string) (Approval, error) {
	if !ValidID(id) {
		return Approval{}, fmt.Errorf("approval %.64q: %w", id, ErrNotFound)
	}
	if v != Approve && v != Deny {
		return Approval{}, fmt.Errorf("approval %s: verdict %q: want approve or deny", id, v)
	}
	expired := false
	a, err := s.update(ctx, id, func(a *Approval) error {
		now := s.opts.Now()
		expired = false
		if a.due(now) {
			a.State, expired = Expired, true
			t := now.UTC()
			a.Ended = &t
			return nil
		}
		if err := a.Eligible(p, now); err != nil {
			return err
		}
		a.decide(p, v, comment, via, now)
		return nil
	})
	if err != nil {
		if a != nil {
			s.auditRefusal(ctx, a, p, v, err)
		}
		return Approval{}, fmt.Errorf("approval %s: %w", id, err)
	}
	if expired {
		s.ended(ctx, a, "approval.expired", "corral", "")
		return Approval{}, fmt.Errorf("approval %s: %w", id, ErrExpired)
	}
	event := "approval.approve"
	if v == Deny {
		event = "approval.deny"
	}
	s.audit(ctx, a, event, p.ID, comment, "")
	if a.State != Pending {
		s.ended(ctx, a, "approval."+string(a.State), p.ID, "")
	}
	return *a, nil
}

// Finish records the outcome of an execution that Gate claimed.
func (s *Store) Finish(ctx context.Context, id string, ex Execution) error {
	if len(ex.Result) > MaxResult {
		ex.Result = nil
	}
	a, err := s.update(ctx, id, func(a *Approval) error {
		if a.State != Executed || a.Execution == nil {
			return fmt.Errorf("%w: it is %s", ErrClosed, a.State)
		}
		ex.At, ex.RequestID = a.Execution.At, cmp.Or(a.Execution.RequestID, ex.RequestID)
		a.Execution = &ex
		return nil
	})
	if err != nil {
		return err
	}
	s.audit(ctx, a, "approval.executed", a.Requester, ex.Status, ex.RequestID)
	return nil
}

// Release gives back an execution that Gate claimed but that never left
// corral (a later stage refused it: a rate limit, a budget): the approval
// is approved again, and the same call may run.
func (s *Store) Release(ctx context.Context, id string) error {
	_, err := s.update(ctx, id, func(a *Approval) error {
		if a.State != Executed || a.Execution == nil || a.Execution.Status != "" {
			return fmt.Errorf("%w: it is %s", ErrClosed, a.State)
		}
		a.State, a.Execution = Approved, nil
		return nil
	})
	return err
}

// CancelTask withdraws the pending approvals of calls made in a task that
// has ended (canceled, killed, failed): nobody waits for them any more, so
// nobody should decide them. It returns how many it withdrew.
func (s *Store) CancelTask(ctx context.Context, task, reason string) (int, error) {
	if task == "" {
		return 0, nil
	}
	s.mu.RLock()
	var ids []string
	for id, e := range s.entries {
		if e.a.Action.Task == task && e.a.State == Pending {
			ids = append(ids, id)
		}
	}
	s.mu.RUnlock()
	n := 0
	for _, id := range ids {
		a, err := s.update(ctx, id, func(a *Approval) error {
			if a.State != Pending {
				return fmt.Errorf("%w: it is %s", ErrClosed, a.State)
			}
			a.State = Canceled
			return nil
		})
		if errors.Is(err, ErrClosed) {
			continue // decided or expired meanwhile
		}
		if err != nil {
			return n, err
		}
		s.audit(ctx, a, "approval.canceled", "corral", reason, "")
		n++
	}
	return n, nil
}

// Wait blocks until approval id is no longer pending, or ctx ends, and
// returns it as this replica's mirror has it.
func (s *Store) Wait(ctx context.Context, id string) (Approval, error) {
	ch, stop := s.Subscribe(64)
	defer stop()
	for {
		a, ok := s.Get(id)
		if !ok {
			return Approval{}, fmt.Errorf("approval %s: %w", id, ErrNotFound)
		}
		if a.State != Pending || a.due(s.opts.Now()) {
			return a, nil
		}
		select {
		case <-ctx.Done():
			return a, ctx.Err()
		case _, ok := <-ch:
			if !ok {
				ch, stop = s.Subscribe(64)
				defer stop()
			}
		case <-time.After(time.Until(a.Expires) + 10*time.Millisecond):
		}
	}
}

// Sweep expires the pending approvals past their ttl and prunes those that
// ended more than Retention ago, each with a write guarded by the revision
// it read, so replicas sweeping at once record each expiry once. It
// returns how many it changed.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	now := s.opts.Now()
	var due, old []Approval
	s.mu.RLock()
	for _, e := range s.entries {
		switch {
		case e.a.due(now):
			due = append(due, *e.a)
		case e.a.State != Pending && e.a.State != Approved && e.a.Ended != nil && now.Sub(*e.a.Ended) > s.opts.Retention:
			if e.a.State != Executed || e.a.Execution == nil || now.Sub(e.a.Execution.At) > s.opts.Retention {
				old = append(old, *e.a)
			}
		}
	}
	s.mu.RUnlock()
	n := 0
	var errs []error
	for _, a := range due {
		cur, rev, err := s.read(ctx, a.ID)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !cur.due(now) {
			continue
		}
		if err := s.expire(ctx, cur, rev); err != nil && !errors.Is(err, bus.ErrWrongRevision) {
			errs = append(errs, err)
			continue
		} else if err == nil {
			n++
		}
	}
	for _, a := range old {
		if err := s.prune(ctx, a); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// expire records that pending a, read at rev, expired.
func (s *Store) expire(ctx context.Context, a *Approval, rev uint64) error {
	t := s.opts.Now().UTC()
	a.State, a.Ended = Expired, &t
	if err := s.write(ctx, a, rev); err != nil {
		return err
	}
	s.ended(ctx, a, "approval.expired", "corral", "")
	return nil
}

// prune deletes an approval that ended long ago, and its call's index if
// it still names it.
func (s *Store) prune(ctx context.Context, a Approval) error {
	key := callPrefix + a.Action.Binding()
	irev, ie, err := s.bus.Last(ctx, s.kv, key)
	if err != nil {
		return fmt.Errorf("approval: prune %s: %w", a.ID, err)
	}
	if ie != nil && string(ie.Value()) == a.ID {
		if err := s.kv.Delete(ctx, key, jetstream.LastRevision(irev)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("approval: prune %s: %w", a.ID, err)
		}
	}
	rev, e, err := s.bus.Last(ctx, s.kv, approvalPrefix+a.ID)
	if err != nil || e == nil {
		return err
	}
	if err := s.kv.Delete(ctx, approvalPrefix+a.ID, jetstream.LastRevision(rev)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("approval: prune %s: %w", a.ID, err)
	}
	s.record(a.ID, entry{rev: rev + 1})
	return nil
}

// ended audits an approval leaving pending and tells the hooks.
func (s *Store) ended(ctx context.Context, a *Approval, event, by, requestID string) {
	s.audit(ctx, a, event, by, "", requestID)
	s.mu.RLock()
	hooks := slices.Clone(s.hooks)
	s.mu.RUnlock()
	for _, fn := range hooks {
		fn(ctx, *a)
	}
}

// audit appends the record of one step of an approval.
func (s *Store) audit(ctx context.Context, a *Approval, event, by, note, requestID string) {
	if s.opts.Audit == nil {
		return
	}
	detail, _ := json.Marshal(map[string]any{"approval": a.ID, "state": a.State, "by": by, "note": note, "quorum": a.Quorum, "approvals": a.approvals()})
	rec := &audit.Record{
		Time: s.opts.Now().UTC(), Kind: a.Action.Kind, Agent: a.Action.Agent, Principal: a.Action.Principal,
		PrincipalIssuer: a.Action.PrincipalIssuer, Task: a.Action.Task, Step: a.Action.Step, Target: a.Action.Target,
		Source: a.Action.Source, Edge: "approvals", Event: event, Decision: "held", Status: string(a.State),
		ArgsDigest: a.Action.ArgsDigest, RequestID: requestID, Detail: detail,
		Reason: "approval " + a.ID + ": " + strings.Join(a.Reasons, "; "),
	}
	if _, err := s.opts.Audit.Append(context.WithoutCancel(ctx), rec); err != nil {
		s.logger.ErrorContext(ctx, "audit record of an approval step lost", "approval", a.ID, "event", event, "err", err)
	}
}

// auditRefusal records a decision that was refused (four eyes, not an
// approver, too late).
func (s *Store) auditRefusal(ctx context.Context, a *Approval, p Person, v Verdict, err error) {
	if s.opts.Audit == nil {
		return
	}
	detail, _ := json.Marshal(map[string]any{"approval": a.ID, "by": p.ID, "decision": v})
	rec := &audit.Record{
		Time: s.opts.Now().UTC(), Kind: a.Action.Kind, Agent: a.Action.Agent, Target: a.Action.Target, Task: a.Action.Task,
		Edge: "approvals", Event: "approval.refused", Decision: "denied", Status: "refused",
		Reason: err.Error(), Detail: detail,
	}
	if _, err := s.opts.Audit.Append(context.WithoutCancel(ctx), rec); err != nil {
		s.logger.ErrorContext(ctx, "audit record of a refused decision lost", "approval", a.ID, "err", err)
	}
}
