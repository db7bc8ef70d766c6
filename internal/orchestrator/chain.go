package orchestrator

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/problem"
)

// CheckChain decides whether an agent whose task has chain (the agents
// from the root task down to the caller, the caller last) may call callee.
// A callee already in the chain is a cycle, refused with agent_cycle
// naming the chain and the callee ("impact → negotiator → impact"); a call
// that would make the chain longer than maxDepth agents, callee included
// (0 is the default, 5: a root task's agent and four below it), is
// refused with agent_depth. Both are 409: the call conflicts with the work
// already under way, and another callee may be fine.
//
// The orchestrator checks every delegate and handoff with it, the task API
// every task an external agent starts from its task, and the A2A edge
// every message (with chain, the agents above the recipient).
func CheckChain(chain []string, callee string, maxDepth int) error {
	if maxDepth <= 0 {
		maxDepth = config.DefaultMaxDepth
	}
	if slices.Contains(chain, callee) {
		return problem.New(http.StatusConflict, problem.AgentCycle,
			fmt.Sprintf("agent %s is already in the chain of calls: %s; choose another agent or answer yourself", callee, FormatChain(append(slices.Clone(chain), callee))))
	}
	if len(chain) >= maxDepth {
		return problem.New(http.StatusConflict, problem.AgentDepth,
			fmt.Sprintf("the chain of calls %s would be %d agents deep, over the limit of %d (limits.maxDepth)", FormatChain(append(slices.Clone(chain), callee)), len(chain)+1, maxDepth))
	}
	return nil
}

// chainArrow joins the agents of a chain in messages.
const chainArrow = " → "

// FormatChain writes a chain as people read it: "impact → negotiator".
func FormatChain(chain []string) string { return strings.Join(chain, chainArrow) }

// ParseChain reads a chain written by FormatChain (or with "->", or
// commas), checking that each element is an agent name; an empty string
// is the empty chain.
func ParseChain(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	s = strings.NewReplacer(chainArrow, ",", "→", ",", "->", ",").Replace(s)
	parts := strings.Split(s, ",")
	if len(parts) > maxChain {
		return nil, fmt.Errorf("a chain of %d agents is longer than %d", len(parts), maxChain)
	}
	out := make([]string, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if !config.ValidName(p) {
			return nil, fmt.Errorf("element %d of the chain, %q, is not an agent name", i, truncateText(p, 64))
		}
		out = append(out, p)
	}
	return out, nil
}

// maxChain bounds a chain anyone hands corral to read.
const maxChain = 100

// chainOf is the chain of t's callees: the agents above it and its own.
func chainOf(t *Task) []string {
	return append(slices.Clone(t.Chain), t.Agent)
}
