package pipeline

import (
	"context"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/problem"
)

// taskContext is the task stage: a call made with a token bound to a task
// must be one the task admits (it exists, runs, is the agent's, and is
// within its limits). A hosted agent's own steps (Action.Step) were
// admitted by the orchestrator, which journals them itself.
func (p *Pipeline) taskContext(ctx context.Context, rec *audit.Record, c Caller) error {
	if p.Tasks == nil || rec.Task == "" || rec.Step != "" {
		return nil
	}
	return p.Tasks.Admit(ctx, TaskCall{Task: rec.Task, Agent: c.Agent, AgentUID: c.AgentUID, Kind: rec.Kind, Target: rec.Target})
}

// taskDone tells the task about a finished call an agent made in it with
// its own token; shadow copies and hosted steps are not reported.
func (p *Pipeline) taskDone(ctx context.Context, rec *audit.Record) {
	if p.Tasks == nil || rec.Task == "" || rec.Step != "" || rec.Agent == "" || rec.Event != "" || rec.Phase != "" {
		return
	}
	if rec.Code == problem.TaskNotFound || rec.Code == problem.TaskEnded {
		return
	}
	p.Tasks.Done(ctx, TaskCall{Task: rec.Task, Agent: rec.Agent, Kind: rec.Kind, Target: rec.Target}, rec)
}
