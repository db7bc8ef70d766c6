package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/telemetry"
)

// TraceReader reads traces from the built-in trace store.
type TraceReader interface {
	// Trace returns the spans of a trace ordered by start time, or an
	// error wrapping telemetry.ErrInvalidTraceID or
	// telemetry.ErrTraceNotFound.
	Trace(ctx context.Context, traceID string) ([]telemetry.Span, error)
}

// TraceResponse answers GET /v1/traces/{trace_id}.
type TraceResponse struct {
	TraceID string           `json:"trace_id"`
	Spans   []telemetry.Span `json:"spans"`
}

// WithTraces gives the API the trace store, whose route Register then adds.
// It returns a, for chaining after New.
func (a *API) WithTraces(r TraceReader) *API {
	a.traces = r
	return a
}

// registerTraces adds the trace route, when WithTraces gave a store.
func (a *API) registerTraces(mux *http.ServeMux, admin, open func(problem.HandlerFunc) http.Handler) {
	if a.traces == nil {
		return
	}
	mux.Handle("GET /v1/traces/{trace_id}", admin(a.getTrace))
	mux.Handle("/v1/traces/{trace_id}", open(problem.NotAllowed("GET")))
}

func (a *API) getTrace(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("trace_id")
	if !telemetry.ValidTraceID(id) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest,
			fmt.Sprintf("trace id %q: want 32 lowercase hex digits, not all zero, as in a traceparent header", truncateID(id)))
	}
	spans, err := a.traces.Trace(r.Context(), id)
	switch {
	case errors.Is(err, telemetry.ErrTraceNotFound):
		return problem.New(http.StatusNotFound, problem.NotFound,
			"no spans stored for trace "+id+": spans are written about a second after their action ends, and kept 7 days by default")
	case errors.Is(err, telemetry.ErrInvalidTraceID):
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "trace id "+id+" is not valid", err)
	case err != nil:
		return fmt.Errorf("read trace %s: %w", id, err)
	}
	return problem.WriteJSON(w, http.StatusOK, TraceResponse{TraceID: id, Spans: spans})
}

// truncateID keeps an invalid id short enough to echo.
func truncateID(id string) string {
	if len(id) > 64 {
		return id[:64] + "..."
	}
	return id
}
