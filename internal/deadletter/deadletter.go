// Package deadletter keeps the work that could not be done: a workflow step
// that failed past its retries, a trigger's event that could not start its
// task. Each entry says what failed, why, where (task, step), with what
// payload, after how many attempts and when, so that a person can retry it
// (which hands it back to its source) or discard it.
package deadletter

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/problem"
)

// Bucket is the key-value bucket (a JetStream stream, KV_corral_dead_letters)
// that holds the entries, keyed by id.
const Bucket = "corral_dead_letters"

// MaxPayload bounds an entry's payload in bytes; a larger one is cut and
// marked truncated.
const MaxPayload = 256 << 10

// DefaultMaxAge is how long an entry is kept after it last changed (put,
// or marked retried) when Options say nothing: as long as the audit keeps
// the records of what was done with it.
const DefaultMaxAge = 30 * 24 * time.Hour

// Options configure the queue.
type Options struct {
	// MaxAge is how long an entry is kept after it last changed, pending
	// or not; 0 means DefaultMaxAge. Open applies it to an existing bucket
	// too: entries younger than it stay.
	MaxAge time.Duration
}

// The sources of entries.
const (
	SourceWorkflow = "workflow"
	SourceTrigger  = "trigger"
	SourceTask     = "task"
)

// The states of an entry.
const (
	Pending = "pending"
	Retried = "retried"
)

// Entry is one dead letter.
type Entry struct {
	// ID is "dlq_" and 26 characters; Put fills it when empty, and a Put
	// with an id that exists is a no-op returning it (a retried Put).
	ID string `json:"id"`
	// Source is what put it: workflow, trigger or task.
	Source string `json:"source"`
	// Name is the workflow, trigger or agent it concerns.
	Name string `json:"name"`
	// Reason says what went wrong, for people; Code is the problem code.
	Reason string `json:"reason"`
	Code   string `json:"code,omitempty"`
	// Payload is what was being done: a step's arguments or input, an event.
	Payload   json.RawMessage `json:"payload,omitempty"`
	Truncated bool            `json:"truncated,omitempty"`
	// Task and Step locate it: the workflow run and its step.
	Task     string `json:"task,omitempty"`
	Step     string `json:"step,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	// Resumable is set when retry can resume the work where it failed;
	// otherwise retry is refused (the work ended, e.g. compensated).
	Resumable bool      `json:"resumable"`
	Time      time.Time `json:"time"`
	State     string    `json:"state"`
	// RetriedAt and By: when and by whom it was retried.
	RetriedAt *time.Time `json:"retried_at,omitempty"`
	By        string     `json:"by,omitempty"`
}

// Handler acts on an entry of its source: it resumes the work (retry) or
// gives it up (discard). An error leaves the entry as it was.
type Handler func(ctx context.Context, e Entry) error

// Auditor records the puts, retries and discards.
type Auditor interface {
	Append(ctx context.Context, r *audit.Record) (string, error)
}

// DLQ is the dead-letter queue.
type DLQ struct {
	logger *slog.Logger
	kv     jetstream.KeyValue
	stream jetstream.Stream // the bucket's, for List's reads by sequence
	audit  Auditor
	now    func() time.Time

	mu      sync.Mutex
	retry   map[string]Handler
	discard map[string]Handler
}

// Open creates or opens the bucket, with the retention of opts.
func Open(ctx context.Context, logger *slog.Logger, b *bus.Bus, auditor Auditor, opts Options) (*DLQ, error) {
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "corral dead letters: work that failed past its retries, to retry or discard (corral dlq)",
		TTL:         opts.MaxAge,
	})
	if err != nil {
		return nil, fmt.Errorf("deadletter: %w", err)
	}
	stream, err := b.JetStream().Stream(ctx, "KV_"+Bucket)
	if err != nil {
		return nil, fmt.Errorf("deadletter: %w", err)
	}
	return &DLQ{logger: logger, kv: kv, stream: stream, audit: auditor, now: time.Now, retry: map[string]Handler{}, discard: map[string]Handler{}}, nil
}

// Handle registers what retry and discard do for entries of a source.
// discard may be nil: the entry is then only removed.
func (d *DLQ) Handle(source string, retry, discard Handler) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.retry[source], d.discard[source] = retry, discard
}

// IDFor derives an entry's id from what identifies the failure (a run, its
// step and attempt): a Put repeated after a crash finds the same entry.
func IDFor(parts ...string) string {
	sum := sha256.Sum256([]byte("corral dlq\x00" + strings.Join(parts, "\x00")))
	return "dlq_" + crock(sum[:16])
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "dlq_" + crock(b[:])
}

const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

func crock(b []byte) string {
	var out strings.Builder
	var acc uint32
	bits := 0
	for _, c := range b {
		acc = acc<<8 | uint32(c)
		bits += 8
		for bits >= 5 && out.Len() < 26 {
			bits -= 5
			out.WriteByte(crockford[(acc>>bits)&31])
		}
	}
	for out.Len() < 26 {
		out.WriteByte('0')
	}
	return out.String()
}

// ValidID reports whether s has the shape of an entry id.
func ValidID(s string) bool {
	rest, ok := strings.CutPrefix(s, "dlq_")
	if !ok || len(rest) != 26 {
		return false
	}
	for i := range len(rest) {
		if !strings.ContainsRune(crockford, rune(rest[i])) {
			return false
		}
	}
	return true
}

// Put stores an entry and returns its id. An entry whose id exists is
// left as it is.
func (d *DLQ) Put(ctx context.Context, e Entry) (string, error) {
	if e.ID == "" {
		e.ID = newID()
	}
	if !ValidID(e.ID) {
		return "", fmt.Errorf("deadletter: %q is not an entry id", e.ID)
	}
	if e.Source == "" {
		return "", errors.New("deadletter: an entry needs a source")
	}
	if len(e.Payload) > MaxPayload {
		e.Payload, e.Truncated = nil, true
	} else if len(e.Payload) > 0 && !json.Valid(e.Payload) {
		b, _ := json.Marshal(string(e.Payload))
		e.Payload = b
	}
	if e.Time.IsZero() {
		e.Time = d.now().UTC()
	}
	e.State, e.RetriedAt, e.By = Pending, nil, ""
	b, err := json.Marshal(e)
	if err != nil {
		return "", fmt.Errorf("deadletter: encode: %w", err)
	}
	if _, err := d.kv.Create(ctx, e.ID, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return e.ID, nil
		}
		return "", fmt.Errorf("deadletter: put %s: %w", e.ID, err)
	}
	d.note(ctx, "dead_letter.put", e, "")
	return e.ID, nil
}

// Get returns an entry.
func (d *DLQ) Get(ctx context.Context, id string) (Entry, uint64, error) {
	if !ValidID(id) {
		return Entry{}, 0, notFound(id)
	}
	kve, err := d.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Entry{}, 0, notFound(id)
	}
	if err != nil {
		return Entry{}, 0, unavailable(err)
	}
	var e Entry
	if err := json.Unmarshal(kve.Value(), &e); err != nil {
		return Entry{}, 0, problem.Wrap(http.StatusInternalServerError, problem.Internal, "dead letter "+id+" is unreadable", err)
	}
	return e, kve.Revision(), nil
}

// Filter selects entries for List.
type Filter struct {
	Source, State, Task string
	// After is the Next of the previous page: the page goes on with the
	// entries that changed before it.
	After uint64
	// Limit bounds the page: 0 is DefaultLimit, at most MaxLimit.
	Limit int
}

// Page is a page of entries, newest first, and where the next one starts.
type Page struct {
	Items []Entry
	// Next, when not zero, is the After of the next page: more entries
	// may follow (a page cut short by MaxScan may hold fewer than its
	// limit, none even, and still have a next).
	Next uint64
}

// List page bounds.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
	// MaxScan bounds the entries one page reads: a filter that matches
	// few entries returns a short page and where to go on, rather than
	// read the whole queue.
	MaxScan = 2000
)

// List returns a page of entries, newest first by when they last changed
// (put, or marked retried). It reads the bucket's stream backwards, a
// window of sequences at a time, from the end (or f.After), and stops once
// it has the page, or has read MaxScan entries: what it reads is bounded
// by the page, not by the queue.
func (d *DLQ) List(ctx context.Context, f Filter) (Page, error) {
	limit := f.Limit
	switch {
	case limit <= 0:
		limit = DefaultLimit
	case limit > MaxLimit:
		limit = MaxLimit
	}
	info, err := d.stream.Info(ctx)
	if err != nil {
		return Page{}, unavailable(err)
	}
	st := info.State
	if st.Msgs == 0 || st.LastSeq == 0 {
		return Page{}, nil
	}
	hi := st.LastSeq
	if f.After > 0 {
		if f.After <= st.FirstSeq {
			return Page{}, nil
		}
		hi = min(hi, f.After-1)
	}
	type found struct {
		seq uint64
		e   Entry
	}
	var out []found
	read := 0
	// Windows double, within what is left of MaxScan: a window of so many
	// sequences holds at most so many entries.
	for window := uint64(limit + 1); hi >= st.FirstSeq; window = min(2*window, uint64(MaxScan-read)) {
		lo := st.FirstSeq
		if hi-st.FirstSeq >= window {
			lo = hi - window + 1
		}
		var in []found
		err := d.scan(ctx, lo, hi, func(seq uint64, e Entry) {
			read++
			if (f.Source == "" || e.Source == f.Source) && (f.State == "" || e.State == f.State) && (f.Task == "" || e.Task == f.Task) {
				in = append(in, found{seq, e})
			}
		})
		if err != nil {
			return Page{}, unavailable(err)
		}
		for i := len(in) - 1; i >= 0; i-- {
			out = append(out, in[i])
		}
		if len(out) > limit {
			p := Page{Next: out[limit-1].seq}
			for _, fo := range out[:limit] {
				p.Items = append(p.Items, fo.e)
			}
			return p, nil
		}
		if lo == st.FirstSeq {
			break
		}
		hi = lo - 1
		if read >= MaxScan {
			p := Page{Next: lo}
			for _, fo := range out {
				p.Items = append(p.Items, fo.e)
			}
			return p, nil
		}
	}
	var p Page
	for _, fo := range out {
		p.Items = append(p.Items, fo.e)
	}
	return p, nil
}

// scan calls fn with each entry stored from sequence lo to hi, in order,
// reading them one by one (direct gets of the next message on the
// bucket's subjects, which any replica answers): deleted entries and the
// gaps that updates leave cost nothing.
func (d *DLQ) scan(ctx context.Context, lo, hi uint64, fn func(seq uint64, e Entry)) error {
	for seq := lo; seq <= hi; {
		m, err := d.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subjects))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if m.Sequence > hi {
			return nil
		}
		seq = m.Sequence + 1
		if op := m.Header.Get(kvOperation); op != "" && op != "PUT" {
			continue // a deletion
		}
		var e Entry
		if err := json.Unmarshal(m.Data, &e); err != nil {
			d.logger.WarnContext(ctx, "skipping an unreadable dead letter", "subject", m.Subject, "seq", m.Sequence, "err", err)
			continue
		}
		fn(m.Sequence, e)
	}
	return nil
}

// subjects are the bucket's stream's subjects; kvOperation is the header
// that marks a key-value deletion.
const (
	subjects    = "$KV." + Bucket + ".>"
	kvOperation = "KV-Operation"
)

// Retry hands a pending entry back to its source, which resumes the work
// where it failed, and marks it retried.
func (d *DLQ) Retry(ctx context.Context, id, by string) (Entry, error) {
	e, rev, err := d.Get(ctx, id)
	if err != nil {
		return Entry{}, err
	}
	if !e.Resumable {
		return Entry{}, problem.New(http.StatusConflict, problem.Conflict, "dead letter "+id+" cannot be retried: its work has ended ("+e.Reason+"); discard it, and start the work again if it is still wanted")
	}
	d.mu.Lock()
	fn := d.retry[e.Source]
	d.mu.Unlock()
	if fn == nil {
		return Entry{}, problem.New(http.StatusConflict, problem.Conflict, "dead letter "+id+": nothing here retries entries of source "+e.Source)
	}
	if e.State == Retried {
		// Marked, but a crash may have come before the handler resumed the
		// work. The handler is idempotent and refuses (409) work that no
		// longer waits on the entry, so asking it again resumes what the
		// crash left, and nothing twice.
		if err := fn(ctx, e); err != nil {
			var pe *problem.Error
			if errors.As(err, &pe) && pe.Code == problem.Conflict {
				return Entry{}, problem.New(http.StatusConflict, problem.Conflict, "dead letter "+id+" was retried already")
			}
			return Entry{}, err
		}
		d.note(ctx, "dead_letter.retry", e, by)
		return e, nil
	}
	// Marked first, guarded by the revision: two retries at once resume
	// the work once (the handler refuses the second).
	now := d.now().UTC()
	e.State, e.RetriedAt, e.By = Retried, &now, by
	b, _ := json.Marshal(e)
	if _, err := d.kv.Update(ctx, id, b, rev); err != nil {
		var ae *jetstream.APIError
		if errors.Is(err, jetstream.ErrKeyExists) || errors.As(err, &ae) && ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return Entry{}, problem.New(http.StatusConflict, problem.Conflict, "dead letter "+id+" changed meanwhile; look again")
		}
		return Entry{}, unavailable(err)
	}
	if err := fn(ctx, e); err != nil {
		// Back to pending, so that it can be retried again.
		e.State, e.RetriedAt, e.By = Pending, nil, ""
		b, _ := json.Marshal(e)
		if _, perr := d.kv.Put(context.WithoutCancel(ctx), id, b); perr != nil {
			d.logger.WarnContext(ctx, "dead letter left marked retried after its retry failed", "id", id, "err", perr)
		}
		return Entry{}, err
	}
	d.note(ctx, "dead_letter.retry", e, by)
	return e, nil
}

// Discard removes an entry, after its source has given the work up (a
// dead-lettered workflow run is compensated and fails).
func (d *DLQ) Discard(ctx context.Context, id, by string) (Entry, error) {
	e, _, err := d.Get(ctx, id)
	if err != nil {
		return Entry{}, err
	}
	d.mu.Lock()
	fn := d.discard[e.Source]
	d.mu.Unlock()
	if fn != nil && e.State == Pending {
		if err := fn(ctx, e); err != nil {
			return Entry{}, err
		}
	}
	if err := d.kv.Delete(ctx, id); err != nil {
		return Entry{}, unavailable(err)
	}
	d.note(ctx, "dead_letter.discard", e, by)
	return e, nil
}

// Pending counts pending entries by source, for the metric: it reads the
// whole queue, which its retention bounds.
func (d *DLQ) Pending(ctx context.Context) (map[string]int, error) {
	info, err := d.stream.Info(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	out := map[string]int{}
	if info.State.Msgs == 0 {
		return out, nil
	}
	err = d.scan(ctx, info.State.FirstSeq, info.State.LastSeq, func(_ uint64, e Entry) {
		if e.State == Pending {
			out[e.Source]++
		}
	})
	if err != nil {
		return nil, unavailable(err)
	}
	return out, nil
}

// note records an entry's put, retry or discard in the audit.
func (d *DLQ) note(ctx context.Context, event string, e Entry, by string) {
	if d.audit == nil {
		return
	}
	detail, _ := json.Marshal(map[string]any{"id": e.ID, "source": e.Source, "name": e.Name, "task": e.Task, "step": e.Step, "code": e.Code, "attempts": e.Attempts, "by": by})
	rec := &audit.Record{Time: d.now().UTC(), Kind: "dead_letter", Target: e.Name, Task: e.Task, Edge: "server",
		Event: event, Decision: "allowed", Status: "ok", Reason: e.Reason, Detail: detail}
	if _, err := d.audit.Append(context.WithoutCancel(ctx), rec); err != nil {
		d.logger.ErrorContext(ctx, "audit record of a dead letter lost", "event", event, "id", e.ID, "err", err)
	}
}

func notFound(id string) error {
	if len(id) > 64 {
		id = id[:64] + "..."
	}
	return problem.New(http.StatusNotFound, problem.DeadLetterNotFound, "no dead letter "+id)
}

func unavailable(err error) error {
	return problem.Wrap(http.StatusServiceUnavailable, problem.SubstrateUnavailable, "the dead-letter store did not answer; retry", err)
}

// Collector exports corral_dead_letters: pending entries by source.
type Collector struct {
	d    *DLQ
	desc *prometheus.Desc
}

// NewCollector returns the metric's collector.
func NewCollector(d *DLQ) *Collector {
	return &Collector{d: d, desc: prometheus.NewDesc("corral_dead_letters", "Dead letters waiting for a person (corral dlq), by source.", []string{"source"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := c.d.Pending(ctx)
	if err != nil {
		return
	}
	for _, src := range []string{SourceWorkflow, SourceTrigger, SourceTask} {
		counts[src] += 0
	}
	for src, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), src)
	}
}

// Events adapts the queue to callers that put an event with a reason
// (trigger.DeadLetters): their entries are for people to read and
// discard, not resumable.
type Events struct{ d *DLQ }

// Events returns the adapter.
func (d *DLQ) Events() Events { return Events{d} }

// Put stores an entry for an event that could not start its work.
func (e Events) Put(ctx context.Context, source, name, reason string, payload json.RawMessage) error {
	_, err := e.d.Put(ctx, Entry{Source: source, Name: name, Reason: reason, Payload: payload})
	return err
}
