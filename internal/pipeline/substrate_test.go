package pipeline

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/budget"
	"github.com/corral-dev/corral/internal/problem"
)

// TestBudgetProblem: a budget the substrate could not read is 503
// substrate_unavailable with Retry-After, which clients retry, not the
// undocumented "internal" they report as a bug (issue 20.5).
func TestBudgetProblem(t *testing.T) {
	for _, c := range []struct {
		name   string
		err    error
		status int
		code   string
		retry  bool
	}{
		{"timeout", fmt.Errorf("budget: reserve on b: read counter b.total: %w", nats.ErrTimeout), http.StatusServiceUnavailable, problem.SubstrateUnavailable, true},
		{"no leader", fmt.Errorf("budget: reserve on b: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}), http.StatusServiceUnavailable, problem.SubstrateUnavailable, true},
		{"no responders", fmt.Errorf("budget: reserve on b: %w", nats.ErrNoResponders), http.StatusServiceUnavailable, problem.SubstrateUnavailable, true},
		{"contended", fmt.Errorf("budget: reserve on b: counter b.total: %w (64 attempts)", budget.ErrContended), http.StatusServiceUnavailable, problem.Overloaded, true},
		{"unreadable counter", errors.New("budget: counter b.total is unreadable"), http.StatusServiceUnavailable, problem.Internal, false},
		{"exceeded", &budget.Exceeded{Budget: "b", Limit: budget.LimitCalls}, http.StatusTooManyRequests, problem.BudgetExceeded, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var pe *problem.Error
			if !errors.As(budgetProblem(c.err), &pe) {
				t.Fatalf("budgetProblem(%v) is not a *problem.Error", c.err)
			}
			if pe.Status != c.status || pe.Code != c.code || (pe.RetryAfter > 0) != c.retry {
				t.Errorf("budgetProblem(%v) = %d %s Retry-After %v, want %d %s (Retry-After: %v)", c.err, pe.Status, pe.Code, pe.RetryAfter, c.status, c.code, c.retry)
			}
		})
	}
}
