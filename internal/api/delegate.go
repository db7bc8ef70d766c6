package api

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/telemetry"
)

// delegate starts a task of another agent for an external agent acting in
// a task of its own (its token is bound to it): a child of that task, with
// its chain, through the pipeline as a call of kind agent (docs/agents.md).
func (a *API) delegate(r *http.Request, ac actor, treq orchestrator.Request, key string) (*orchestrator.Task, bool, error) {
	ctx := r.Context()
	parent, err := a.tasks.Get(ctx, ac.caller.Token.Task)
	if err != nil {
		return nil, false, err
	}
	if !ac.may(parent) {
		return nil, false, problem.New(http.StatusNotFound, problem.TaskNotFound, "the token's task is not agent "+ac.caller.Agent+"'s")
	}
	maxDepth := 0
	if res, ok := a.store.Get("Agent", parent.Agent); ok {
		var spec config.AgentSpec
		if json.Unmarshal(res.Spec, &spec) == nil {
			maxDepth = spec.Limits.Depth()
		}
	}
	chain := append(append([]string(nil), parent.Chain...), parent.Agent)
	treq.Parent, treq.Chain, treq.Root = parent.ID, chain, parent.Root
	if treq.Root == "" {
		treq.Root = parent.ID
	}
	args, _ := json.Marshal(map[string]json.RawMessage{"input": treq.Input})
	var (
		made    *orchestrator.Task
		created bool
	)
	_, err = a.agentAuth.CallAgent(ctx, pipeline.AgentCall{
		Action: pipeline.Action{Credential: identity.BearerToken(r), Kind: "agent", Target: treq.Agent, Arguments: args,
			IdempotencyKey: key, Edge: "rest", RequestID: telemetry.RequestID(r.Context()), RemoteAddr: r.RemoteAddr},
		Chain: chain,
		Check: func() error { return orchestrator.CheckChain(chain, treq.Agent, maxDepth) },
		Run: func(ctx context.Context) (string, error) {
			t, c, err := a.tasks.Create(ctx, treq)
			if err != nil {
				return "", err
			}
			made, created = t, c
			return t.ID, nil
		},
	})
	if err != nil {
		return nil, false, err
	}
	return made, created, nil
}

// readableTask is task for reading: an agent acting in a task (its token
// is bound to one) may also read the other tasks of that task's tree, the
// work it is part of.
func (a *API) readableTask(r *http.Request, ac actor) (*orchestrator.Task, error) {
	t, err := a.task(r, ac)
	if err == nil || ac.admin || ac.caller.Token == nil || ac.caller.Token.Task == "" {
		return t, err
	}
	other, gerr := a.tasks.Get(r.Context(), r.PathValue("id"))
	if gerr != nil {
		return nil, err
	}
	mine, gerr := a.tasks.Get(r.Context(), ac.caller.Token.Task)
	if gerr != nil || !ac.may(mine) || treeOf(mine) != treeOf(other) {
		return nil, err
	}
	return other, nil
}

func treeOf(t *orchestrator.Task) string {
	if t.Root != "" {
		return t.Root
	}
	return t.ID
}
