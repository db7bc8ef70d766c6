package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/policy"
	"github.com/corral-dev/corral/internal/problem"
)

// Policies holds the live policy engine.
type Policies interface {
	Engine() *policy.Engine
	// CheckDelete says whether the other policies compile without this one.
	CheckDelete(name string) error
}

// SigningKeys lists and rotates the keys corral signs tokens with.
type SigningKeys interface {
	Keys() []identity.SigningKey
	Rotate(ctx context.Context) (identity.SigningKey, error)
}

// WithSecurity gives the API the policy and the signing keys, whose routes
// Register then adds. It returns a, for chaining after New.
func (a *API) WithSecurity(p Policies, keys SigningKeys) *API {
	a.policies, a.signingKeys = p, keys
	return a
}

// registerSecurity adds the policy and signing-key routes.
func (a *API) registerSecurity(mux *http.ServeMux, admin, open func(problem.HandlerFunc) http.Handler) {
	allowed := map[string][]string{}
	if a.policies != nil {
		mux.Handle("POST /v1/policy/eval", admin(a.evalPolicy))
		allowed["/v1/policy/eval"] = []string{"POST"}
	}
	if a.signingKeys != nil {
		mux.Handle("GET /v1/signing-keys", admin(a.listSigningKeys))
		mux.Handle("POST /v1/signing-keys/rotate", admin(a.rotateSigningKey))
		allowed["/v1/signing-keys"] = []string{"GET"}
		allowed["/v1/signing-keys/rotate"] = []string{"POST"}
	}
	for path, methods := range allowed {
		mux.Handle(path, open(problem.NotAllowed(methods...)))
	}
}

// evalPolicy answers what the live policy decides for an input document
// (docs/policy.md): the decision, its reasons and the policy's revision.
func (a *API) evalPolicy(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	in, err := policy.DecodeInput(body)
	if err != nil {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "the body is not a policy input document: "+err.Error())
	}
	if in.Time == "" {
		in.Time = time.Now().UTC().Format(time.RFC3339Nano)
	}
	engine := a.policies.Engine()
	d, err := engine.Decide(r.Context(), in)
	if err != nil {
		a.logger.ErrorContext(r.Context(), "policy evaluation failed", "revision", engine.Revision(), "err", err)
		return problem.Wrap(http.StatusUnprocessableEntity, problem.PolicyError, "policy could not decide: "+err.Error(), err)
	}
	return problem.WriteJSON(w, http.StatusOK, d)
}

// SigningKeyList answers GET /v1/signing-keys.
type SigningKeyList struct {
	Items []identity.SigningKey `json:"items"`
}

func (a *API) listSigningKeys(w http.ResponseWriter, _ *http.Request) error {
	return problem.WriteJSON(w, http.StatusOK, SigningKeyList{Items: a.signingKeys.Keys()})
}

func (a *API) rotateSigningKey(w http.ResponseWriter, r *http.Request) error {
	k, err := a.signingKeys.Rotate(r.Context())
	if err != nil {
		return fmt.Errorf("api: rotate signing key: %w", err)
	}
	return problem.WriteJSON(w, http.StatusOK, k)
}
