package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/problem"
)

// errBusy: the trigger is at maxConcurrent; the source keeps the event
// and offers it again later.
var errBusy = errors.New("trigger: at maxConcurrent live tasks")

// recentFor is how long a task started here counts as live while the
// mirror of task records may not show it yet.
const recentFor = 10 * time.Second

// result is what became of an event that its source may acknowledge.
type result struct {
	Outcome string // Started, Duplicate or DeadLettered
	Task    string // the task (or workflow run) id, when there is one
	Reason  string // why it was dead-lettered
}

// deliver starts the one task of an event. A nil error means the source
// may acknowledge the event: its task exists (now, or from an earlier
// delivery), or it went to the dead-letter queue. errBusy asks the source
// to offer it again later; another error is transient (the substrate did
// not answer), unless last is set: then the event is dead-lettered, as a
// source's last delivery should be.
func (m *Manager) deliver(ctx context.Context, r *runner, ev *event.Event, last bool) (result, error) {
	res, err := m.try(ctx, r, ev)
	switch {
	case err == nil:
		if res.Outcome != DeadLettered { // deadLetter counted it
			m.count(r.name, res.Outcome)
		}
		return res, nil
	case errors.Is(err, errBusy):
		m.count(r.name, Deferred)
		return res, err
	case last:
		return m.deadLetter(ctx, r, ev, "repeated failures: "+err.Error())
	}
	return res, err
}

func (m *Manager) try(ctx context.Context, r *runner, ev *event.Event) (result, error) {
	owner := "trigger:" + r.name
	chain, parent, err := chainOf(ev)
	if err != nil {
		return m.deadLetter(ctx, r, ev, "invalid_chain: "+err.Error())
	}
	input, err := json.Marshal(ev)
	if err != nil {
		return m.deadLetter(ctx, r, ev, "unencodable: "+err.Error())
	}
	// The chain rule of every agent call (agent_cycle, agent_depth at the
	// default depth): a trigger cannot launder depth through the bus.
	agent := r.spec.Start.Agent
	if err := orchestrator.CheckChain(chain, agent, 0); err != nil {
		return m.deadLetter(ctx, r, ev, err.Error())
	}
	if r.spec.Start.Workflow != "" {
		return m.startWorkflow(ctx, r, ev, input, chain, parent)
	}
	// The event's task, if an earlier delivery made it: acknowledged as a
	// duplicate without counting against the cap.
	id := orchestrator.IdempotentID(owner, ev.ID())
	if t, err := m.deps.Tasks.Get(ctx, id); err == nil {
		return result{Outcome: Duplicate, Task: t.ID}, nil
	} else if !isCode(err, problem.TaskNotFound) {
		return result{}, err
	}
	if r.spec.MaxConcurrent > 0 {
		r.serial.Lock()
		defer r.serial.Unlock()
		if m.live(r) >= r.spec.MaxConcurrent {
			return result{}, errBusy
		}
	}
	t, created, err := m.deps.Tasks.Create(ctx, orchestrator.Request{
		Agent: agent, Input: input, IdempotencyKey: ev.ID(), Owner: owner, CreatedBy: owner, Parent: parent, Chain: chain,
	})
	var p *problem.Error
	switch {
	case err == nil && created:
		r.mu.Lock()
		r.recent[t.ID] = m.now()
		r.mu.Unlock()
		return result{Outcome: Started, Task: t.ID}, nil
	case err == nil:
		return result{Outcome: Duplicate, Task: t.ID}, nil
	case isCode(err, problem.IdempotencyConflict):
		// The same event id delivered again with other content (a
		// sender's new timestamp): the event has its task.
		return result{Outcome: Duplicate, Task: id}, nil
	case errors.As(err, &p) && p.Status >= 400 && p.Status < 500:
		// The agent is missing, the input refused: no retry helps.
		return m.deadLetter(ctx, r, ev, p.Code+": "+p.Detail)
	}
	return result{}, err
}

func (m *Manager) startWorkflow(ctx context.Context, r *runner, ev *event.Event, input json.RawMessage, chain []string, parent string) (result, error) {
	if m.deps.Workflows == nil {
		return m.deadLetter(ctx, r, ev, "workflows are not available on this corral")
	}
	owner := "trigger:" + r.name
	id, created, err := m.deps.Workflows.StartWorkflow(ctx, WorkflowRequest{
		Workflow: r.spec.Start.Workflow, Input: input, IdempotencyKey: ev.ID(), Owner: owner, CreatedBy: owner, Parent: parent, Chain: chain,
	})
	var p *problem.Error
	switch {
	case err == nil && created:
		return result{Outcome: Started, Task: id}, nil
	case err == nil || isCode(err, problem.IdempotencyConflict):
		return result{Outcome: Duplicate, Task: id}, nil
	case errors.As(err, &p) && p.Status >= 400 && p.Status < 500:
		return m.deadLetter(ctx, r, ev, p.Code+": "+p.Detail)
	}
	return result{}, err
}

// deadLetter hands an event that cannot start its task to the dead-letter
// queue. Only once it is there may the source forget the event: a failure
// to store it is returned, and the event delivered again.
func (m *Manager) deadLetter(ctx context.Context, r *runner, ev *event.Event, reason string) (result, error) {
	payload, err := json.Marshal(ev)
	if err != nil {
		payload, _ = json.Marshal(map[string]string{"id": ev.ID(), "source": ev.Source(), "type": ev.Type()})
	}
	if m.deps.DeadLetters != nil {
		if err := m.deps.DeadLetters.Put(ctx, "trigger", r.name, reason, payload); err != nil {
			return result{}, fmt.Errorf("trigger %s: dead-letter event %s: %w", r.name, ev.ID(), err)
		}
	}
	m.logger.WarnContext(ctx, "trigger event dead-lettered", "trigger", r.name, "event", ev.ID(), "reason", reason)
	m.count(r.name, DeadLettered)
	return result{Outcome: DeadLettered, Reason: reason}, nil
}

// live counts the trigger's tasks not yet ended: those of its agent it
// created, as the mirror of task records shows them, and those it started
// in the last seconds that the mirror may not show yet.
func (m *Manager) live(r *runner) int {
	if r.spec.Start.Agent == "" {
		return 0
	}
	seen := map[string]bool{}
	n := 0
	for _, st := range []orchestrator.State{orchestrator.Submitted, orchestrator.Working, orchestrator.InputRequired} {
		tasks, _ := m.deps.Tasks.List(orchestrator.Filter{Agent: r.spec.Start.Agent, State: st})
		for _, t := range tasks {
			if t.CreatedBy == "trigger:"+r.name {
				seen[t.ID] = true
				n++
			}
		}
	}
	now := m.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, at := range r.recent {
		switch {
		case seen[id] || now.Sub(at) > recentFor:
			delete(r.recent, id)
		default:
			n++
		}
	}
	return n
}

func isCode(err error, code string) bool {
	var p *problem.Error
	return errors.As(err, &p) && p.Code == code
}

// statusOf is the HTTP status a transient failure is answered with.
func statusOf(err error) int {
	var p *problem.Error
	if errors.As(err, &p) {
		return p.Status
	}
	return http.StatusServiceUnavailable
}
