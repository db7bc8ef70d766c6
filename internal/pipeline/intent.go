package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nuid"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/problem"
)

// errIntentNotStored is a call refused because the record of its intent
// could not be stored: nothing left corral.
var errIntentNotStored = errors.New("pipeline: the intent record was not stored")

// writeIntent appends the intent record of a call about to leave corral
// (write-ahead): if corral dies while the call runs, the audit still shows
// the call, as an intent whose outcome is unknown. The outcome record,
// appended by finishRecord, names it in Intent. A call whose intent cannot
// be stored does not leave.
func (p *Pipeline) writeIntent(ctx context.Context, rec *audit.Record) error {
	if err := p.auditAvailable(); err != nil {
		return err
	}
	if rec.ID == "" {
		rec.ID = nuid.Next()
	}
	intent := *rec
	intent.ID, intent.Time, intent.Phase = nuid.Next(), p.now().UTC(), audit.PhaseIntent
	intent.Decision, intent.Status = "allowed", "pending"
	// What the call did is the outcome's; the intent says what it is about
	// to do (the arguments' digest, not the arguments).
	intent.Arguments, intent.ArgumentsPrefix, intent.Model, intent.Reason, intent.Code = nil, "", nil, "", ""
	intent.DurationMS, intent.UpstreamStatus, intent.Truncated = 0, 0, nil
	if _, err := p.Audit.Append(context.WithoutCancel(ctx), &intent); err != nil {
		p.auditFailed(ctx, rec, err)
		return p.auditProblem(fmt.Errorf("%w: %w", errIntentNotStored, err), "corral did not make the call: the record of its intent could not be stored")
	}
	rec.Intent = intent.ID
	return nil
}

// auditProblem is the refusal of a call whose record could not be stored:
// audit_full when the stream has reached its size limit, else
// audit_unavailable.
func (p *Pipeline) auditProblem(err error, detail string) *problem.Error {
	if errors.Is(err, audit.ErrFull) {
		return problem.Wrap(http.StatusServiceUnavailable, problem.AuditFull, detail+" (the audit's storage is full)", err)
	}
	return &problem.Error{Status: http.StatusServiceUnavailable, Code: problem.AuditUnavailable, Detail: detail, Err: err, RetryAfter: time.Second}
}

// auditFailed notes a record that could not be stored: refuse the next
// calls until the audit takes records again, count it, and say so in the
// log, at most once per lossLogEvery however many fail (an outage fails
// every call).
func (p *Pipeline) auditFailed(ctx context.Context, rec *audit.Record, err error) {
	full := errors.Is(err, audit.ErrFull)
	p.auditDown.Store(true)
	p.auditFull.Store(full)
	p.Metrics.auditLost(full)
	if n, ok := p.lost.due(p.now()); ok {
		p.logger.ErrorContext(ctx, "audit record lost; calls are refused until the audit takes records again",
			"agent", rec.Agent, "target", rec.Target, "decision", rec.Decision, "phase", rec.Phase, "full", full,
			"lost_since_last_log", n, "err", err)
	}
}

// lossLogEvery is how often at most "audit record lost" is logged.
const lossLogEvery = 10 * time.Second

// lossLog rate-limits the log of lost records.
type lossLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// due reports whether a loss at now is logged, and how many were not
// logged since the last one.
func (l *lossLog) due(now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < lossLogEvery {
		l.suppressed++
		return 0, false
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return n, true
}
