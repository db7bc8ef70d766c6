// Package audit is corral's record of what agents did: one Record per call
// or event, appended to a JetStream stream that survives restarts and is
// acknowledged before the caller answers, so an action that was answered is
// never missing from the audit. Each record carries the digest of the one
// stored before it, and checkpoints of that chain are kept apart, so that
// Verify can show that no stored record was changed or removed. Records are
// read back newest last, filtered by agent, tool and time, or exported as
// stored for archives.
package audit

import (
	"cmp"
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

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/tools"
)

// Stream is the JetStream stream that holds the audit.
const Stream = "CORRAL_AUDIT"

// subjectPrefix starts every audit subject: corral.audit.<kind>.<agent>.
const subjectPrefix = "corral.audit."

// DefaultMaxAge is how long records are kept unless Options say otherwise.
const DefaultMaxAge = 30 * 24 * time.Hour

// DefaultMaxBytes bounds the stream unless Options say otherwise: about 20
// million records of a typical size.
const DefaultMaxBytes = 8 << 30

// Query limits.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// Record is one audited call or event.
type Record struct {
	// Seq is where the record is stored in the audit stream, set by Append.
	// With Prev it chains the record to the one before it; records stored
	// before the chain existed have neither.
	Seq uint64 `json:"seq,omitempty"`
	// Prev is "sha256:<hex>" of the stored bytes of the record at Seq-1, set
	// by Append; empty only when no record was stored before this one, or
	// when that record had aged out (or could not be read) as this one was
	// written.
	Prev string `json:"prev,omitempty"`
	// ID is assigned by Append if empty; callers hand it out as audit_id.
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	// Kind is what was called: "tool" now; "model" and "agent" later.
	Kind string `json:"kind"`
	// Agent is the acting identity; empty when authentication failed.
	Agent string `json:"agent,omitempty"`
	// ClaimedAgent, on an unauthenticated refusal, is the agent the refused
	// credential names (a valid token of an agent since deleted, or of an
	// earlier incarnation of it): not an identity that acted, so it is kept
	// out of Agent and of that agent's audit.
	ClaimedAgent string `json:"claimed_agent,omitempty"`
	// Principal is the user the agent acts for (the sub of a delegated
	// token); empty when the agent acts for itself.
	Principal string `json:"principal,omitempty"`
	// PrincipalIssuer is the identity provider that vouched for Principal.
	PrincipalIssuer string `json:"principal_issuer,omitempty"`
	// Credential says which credential authenticated the call: "key:<id>"
	// for an agent key, "token:<jti>" for a corral token.
	Credential string `json:"credential,omitempty"`
	// Task is the task the call belongs to, when its token names one.
	Task string `json:"task,omitempty"`
	// Step is the step of Task's journal that made the call, when a hosted
	// agent's loop made it (see docs/tasks.md); empty for an agent's own call.
	Step string `json:"step,omitempty"`
	// Target is the tool's name (or, for an Event, what it concerns).
	Target string `json:"target"`
	Source string `json:"source,omitempty"`
	// Edge is the protocol the call came in on: "rest" or "mcp".
	Edge string `json:"edge"`
	// Decision is "allowed" or "denied".
	Decision string `json:"decision"`
	// Code is the problem code when the call was refused or failed:
	// unauthenticated, killed, policy_denied, invalid_arguments, ...
	Code   string `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Policy is what policy decided, when the call got that far.
	Policy *PolicyDecision `json:"policy,omitempty"`
	// Model is what a model call did: which target answered, tokens, cost.
	Model *ModelCall `json:"model,omitempty"`
	// ArgsDigest is "sha256:<hex>" of the canonical arguments.
	ArgsDigest string `json:"args_digest,omitempty"`
	// Arguments are kept only when the tool source asks for it, and whole
	// only up to MaxArguments bytes.
	Arguments json.RawMessage `json:"arguments,omitempty"`
	// ArgumentsPrefix is what is kept of larger arguments besides their
	// digest: their first bytes, masked by the built-in detectors.
	ArgumentsPrefix string `json:"arguments_prefix,omitempty"`
	// Status is "ok", "error" or "refused".
	Status         string  `json:"status"`
	DurationMS     float64 `json:"duration_ms"`
	UpstreamStatus int     `json:"upstream_status,omitempty"`
	IdempotencyKey string  `json:"idempotency_key,omitempty"`
	// Replayed is set when the answer came from the idempotency record.
	Replayed  bool   `json:"replayed,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// Remote is the caller's address as the edge saw it.
	Remote string `json:"remote,omitempty"`
	// Event names a record that is not a call, e.g. "drift" (Kind "tool",
	// Target the source); Detail is its payload.
	Event  string          `json:"event,omitempty"`
	Detail json.RawMessage `json:"detail,omitempty"`
	// Phase is "intent" for the record appended before a call leaves
	// corral; empty for a record of what happened. An intent with no
	// record naming it in Intent is a call whose outcome is unknown (corral
	// stopped while it ran).
	Phase string `json:"phase,omitempty"`
	// Intent is, on the record of a call's outcome, the ID of its intent.
	Intent string `json:"intent,omitempty"`
	// Sampled, on an unauthenticated refusal, is how many refusals from the
	// same address this record stands for: past a rate, only one in so many
	// is stored (see docs/audit.md).
	Sampled int `json:"sampled,omitempty"`
	// Truncated names the fields that were cut to their bounds (MaxName,
	// MaxReason, MaxArguments...) when the record was stored.
	Truncated []string `json:"truncated,omitempty"`
}

// PhaseIntent marks a record appended before a call leaves corral.
const PhaseIntent = "intent"

// StatusUnknown is the Status Query gives an intent that has no outcome
// record: corral stopped (or lost the audit) while the call ran.
const StatusUnknown = "unknown"

// PolicyDecision is policy's verdict on a call, as the audit keeps it.
type PolicyDecision struct {
	// Effect is "allow", "deny" or "approval"; "error" when evaluation failed.
	Effect  string   `json:"effect"`
	Reasons []string `json:"reasons,omitempty"`
	// Revision names the policy that decided: a digest of its modules and data.
	Revision string `json:"revision"`
}

// Options configure the audit stream and its checkpoints.
type Options struct {
	// MaxAge is how long records are kept; 0 means DefaultMaxAge.
	MaxAge time.Duration
	// MaxBytes bounds the stream's size, so that the audit cannot fill the
	// disk; 0 means DefaultMaxBytes. Records are never evicted to make
	// room: when the stream is full, Append fails with ErrFull (and the
	// pipeline refuses calls) until records age out or the bound is raised.
	MaxBytes int64
	// CheckpointMaxAge is how long checkpoints are kept: 0 means
	// DefaultCheckpointMaxAge, and never less than MaxAge, so that every
	// retained record stays covered and an archive can be checked against
	// them long after its records aged out.
	CheckpointMaxAge time.Duration
	// CheckpointRecords is how many records Append stores between
	// checkpoints that Run publishes; 0 means DefaultCheckpointRecords.
	CheckpointRecords int
	// CheckpointInterval is the longest Run waits before checkpointing
	// records appended since the last checkpoint; 0 means
	// DefaultCheckpointInterval.
	CheckpointInterval time.Duration
}

// substrate is what the log needs from the bus.
type substrate interface {
	Stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	Publisher() (jetstream.JetStream, error)
}

// Log appends to, reads, verifies and exports the audit stream.
type Log struct {
	js          jetstream.JetStream
	stream      jetstream.Stream
	checkpoints jetstream.Stream
	logger      *slog.Logger
	opts        Options

	// appending is held by the one Append at a time that writes, so that
	// each record names the digest of the one before it; end is what that
	// Append knows of the chain's end, and is guarded by it.
	appending chan struct{}
	end       chainEnd

	// qmu guards queue: the records waiting for a writer, oldest first.
	qmu   sync.Mutex
	queue []*pending

	// mu guards written, which Append updates and Run reads.
	mu      sync.Mutex
	written written
	// due wakes Run when CheckpointRecords records await a checkpoint.
	due chan struct{}
}

// Open creates the audit stream and the checkpoint stream, or updates their
// configuration.
func Open(ctx context.Context, logger *slog.Logger, s substrate, opts Options) (*Log, error) {
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.CheckpointMaxAge <= 0 {
		opts.CheckpointMaxAge = DefaultCheckpointMaxAge
	}
	opts.CheckpointMaxAge = max(opts.CheckpointMaxAge, opts.MaxAge)
	if opts.CheckpointRecords <= 0 {
		opts.CheckpointRecords = DefaultCheckpointRecords
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = DefaultCheckpointInterval
	}
	stream, err := s.Stream(ctx, jetstream.StreamConfig{
		Name:        Stream,
		Description: "corral audit: one record per call or event, subject corral.audit.<kind>.<agent>",
		Subjects:    []string{subjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      opts.MaxAge,
		MaxBytes:    opts.MaxBytes,
		// Only age removes records: a full stream refuses new ones rather
		// than evicting history (a flood must not flush the audit).
		Discard: jetstream.DiscardNew,
		// Records are never deleted or purged one by one: the audit is
		// append-only, and only age removes them.
		DenyDelete: true,
		DenyPurge:  true,
		// Append stores concurrent records as one atomic batch.
		AllowAtomicPublish: true,
	})
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	checkpoints, err := s.Stream(ctx, jetstream.StreamConfig{
		Name:        CheckpointStream,
		Description: "corral audit checkpoints: the digest of the audit chain at a sequence, kept longer than the audit",
		Subjects:    []string{checkpointSubject},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      opts.CheckpointMaxAge,
		MaxBytes:    checkpointMaxBytes,
		Discard:     jetstream.DiscardOld,
		DenyDelete:  true,
		DenyPurge:   true,
	})
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	// A JetStream context of the log's own: the trace store's publishes
	// waiting on a stalled stream cannot hold up the audit's.
	js, err := s.Publisher()
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return &Log{
		js:          js,
		stream:      stream,
		checkpoints: checkpoints,
		logger:      logger,
		opts:        opts,
		appending:   make(chan struct{}, 1),
		due:         make(chan struct{}, 1),
	}, nil
}

// targetHeader carries a record's Target beside it, so that Query can filter
// by tool without decoding every record.
const targetHeader = "Corral-Target"

// phaseHeader marks an intent record, and intentHeader names the intent on
// its outcome's record, so that Query can pair them without decoding
// every record.
const (
	phaseHeader  = "Corral-Phase"
	intentHeader = "Corral-Intent"
)

// headerSafe reports whether s can be a header value as it is: printable
// ASCII. Anything else (an unauthenticated caller's made-up tool name) is
// left to the record, which Query then decodes.
func headerSafe(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// subject is where a record goes: corral.audit.<kind>.<agent>, each token
// escaped.
func subject(kind, agent string) string {
	return subjectPrefix + token(kind) + "." + token(agent)
}

// token makes s one subject token that NATS accepts and that no other string
// maps to: letters, digits and '-' stay, every other byte becomes %XX, and
// the empty string (an unauthenticated caller) becomes "_", which escaping
// never produces.
func token(s string) string {
	if s == "" {
		return "_"
	}
	plain := true
	for i := range len(s) {
		if !plainByte(s[i]) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := range len(s) {
		c := s[i]
		if plainByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func plainByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-'
}

// Filter selects records. Empty fields select everything.
type Filter struct {
	// Agent is an agent's exact name.
	Agent string
	// Tool is a tool's exact name, or a pattern where '*' stands for any
	// run of characters: "crm.*", "*.delete_*".
	Tool string
	// Since is the earliest time a record was stored.
	Since time.Time
	// Limit is the most records returned, the newest ones: DefaultLimit when
	// 0, at most MaxLimit.
	Limit int
}

// Query returns the newest Limit records that match f and were stored at or
// after f.Since, oldest first. It reads what the stream held when the query
// started and does not wait for more.
//
// The stream is read from Since (or, with no agent and no tool, from the
// last Limit records), so a query over a long period with a tool pattern
// reads every record of that period.
func (l *Log) Query(ctx context.Context, f Filter) ([]Record, error) {
	switch {
	case f.Limit <= 0:
		f.Limit = DefaultLimit
	case f.Limit > MaxLimit:
		f.Limit = MaxLimit
	}
	info, err := l.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: query: %w", err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return []Record{}, nil
	}

	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subjectPrefix + ">"}}
	switch {
	case f.Agent == "" && f.Tool == "":
		// Every record counts, and records are only ever removed from the
		// front: the last 2*Limit sequences hold the newest Limit records
		// even when each call left an intent, which is not listed once its
		// outcome is stored.
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = max(info.State.FirstSeq, last-min(last, 2*uint64(f.Limit))+1)
	case !f.Since.IsZero():
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &f.Since
	}
	if f.Agent != "" {
		cfg.FilterSubjects = []string{subjectPrefix + "*." + token(f.Agent)}
	}
	match := matcher(f.Tool)
	ring := newRing(f.Limit)
	// An intent is shown only while no outcome names it: a call that left
	// corral and whose outcome is unknown.
	intents := map[string]stored{}
	err = l.scan(ctx, l.stream, cfg, last, func(m jetstream.Msg, meta *jetstream.MsgMetadata) error {
		seq := meta.Sequence.Stream
		// The start-by-sequence path may begin before Since.
		if meta.Timestamp.Before(f.Since) || !match(l.target(ctx, m, seq)) {
			return nil
		}
		h := m.Headers()
		switch {
		case h.Get(phaseHeader) == PhaseIntent:
			intents[h.Get(jetstream.MsgIDHeader)] = stored{seq: seq, data: m.Data()}
			return nil
		case h.Get(intentHeader) != "":
			delete(intents, h.Get(intentHeader))
		}
		ring.add(stored{seq: seq, data: m.Data()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit: query: %w", err)
	}
	kept := ring.ordered()
	if len(intents) > 0 {
		kept = slices.AppendSeq(kept, maps.Values(intents))
		slices.SortFunc(kept, func(a, b stored) int { return cmp.Compare(a.seq, b.seq) })
		kept = kept[max(0, len(kept)-f.Limit):]
	}
	// Only the records kept are decoded.
	out := make([]Record, 0, len(kept))
	for _, s := range kept {
		var r Record
		if err := json.Unmarshal(s.data, &r); err != nil {
			l.logger.WarnContext(ctx, "skipping unreadable audit record", "seq", s.seq, "err", err)
			continue
		}
		if r.Phase == PhaseIntent {
			r.Status = StatusUnknown
		}
		out = append(out, r)
	}
	return out, nil
}

// target is a stored record's Target: from its header, or, for a record
// stored without one, from the record itself.
func (l *Log) target(ctx context.Context, m jetstream.Msg, seq uint64) string {
	if h := m.Headers(); h != nil {
		if vs, ok := h[targetHeader]; ok && len(vs) > 0 {
			return vs[0]
		}
	}
	var r struct {
		Target string `json:"target"`
	}
	if err := json.Unmarshal(m.Data(), &r); err != nil {
		l.logger.WarnContext(ctx, "unreadable audit record", "seq", seq, "err", err)
	}
	return r.Target
}

// stored is a record as read from the stream, decoded only if kept.
type stored struct {
	seq  uint64
	data []byte
}

// deleteConsumer removes a scan's consumer from the server, so that a busy
// console does not leave one behind per query.
func (l *Log) deleteConsumer(ctx context.Context, stream jetstream.Stream, cons jetstream.Consumer) {
	ci := cons.CachedInfo()
	if ci == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := stream.DeleteConsumer(ctx, ci.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		l.logger.DebugContext(ctx, "audit consumer left to expire", "consumer", ci.Name, "err", err)
	}
}

// matcher returns a test for tool names: exact, or a glob with * and ?.
func matcher(pattern string) func(string) bool {
	if pattern == "" {
		return func(string) bool { return true }
	}
	// The same globs as Agent.spec.tools.
	return func(name string) bool { return tools.Match(pattern, name) }
}

// ring keeps the last n records added.
type ring struct {
	buf  []stored
	n    int
	next int // where the next record goes once buf holds n
}

func newRing(n int) *ring { return &ring{n: n} }

func (r *ring) add(s stored) {
	if len(r.buf) < r.n {
		r.buf = append(r.buf, s)
		return
	}
	r.buf[r.next] = s
	r.next = (r.next + 1) % r.n
}

// ordered returns what the ring holds, oldest first.
func (r *ring) ordered() []stored {
	out := make([]stored, 0, len(r.buf))
	return append(append(out, r.buf[r.next:]...), r.buf[:r.next]...)
}
