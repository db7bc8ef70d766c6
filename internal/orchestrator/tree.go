package orchestrator

import (
	"context"
	"errors"
	"fmt"

	"github.com/corral-dev/corral/internal/config"
)

// A task tree (a root task and every task opened under it, by delegations
// and handoffs) shares the limits its root's agent sets: maxTreeTurns and
// maxTreeCost (config.AgentLimits). Each task of the tree carries them in
// its Limits; before each model call a task adds up the tree's usage as
// the task records hold it (a running hosted task's own, from its journal)
// and stops at the bound.

// treeLimits gives a new task its tree's limits: its root's, or, for a
// root, its agent's.
func (s *Service) treeLimits(ctx context.Context, t *Task, spec *config.AgentSpec) error {
	if t.Root == "" || t.Root == t.ID {
		if l := spec.Limits; l != nil {
			t.Limits.MaxTreeTurns, t.Limits.MaxTreeCost = l.MaxTreeTurns, l.MaxTreeCost
		}
		return nil
	}
	root, ok := s.store.Get(t.Root)
	if !ok {
		var err error
		if root, _, err = s.store.fetch(ctx, t.Root); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			return s.substrate(err)
		}
	}
	t.Limits.MaxTreeTurns, t.Limits.MaxTreeCost = root.Limits.MaxTreeTurns, root.Limits.MaxTreeCost
	return nil
}

// treeUsage adds up the usage of t's tree, with own as t's.
func (s *Store) treeUsage(t *Task, own Usage) Usage {
	root := rootOf(t)
	sum := own
	s.mu.RLock()
	defer s.mu.RUnlock()
	for id, m := range s.tasks {
		if id == t.ID || rootOf(m.task) != root {
			continue
		}
		sum.Turns += m.task.Usage.Turns
		sum.ModelCalls += m.task.Usage.ModelCalls
		sum.ToolCalls += m.task.Usage.ToolCalls
		sum.InputTokens += m.task.Usage.InputTokens
		sum.OutputTokens += m.task.Usage.OutputTokens
		sum.Cost += m.task.Usage.Cost
	}
	return sum
}

// treeExceeded says whether t's tree is at one of its limits, and how.
func (s *Store) treeExceeded(t *Task, own Usage) (reason, detail string) {
	l := t.Limits
	if l.MaxTreeTurns <= 0 && l.MaxTreeCost <= 0 {
		return "", ""
	}
	u := s.treeUsage(t, own)
	switch {
	case l.MaxTreeTurns > 0 && u.ModelCalls >= l.MaxTreeTurns:
		return ReasonMaxTreeTurns, fmt.Sprintf("the tree of task %s has made %d model calls, its limit (maxTreeTurns)", rootOf(t), u.ModelCalls)
	case l.MaxTreeCost > 0 && u.Cost >= l.MaxTreeCost:
		return ReasonMaxTreeCost, fmt.Sprintf("the tree of task %s has cost %.4f, its limit being %.4f (maxTreeCost)", rootOf(t), u.Cost, l.MaxTreeCost)
	}
	return "", ""
}
