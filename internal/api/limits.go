package api

import (
	"context"
	"net/http"

	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/ratelimit"
)

// LimitReader reports the rate limits' state and the throttled backends.
type LimitReader interface {
	Status(ctx context.Context) ([]ratelimit.Status, error)
	Throttles() []ratelimit.ThrottleStatus
}

// WithLimits gives the API the rate limits, whose route Register then adds.
// It returns a, for chaining after New.
func (a *API) WithLimits(l LimitReader) *API {
	a.limits = l
	return a
}

// LimitList answers GET /v1/limits: every RateLimit by name with its shared
// counters and this replica's counts, and the backends throttling corral.
type LimitList struct {
	Items     []ratelimit.Status         `json:"items"`
	Throttled []ratelimit.ThrottleStatus `json:"throttled"`
}

// registerLimits adds GET /v1/limits, when WithLimits gave the limits.
func (a *API) registerLimits(mux *http.ServeMux, admin, open func(problem.HandlerFunc) http.Handler) {
	if a.limits == nil {
		return
	}
	mux.Handle("GET /v1/limits", admin(a.listLimits))
	mux.Handle("/v1/limits", open(problem.NotAllowed("GET")))
}

func (a *API) listLimits(w http.ResponseWriter, r *http.Request) error {
	items, err := a.limits.Status(r.Context())
	if err != nil {
		return err // an internal error: the substrate did not answer
	}
	list := LimitList{Items: items, Throttled: a.limits.Throttles()}
	if list.Items == nil {
		list.Items = []ratelimit.Status{}
	}
	if list.Throttled == nil {
		list.Throttled = []ratelimit.ThrottleStatus{}
	}
	return problem.WriteJSON(w, http.StatusOK, list)
}
