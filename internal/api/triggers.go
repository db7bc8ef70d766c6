package api

import (
	"net/http"

	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/trigger"
)

// TriggerReader reports the triggers this replica runs.
type TriggerReader interface {
	Status() []trigger.Status
	Lookup(name string) (trigger.Status, bool)
}

// WithTriggers gives the API the triggers, whose routes Register then
// adds. It returns a, for chaining after New.
func (a *API) WithTriggers(t TriggerReader) *API {
	a.triggers = t
	return a
}

// TriggerList answers GET /v1/triggers.
type TriggerList struct {
	Items []trigger.Status `json:"items"`
}

// registerTriggers adds GET /v1/triggers and GET /v1/triggers/{name}.
func (a *API) registerTriggers(mux *http.ServeMux, admin, open func(problem.HandlerFunc) http.Handler) {
	if a.triggers == nil {
		return
	}
	mux.Handle("GET /v1/triggers", admin(a.listTriggers))
	mux.Handle("GET /v1/triggers/{name}", admin(a.getTrigger))
	mux.Handle("/v1/triggers", open(problem.NotAllowed("GET")))
	mux.Handle("/v1/triggers/{name}", open(problem.NotAllowed("GET")))
}

func (a *API) listTriggers(w http.ResponseWriter, _ *http.Request) error {
	return problem.WriteJSON(w, http.StatusOK, TriggerList{Items: a.triggers.Status()})
}

func (a *API) getTrigger(w http.ResponseWriter, r *http.Request) error {
	st, ok := a.triggers.Lookup(r.PathValue("name"))
	if !ok {
		name := r.PathValue("name")
		if len(name) > 64 {
			name = name[:64] + "..."
		}
		return problem.New(http.StatusNotFound, problem.TriggerNotFound, "no trigger "+name+" runs here (is it applied? corral get triggers)")
	}
	return problem.WriteJSON(w, http.StatusOK, st)
}
