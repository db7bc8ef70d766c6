package oauth

import (
	"context"
	"fmt"
	"strings"

	"github.com/corral-dev/corral/internal/identity"
)

// clientCredentials issues an agent its own access token: sub and
// client_id are the agent, aud is corral, scope is the agent's tools and
// models, or the part of them the client asked for.
func (h *Handler) clientCredentials(ctx context.Context, f form, cl client) (*issued, *failure) {
	key := cl.key
	agent := key.Agent
	scope := agentScope(cl.spec)
	requested, fail := parseScope(f.get("scope"))
	if fail != nil {
		return nil, fail
	}
	if len(requested) > 0 {
		if item, ok := narrow(requested, scope); !ok {
			return nil, invalidScope("scope item %q is not among agent %s's tools and models", clip(item, 80), agent)
		}
		scope = requested
	}
	task, fail := taskParam(f)
	if fail != nil {
		return nil, fail
	}
	if fail := h.checkTask(ctx, task, agent, key.AgentUID); fail != nil {
		return nil, fail
	}
	c := identity.Claims{
		Subject:  agent,
		ClientID: agent,
		AgentUID: key.AgentUID,
		Audience: identity.Audience{h.deps.Signer.Issuer()},
		Scope:    strings.Join(scope, " "),
		Task:     task,
		Proof:    cl.proof,
	}
	token, err := h.deps.Signer.Mint(c, h.ttl)
	if err != nil {
		return nil, internal("the token could not be signed", fmt.Errorf("oauth: mint for %s: %w", agent, err))
	}
	return &issued{token: token, ttl: h.ttl, scope: scope}, nil
}
