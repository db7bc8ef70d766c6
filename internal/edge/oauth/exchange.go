package oauth

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/identity"
)

// Limits on what a token exchange may ask for.
const (
	// maxScopeBytes bounds the scope policy grants without a scope
	// parameter: a token must fit in an HTTP header (8 KiB at many proxies).
	maxScopeBytes = 4096
	// maxChain bounds the act nesting of a delegated token: each agent
	// that re-delegates adds a level, and a token must stay header-sized.
	maxChain = 8
)

// subjectTypes are the subject_token_types corral accepts: all are JWTs.
var subjectTypes = []string{TokenTypeJWT, TokenTypeAccessToken, TokenTypeIDToken}

// exchange issues a delegated token (RFC 8693): the user of the subject
// token is its sub, the agent its act.sub, and policy decides its scope.
// The subject token is a user's token from a trusted issuer, or a delegated
// token corral issued to another agent, which the agent passes on.
func (h *Handler) exchange(ctx context.Context, f form, cl client, rec *audit.Record) (*issued, *failure) {
	key := cl.key
	agent := key.Agent
	subject := f.get("subject_token")
	switch st := f.get("subject_token_type"); {
	case subject == "":
		return nil, badRequest("subject_token is missing")
	case st == "":
		return nil, badRequest("subject_token_type is missing")
	case !slices.Contains(subjectTypes, st):
		return nil, badRequest("subject_token_type %q is not supported; use %s", clip(st, 80), strings.Join(subjectTypes, ", "))
	}
	if rt := f.get("requested_token_type"); rt != "" && rt != TokenTypeAccessToken && rt != TokenTypeJWT {
		return nil, badRequest("requested_token_type %q is not supported; corral issues %s", clip(rt, 80), TokenTypeAccessToken)
	}
	audience, fail := h.audiences(f)
	if fail != nil {
		return nil, fail
	}
	requested, fail := parseScope(f.get("scope"))
	if fail != nil {
		return nil, fail
	}
	task, fail := taskParam(f)
	if fail != nil {
		return nil, fail
	}
	if fail := h.actor(ctx, f, cl); fail != nil {
		return nil, fail
	}
	user, prev, fail := h.subject(ctx, subject)
	if fail != nil {
		return nil, fail
	}
	rec.Principal = user.Subject

	allowed, err := h.deps.Delegations.Scopes(ctx, agent, key.AgentUID, user)
	if err != nil {
		return nil, internal("policy could not say what the agent may do for the user", fmt.Errorf("oauth: delegation scopes of %s: %w", agent, err))
	}
	allowed = wellFormed(allowed)
	act := &identity.Actor{Subject: agent}
	if prev != nil {
		// A delegation passed on never widens: the new agent gets at most
		// what the token it was handed allowed.
		allowed = intersect(prev.Scopes(), allowed)
		act = chain(agent, prev.Act)
		if fail := h.chainStopped(prev.Act); fail != nil {
			return nil, fail
		}
		if task == "" {
			task = prev.Task
		}
	}
	if fail := h.checkTask(ctx, task, agent, key.AgentUID); fail != nil {
		return nil, fail
	}
	if depth(act) > maxChain {
		return nil, badRequest("the chain of delegations is longer than %d agents", maxChain)
	}
	if len(allowed) == 0 {
		return nil, invalidScope("policy lets agent %s do nothing for this user", agent)
	}
	scope := allowed
	if n := len(strings.Join(allowed, " ")); n > maxScopeBytes && len(requested) == 0 {
		return nil, invalidScope("what policy lets agent %s do for this user takes %d bytes, too many for a token: ask for the tools this task needs with scope", agent, n)
	}
	if len(requested) > 0 {
		if item, ok := narrow(requested, allowed); !ok {
			return nil, invalidScope("scope item %q is not among what policy lets agent %s do for this user", clip(item, 80), agent)
		}
		scope = requested
	}
	ttl, fail := h.capTTL(user.Expiry)
	if fail != nil {
		return nil, fail
	}
	c := identity.Claims{
		Subject:   user.Subject,
		Audience:  audience,
		ClientID:  agent,
		AgentUID:  key.AgentUID,
		Scope:     strings.Join(scope, " "),
		Act:       act,
		Task:      task,
		Principal: &identity.PrincipalClaims{Issuer: user.Issuer, Groups: user.Groups, Roles: user.Roles},
		Proof:     cl.proof,
	}
	token, err := h.deps.Signer.Mint(c, ttl)
	if err != nil {
		return nil, internal("the token could not be signed", fmt.Errorf("oauth: mint delegated token for %s: %w", agent, err))
	}
	// The signer's clock is not ours: check rather than trust that the
	// token dies with the user's.
	if got, ok := peek(token); !ok || got.Expiry > user.Expiry {
		return nil, internal("the token could not be signed", fmt.Errorf("oauth: minted token expires at %d, after the subject token (%d)", got.Expiry, user.Expiry))
	}
	return &issued{token: token, ttl: ttl, scope: scope, exchanged: true}, nil
}

// subject verifies the subject token. Which verifier to ask is decided by
// its iss, read unverified: the verifier then checks everything, iss
// included. For a corral token it returns the token's claims too.
func (h *Handler) subject(ctx context.Context, token string) (*identity.External, *identity.Claims, *failure) {
	u, ok := peek(token)
	if !ok {
		return nil, nil, refuse("subject_token", identity.ReasonMalformed, "not a compact JWS with JSON claims")
	}
	issuer := h.deps.Signer.Issuer()
	if u.Issuer != issuer {
		if h.deps.Issuers == nil {
			return nil, nil, refuse("subject_token", identity.ReasonWrongIssuer, "no external issuer is trusted")
		}
		user, err := h.deps.Issuers.Verify(ctx, token)
		if err != nil {
			return nil, nil, tokenRefused("subject_token", err)
		}
		if user.Subject == "" {
			return nil, nil, refuse("subject_token", identity.ReasonMissingClaim, "the user's token names no subject")
		}
		return user, nil, nil
	}
	c, err := h.deps.Signer.Verify(token, issuer)
	switch {
	case err != nil:
		return nil, nil, tokenRefused("subject_token", err)
	case !c.Delegated():
		return nil, nil, refuse("subject_token", identity.ReasonMissingClaim, "the token has no act claim: it is an agent's own token, not one acting for a user")
	case c.Principal == nil || c.Subject == "":
		return nil, nil, refuse("subject_token", identity.ReasonMissingClaim, "the delegated token has no principal or sub")
	}
	user := &identity.External{
		Issuer:  c.Principal.Issuer,
		Subject: c.Subject,
		Groups:  c.Principal.Groups,
		Roles:   c.Principal.Roles,
		Expiry:  c.Expiry,
	}
	return user, c, nil
}

// actor checks the optional actor_token: an agent key, a corral token or
// a workload's token, which must be the client's own, issued to the same
// incarnation of it.
func (h *Handler) actor(ctx context.Context, f form, cl client) *failure {
	client := cl.key
	agent := client.Agent
	token, typ := f.get("actor_token"), f.get("actor_token_type")
	switch {
	case token == "" && typ == "":
		return nil
	case token == "":
		return badRequest("actor_token_type is given without actor_token")
	case typ == "":
		return badRequest("actor_token_type is missing")
	case typ != TokenTypeJWT && typ != TokenTypeAccessToken:
		return badRequest("actor_token_type %q is not supported; use %s or %s", clip(typ, 80), TokenTypeJWT, TokenTypeAccessToken)
	}
	if cl.actor {
		return nil // it authenticated the client
	}
	if key, ok := h.deps.Keys.VerifyKey(token); ok {
		if cl.spec.KeysDisabled() {
			return refuse("actor_token", identity.ReasonKeysDisabled, "agent %s accepts no API keys (keys: disabled)", agent)
		}
		if key.Agent != agent {
			return mismatch("actor_token", "key "+key.ID, key.Agent, agent)
		}
		if key.AgentUID != client.AgentUID {
			return refuse("actor_token", identity.ReasonUnknownAgent, "key %s was issued to an earlier agent %q, since deleted", key.ID, agent)
		}
		return nil
	}
	if _, ok := peek(token); !ok {
		return refuse("actor_token", identity.ReasonMalformed, "neither a live agent key nor a JWT")
	}
	if h.workloadToken(token) {
		w, fail := h.federate(ctx, "actor_token", token, agent, &audit.Record{})
		if fail != nil {
			return fail
		}
		if w.key.AgentUID != client.AgentUID {
			return refuse("actor_token", identity.ReasonUnknownAgent, "the workload is agent %q of another incarnation", agent)
		}
		return nil
	}
	c, err := h.deps.Signer.Verify(token, h.deps.Signer.Issuer())
	if err != nil {
		return tokenRefused("actor_token", err)
	}
	if c.Agent() != agent {
		return mismatch("actor_token", "token "+c.ID, c.Agent(), agent)
	}
	if c.AgentUID != client.AgentUID {
		return refuse("actor_token", identity.ReasonUnknownAgent, "token %s was issued to an earlier agent %q, since deleted", c.ID, agent)
	}
	return nil
}

// audiences reads the audience parameter. A delegated token is for corral
// only: a token for a tool source would let the agent call the upstream
// directly, past policy and the audit, and one naming both could be
// replayed by that upstream against corral. Upstreams get their own token
// on every call instead (spec.identity).
func (h *Handler) audiences(f form) (identity.Audience, *failure) {
	if len(f.all("resource")) > 0 {
		return nil, failf(http.StatusBadRequest, CodeInvalidTarget, "resource is not supported")
	}
	issuer := h.deps.Signer.Issuer()
	for _, a := range f.all("audience") {
		if a != issuer {
			return nil, failf(http.StatusBadRequest, CodeInvalidTarget, "audience %q: a delegated token is for corral (%s) only; upstreams get their own token with each call", clip(a, 80), issuer)
		}
	}
	return identity.Audience{issuer}, nil
}

// capTTL is the delegated token's lifetime: the configured one, cut so that
// it ends no later than the user's token, whose expiry is exp.
func (h *Handler) capTTL(exp int64) (time.Duration, *failure) {
	if exp == 0 {
		return 0, refuse("subject_token", identity.ReasonMissingClaim, "the token has no exp")
	}
	// Whole seconds, rounded down: exp claims are whole seconds.
	left := time.Unix(exp, 0).Sub(h.now()).Truncate(time.Second)
	if left < time.Second {
		return 0, refuse("subject_token", identity.ReasonExpired, "the token expires in less than a second")
	}
	return min(h.ttl, left), nil
}

// chain is the act claim of a token agent gets from a delegated token whose
// act was prev (RFC 8693 4.1: the current actor outermost). An agent
// exchanging a token it already acts in gets the same chain back rather
// than appearing twice in a row.
func chain(agent string, prev *identity.Actor) *identity.Actor {
	if prev != nil && prev.Subject == agent {
		return prev
	}
	return &identity.Actor{Subject: agent, Act: prev}
}

// chainStopped refuses a delegation passed on by an agent that has since
// been stopped: stopping an agent stops the work it handed out too.
func (h *Handler) chainStopped(a *identity.Actor) *failure {
	for ; a != nil; a = a.Act {
		if _, on := h.deps.Kill.Killed(a.Subject); on {
			return failf(http.StatusBadRequest, CodeUnauthorizedClient, "agent %s, which passed on the subject token, is stopped by a kill switch", clip(a.Subject, 80))
		}
	}
	return nil
}

// depth counts the actors in an act claim.
func depth(a *identity.Actor) int {
	n := 0
	for ; a != nil; a = a.Act {
		n++
	}
	return n
}
