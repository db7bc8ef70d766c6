package api

import (
	"context"
	"net/http"

	"github.com/corral-dev/corral/internal/budget"
	"github.com/corral-dev/corral/internal/problem"
)

// BudgetReader reports the budgets' use against their limits.
type BudgetReader interface {
	Status(ctx context.Context) ([]budget.Status, error)
}

// WithBudgets gives the API the budgets, whose route Register then adds. It
// returns a, for chaining after New.
func (a *API) WithBudgets(b BudgetReader) *API {
	a.budgets = b
	return a
}

// BudgetList answers GET /v1/budgets: every budget by name, with what its
// current window used.
type BudgetList struct {
	Items []budget.Status `json:"items"`
}

// registerBudgets adds GET /v1/budgets, when WithBudgets gave the budgets.
func (a *API) registerBudgets(mux *http.ServeMux, admin, open func(problem.HandlerFunc) http.Handler) {
	if a.budgets == nil {
		return
	}
	mux.Handle("GET /v1/budgets", admin(a.listBudgets))
	mux.Handle("/v1/budgets", open(problem.NotAllowed("GET")))
}

func (a *API) listBudgets(w http.ResponseWriter, r *http.Request) error {
	items, err := a.budgets.Status(r.Context())
	if err != nil {
		return err // an internal error: the substrate did not answer
	}
	if items == nil {
		items = []budget.Status{}
	}
	return problem.WriteJSON(w, http.StatusOK, BudgetList{Items: items})
}
