package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/problem"
)

// CreateKeyRequest is the body of POST /v1/keys.
type CreateKeyRequest struct {
	Agent string `json:"agent"`
}

// CreatedKey answers POST /v1/keys: the key itself, shown this once, and
// its description.
type CreatedKey struct {
	Secret  string    `json:"key"`
	ID      string    `json:"id"`
	Agent   string    `json:"agent"`
	Created time.Time `json:"created"`
}

// KeyList answers GET /v1/keys.
type KeyList struct {
	Items []identity.Key `json:"items"`
}

// createKey makes an API key for an existing agent.
func (a *API) createKey(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req CreateKeyRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, `the body must be JSON: {"agent": "NAME"}`, err)
	}
	if req.Agent == "" {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "agent: required")
	}
	res, ok := a.store.Get("Agent", req.Agent)
	if !ok {
		return problem.New(http.StatusNotFound, problem.ResourceNotFound, fmt.Sprintf("Agent/%s does not exist; apply it first", req.Agent))
	}
	secret, key, err := a.creds.CreateKey(r.Context(), req.Agent, res.Metadata.UID)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return problem.WriteJSON(w, http.StatusCreated, CreatedKey{Secret: secret, ID: key.ID, Agent: key.Agent, Created: key.Created})
}

func (a *API) listKeys(w http.ResponseWriter, r *http.Request) error {
	agent := r.URL.Query().Get("agent")
	if agent != "" && !config.ValidName(agent) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("agent: %q is not a valid name", agent))
	}
	items := a.creds.Keys(agent)
	if items == nil {
		items = []identity.Key{}
	}
	return problem.WriteJSON(w, http.StatusOK, KeyList{Items: items})
}

func (a *API) revokeKey(w http.ResponseWriter, r *http.Request) error {
	key, err := a.creds.RevokeKey(r.Context(), r.PathValue("id"))
	if errors.Is(err, identity.ErrKeyNotFound) {
		return problem.New(http.StatusNotFound, problem.KeyNotFound, fmt.Sprintf("no key with id %q", r.PathValue("id")))
	}
	if err != nil {
		return err
	}
	return problem.WriteJSON(w, http.StatusOK, map[string]any{"id": key.ID, "agent": key.Agent, "result": "revoked"})
}
