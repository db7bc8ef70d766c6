package a2a

import (
	"encoding/json"
	"fmt"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// ChainKey is the message metadata key of corral's chain extension: the
// agents above the one a message is sent to, outermost first, as a JSON
// array of agent names. corral writes it on every message it sends to a
// remote agent and reads it from every message it receives, so a cycle
// that leaves corral through an A2A agent and comes back is still seen.
const ChainKey = "corral.dev/chain"

// ChainExtension is the extension's URI, declared in every card.
const ChainExtension = "https://corral.dev/a2a/extensions/chain/v1"

// MaxDepth bounds how many agents deep a chain of calls may go: a task
// whose chain holds MaxDepth agents already is refused (agent_depth).
const MaxDepth = 5

// maxChain bounds the chain a message may carry, before any check.
const maxChain = 64

// ParseChain reads the chain from a message's metadata (a JSON object,
// or empty). An absent key is an empty chain; anything but an array of
// agent names is an error naming the field.
func ParseChain(metadata json.RawMessage) ([]string, error) {
	if len(metadata) == 0 || string(metadata) == "null" {
		return nil, nil
	}
	var md map[string]json.RawMessage
	if err := json.Unmarshal(metadata, &md); err != nil {
		return nil, fmt.Errorf("metadata: an object")
	}
	raw, ok := md[ChainKey]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var chain []string
	if err := json.Unmarshal(raw, &chain); err != nil {
		return nil, fmt.Errorf("metadata[%q]: an array of agent names", ChainKey)
	}
	if len(chain) > maxChain {
		return nil, fmt.Errorf("metadata[%q]: %d agents, over the limit of %d", ChainKey, len(chain), maxChain)
	}
	for i, name := range chain {
		if !config.ValidName(name) {
			return nil, fmt.Errorf("metadata[%q][%d]: %q is not an agent name", ChainKey, i, truncate(name, 80))
		}
	}
	return chain, nil
}

// Above is the agents above agent in the chain a message to agent
// carried. corral writes the chain of a message it sends ending with the
// agent it is sent to (the sender's task's chain and agent); that last
// entry is the recipient itself, not a caller above it, so two corrals
// that name an agent alike can call it without seeing a cycle.
func Above(chain []string, agent string) []string {
	if n := len(chain); n > 0 && chain[n-1] == agent {
		return chain[:n-1]
	}
	return chain
}

// CheckChain refuses a task for agent whose chain (the agents above it)
// already holds agent (agent_cycle) or is MaxDepth deep (agent_depth): the
// orchestrator's check, shared by every door that starts agents' tasks.
func CheckChain(chain []string, agent string) error {
	return orchestrator.CheckChain(chain, agent, MaxDepth)
}

// WithChain returns metadata (a JSON object or empty) with the chain set.
func WithChain(metadata json.RawMessage, chain []string) json.RawMessage {
	md := map[string]json.RawMessage{}
	_ = json.Unmarshal(metadata, &md)
	if chain == nil {
		chain = []string{}
	}
	md[ChainKey], _ = json.Marshal(chain)
	b, _ := json.Marshal(md)
	return b
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
