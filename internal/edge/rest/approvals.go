package rest

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/approval"
	"github.com/corral-dev/corral/internal/problem"
)

// Approvals waits for people's decisions (approval.Store).
type Approvals interface {
	Wait(ctx context.Context, id string) (approval.Approval, error)
}

// WithApprovals lets a call sent with Prefer: wait=N wait for the decision
// on its approval and, once approved, run.
func (e *Edge) WithApprovals(a Approvals) *Edge {
	e.approvals = a
	return e
}

// MaxWait bounds Prefer: wait.
const MaxWait = 60 * time.Second

// preferWait reads the wait preference (RFC 7240) of a Prefer header:
// "wait=N" in seconds, bounded by MaxWait; 0 when there is none or it is
// not a whole number.
func preferWait(header []string) time.Duration {
	for _, h := range header {
		for pref := range strings.SplitSeq(h, ",") {
			pref, _, _ = strings.Cut(pref, ";")
			name, value, ok := strings.Cut(strings.TrimSpace(pref), "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue
			}
			value = strings.Trim(strings.TrimSpace(value), `"`)
			if len(value) > 6 {
				return MaxWait
			}
			n, err := strconv.Atoi(value)
			if err != nil || n <= 0 {
				return 0
			}
			return min(time.Duration(n)*time.Second, MaxWait)
		}
	}
	return 0
}

// awaitApproval waits, as long as the caller preferred, for the decision on
// the approval a call was parked on; it reports whether it was decided.
func (e *Edge) awaitApproval(w http.ResponseWriter, r *http.Request, err error) bool {
	var pe *problem.Error
	if e.approvals == nil || !errors.As(err, &pe) || pe.Code != problem.ApprovalPending {
		return false
	}
	wait := preferWait(r.Header.Values("Prefer"))
	if wait == 0 {
		return false
	}
	w.Header().Set("Preference-Applied", "wait="+strconv.Itoa(int(wait/time.Second)))
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	a, werr := e.approvals.Wait(ctx, pe.ApprovalID)
	return werr == nil && a.State != approval.Pending
}
