// Package api serves corral's control-plane HTTP API: resources under
// /v1/resources and /v1/apply, agent keys, kill switches and the audit
// (admin only), and the resources' JSON Schemas under /v1/schemas (open, for
// editors).
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/registry"
)

// maxBody caps request bodies; resource files are small.
const maxBody = 4 << 20

// Store is what the API needs from the registry.
type Store interface {
	Get(kind, name string) (config.Resource, bool)
	List(kind string) []config.Resource
	Apply(ctx context.Context, resources []config.Resource) ([]registry.Applied, error)
	Delete(ctx context.Context, kind, name string) error
}

// Credentials checks admin tokens and manages agent keys.
type Credentials interface {
	VerifyAdmin(token string) bool
	CreateKey(ctx context.Context, agent, agentUID string) (string, identity.Key, error)
	Keys(agent string) []identity.Key
	RevokeKey(ctx context.Context, id string) (identity.Key, error)
	RevokeAgent(ctx context.Context, agent string) ([]identity.Key, error)
}

// API holds the handlers' dependencies.
type API struct {
	store  Store
	creds  Credentials
	logger *slog.Logger

	kills Killer      // nil until WithOps
	audit AuditReader // nil until WithOps

	policies    Policies            // nil until WithSecurity
	inForceBy   map[string]Reloader // by kind: what takes a change in (WithInForce)
	signingKeys SigningKeys         // nil until WithSecurity

	traces TraceReader // nil until WithTraces

	budgets BudgetReader // nil until WithBudgets
	limits  LimitReader  // nil until WithLimits

	tasks     Tasks     // nil until WithTasks
	agentAuth AgentAuth // with tasks

	adminTokens AdminTokens // nil until WithAdminTokens

	approvals Approvals // nil until WithApprovals
	humans    Humans
	users     Users
	// adminGroups are the groups whose people administer corral with
	// their own credential (WithAdminGroups).
	adminGroups []string

	dlq      DeadLetters   // nil until WithDeadLetters
	triggers TriggerReader // nil until WithTriggers
}

// New returns the API over store, letting in callers with an admin token.
func New(logger *slog.Logger, store Store, creds Credentials) *API {
	return &API{store: store, creds: creds, logger: logger}
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	admin := func(h problem.HandlerFunc) http.Handler { return problem.Handle(a.logger, a.requireAdmin(h)) }
	open := func(h problem.HandlerFunc) http.Handler { return problem.Handle(a.logger, h) }

	mux.Handle("GET /v1/resources/{kind}", admin(a.list))
	mux.Handle("GET /v1/resources/{kind}/{name}", admin(a.get))
	mux.Handle("PUT /v1/resources/{kind}/{name}", admin(a.put))
	mux.Handle("DELETE /v1/resources/{kind}/{name}", admin(a.delete))
	mux.Handle("POST /v1/apply", admin(a.apply))
	mux.Handle("POST /v1/keys", admin(a.createKey))
	mux.Handle("GET /v1/keys", admin(a.listKeys))
	mux.Handle("DELETE /v1/keys/{id}", admin(a.revokeKey))
	mux.Handle("GET /v1/schemas", open(a.schemas))
	mux.Handle("GET /v1/schemas/{kind}", open(a.schema))
	a.registerOps(mux, admin, open)
	a.registerSecurity(mux, admin, open)
	a.registerTraces(mux, admin, open)
	a.registerBudgets(mux, admin, open)
	a.registerLimits(mux, admin, open)
	a.registerTasks(mux, open)
	a.registerAdminTokens(mux, admin, open)
	a.registerApprovals(mux, admin, open)
	a.registerDeadLetters(mux, admin, open)
	a.registerTriggers(mux, admin, open)
	for path, allowed := range map[string][]string{
		"/v1/resources/{kind}":        {"GET"},
		"/v1/resources/{kind}/{name}": {"GET", "PUT", "DELETE"},
		"/v1/apply":                   {"POST"},
		"/v1/keys":                    {"GET", "POST"},
		"/v1/keys/{id}":               {"DELETE"},
		"/v1/schemas":                 {"GET"},
		"/v1/schemas/{kind}":          {"GET"},
	} {
		mux.Handle(path, open(problem.NotAllowed(allowed...)))
	}
}

func (a *API) requireAdmin(next problem.HandlerFunc) problem.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		token := identity.BearerToken(r)
		if token == "" {
			return problem.New(http.StatusUnauthorized, problem.Unauthenticated, "send the admin token as Authorization: Bearer <token>")
		}
		if !a.creds.VerifyAdmin(token) && !a.adminPerson(r, token) {
			return problem.New(http.StatusUnauthorized, problem.Unauthenticated, "the token is not a valid admin token")
		}
		return next(w, r)
	}
}

// WithAdminGroups lets people in these groups (corral humans, users of a
// trusted Issuer, with WithApprovals's Humans and Users) administer corral
// with their own credential, as the admin token does. It returns a.
func (a *API) WithAdminGroups(groups []string) *API {
	a.adminGroups = groups
	return a
}

// adminPerson reports whether token is a person's credential (a corral
// human's key, or a trusted Issuer's token for a user) in an admin group.
func (a *API) adminPerson(r *http.Request, token string) bool {
	if len(a.adminGroups) == 0 {
		return false
	}
	var groups []string
	switch {
	case identity.IsHumanKey(token) && a.humans != nil:
		h, ok := a.humans.VerifyHuman(token)
		if !ok {
			return false
		}
		groups = h.Groups
	case a.users != nil && strings.Count(token, ".") == 2:
		u, err := a.users.Verify(r.Context(), token)
		if err != nil {
			return false
		}
		groups = u.Groups
	default:
		return false
	}
	for _, g := range groups {
		if slices.Contains(a.adminGroups, g) {
			return true
		}
	}
	return false
}

// adminTokenNamer describes an admin token (identity.Store); credentials
// that cannot are named "admin".
type adminTokenNamer interface {
	AdminTokenOf(token string) (identity.AdminToken, bool)
}

// adminName says who an admin request comes from, for what the API keeps
// and audits (kill switches): "admin-token:ID (NAME)" for an admin token,
// "human:NAME" or "user:ISSUER#SUBJECT" for a person in an admin group,
// "admin" for a credential it cannot name (the console's own, whose
// people it names in the reason instead).
func (a *API) adminName(r *http.Request) string {
	token := identity.BearerToken(r)
	if a.creds.VerifyAdmin(token) {
		if n, ok := a.creds.(adminTokenNamer); ok {
			if t, ok := n.AdminTokenOf(token); ok {
				if t.Name != "" {
					return "admin-token:" + t.ID + " (" + t.Name + ")"
				}
				return "admin-token:" + t.ID
			}
		}
		return "admin"
	}
	switch {
	case identity.IsHumanKey(token) && a.humans != nil:
		if h, ok := a.humans.VerifyHuman(token); ok {
			return "human:" + h.Name
		}
	case a.users != nil && strings.Count(token, ".") == 2:
		if u, err := a.users.Verify(r.Context(), token); err == nil {
			return "user:" + u.Issuer + "#" + u.Subject
		}
	}
	return "admin"
}

// kind resolves the {kind} path segment: "Agent", "agent" or "agents".
func kind(r *http.Request) (*config.Kind, error) {
	k, err := config.LookupKind(r.PathValue("kind"))
	if err != nil {
		return nil, problem.New(http.StatusNotFound, problem.UnknownKind, err.Error())
	}
	return k, nil
}

// List is the response of GET /v1/resources/{kind}.
type List struct {
	Kind  string            `json:"kind"`
	Items []config.Resource `json:"items"`
}

func (a *API) list(w http.ResponseWriter, r *http.Request) error {
	k, err := kind(r)
	if err != nil {
		return err
	}
	items := a.store.List(k.Name)
	if items == nil {
		items = []config.Resource{}
	}
	return problem.WriteJSON(w, http.StatusOK, List{Kind: k.Name, Items: items})
}

func (a *API) get(w http.ResponseWriter, r *http.Request) error {
	k, err := kind(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	res, ok := a.store.Get(k.Name, name)
	if !ok {
		return notFound(k, name)
	}
	return problem.WriteJSON(w, http.StatusOK, res)
}

// put stores one resource, sent as JSON or YAML. Its kind and name must match the path.
func (a *API) put(w http.ResponseWriter, r *http.Request) error {
	k, err := kind(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	docs, err := decodeOne(body)
	var fieldErrs config.Errors
	switch {
	case errors.As(err, &fieldErrs):
		return invalid(fieldErrs)
	case err != nil:
		return err
	case len(docs) != 1:
		return problem.New(http.StatusUnprocessableEntity, problem.InvalidResource, fmt.Sprintf("the body must hold exactly one resource, found %d", len(docs)))
	}
	res := docs[0].Resource
	var mismatch config.Errors
	if res.Kind != k.Name {
		mismatch = append(mismatch, config.FieldError{Resource: res.ID(), Field: "kind", Message: fmt.Sprintf("must be %s, as in the path", k.Name)})
	}
	if res.Metadata.Name != name {
		mismatch = append(mismatch, config.FieldError{Resource: res.ID(), Field: "metadata.name", Message: fmt.Sprintf("must be %q, as in the path", name)})
	}
	if len(mismatch) > 0 {
		return invalid(mismatch)
	}
	applied, err := a.store.Apply(r.Context(), []config.Resource{res})
	if err != nil {
		return storeError(err)
	}
	status := http.StatusOK
	if applied[0].Result == registry.Created {
		status = http.StatusCreated
	}
	return problem.WriteJSON(w, status, applied[0])
}

// decodeOne decodes PUT's body: JSON as /v1/apply reads it (1e999999 is a
// number out of range, refused, where YAML would read it as a string), and
// anything else as a YAML stream.
func decodeOne(body []byte) ([]config.Document, error) {
	if t := bytes.TrimSpace(body); len(t) == 0 || t[0] != '{' {
		return config.Decode("", body)
	}
	res, problems := config.DecodeJSON(body)
	if len(problems) > 0 {
		return nil, config.Errors(problems)
	}
	return []config.Document{{Index: 1, Resource: res}}, nil
}

func (a *API) delete(w http.ResponseWriter, r *http.Request) error {
	k, err := kind(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if !config.ValidName(name) {
		return notFound(k, name) // and never a key the substrate would refuse
	}
	if k.Name == "Policy" && a.policies != nil {
		if err := a.policies.CheckDelete(name); err != nil {
			return problem.Wrap(http.StatusConflict, problem.Conflict, "Policy/"+name+" cannot be deleted: the other policies would not compile without it: "+err.Error(), err)
		}
	}
	if err := a.store.Delete(r.Context(), k.Name, name); err != nil {
		return storeError(err)
	}
	a.inForce(r.Context(), k.Name)
	if k.Name == "Agent" {
		// Its keys are refused already (they name the deleted agent's
		// uid); revoking them keeps them out of `corral keys` too.
		if revoked, err := a.creds.RevokeAgent(r.Context(), name); err != nil {
			a.logger.WarnContext(r.Context(), "revoking a deleted agent's keys; they stay listed but are refused", "agent", name, "err", err)
		} else if len(revoked) > 0 {
			a.logger.InfoContext(r.Context(), "revoked a deleted agent's keys", "agent", name, "keys", len(revoked))
		}
	}
	return problem.WriteJSON(w, http.StatusOK, map[string]string{"kind": k.Name, "name": name, "result": "deleted"})
}

// ApplyRequest is the body of POST /v1/apply.
type ApplyRequest struct {
	Resources []json.RawMessage `json:"resources"`
}

// ApplyResponse is the answer of POST /v1/apply, one result per resource in
// request order.
type ApplyResponse struct {
	Results []registry.Applied `json:"results"`
}

// apply validates every resource and stores them only if all are valid. A
// problem's "document" is the resource's position in the request, from 1.
func (a *API) apply(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req ApplyRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, `the body must be JSON: {"resources": [...]}: `+err.Error(), err)
	}
	if len(req.Resources) == 0 || len(req.Resources) > registry.MaxApply {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("resources: must hold 1 to %d resources, got %d", registry.MaxApply, len(req.Resources)))
	}
	var (
		docs []config.Document
		errs config.Errors
	)
	for i, raw := range req.Resources {
		res, problems := config.DecodeJSON(raw)
		for _, p := range problems {
			p.Document = i + 1
			errs = append(errs, p)
		}
		if len(problems) == 0 {
			docs = append(docs, config.Document{Index: i + 1, Resource: res})
		}
	}
	errs = append(errs, config.Duplicates(docs)...)
	if len(errs) > 0 {
		return invalid(errs)
	}
	resources := make([]config.Resource, len(docs))
	for i, d := range docs {
		resources[i] = d.Resource
	}
	applied, err := a.store.Apply(r.Context(), resources)
	var inv *registry.InvalidError
	if errors.As(err, &inv) && inv.Index >= 0 && inv.Index < len(docs) {
		// Refused while being prepared (a Secret sealed with another key):
		// name its place in the request.
		return invalid(config.Errors{{Document: docs[inv.Index].Index, Resource: inv.Resource, Message: inv.Err.Error()}})
	}
	if err != nil {
		return storeError(err)
	}
	changed := map[string]bool{}
	for _, ap := range applied {
		if ap.Result != registry.Unchanged && !changed[ap.Resource.Kind] {
			changed[ap.Resource.Kind] = true
			a.inForce(r.Context(), ap.Resource.Kind)
		}
	}
	return problem.WriteJSON(w, http.StatusOK, ApplyResponse{Results: applied})
}

// Reloader takes in the resources of one kind that this replica holds now
// (policy.Store, budget.Budgets, ratelimit.Limits).
type Reloader interface {
	Reload(ctx context.Context) error
}

// WithInForce makes an apply or delete that changes a resource of kind
// answer once r has taken it in. It returns a, for chaining after New.
func (a *API) WithInForce(kind string, r Reloader) *API {
	if a.inForceBy == nil {
		a.inForceBy = map[string]Reloader{}
	}
	a.inForceBy[kind] = r
	return a
}

// inForce takes in a change of kind before the answer: the caller's next
// call to this replica is decided, counted and limited by what it just
// stored. The registry's mirror has the write at once, but the policy, the
// budgets and the rate limits follow it in the background, so a call sent
// right after an apply was decided by what was there before (a transfer a
// new policy refuses reached the bank; a new budget counted nothing). Other
// replicas follow their watch, within about a second.
func (a *API) inForce(ctx context.Context, kind string) {
	r := a.inForceBy[kind]
	if r == nil {
		return
	}
	if err := r.Reload(ctx); err != nil {
		// Checked before it was stored, so this is not expected; the
		// watch tries again and logs it.
		a.logger.ErrorContext(ctx, "taking in what was just stored", "kind", kind, "err", err)
	}
}

// SchemaInfo lists one kind in GET /v1/schemas.
type SchemaInfo struct {
	Kind    string `json:"kind"`
	Plural  string `json:"plural"`
	Summary string `json:"summary"`
	URL     string `json:"url"`
}

func (a *API) schemas(w http.ResponseWriter, _ *http.Request) error {
	var out []SchemaInfo
	for _, k := range config.Kinds() {
		out = append(out, SchemaInfo{Kind: k.Name, Plural: k.Plural, Summary: k.Summary, URL: "/v1/schemas/" + k.Name})
	}
	return problem.WriteJSON(w, http.StatusOK, map[string]any{"kinds": out})
}

func (a *API) schema(w http.ResponseWriter, r *http.Request) error {
	k, err := kind(r)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/schema+json")
	_, err = w.Write(k.Schema())
	return err
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, problem.New(http.StatusRequestEntityTooLarge, problem.RequestTooLarge, fmt.Sprintf("the body exceeds %d bytes", maxBody))
	}
	if err != nil {
		return nil, problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "could not read the body", err)
	}
	return body, nil
}

// maxProblems caps the problems listed in one answer.
const maxProblems = 100

func invalid(errs config.Errors) error {
	detail := fmt.Sprintf("%d problem(s) in the resources; nothing was stored", len(errs))
	if len(errs) == 1 {
		detail = errs[0].Error() + "; nothing was stored"
	}
	return &problem.Error{Status: http.StatusUnprocessableEntity, Code: problem.InvalidResource, Detail: detail, Errors: errs.Truncate(maxProblems)}
}

func notFound(k *config.Kind, name string) error {
	return problem.New(http.StatusNotFound, problem.ResourceNotFound, fmt.Sprintf("%s/%s %s", k.Name, name, registry.ErrNotFound))
}

func storeError(err error) error {
	var inv *registry.InvalidError
	switch {
	case errors.As(err, &inv):
		return invalid(config.Errors{{Resource: inv.Resource, Message: inv.Err.Error()}})
	case errors.Is(err, registry.ErrNotFound):
		return problem.Wrap(http.StatusNotFound, problem.ResourceNotFound, err.Error(), err)
	case errors.Is(err, registry.ErrConflict):
		return problem.Wrap(http.StatusConflict, problem.Conflict, err.Error()+"; read it again and retry", err)
	case bus.Unavailable(err):
		return &problem.Error{Status: http.StatusServiceUnavailable, Code: problem.SubstrateUnavailable, RetryAfter: time.Second,
			Detail: "the substrate (NATS JetStream) did not answer in time, as during a leader election; retry", Err: err}
	}
	return err
}
