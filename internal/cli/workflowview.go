package cli

import (
	"cmp"
	"fmt"

	"github.com/corral-dev/corral/internal/orchestrator"
)

// workflowLines renders a workflow run's step events, one line each; ok
// is false for other events.
func (r *renderer) workflowLines(ev orchestrator.Event) (lines []string, busy string, ok bool) {
	se := ev.Workflow
	if se == nil {
		return nil, "", false
	}
	what := cmp.Or(ev.Tool, ev.Agent)
	switch ev.Type {
	case orchestrator.EvStepStart:
		if se.Kind == "agent" {
			return nil, fmt.Sprintf("step %s: task %s of agent %s (attempt %d)", se.Step, se.Child, ev.Agent, se.Attempt), true
		}
		return nil, fmt.Sprintf("step %s: %s (attempt %d)", se.Step, oneLine(what, 60), se.Attempt), true
	case orchestrator.EvStepDone:
		line := "step " + se.Step + " done"
		if se.Next != nil {
			line += fmt.Sprintf(" → next %v", se.Next)
		}
		return []string{r.fit("  ✓ ", line)}, "", true
	case orchestrator.EvStepFailed:
		return []string{r.fit("  ✗ ", fmt.Sprintf("step %s attempt %d: %s: %s", se.Step, se.Attempt, ev.Code, ev.Detail))}, "", true
	case orchestrator.EvStepSkipped:
		return []string{r.fit("  - ", "step "+se.Step+" skipped: "+ev.Detail)}, "", true
	case orchestrator.EvCompensateStart:
		return nil, "compensating step " + se.Step, true
	case orchestrator.EvCompensateDone, orchestrator.EvDeadLettered, orchestrator.EvStepRetry, orchestrator.EvDiscarded:
		mark := "↺ "
		if ev.IsError {
			mark = "✗ "
		}
		return []string{r.fit("  "+mark, cmp.Or(ev.Detail, ev.Type+" "+se.Step))}, "", true
	}
	return nil, "", false
}
