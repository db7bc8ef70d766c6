package audit

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Report is what Verify or VerifyArchive found.
type Report struct {
	// OK is true when no problem was found.
	OK bool `json:"ok"`
	// Records is how many records were read.
	Records uint64 `json:"records"`
	// FirstSeq and LastSeq are the first and last sequences read.
	FirstSeq uint64 `json:"first_seq,omitempty"`
	LastSeq  uint64 `json:"last_seq,omitempty"`
	// Unchained counts records written before the chain existed (no seq and
	// prev), which come before the first chained record: they are read but
	// cannot be checked.
	Unchained uint64 `json:"unchained,omitempty"`
	// Checkpoints counts the checkpoints that matched the records they cover.
	Checkpoints int `json:"checkpoints"`
	// Notes say where the chain was picked up and what it does not cover,
	// e.g. "chain starts at seq 1200; earlier records aged out".
	Notes []string `json:"notes,omitempty"`
	// Problems are what is wrong, in stream (or archive) order: the first
	// is the first broken link. At most maxProblems are listed, the first
	// found; MoreProblems counts the rest.
	Problems     []Problem `json:"problems,omitempty"`
	MoreProblems int       `json:"more_problems,omitempty"`
	// OutcomeUnknown counts the intents read with no outcome record after
	// them: calls that left corral while it stopped (or lost the audit)
	// before their outcome was stored, or calls still running. They are not
	// problems of the chain. UnknownOutcomes lists their ids, the first
	// maxProblems found.
	OutcomeUnknown  int      `json:"outcome_unknown,omitempty"`
	UnknownOutcomes []string `json:"unknown_outcomes,omitempty"`
}

// Problem names a record found wrong and says what is wrong with it.
type Problem struct {
	// Seq is where the record is, or should be, stored.
	Seq uint64 `json:"seq,omitempty"`
	// Line is the record's line in an archive.
	Line int `json:"line,omitempty"`
	// ID, Time, Agent and Target name the record when it can be read. Time
	// is the record's own, else when it was stored.
	ID     string    `json:"id,omitempty"`
	Time   time.Time `json:"time,omitzero"`
	Agent  string    `json:"agent,omitempty"`
	Target string    `json:"target,omitempty"`
	// What says what is wrong: "changed after it was written: ...",
	// "prev does not match the digest of seq 41: ...", "record seq 42 is
	// missing ...", "unreadable: ...".
	What string `json:"what"`
}

// String names the record and says what is wrong, on one line.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.place())
	var names []string
	if p.ID != "" {
		names = append(names, "id "+p.ID)
	}
	if !p.Time.IsZero() {
		names = append(names, p.Time.UTC().Format(time.RFC3339Nano))
	}
	if p.Agent != "" {
		names = append(names, "agent "+quoteOdd(p.Agent))
	}
	if p.Target != "" {
		names = append(names, "target "+quoteOdd(p.Target))
	}
	if len(names) > 0 {
		b.WriteString(" (" + strings.Join(names, ", ") + ")")
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(p.What)
	return b.String()
}

// place is where the record is: "seq 42", "line 7", or both.
func (p Problem) place() string {
	switch {
	case p.Seq > 0 && p.Line > 0:
		return fmt.Sprintf("seq %d at line %d", p.Seq, p.Line)
	case p.Seq > 0:
		return fmt.Sprintf("seq %d", p.Seq)
	case p.Line > 0:
		return fmt.Sprintf("line %d", p.Line)
	}
	return ""
}

// quoteOdd quotes s when it is not plain printable ASCII: a made-up tool
// name must not break the line it is printed on.
func quoteOdd(s string) string {
	if headerSafe(s) && !strings.ContainsAny(s, " ,()") {
		return s
	}
	return strconv.Quote(s)
}

// Progress is how far a verification has come, for a long one to report.
type Progress struct {
	// Records is how many records were read so far.
	Records uint64
	// Seq is the sequence of the last one (0 when it has none).
	Seq uint64
}

// Verification limits.
const (
	// maxProblems caps the problems a Report lists.
	maxProblems = 100
	// progressEvery is how many records pass between progress calls.
	progressEvery = 10000
)

// Verify walks the audit stream in sequence order from the oldest record
// kept, or from the first stored at or after since, and checks that each
// record's prev is the digest of the stored record before it, that no
// sequence is missing, that each record is stored where it says and under
// the subject its kind and agent give, and that the checkpoints covering
// the walked records match them. It reads what the stream held when it
// started. A broken chain is a Report with OK false, not an error; the error
// is for failing to read.
func (l *Log) Verify(ctx context.Context, since time.Time, progress func(Progress)) (Report, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	st := info.State
	w := newWalker(true, progress)
	if st.Msgs == 0 {
		if st.LastSeq > 0 {
			w.note("the audit holds no records: all %d stored aged out", st.LastSeq)
		} else {
			w.note("the audit holds no records")
		}
		return w.finish(), nil
	}
	// Checkpoints are published after the records they cover, so none of
	// those kept can predate the first of them by more than an interval or
	// two; reading from there keeps the ones that matter.
	from := st.FirstTime
	if since.After(from) {
		from = since
	}
	if err := l.loadCheckpoints(ctx, w, from.Add(-2*l.opts.CheckpointInterval), st.FirstSeq, st.LastSeq); err != nil {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}

	cfg := jetstream.OrderedConsumerConfig{}
	if !since.IsZero() {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	}
	var next uint64 // the sequence expected next; 0 before the first
	err = l.scan(ctx, l.stream, cfg, st.LastSeq, func(m jetstream.Msg, meta *jetstream.MsgMetadata) error {
		seq := meta.Sequence.Stream
		if next == 0 {
			if err := l.startWalk(ctx, w, seq, since); err != nil {
				return err
			}
		} else if seq > next {
			if err := l.gap(ctx, w, next, seq); err != nil {
				return err
			}
		}
		it := item{seq: seq, data: m.Data(), stored: meta.Timestamp, subject: m.Subject()}
		if vs, ok := m.Headers()[targetHeader]; ok && len(vs) > 0 {
			it.target, it.hasTarget = vs[0], true
		}
		w.add(it)
		next = seq + 1
		return nil
	})
	if err != nil {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	switch {
	case next == 0 && !since.IsZero():
		w.note("no records were stored since %s", since.UTC().Format(time.RFC3339))
	case next == 0:
		// The stream counts records it does not deliver.
		w.missing(st.FirstSeq, st.LastSeq)
	case next <= st.LastSeq:
		// Records leave only from the front, so the newest cannot have
		// aged out.
		w.missing(next, st.LastSeq)
	}
	return w.finish(), nil
}

// startWalk notes where the walk begins. From a given time, the record
// before the first is read to check the first link; from the start, the
// chain starts at the oldest record kept.
func (l *Log) startWalk(ctx context.Context, w *walker, seq uint64, since time.Time) error {
	if seq == 1 {
		w.note("chain starts at seq 1, the first record stored")
		return nil
	}
	if since.IsZero() {
		return l.gap(ctx, w, 1, seq)
	}
	m, err := l.stream.GetMsg(ctx, seq-1)
	switch {
	case err == nil:
		w.prev, _ = w.entry(item{seq: seq - 1, data: m.Data, stored: m.Time})
		w.note("checked from seq %d, the first record stored since %s; seq %d anchors its link", seq, since.UTC().Format(time.RFC3339), seq-1)
		return nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// Aged out, or missing; the records before it were not asked for.
		return l.gap(ctx, w, seq-1, seq)
	}
	return err
}

// gap tells records that aged out from records that are missing, for
// sequences from to before, which the walk did not get.
func (l *Log) gap(ctx context.Context, w *walker, from, before uint64) error {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return err
	}
	first := min(info.State.FirstSeq, before)
	if first > from {
		w.restart()
		if why := l.notAged(w, from, first-1, info.Config, time.Now()); why != "" {
			w.problem(Problem{Seq: from, What: fmt.Sprintf("records seq %d to %d are gone, and not by age: %s", from, first-1, why)})
		} else if w.report.Records == 0 {
			w.note("chain starts at seq %d; earlier records aged out", first)
		} else {
			w.note("records seq %d to %d aged out while being verified; the chain starts again at seq %d", from, first-1, first)
		}
		from = first
	}
	if from < before {
		w.missing(from, before-1)
	}
	return nil
}

// notAged says why records from to through gone from the front of the
// stream cannot have aged out, or "" if they may have. Age removes a record
// once it is older than MaxAge; a checkpoint of one of them taken at T shows
// it was stored after T minus two checkpoint intervals (Run checkpoints a
// record within one), so one taken less than MaxAge ago proves another
// cause: eviction by size, or a deletion.
func (l *Log) notAged(w *walker, from, to uint64, cfg jetstream.StreamConfig, now time.Time) string {
	if cfg.Discard == jetstream.DiscardOld && (cfg.MaxBytes > 0 || cfg.MaxMsgs > 0) {
		return "the stream is configured to evict its oldest records when full (discard old), which corral never sets"
	}
	newest := w.beforeFirst
	if newest == nil || newest.Seq < from || newest.Seq > to || cfg.MaxAge <= 0 {
		return ""
	}
	if storedAfter := newest.Time.Add(-2 * l.opts.CheckpointInterval); storedAfter.After(now.Add(-cfg.MaxAge)) {
		return fmt.Sprintf("the checkpoint of seq %d taken at %s shows it was stored after %s, less than the retention (%s) ago",
			newest.Seq, newest.Time.UTC().Format(time.RFC3339), storedAfter.UTC().Format(time.RFC3339), cfg.MaxAge)
	}
	return ""
}

// loadCheckpoints reads the checkpoints stored since from that cover
// sequences first-1 through last: the ones a walk over those can check.
func (l *Log) loadCheckpoints(ctx context.Context, w *walker, from time.Time, first, last uint64) error {
	info, err := l.checkpoints.Info(ctx)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from}
	return l.scan(ctx, l.checkpoints, cfg, info.State.LastSeq, func(m jetstream.Msg, meta *jetstream.MsgMetadata) error {
		cp, err := parseCheckpoint(m.Data())
		if err != nil {
			w.problem(Problem{What: fmt.Sprintf("checkpoint %d (of stream %s) is unreadable: %v", meta.Sequence.Stream, CheckpointStream, err)})
			return nil
		}
		if cp.Seq+1 >= first && cp.Seq <= last {
			w.addCheckpoint(cp)
		} else if cp.Seq < first && (w.beforeFirst == nil || cp.Seq > w.beforeFirst.Seq) {
			w.beforeFirst = &cp
		}
		return nil
	})
}

// item is one stored record as the walker gets it.
type item struct {
	// seq is where the record is stored; in an archive, what it says.
	seq uint64
	// line is its line in an archive.
	line int
	data []byte
	// In the stream only: when and under which subject and Corral-Target
	// header it was stored.
	stored          time.Time
	subject, target string
	hasTarget       bool
	// head, when set, is data already parsed, with the error parsing gave.
	head    *head
	headErr error
}

// head is what the walker reads of a record.
type head struct {
	Seq    uint64    `json:"seq"`
	Prev   string    `json:"prev"`
	ID     string    `json:"id"`
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	Agent  string    `json:"agent"`
	Target string    `json:"target"`
	Phase  string    `json:"phase"`
	Intent string    `json:"intent"`
}

// parseHead reads a record's head; a record has an ID.
func parseHead(data []byte) (head, error) {
	var h head
	if err := json.Unmarshal(data, &h); err != nil {
		return head{}, err
	}
	if h.ID == "" {
		return head{}, errors.New("no id")
	}
	return h, nil
}

// entry is a record the walker has read: enough to check the next link and
// to name it.
type entry struct {
	seq     uint64
	digest  string
	head    head
	chained bool // it has a seq, so its prev is meant to be checked
	name    Problem
}

// label is how problems refer to the record: "seq 41" or "line 7".
func (e *entry) label() string { return e.name.place() }

// link is a broken link: before's digest is not after's prev.
type link struct{ before, after *entry }

// walker checks records in order, one at a time, in the stream or in an
// archive, and builds the Report.
type walker struct {
	report Report
	// problems are kept with where they are in the walk, to be put in
	// order at the end: a changed record is blamed a record or two after.
	problems    []placed
	checkpoints map[uint64]Checkpoint
	// prev is the record before the next one, when the next is its
	// successor; nil at the start and after a gap.
	prev *entry
	// pending is a broken link not yet blamed: whether the record before it
	// or after it changed shows at the next link.
	pending *link
	// chained is set once a chained record is read: records without a seq
	// after that are not from before the chain.
	chained bool
	// inStream is set for a walk over the stream, unset for an archive.
	inStream bool
	// line is the archive line being read.
	line     int
	progress func(Progress)
	// intents are the intent records read whose outcome has not been, by
	// id, in the order read.
	intents map[string]uint64
	order   uint64
	// beforeFirst is the newest checkpoint of a record before the first
	// kept, which tells whether that record can have aged out.
	beforeFirst *Checkpoint
}

// placed is a problem and its place in the walk: twice its sequence in the
// stream, twice its line in an archive, and one less for records missing
// before a line.
type placed struct {
	at uint64
	p  Problem
}

func newWalker(inStream bool, progress func(Progress)) *walker {
	return &walker{checkpoints: map[uint64]Checkpoint{}, inStream: inStream, progress: progress, intents: map[string]uint64{}}
}

func (w *walker) note(format string, args ...any) {
	w.report.Notes = append(w.report.Notes, fmt.Sprintf(format, args...))
}

func (w *walker) problem(p Problem) {
	if len(w.problems) >= maxProblems {
		w.report.MoreProblems++
		return
	}
	var at uint64
	switch {
	case w.inStream:
		at = 2 * p.Seq
	case p.Line > 0:
		at = 2 * uint64(p.Line)
	case w.line > 0:
		at = 2*uint64(w.line) - 1 // missing before this line
	}
	w.problems = append(w.problems, placed{at: at, p: p})
}

func (w *walker) addCheckpoint(cp Checkpoint) {
	if have, ok := w.checkpoints[cp.Seq]; ok && have.Digest != cp.Digest {
		w.problem(Problem{Seq: cp.Seq, What: fmt.Sprintf("two checkpoints of seq %d disagree (taken at %s and %s): one was forged",
			cp.Seq, have.Time.UTC().Format(time.RFC3339), cp.Time.UTC().Format(time.RFC3339))})
		return
	}
	w.checkpoints[cp.Seq] = cp
}

// entry reads a record into an entry, without checking it; the error says
// why it cannot be read.
func (w *walker) entry(it item) (*entry, error) {
	var (
		h   head
		err error
	)
	if it.head != nil {
		h, err = *it.head, it.headErr
	} else {
		h, err = parseHead(it.data)
	}
	e := &entry{seq: it.seq, digest: digest(it.data), head: h, chained: err == nil && h.Seq != 0}
	e.name = Problem{Seq: it.seq, Line: it.line, ID: h.ID, Time: h.Time, Agent: h.Agent, Target: h.Target}
	if e.name.Time.IsZero() {
		e.name.Time = it.stored
	}
	return e, err
}

// restart begins the chain again at the next record: the one before it is
// not there to check its link against.
func (w *walker) restart() {
	w.settle()
	w.prev = nil
}

// missing reports sequences from through to as missing, and restarts the
// chain after them.
func (w *walker) missing(from, to uint64) {
	what := fmt.Sprintf("record seq %d is missing", from)
	if to > from {
		what = fmt.Sprintf("records seq %d to %d are missing", from, to)
	}
	where := "deleted, or unreadable on disk (NATS does not serve a record that fails its checksum)"
	if !w.inStream {
		where = "not in the archive"
	}
	w.restart()
	w.problem(Problem{Seq: from, What: what + ": " + where})
}

// add checks one record and its link to the one before.
func (w *walker) add(it item) {
	w.report.Records++
	cur, err := w.entry(it)
	if it.seq != 0 {
		if w.report.FirstSeq == 0 {
			w.report.FirstSeq = it.seq
		}
		w.report.LastSeq = it.seq
	}
	readable := err == nil
	if !readable {
		w.problem(named(cur, "unreadable: not an audit record: "+err.Error()))
	} else if w.inStream {
		w.checkPlace(cur, it)
	}

	p := w.prev
	linkable := p != nil && cur.chained && cur.head.Prev != ""
	if w.pending != nil && (!linkable || w.pending.after != p) {
		w.settle()
	}
	switch {
	case !cur.chained:
		if readable && w.chained {
			w.problem(named(cur, "has no seq and prev, yet records before it are chained: written around the chain"))
		} else if readable {
			w.report.Unchained++
		}
	case p == nil:
		w.anchor(cur)
	case cur.head.Prev == "":
		w.problem(named(cur, fmt.Sprintf("has no prev, yet %s before it is stored", p.label())))
	case cur.head.Prev != p.digest:
		if w.pending != nil {
			// Both links around p are broken: p itself changed.
			w.problem(named(p, fmt.Sprintf("changed after it was written: its prev does not match the digest of %s, and its digest does not match the prev stored in %s",
				w.pending.before.label(), cur.label())))
			w.pending = nil
		} else {
			w.pending = &link{before: p, after: cur}
		}
	default:
		if w.pending != nil {
			// This link holds, so p is as its successor recorded it: the
			// link before p broke because the record before p changed.
			w.problem(named(w.pending.before, fmt.Sprintf("changed after it was written: its digest does not match the prev stored in %s", p.label())))
			w.pending = nil
		}
	}

	if cp, ok := w.checkpoints[cur.seq]; ok && (w.inStream || cur.chained) {
		if cp.Digest == cur.digest {
			w.report.Checkpoints++
		} else {
			w.problem(named(cur, fmt.Sprintf("does not match the checkpoint taken at %s: it, or the chain before it, was rewritten after the checkpoint",
				cp.Time.UTC().Format(time.RFC3339))))
		}
	}
	if cur.chained {
		w.chained = true
	}
	w.pair(cur)
	w.prev = cur
	if w.progress != nil && w.report.Records%progressEvery == 0 {
		w.progress(Progress{Records: w.report.Records, Seq: cur.seq})
	}
}

// checkPlace checks what the stream says of a record against the record:
// its sequence, its subject and its Corral-Target header, which Query
// filters by.
func (w *walker) checkPlace(cur *entry, it item) {
	h := cur.head
	if h.Seq != 0 && h.Seq != it.seq {
		w.problem(named(cur, fmt.Sprintf("says it is seq %d but is stored at seq %d: copied or moved", h.Seq, it.seq)))
	}
	if want := subject(h.Kind, h.Agent); it.subject != want {
		w.problem(named(cur, fmt.Sprintf("stored under subject %q, not %q as its kind and agent say", it.subject, want)))
	}
	if want := headerSafe(h.Target); want != it.hasTarget || want && it.target != h.Target {
		w.problem(named(cur, "its "+targetHeader+" header does not match its target"))
	}
}

// anchor checks the first link of a chain that starts at cur against a
// checkpoint of the record before it, when one is kept.
func (w *walker) anchor(cur *entry) {
	if !cur.chained || cur.seq <= 1 || cur.head.Prev == "" {
		return
	}
	cp, ok := w.checkpoints[cur.seq-1]
	if !ok {
		return
	}
	if cp.Digest == cur.head.Prev {
		w.report.Checkpoints++
		return
	}
	w.problem(named(cur, fmt.Sprintf("prev does not match the checkpoint of seq %d taken at %s", cp.Seq, cp.Time.UTC().Format(time.RFC3339))))
}

// settle blames a pending broken link that the next link cannot tell about:
// the record before it or the one after it changed.
func (w *walker) settle() {
	if w.pending == nil {
		return
	}
	l := w.pending
	w.pending = nil
	w.problem(named(l.after, fmt.Sprintf("prev does not match the digest of %s: that record or this one was changed", l.before.label())))
}

// finish settles what is pending and completes the report.
func (w *walker) finish() Report {
	w.settle()
	r := &w.report
	slices.SortStableFunc(w.problems, func(a, b placed) int { return cmp.Compare(a.at, b.at) })
	r.Problems = nil
	for _, p := range w.problems {
		r.Problems = append(r.Problems, p.p)
	}
	w.unknownOutcomes()
	if r.Unchained > 0 {
		w.note("%d records written before the chain existed (no seq and prev) were read but cannot be checked", r.Unchained)
	}
	if p := w.prev; p != nil && p.chained {
		if _, ok := w.checkpoints[p.seq]; !ok {
			w.note("no checkpoint covers the last record checked, %s: a change to it alone shows only once a later record or checkpoint covers it", p.label())
		}
	}
	r.OK = len(r.Problems) == 0 && r.MoreProblems == 0
	return *r
}

// pair keeps track of intents and the outcomes that name them.
func (w *walker) pair(e *entry) {
	switch {
	case e.head.Phase == PhaseIntent:
		w.order++
		w.intents[e.head.ID] = w.order
	case e.head.Intent != "":
		delete(w.intents, e.head.Intent)
	}
}

// unknownOutcomes reports the intents left without an outcome.
func (w *walker) unknownOutcomes() {
	r := &w.report
	r.OutcomeUnknown = len(w.intents)
	if r.OutcomeUnknown == 0 {
		return
	}
	ids := slices.SortedFunc(maps.Keys(w.intents), func(a, b string) int { return cmp.Compare(w.intents[a], w.intents[b]) })
	r.UnknownOutcomes = ids[:min(len(ids), maxProblems)]
	w.note("%d calls have an intent but no outcome record: corral stopped (or could not write the audit) while they ran, or they are still running; 'corral audit' shows them as outcome unknown", r.OutcomeUnknown)
}

// named is a problem with e's name.
func named(e *entry, what string) Problem {
	p := e.name
	p.What = what
	return p
}
