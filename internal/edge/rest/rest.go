// Package rest is the plain HTTP edge of the tool gateway: agents list the
// tools they may call and invoke them with POST /v1/tools/{name}/invoke.
// It translates requests into pipeline actions and answers back; it holds no
// policy of its own.
package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/registry"
	"github.com/corral-dev/corral/internal/telemetry"
	"github.com/corral-dev/corral/internal/tools"
)

// maxBody caps an invoke request.
const maxBody = 4 << 20

// Gateway is what the edge needs from the pipeline.
type Gateway interface {
	Authenticate(credential string) (pipeline.Caller, error)
	Tools(ctx context.Context, c pipeline.Caller) ([]*tools.Entry, error)
	Invoke(ctx context.Context, a pipeline.Action) (*pipeline.Outcome, error)
}

// Admins recognises admin tokens, which see every tool and the sources.
type Admins interface {
	VerifyAdmin(token string) bool
}

// Sources reports the tool sources, for admins.
type Sources interface {
	Status() []tools.SourceStatus
	List() []*tools.Entry
	Drift() []tools.Drift
}

// Resources reads and updates ToolSources, to accept drift.
type Resources interface {
	Get(kind, name string) (config.Resource, bool)
	Apply(ctx context.Context, resources []config.Resource) ([]registry.Applied, error)
}

// Edge serves the REST tool endpoints.
type Edge struct {
	gw      Gateway
	admins  Admins
	sources Sources
	res     Resources
	logger  *slog.Logger

	approvals Approvals // nil: Prefer: wait is not honoured
}

// New returns the edge.
func New(logger *slog.Logger, gw Gateway, admins Admins, sources Sources, res Resources) *Edge {
	return &Edge{gw: gw, admins: admins, sources: sources, res: res, logger: logger}
}

// Register adds the edge's routes to mux.
func (e *Edge) Register(mux *http.ServeMux) {
	h := func(f problem.HandlerFunc) http.Handler { return problem.Handle(e.logger, f) }
	mux.Handle("POST /v1/tools/{name}/invoke", h(e.invoke))
	mux.Handle("GET /v1/tools", h(e.list))
	mux.Handle("GET /v1/tools/{name}", h(e.describe))
	mux.Handle("GET /v1/tools/drift", h(e.admin(e.drift)))
	mux.Handle("POST /v1/tools/drift/{source}/accept", h(e.admin(e.accept)))
	mux.Handle("/v1/tools/{name}/invoke", h(problem.NotAllowed("POST")))
	mux.Handle("/v1/tools", h(problem.NotAllowed("GET")))
}

// InvokeRequest is the body of POST /v1/tools/{name}/invoke.
type InvokeRequest struct {
	Arguments json.RawMessage `json:"arguments"`
}

// InvokeResponse is its answer.
type InvokeResponse struct {
	// Result is the tool's answer: the JSON an OpenAPI operation returned,
	// or an MCP tool's structuredContent, else {"content": [...]}.
	Result  json.RawMessage `json:"result"`
	AuditID string          `json:"audit_id"`
	// IsError is set when the tool ran and reported failure (an HTTP 4xx
	// from the upstream, an MCP tool error).
	IsError        bool `json:"is_error,omitempty"`
	UpstreamStatus int  `json:"upstream_status,omitempty"`
	// Replayed is set when the answer is the one recorded for an earlier
	// call with the same Idempotency-Key.
	Replayed bool `json:"replayed,omitempty"`
}

func (e *Edge) invoke(w http.ResponseWriter, r *http.Request) error {
	a := pipeline.Action{
		Credential:     identity.BearerToken(r),
		Kind:           "tool",
		Target:         r.PathValue("name"),
		IdempotencyKey: strings.Join(r.Header.Values("Idempotency-Key"), pipeline.MultipleKeys),
		Edge:           "rest",
		RequestID:      telemetry.RequestID(r.Context()),
		RemoteAddr:     r.RemoteAddr,
	}
	var req InvokeRequest
	if err := decodeBody(w, r, &req); err != nil {
		// 401 before 415 or 400: an unauthenticated caller learns nothing
		// about the endpoint. The pipeline refuses it and records that.
		if _, aerr := e.gw.Authenticate(a.Credential); aerr != nil {
			_, aerr = e.gw.Invoke(r.Context(), a)
			return aerr
		}
		return err
	}
	a.Arguments = req.Arguments
	out, err := e.gw.Invoke(r.Context(), a)
	if err != nil && e.awaitApproval(w, r, err) {
		// Decided while the caller waited: the same call again runs (or
		// hears the denial).
		out, err = e.gw.Invoke(r.Context(), a)
	}
	if err != nil {
		if c, aerr := e.gw.Authenticate(a.Credential); aerr == nil {
			// A tool this agent may not see is answered as one that does
			// not exist, as GET /v1/tools/{name} and the MCP edge do.
			err = pipeline.Hide(r.Context(), e.gw, c, a.Target, err)
		}
		return err
	}
	resp := InvokeResponse{
		Result:         ResultJSON(out.Result),
		AuditID:        out.AuditID,
		IsError:        out.Result.IsError,
		UpstreamStatus: out.Result.Status,
		Replayed:       out.Replayed,
	}
	if out.Replayed {
		w.Header().Set("Idempotency-Replayed", "true")
	}
	return problem.WriteCompactJSON(w, http.StatusOK, resp)
}

// ResultJSON is the one JSON value that stands for a result.
func ResultJSON(res *tools.Result) json.RawMessage {
	if len(res.Structured) > 0 {
		return res.Structured
	}
	content := res.Content
	if content == nil {
		content = []json.RawMessage{}
	}
	b, _ := json.Marshal(map[string]any{"content": content})
	return b
}

// decodeBody reads a JSON request body into v, rejecting unknown fields,
// media types other than application/json (parameters such as charset
// allowed) and anything after the one JSON value.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return problem.New(http.StatusUnsupportedMediaType, problem.UnsupportedMedia, "send the request as application/json")
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return problem.New(http.StatusRequestEntityTooLarge, problem.RequestTooLarge, "the request is larger than 4 MiB")
	}
	if err != nil {
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "the request body could not be read", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil // no body: no arguments
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, `the body must be {"arguments": {...}}: `+err.Error())
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, `the body must be one JSON object, {"arguments": {...}}, and nothing after it`)
	}
	return nil
}

// ToolList is the answer of GET /v1/tools.
type ToolList struct {
	Tools []tools.Tool `json:"tools"`
	// Sources is shown to admins only.
	Sources []tools.SourceStatus `json:"sources,omitempty"`
}

// list answers an agent with the tools it may call, and an admin with every
// tool and the state of every source.
func (e *Edge) list(w http.ResponseWriter, r *http.Request) error {
	entries, admin, err := e.visible(r)
	if err != nil {
		return err
	}
	out := ToolList{Tools: make([]tools.Tool, 0, len(entries))}
	for _, en := range entries {
		out.Tools = append(out.Tools, en.Tool)
	}
	if admin {
		out.Sources = e.sources.Status()
	}
	return problem.WriteJSON(w, http.StatusOK, out)
}

func (e *Edge) describe(w http.ResponseWriter, r *http.Request) error {
	entries, _, err := e.visible(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	for _, en := range entries {
		if en.Tool.Name == name {
			return problem.WriteJSON(w, http.StatusOK, en.Tool)
		}
	}
	return problem.New(http.StatusNotFound, problem.ToolNotFound, "no tool named "+name+" that you may see")
}

func (e *Edge) visible(r *http.Request) ([]*tools.Entry, bool, error) {
	token := identity.BearerToken(r)
	if token != "" && e.admins.VerifyAdmin(token) {
		return e.sources.List(), true, nil
	}
	caller, err := e.gw.Authenticate(token)
	if err != nil {
		return nil, false, err
	}
	entries, err := e.gw.Tools(r.Context(), caller)
	return entries, false, err
}

func (e *Edge) admin(next problem.HandlerFunc) problem.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if token := identity.BearerToken(r); token == "" || !e.admins.VerifyAdmin(token) {
			return problem.New(http.StatusUnauthorized, problem.Unauthenticated, "send the admin token as Authorization: Bearer <token>")
		}
		return next(w, r)
	}
}

// DriftList is the answer of GET /v1/tools/drift.
type DriftList struct {
	Drift []tools.Drift `json:"drift"`
}

func (e *Edge) drift(w http.ResponseWriter, _ *http.Request) error {
	d := e.sources.Drift()
	if d == nil {
		d = []tools.Drift{}
	}
	return problem.WriteJSON(w, http.StatusOK, DriftList{Drift: d})
}

func (e *Edge) accept(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("source")
	var held *tools.Drift
	for _, d := range e.sources.Drift() {
		if d.Source == name {
			held = &d
		}
	}
	if held == nil {
		return problem.New(http.StatusNotFound, problem.NotFound, "ToolSource/"+name+" has no drift held back")
	}
	res, ok := e.res.Get("ToolSource", name)
	if !ok {
		return problem.New(http.StatusNotFound, problem.ResourceNotFound, "ToolSource/"+name+" does not exist")
	}
	labels := make(map[string]string, len(res.Metadata.Labels)+1)
	for k, v := range res.Metadata.Labels {
		labels[k] = v
	}
	// The label records which definition was accepted; the change of
	// revision makes every replica load the source afresh and take exactly
	// that one into force.
	labels[tools.AcceptDriftLabel] = strings.TrimPrefix(held.Candidate, "sha256:")[:12]
	res.Metadata.Labels = labels
	applied, err := e.res.Apply(r.Context(), []config.Resource{res})
	if errors.Is(err, registry.ErrConflict) {
		return problem.New(http.StatusConflict, problem.Conflict, "ToolSource/"+name+" changed meanwhile; look at the drift again")
	}
	if err != nil {
		return err
	}
	return problem.WriteJSON(w, http.StatusOK, applied[0])
}
