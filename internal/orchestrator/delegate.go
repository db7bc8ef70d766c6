package orchestrator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/tools"
)

// A hosted agent sees each agent its spec.agents lets it call as two
// functions (docs/agents.md): delegate_to_<agent> runs a child task and
// answers with its result; handoff_to_<agent> ends the caller's turn and
// lets the other agent go on with the work. One function per agent and
// verb is what models choose best: the name says what happens, the
// description says who the agent is.
const (
	delegatePrefix = "delegate_to_"
	handoffPrefix  = "handoff_to_"
)

// agentFn is what a function for an agent does.
type agentFn struct {
	agent   string
	handoff bool
}

var agentParams = json.RawMessage(`{"type":"object","properties":{"input":{"type":"string","description":"What the agent is to do, with everything it needs to know: it does not see your conversation."}},"required":["input"],"additionalProperties":false}`)

// agentFunctions lists the functions for the agents the task's agent may
// call, and remembers which function is which agent.
func (r *run) agentFunctions() []llm.Tool {
	r.fnAgents = map[string]agentFn{}
	if len(r.spec.Agents) == 0 {
		return nil
	}
	var out []llm.Tool
	res := r.w.agents.List("Agent")
	slices.SortFunc(res, func(a, b config.Resource) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	for _, a := range res {
		name := a.Metadata.Name
		if name == r.task.Agent || !slices.ContainsFunc(r.spec.Agents, func(g string) bool { return tools.Match(g, name) }) {
			continue
		}
		about := ""
		if spec, ok := agentSpec(a); ok && spec.Description != "" {
			about = " " + name + ": " + spec.Description
		}
		for _, handoff := range []bool{false, true} {
			fn, desc := agentFunction(delegatePrefix, name), "Delegate a piece of work to agent "+name+" and wait for its answer, which is this call's result."+about
			if handoff {
				fn, desc = agentFunction(handoffPrefix, name), "Hand the whole work over to agent "+name+": your turn ends, and it goes on from here with the task's shared state."+about
			}
			r.fnAgents[fn] = agentFn{agent: name, handoff: handoff}
			out = append(out, llm.Tool{Type: "function", Function: llm.Function{Name: fn, Description: desc, Parameters: agentParams}})
		}
	}
	return out
}

// agentFunction is a function name within OpenAI's 64 characters.
func agentFunction(prefix, agent string) string {
	name := prefix + strings.ReplaceAll(agent, ".", "_")
	if len(name) > 64 {
		sum := sha256.Sum256([]byte(agent))
		name = name[:55] + "_" + hex.EncodeToString(sum[:4])
	}
	return name
}

// agentTool is how an agent call is named in the journal: "agent:<name>"
// for a delegation, "handoff:<name>" for a handoff.
func (f agentFn) tool() string {
	if f.handoff {
		return "handoff:" + f.agent
	}
	return "agent:" + f.agent
}

// childID is the id of the task a step of a task opens: the same on every
// attempt of the step, so a crash between creating the child and
// journaling it never makes a second one.
func childID(parent string, step int) string {
	return idFor("task:"+parent, fmt.Sprintf("agent/step/%d", step))
}

// callAgent makes a delegate or handoff step whose intent is journaled:
// it opens the child task (through the pipeline, once), then waits for it
// or hands off to it. A call policy sends to people parks the task until
// they decide (awaitApproval), as a tool call's does; the decision wakes
// it, and the same step is made again: the child is opened then, once, or
// the refusal is the call's answer. resume says the step was begun before
// (by a worker now gone, or before the task parked).
func (r *run) callAgent(ctx context.Context, tc llm.ToolCall, step int, fn agentFn, resume bool) error {
	id := childID(r.task.ID, step)
	child, ok := r.w.store.Get(id)
	if !ok {
		var err error
		child, _, err = r.w.store.fetch(ctx, id)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return &errRetry{err}
		}
	}
	if child == nil {
		var args struct {
			Input string `json:"input"`
		}
		_ = json.Unmarshal([]byte(orEmpty(tc.Function.Arguments)), &args)
		input, _ := json.Marshal(strings.TrimSpace(args.Input))
		if strings.TrimSpace(args.Input) == "" {
			if !fn.handoff {
				return r.agentAnswer(ctx, tc, step, fn, true, "error invalid_arguments: input: say what agent "+fn.agent+" is to do", problem.InvalidArguments, "")
			}
			input = r.task.Input
		}
		tok, err := r.credential()
		if err != nil {
			return &errRetry{err}
		}
		chain := chainOf(r.task)
		var made *Task
		_, err = r.w.gateway.CallAgent(ctx, pipeline.AgentCall{
			Action: pipeline.Action{Credential: tok, Kind: "agent", Target: fn.agent, Arguments: json.RawMessage(orEmpty(tc.Function.Arguments)),
				IdempotencyKey: r.stepKey(step), Edge: "task", Step: fmt.Sprint(step), Resume: resume},
			Chain: chain,
			Check: func() error { return CheckChain(chain, fn.agent, r.spec.Limits.Depth()) },
			Run: func(ctx context.Context) (string, error) {
				t, _, err := r.service().Create(ctx, Request{
					Agent: fn.agent, Input: input, IdempotencyKey: fmt.Sprintf("agent/step/%d", step), Owner: "task:" + r.task.ID,
					CreatedBy: "agent:" + r.task.Agent, Principal: r.task.Principal, Parent: r.task.ID, Chain: chain,
					Root: rootOf(r.task), Handoff: fn.handoff,
				})
				if err != nil {
					return "", err
				}
				made = t
				return t.ID, nil
			},
		})
		if err != nil {
			var pe *problem.Error
			if !errors.As(err, &pe) || ctx.Err() != nil || transient(err) || pe.Status >= http.StatusInternalServerError {
				return r.stepFailed(ctx, err)
			}
			if pe.Code == problem.ApprovalPending {
				return r.awaitApproval(ctx, pe)
			}
			// A refusal (a cycle, the depth, policy, no such agent, a
			// human's no) is the call's answer: the model may choose
			// another way.
			return r.agentAnswer(ctx, tc, step, fn, true, fmt.Sprintf("error %s: %s", pe.Code, pe.Detail), pe.Code, pe.AuditID)
		}
		child = made
	}
	if fn.handoff {
		return r.handOff(ctx, tc, step, fn, child)
	}
	return r.awaitChild(ctx, tc, step, fn, child)
}

// service is the task service over the worker's store, to open children.
func (r *run) service() *Service { return r.w.service() }

func rootOf(t *Task) string {
	if t.Root != "" {
		return t.Root
	}
	return t.ID
}

// agentAnswer journals an agent call's result for the model.
func (r *run) agentAnswer(ctx context.Context, tc llm.ToolCall, step int, fn agentFn, isError bool, content, code, auditID string) error {
	ev := &Event{Type: EvToolResult, Step: step, Turn: r.c.turn, Tool: fn.tool(), CallID: tc.ID, IsError: isError, Code: code, AuditID: auditID, Content: content}
	if err := r.appendEvent(ctx, ev); err != nil {
		return err
	}
	r.c.toolResult(tc.ID, content)
	return nil
}

// awaitChild answers a delegation with its child's outcome once the child
// (or the task it handed off to) has ended, and parks the task until then.
func (r *run) awaitChild(ctx context.Context, tc llm.ToolCall, step int, fn agentFn, child *Task) error {
	end, err := r.service().outcome(ctx, child)
	if err != nil {
		return &errRetry{err}
	}
	if end.State.Final() {
		return r.childAnswered(ctx, tc, step, fn, end)
	}
	detail := fmt.Sprintf("waiting for task %s (agent %s)", end.ID, end.Agent)
	if r.c.state != InputRequired || r.c.reason != ReasonAwaitingAgent || r.task.WaitingOn != end.ID {
		if err := r.appendEvent(ctx, &Event{Type: EvState, State: InputRequired, Reason: ReasonAwaitingAgent, Detail: detail}); err != nil {
			return err
		}
		r.c.state, r.c.reason = InputRequired, ReasonAwaitingAgent
		waiting, wakeAt := end.ID, timePtr(r.deadline())
		if _, err := r.w.store.update(context.WithoutCancel(ctx), r.task.ID, func(t *Task) error {
			t.State, t.Reason, t.Detail, t.Usage, t.WaitingOn, t.WakeAt = InputRequired, ReasonAwaitingAgent, detail, r.c.usage, waiting, wakeAt
			return nil
		}); err != nil {
			return &errRetry{err}
		}
		r.task.WaitingOn = waiting
	}
	// The child may have ended while the task parked, before its wake
	// could find it parked: look once more, at the leader (the child may
	// have ended on another replica, whose write this one's mirror has not
	// seen yet). The park and the child's end are both written before
	// either side looks for the other, and both looks read the leader
	// (Wake's too), so at least one of them sees the other.
	if end, err := r.service().latest(ctx, child.ID); err == nil && end.State.Final() {
		return r.childAnswered(ctx, tc, step, fn, end)
	}
	return errParked
}

// childAnswered journals a child's outcome as the delegation's result.
func (r *run) childAnswered(ctx context.Context, tc llm.ToolCall, step int, fn agentFn, end *Task) error {
	ans := map[string]any{"task": end.ID, "agent": end.Agent, "state": end.State}
	if len(end.Result) > 0 {
		ans["result"] = end.Result
	}
	if end.State != Completed {
		ans["reason"], ans["detail"] = end.Reason, end.Detail
	}
	content, _ := json.Marshal(ans)
	if r.c.state == InputRequired {
		r.c.state, r.c.reason = Working, ""
		if _, err := r.w.store.update(context.WithoutCancel(ctx), r.task.ID, func(t *Task) error {
			if t.State.Final() {
				return errSkip
			}
			t.State, t.Reason, t.Detail, t.WaitingOn, t.WakeAt = Working, "", "", "", nil
			return nil
		}); err != nil {
			return &errRetry{err}
		}
	}
	return r.agentAnswer(ctx, tc, step, fn, end.State != Completed, string(content), "", "")
}

// handOff ends the task: its work goes on in child, the agent it handed
// off to. Its result names the child, and a delegation waiting on it waits
// on the child instead (Service.outcome).
func (r *run) handOff(ctx context.Context, tc llm.ToolCall, step int, fn agentFn, child *Task) error {
	content, _ := json.Marshal(map[string]string{"handed_off_to": child.ID, "agent": child.Agent})
	if err := r.agentAnswer(ctx, tc, step, fn, false, string(content), "", ""); err != nil {
		return err
	}
	return r.end(ctx, Completed, ReasonHandedOff, "handed off to agent "+child.Agent+": task "+child.ID, content)
}

// handedTo reads the task a handed-off task's result names.
func handedTo(t *Task) string {
	if t.State != Completed || t.Reason != ReasonHandedOff {
		return ""
	}
	var res struct {
		To string `json:"handed_off_to"`
	}
	if json.Unmarshal(t.Result, &res) != nil || !ValidID(res.To) {
		return ""
	}
	return res.To
}

// outcome follows a task through its handoffs to the task that carries its
// work now: the one whose end is the end of the work.
func (s *Service) outcome(ctx context.Context, t *Task) (*Task, error) {
	for range maxChain {
		next := handedTo(t)
		if next == "" {
			return t, nil
		}
		var err error
		if t, err = s.Get(ctx, next); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// latest is outcome read from the leader, not this replica's mirror: the
// task id, or the task it handed its work off to, as it is now.
func (s *Service) latest(ctx context.Context, id string) (*Task, error) {
	var t *Task
	for range maxChain {
		var err error
		if t, _, err = s.store.fetch(ctx, id); err != nil {
			return nil, err
		}
		if id = handedTo(t); id == "" {
			break
		}
	}
	return t, nil
}

// childEnded wakes the task that waits for an ended one: its parent when
// it delegated to it, or, when the ended task continued a handoff, the
// task that waits for the one that handed off (OnEnded hook).
func (s *Service) childEnded(ctx context.Context, id string, _ State) {
	t, ok := s.store.Get(id)
	for range maxChain {
		if !ok || t.Parent == "" {
			return
		}
		if !t.Handoff {
			break
		}
		t, ok = s.store.Get(t.Parent)
	}
	if !ok {
		return
	}
	if err := s.Wake(ctx, t.Parent, "task "+id+" ended"); err != nil {
		s.logger.WarnContext(ctx, "waking a task after its child ended; the sweep wakes it later", "task", t.Parent, "child", id, "err", err)
	}
}

// wakeable reports whether a task parked for reason is woken by Wake: an
// approval's decision, or the end of the task it waits for.
func wakeable(reason string) bool {
	return reason == ReasonAwaitingApproval || reason == ReasonAwaitingAgent
}
