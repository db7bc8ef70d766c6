package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/problem"
)

// AdminTokens creates, lists and revokes admin tokens.
type AdminTokens interface {
	CreateAdminToken(ctx context.Context, name string, ttl time.Duration) (string, identity.AdminToken, error)
	AdminTokens() []identity.AdminToken
	RevokeAdminToken(ctx context.Context, id string) (identity.AdminToken, error)
}

// Bounds on a created admin token.
const (
	maxAdminTokenName = 64
	maxAdminTokenTTL  = 366 * 24 * time.Hour
)

// WithAdminTokens gives the API the admin tokens, whose routes it then
// serves.
func (a *API) WithAdminTokens(t AdminTokens) *API {
	a.adminTokens = t
	return a
}

func (a *API) registerAdminTokens(mux *http.ServeMux, admin, open func(problem.HandlerFunc) http.Handler) {
	if a.adminTokens == nil {
		return
	}
	mux.Handle("POST /v1/admin-tokens", admin(a.createAdminToken))
	mux.Handle("GET /v1/admin-tokens", admin(a.listAdminTokens))
	mux.Handle("DELETE /v1/admin-tokens/{id}", admin(a.revokeAdminToken))
	mux.Handle("/v1/admin-tokens", open(problem.NotAllowed("GET", "POST")))
	mux.Handle("/v1/admin-tokens/{id}", open(problem.NotAllowed("DELETE")))
}

// CreateAdminTokenRequest is the body of POST /v1/admin-tokens.
type CreateAdminTokenRequest struct {
	// Name says what the token is for: who holds it, which pipeline.
	Name string `json:"name"`
	// TTL is how long it lives, a Go duration ("8h"); "" lives until revoked.
	TTL string `json:"ttl,omitempty"`
}

// CreatedAdminToken answers POST /v1/admin-tokens: the token, shown this
// once, and its description.
type CreatedAdminToken struct {
	Token string `json:"token"`
	identity.AdminToken
}

// AdminTokenList answers GET /v1/admin-tokens.
type AdminTokenList struct {
	Items []identity.AdminToken `json:"items"`
}

func (a *API) createAdminToken(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req CreateAdminTokenRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, `the body must be JSON: {"name": "NAME", "ttl": "24h"}`, err)
	}
	if req.Name == "" || utf8.RuneCountInString(req.Name) > maxAdminTokenName || !utf8.ValidString(req.Name) ||
		!isPrintable(req.Name) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("name: required, printable, at most %d characters", maxAdminTokenName))
	}
	var ttl time.Duration
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl < time.Minute || ttl > maxAdminTokenTTL {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, "ttl: a duration from 1m to 8784h (366 days), such as 8h; leave it out for a token that lives until revoked")
		}
	}
	secret, tok, err := a.adminTokens.CreateAdminToken(r.Context(), req.Name, ttl)
	if err != nil {
		return err
	}
	a.logger.InfoContext(r.Context(), "admin token created", "id", tok.ID, "name", tok.Name, "expires", tok.Expires)
	w.Header().Set("Cache-Control", "no-store")
	return problem.WriteJSON(w, http.StatusCreated, CreatedAdminToken{Token: secret, AdminToken: tok})
}

func isPrintable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func (a *API) listAdminTokens(w http.ResponseWriter, _ *http.Request) error {
	items := a.adminTokens.AdminTokens()
	if items == nil {
		items = []identity.AdminToken{}
	}
	return problem.WriteJSON(w, http.StatusOK, AdminTokenList{Items: items})
}

func (a *API) revokeAdminToken(w http.ResponseWriter, r *http.Request) error {
	tok, err := a.adminTokens.RevokeAdminToken(r.Context(), r.PathValue("id"))
	if errors.Is(err, identity.ErrAdminTokenNotFound) {
		return problem.New(http.StatusNotFound, problem.KeyNotFound, fmt.Sprintf("no admin token with id %q", r.PathValue("id")))
	}
	if err != nil {
		return err
	}
	a.logger.InfoContext(r.Context(), "admin token revoked", "id", tok.ID, "name", tok.Name)
	return problem.WriteJSON(w, http.StatusOK, map[string]any{"id": tok.ID, "name": tok.Name, "result": "revoked"})
}
