package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/corral-dev/corral/internal/deadletter"
	"github.com/corral-dev/corral/internal/problem"
)

// DeadLetters is the dead-letter queue (deadletter.DLQ).
type DeadLetters interface {
	List(ctx context.Context, f deadletter.Filter) (deadletter.Page, error)
	Get(ctx context.Context, id string) (deadletter.Entry, uint64, error)
	Retry(ctx context.Context, id, by string) (deadletter.Entry, error)
	Discard(ctx context.Context, id, by string) (deadletter.Entry, error)
}

// DeadLetterList is the answer of GET /v1/dlq: a page, newest first, and
// the after value of the next page when more may follow.
type DeadLetterList struct {
	Items []deadletter.Entry `json:"items"`
	Next  string             `json:"next,omitempty"`
}

// WithDeadLetters adds the dead-letter routes (admin only): GET /v1/dlq,
// GET /v1/dlq/{id}, POST /v1/dlq/{id}/retry, DELETE /v1/dlq/{id}.
func (a *API) WithDeadLetters(d DeadLetters) *API {
	a.dlq = d
	return a
}

func (a *API) registerDeadLetters(mux *http.ServeMux, admin, open func(problem.HandlerFunc) http.Handler) {
	if a.dlq == nil {
		return
	}
	mux.Handle("GET /v1/dlq", admin(a.listDeadLetters))
	mux.Handle("GET /v1/dlq/{id}", admin(a.getDeadLetter))
	mux.Handle("POST /v1/dlq/{id}/retry", admin(a.retryDeadLetter))
	mux.Handle("DELETE /v1/dlq/{id}", admin(a.discardDeadLetter))
	mux.Handle("/v1/dlq", open(problem.NotAllowed("GET")))
	mux.Handle("/v1/dlq/{id}", open(problem.NotAllowed("GET", "DELETE")))
	mux.Handle("/v1/dlq/{id}/retry", open(problem.NotAllowed("POST")))
}

func (a *API) listDeadLetters(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if err := checkParams(q, "source", "state", "task", "limit", "after"); err != nil {
		return err
	}
	f := deadletter.Filter{Source: q.Get("source"), State: q.Get("state"), Task: q.Get("task"), Limit: deadletter.DefaultLimit}
	switch f.Source {
	case "", deadletter.SourceWorkflow, deadletter.SourceTrigger, deadletter.SourceTask:
	default:
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "source: workflow, trigger or task")
	}
	switch f.State {
	case "", deadletter.Pending, deadletter.Retried:
	default:
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "state: pending or retried")
	}
	if len(f.Task) > 64 {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "task: not a task id")
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > deadletter.MaxLimit {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("limit: a number from 1 to %d", deadletter.MaxLimit))
		}
		f.Limit = n
	}
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, "after: the next value of the previous page")
		}
		f.After = n
	}
	page, err := a.dlq.List(r.Context(), f)
	if err != nil {
		return err
	}
	out := DeadLetterList{Items: page.Items}
	if out.Items == nil {
		out.Items = []deadletter.Entry{}
	}
	if page.Next != 0 {
		out.Next = strconv.FormatUint(page.Next, 10)
	}
	return problem.WriteJSON(w, http.StatusOK, out)
}

func (a *API) getDeadLetter(w http.ResponseWriter, r *http.Request) error {
	e, _, err := a.dlq.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return problem.WriteJSON(w, http.StatusOK, e)
}

func (a *API) retryDeadLetter(w http.ResponseWriter, r *http.Request) error {
	e, err := a.dlq.Retry(r.Context(), r.PathValue("id"), "admin")
	if err != nil {
		return err
	}
	return problem.WriteJSON(w, http.StatusOK, e)
}

func (a *API) discardDeadLetter(w http.ResponseWriter, r *http.Request) error {
	e, err := a.dlq.Discard(r.Context(), r.PathValue("id"), "admin")
	if err != nil {
		return err
	}
	return problem.WriteJSON(w, http.StatusOK, e)
}
