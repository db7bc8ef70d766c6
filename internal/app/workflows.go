package app

import (
	"context"

	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/trigger"
)

// triggerWorkflows starts the workflow runs of triggers (trigger.Workflows)
// through the task service: a run is a task.
type triggerWorkflows struct{ tasks *orchestrator.Service }

var _ trigger.Workflows = triggerWorkflows{}

func (w triggerWorkflows) StartWorkflow(ctx context.Context, req trigger.WorkflowRequest) (string, bool, error) {
	t, created, err := w.tasks.Create(ctx, orchestrator.Request{
		Workflow: req.Workflow, Input: req.Input, IdempotencyKey: req.IdempotencyKey, Owner: req.Owner,
		CreatedBy: req.CreatedBy, Parent: req.Parent, Chain: req.Chain,
	})
	if err != nil {
		return "", false, err
	}
	return t.ID, created, nil
}
