package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/approval"
	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/problem"
)

// Approvals is the approval store (approval.Store).
type Approvals interface {
	Get(id string) (approval.Approval, bool)
	List(f approval.Filter) ([]approval.Approval, bool)
	Decide(ctx context.Context, id string, p approval.Person, v approval.Verdict, comment, via string) (approval.Approval, error)
	Subscribe(buffer int) (<-chan approval.Approval, func())
}

// Humans manages corral's humans (identity.Store).
type Humans interface {
	CreateHuman(ctx context.Context, h identity.Human) (string, identity.Human, error)
	VerifyHuman(secret string) (identity.Human, bool)
	Humans() []identity.Human
	RevokeHuman(ctx context.Context, name string) (identity.Human, error)
}

// Users verifies the tokens of a trusted Issuer's users (identity.Issuers).
type Users interface {
	Verify(ctx context.Context, token string) (*identity.External, error)
}

// WithApprovals gives the API the approvals, the humans and the trusted
// issuers' users (nil: none), whose routes Register then adds.
func (a *API) WithApprovals(ap Approvals, humans Humans, users Users) *API {
	a.approvals, a.humans, a.users = ap, humans, users
	return a
}

// Approval list limits, and the longest comment a decision keeps.
const (
	defaultApprovalLimit = 50
	maxApprovalLimit     = 1000
	MaxComment           = 1000
	maxDecisionBody      = 16 << 10
)

// ApprovalList is the answer of GET /v1/approvals: a page, newest first.
type ApprovalList struct {
	Items []approval.Approval `json:"items"`
	Next  string              `json:"next,omitempty"`
}

// DecisionRequest is the optional body of POST /v1/approvals/{id}/approve|deny.
type DecisionRequest struct {
	Comment string `json:"comment,omitempty"`
}

// HumanRequest is the body of POST /v1/humans.
type HumanRequest struct {
	Name      string   `json:"name"`
	Groups    []string `json:"groups,omitempty"`
	SlackUser string   `json:"slack_user,omitempty"`
}

// HumanCreated is its answer: the credential, shown once.
type HumanCreated struct {
	Key string `json:"key"`
	identity.Human
}

func (a *API) registerApprovals(mux *http.ServeMux, admin, open func(problem.HandlerFunc) http.Handler) {
	if a.approvals == nil {
		return
	}
	mux.Handle("GET /v1/approvals", open(a.listApprovals))
	mux.Handle("GET /v1/approvals/events", open(a.approvalEvents))
	mux.Handle("GET /v1/approvals/{id}", open(a.getApproval))
	mux.Handle("POST /v1/approvals/{id}/approve", open(a.decide(approval.Approve)))
	mux.Handle("POST /v1/approvals/{id}/deny", open(a.decide(approval.Deny)))
	mux.Handle("POST /v1/humans", admin(a.createHuman))
	mux.Handle("GET /v1/humans", admin(a.listHumans))
	mux.Handle("DELETE /v1/humans/{name}", admin(a.revokeHuman))
	for path, allowed := range map[string][]string{
		"/v1/approvals":              {"GET"},
		"/v1/approvals/{id}":         {"GET"},
		"/v1/approvals/{id}/approve": {"POST"},
		"/v1/approvals/{id}/deny":    {"POST"},
		"/v1/humans":                 {"GET", "POST"},
		"/v1/humans/{name}":          {"DELETE"},
	} {
		mux.Handle(path, open(problem.NotAllowed(allowed...)))
	}
}

// reader is who reads approvals: the admin and people see all of them, an
// agent its own.
type reader struct {
	person *approval.Person
	agent  string // set for an agent
}

// whom authenticates the caller of the approvals API.
func (a *API) whom(r *http.Request) (reader, error) {
	token := identity.BearerToken(r)
	switch {
	case token == "":
		return reader{}, problem.New(http.StatusUnauthorized, problem.Unauthenticated, "send a human's key, an identity provider's token, the admin token or an agent's credential as Authorization: Bearer <credential>")
	case a.creds.VerifyAdmin(token):
		return reader{}, nil
	case identity.IsHumanKey(token):
		h, ok := a.humans.VerifyHuman(token)
		if !ok {
			return reader{}, problem.New(http.StatusUnauthorized, problem.Unauthenticated, "the human's key is not valid: unknown or revoked")
		}
		p := approval.Human(h.Name, h.Groups)
		return reader{person: &p}, nil
	}
	if a.agentAuth != nil {
		if c, err := a.agentAuth.Authenticate(token); err == nil {
			return reader{agent: c.Agent}, nil
		} else if identity.IsAgentKey(token) {
			return reader{}, err
		}
	}
	if a.users != nil && strings.Count(token, ".") == 2 {
		u, err := a.users.Verify(r.Context(), token)
		if err == nil {
			p := approval.User(u.Issuer, u.Subject, u.Groups)
			return reader{person: &p}, nil
		}
		var te *identity.TokenError
		if errors.As(err, &te) {
			return reader{}, problem.New(http.StatusUnauthorized, problem.Unauthenticated, string(te.Reason)+": "+te.Detail)
		}
	}
	return reader{}, problem.New(http.StatusUnauthorized, problem.Unauthenticated, "the credential is not valid here")
}

func (a *API) listApprovals(w http.ResponseWriter, r *http.Request) error {
	rd, err := a.whom(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := approval.Filter{State: approval.State(q.Get("state")), Agent: q.Get("agent"), After: q.Get("after"), Limit: defaultApprovalLimit}
	if f.State != "" && !f.State.Valid() {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "state: want pending, approved, denied, expired, executed or canceled")
	}
	if f.After != "" && !approval.ValidID(f.After) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "after: an approval id from the previous page")
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxApprovalLimit {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("limit: a whole number from 1 to %d", maxApprovalLimit))
		}
		f.Limit = n
	}
	if rd.agent != "" {
		if f.Agent != "" && f.Agent != rd.agent {
			return problem.WriteJSON(w, http.StatusOK, ApprovalList{Items: []approval.Approval{}})
		}
		f.Agent = rd.agent
	}
	items, more := a.approvals.List(f)
	out := ApprovalList{Items: items}
	if out.Items == nil {
		out.Items = []approval.Approval{}
	}
	if more {
		out.Next = items[len(items)-1].ID
	}
	return problem.WriteJSON(w, http.StatusOK, out)
}

// approval reads {id} as rd may see it; one that is not an agent's own is
// answered as missing.
func (a *API) approval(r *http.Request, rd reader) (approval.Approval, error) {
	id := r.PathValue("id")
	ap, ok := approval.Approval{}, false
	if approval.ValidID(id) {
		ap, ok = a.approvals.Get(id)
	}
	if !ok || (rd.agent != "" && ap.Action.Agent != rd.agent) {
		return approval.Approval{}, problem.New(http.StatusNotFound, problem.ApprovalNotFound, fmt.Sprintf("no approval %.64q", id))
	}
	return ap, nil
}

func (a *API) getApproval(w http.ResponseWriter, r *http.Request) error {
	rd, err := a.whom(r)
	if err != nil {
		return err
	}
	ap, err := a.approval(r, rd)
	if err != nil {
		return err
	}
	return problem.WriteJSON(w, http.StatusOK, ap)
}

func (a *API) decide(v approval.Verdict) problem.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		rd, err := a.whom(r)
		if err != nil {
			return err
		}
		if rd.person == nil {
			return problem.New(http.StatusForbidden, problem.ApprovalForbidden, "approvals are decided by people: a corral human's key (corral humans create) or an identity provider's token; the admin token and agents cannot decide")
		}
		var req DecisionRequest
		body, err := readLimited(w, r, maxDecisionBody)
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(body)) > 0 {
			d := json.NewDecoder(bytes.NewReader(body))
			d.DisallowUnknownFields()
			if err := d.Decode(&req); err != nil {
				return problem.New(http.StatusBadRequest, problem.InvalidRequest, "the body must be {\"comment\": \"...\"} or empty")
			}
		}
		if len(req.Comment) > MaxComment {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("comment: at most %d bytes", MaxComment))
		}
		if _, err := a.approval(r, rd); err != nil {
			return err
		}
		ap, err := a.approvals.Decide(r.Context(), r.PathValue("id"), *rd.person, v, req.Comment, "api")
		if err != nil {
			return DecisionProblem(err)
		}
		return problem.WriteJSON(w, http.StatusOK, ap)
	}
}

// DecisionProblem is the answer to a decision the store refused.
func DecisionProblem(err error) error {
	switch {
	case errors.Is(err, approval.ErrNotFound):
		return problem.Wrap(http.StatusNotFound, problem.ApprovalNotFound, "no such approval", err)
	case errors.Is(err, approval.ErrExpired):
		return problem.Wrap(http.StatusConflict, problem.ApprovalExpired, "the approval expired; it can no longer be decided", err)
	case errors.Is(err, approval.ErrClosed):
		return problem.Wrap(http.StatusConflict, problem.ApprovalClosed, "the approval is no longer pending: "+lastPart(err), err)
	case errors.Is(err, approval.ErrOwnAction):
		return problem.Wrap(http.StatusForbidden, problem.ApprovalForbidden, "four eyes: the person on whose behalf the action runs cannot approve it", err)
	case errors.Is(err, approval.ErrAlreadyDecided):
		return problem.Wrap(http.StatusConflict, problem.ApprovalClosed, "you have decided this approval already; a quorum needs other people", err)
	case errors.Is(err, approval.ErrNotApprover):
		return problem.Wrap(http.StatusForbidden, problem.ApprovalForbidden, "you are not among this approval's approvers: "+lastPart(err), err)
	case bus.Unavailable(err):
		return &problem.Error{Status: http.StatusServiceUnavailable, Code: problem.SubstrateUnavailable, RetryAfter: time.Second,
			Detail: "the substrate (NATS JetStream) did not answer in time; retry", Err: err}
	}
	return err
}

func lastPart(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}

// readLimited reads a body of at most limit bytes.
func readLimited(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, problem.New(http.StatusRequestEntityTooLarge, problem.RequestTooLarge, fmt.Sprintf("the body exceeds %d bytes", limit))
	}
	if err != nil {
		return nil, problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "could not read the body", err)
	}
	return buf.Bytes(), nil
}

// approvalEvents streams approvals as they are created and decided:
// first the pending ones, then every change, as "event: approval".
func (a *API) approvalEvents(w http.ResponseWriter, r *http.Request) error {
	rd, err := a.whom(r)
	if err != nil {
		return err
	}
	ch, stop := a.approvals.Subscribe(256)
	defer stop()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(ap approval.Approval) bool {
		if rd.agent != "" && ap.Action.Agent != rd.agent {
			return true
		}
		data, err := json.Marshal(ap)
		if err != nil {
			return true
		}
		if _, err := fmt.Fprintf(w, "id: %d\nevent: approval\ndata: %s\n\n", ap.Revision, data); err != nil {
			return false
		}
		_ = rc.Flush()
		return true
	}
	pending, _ := a.approvals.List(approval.Filter{State: approval.Pending, Agent: rd.agent, Limit: maxApprovalLimit})
	for _, ap := range pending {
		if !send(ap) {
			return nil
		}
	}
	_ = rc.Flush()
	keep := time.NewTicker(sseKeepAlive)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case ap, ok := <-ch:
			if !ok {
				fmt.Fprintf(w, "event: error\ndata: %s\n\n", mustJSON(map[string]string{"code": problem.Overloaded, "detail": "this stream fell behind; reconnect"}))
				_ = rc.Flush()
				return nil
			}
			if !send(ap) {
				return nil
			}
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			_ = rc.Flush()
		}
	}
}

func (a *API) createHuman(w http.ResponseWriter, r *http.Request) error {
	body, err := readLimited(w, r, maxDecisionBody)
	if err != nil {
		return err
	}
	var req HumanRequest
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "the body must be {\"name\": ..., \"groups\": [...], \"slack_user\": ...}")
	}
	key, h, err := a.humans.CreateHuman(r.Context(), identity.Human{Name: req.Name, Groups: req.Groups, SlackUser: req.SlackUser})
	switch {
	case errors.Is(err, identity.ErrInvalidHuman):
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, strings.TrimPrefix(err.Error(), identity.ErrInvalidHuman.Error()+": "), err)
	case errors.Is(err, identity.ErrHumanExists):
		return problem.Wrap(http.StatusConflict, problem.Conflict, "a human named "+req.Name+" exists; revoke it first to replace the key", err)
	case err != nil:
		return storeError(err)
	}
	return problem.WriteJSON(w, http.StatusCreated, HumanCreated{Key: key, Human: h})
}

func (a *API) listHumans(w http.ResponseWriter, _ *http.Request) error {
	hs := a.humans.Humans()
	if hs == nil {
		hs = []identity.Human{}
	}
	return problem.WriteJSON(w, http.StatusOK, hs)
}

func (a *API) revokeHuman(w http.ResponseWriter, r *http.Request) error {
	h, err := a.humans.RevokeHuman(r.Context(), r.PathValue("name"))
	if errors.Is(err, identity.ErrHumanNotFound) {
		return problem.Wrap(http.StatusNotFound, problem.NotFound, fmt.Sprintf("no human %.64q", r.PathValue("name")), err)
	}
	if err != nil {
		return storeError(err)
	}
	return problem.WriteJSON(w, http.StatusOK, h)
}
