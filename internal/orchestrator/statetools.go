package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/problem"
)

// The built-in functions over the task tree's shared state, offered to a
// hosted agent whose task is part of a tree (it has a parent, or its agent
// may call agents): read it; change it with a JSON merge patch, optionally
// only if it is still at the version read (compare-and-set).
const (
	getState    = "get_shared_state"
	updateState = "update_shared_state"
)

var stateTools = []llm.Tool{
	{Type: "function", Function: llm.Function{
		Name:        getState,
		Description: "Read the shared state of this work: a JSON object every agent working on it can read and change, and its version.",
		Parameters:  json.RawMessage(`{"type":"object","properties":{},"additionalProperties":false}`),
	}},
	{Type: "function", Function: llm.Function{
		Name: updateState,
		Description: "Change the shared state of this work with a JSON merge patch: members you give are set, members given as null are removed, objects merge. " +
			"Give the version you read to change it only if nobody changed it since; you get the new state and version.",
		Parameters: json.RawMessage(`{"type":"object","properties":{"patch":{"type":"object","description":"The JSON merge patch (RFC 7386)."},"version":{"type":"integer","minimum":0,"description":"Change only if the state is still at this version."}},"required":["patch"],"additionalProperties":false}`),
	}},
}

// inTree reports whether the task works with other agents: the state tools
// are offered then.
func (r *run) inTree() bool {
	return r.task.Parent != "" || len(r.spec.Agents) > 0
}

// stateCall answers a call of a state function.
func (r *run) stateCall(ctx context.Context, tc llm.ToolCall, step int, tool string) error {
	var (
		st  *SharedState
		err error
	)
	if tool == getState {
		st, err = r.service().State(ctx, r.task.ID)
	} else {
		var args struct {
			Patch   json.RawMessage `json:"patch"`
			Version *int64          `json:"version"`
		}
		if jerr := json.Unmarshal([]byte(orEmpty(tc.Function.Arguments)), &args); jerr != nil || len(args.Patch) == 0 {
			err = problem.New(400, problem.InvalidArguments, `give {"patch": {...}} and, to compare and set, "version"`)
		} else {
			expect := int64(AnyVersion)
			if args.Version != nil && *args.Version >= 0 {
				expect = *args.Version
			}
			// The change's event goes into the journal under the run's
			// guard, as every entry the run writes.
			st, err = r.service().patchState(ctx, r.task, args.Patch, expect, "agent:"+r.task.Agent, func(ev *Event) error {
				return r.appendEvent(ctx, ev)
			})
		}
	}
	ev := &Event{Type: EvToolResult, Step: step, Turn: r.c.turn, Tool: tool, CallID: tc.ID}
	if err != nil {
		var pe *problem.Error
		if !errors.As(err, &pe) || pe.Status >= 500 {
			return &errRetry{err}
		}
		ev.IsError, ev.Code, ev.Content = true, pe.Code, fmt.Sprintf("error %s: %s", pe.Code, pe.Detail)
	} else {
		b, _ := json.Marshal(st)
		ev.Content = string(b)
	}
	content := ev.Content
	if err := r.appendEvent(ctx, ev); err != nil {
		return err
	}
	r.c.toolResult(tc.ID, content)
	return nil
}

// greetHandoff gives an agent that continues handed-off work, before its
// first model call, who handed it over and the shared state as it is: the
// work goes on from what the last agent found. Journaled, so a resumed
// task sees the same.
func (r *run) greetHandoff(ctx context.Context) error {
	if !r.task.Handoff || r.c.handoffNoted || r.c.turn > 0 {
		return nil
	}
	st, err := r.service().State(ctx, r.task.ID)
	if err != nil {
		return &errRetry{err}
	}
	from := "another agent"
	if n := len(r.task.Chain); n > 0 {
		from = "agent " + r.task.Chain[n-1]
	}
	text := fmt.Sprintf("%s handed this work over to you (from task %s). The shared state of the work, version %d, is:\n%s",
		from, r.task.Parent, st.Version, st.Document)
	msg := llm.Message{Role: "user", Content: llm.TextContent(text)}
	raw, _ := json.Marshal(msg)
	if err := r.appendEvent(ctx, &Event{Type: EvMessage, Message: raw, Detail: handoffNote}); err != nil {
		return err
	}
	r.c.messages = append(r.c.messages, msg)
	r.c.ai = -1
	r.c.handoffNoted = true
	return nil
}

// handoffNote marks the message that opens a handed-off task's work.
const handoffNote = "handoff"
