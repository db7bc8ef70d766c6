package oauth

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
)

// authenticate checks that the client is an agent that exists, that the
// secret is a live key of that very agent (of this incarnation of it, not
// of an agent deleted earlier under the same name), and that the agent is
// not stopped. It returns the agent's spec and the key, and records the
// agent in rec once a key proves who is asking.
func (h *Handler) authenticate(c credentials, rec *audit.Record) (*config.AgentSpec, identity.Key, *failure) {
	switch {
	case c.id == "" && c.secret == "":
		return nil, identity.Key{}, invalidClient("the client is not authenticated: send client_id and client_secret, with HTTP Basic or in the body")
	case c.id == "":
		return nil, identity.Key{}, invalidClient("client_id is missing")
	case c.secret == "":
		return nil, identity.Key{}, invalidClient("client_secret is missing")
	case !config.ValidName(c.id):
		return nil, identity.Key{}, invalidClient("client_id is not an agent name")
	}
	key, ok := h.deps.Keys.VerifyKey(c.secret)
	if !ok {
		return nil, identity.Key{}, invalidClient("client_secret is not a live agent key")
	}
	rec.Agent = key.Agent
	if key.Agent != c.id {
		return nil, identity.Key{}, mismatch("the client secret", "key "+key.ID, key.Agent, c.id)
	}
	spec, fail := h.agent(c.id, key.AgentUID)
	if fail == nil && spec.KeysDisabled() {
		fail = refuseClient("client_secret", identity.ReasonKeysDisabled, "agent %s accepts no API keys (keys: disabled); it authenticates with its workload identity or certificate", c.id)
	}
	return spec, key, fail
}

// agent returns the spec of an agent that exists, is the incarnation uid
// names, and may get tokens.
func (h *Handler) agent(name, uid string) (*config.AgentSpec, *failure) {
	res, ok := h.deps.Resources.Get("Agent", name)
	if !ok {
		f := invalidClient("agent %q does not exist", name)
		f.Reason, f.Detail = identity.ReasonUnknownAgent, fmt.Sprintf("the key's agent %q has no Agent resource", name)
		return nil, f
	}
	if res.Metadata.UID != uid {
		f := invalidClient("the credential was issued to an earlier agent %q, since deleted", name)
		f.Reason, f.Detail = identity.ReasonUnknownAgent, fmt.Sprintf("the key's agent %q was deleted and created again", name)
		return nil, f
	}
	if sw, on := h.deps.Kill.Killed(name); on {
		desc := fmt.Sprintf("agent %s is stopped by a kill switch", name)
		if sw.All {
			desc = "every agent is stopped by the global kill switch"
		}
		if sw.Reason != "" {
			desc += ": " + sw.Reason
		}
		return nil, failf(http.StatusBadRequest, CodeUnauthorizedClient, "%s", desc)
	}
	var spec config.AgentSpec
	if err := json.Unmarshal(res.Spec, &spec); err != nil {
		return nil, internal("the agent's resource could not be read", fmt.Errorf("oauth: decode Agent/%s: %w", name, err))
	}
	return &spec, nil
}
