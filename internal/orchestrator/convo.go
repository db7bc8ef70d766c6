package orchestrator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/corral-dev/corral/internal/llm"
)

// convo is a task as its journal tells it: the conversation so far, the
// steps taken and the ones begun but not finished. It is rebuilt from the
// journal when a worker takes the task, then kept up to date as the worker
// appends, so the journal is read once per take-over, never per step.
type convo struct {
	messages []llm.Message
	// step is the last step number used; turn the model calls answered.
	step, turn int
	usage      Usage
	// last is the sequence of the journal's last entry: the guard of the
	// next append.
	last uint64
	// pendingModel is a model call whose answer the journal lacks.
	pendingModel *Event
	// pendingTools are tool calls begun without a result, by call id.
	pendingTools map[string]*Event
	answered     map[string]bool
	// ai indexes the model's last answer in messages; -1: none to act on.
	ai int
	// repeats counts the latest run of identical tool calls.
	lastCall string
	repeats  int
	state    State
	reason   string
	detail   string
	// waiting is the call id of a request_input the person has not answered.
	waiting  string
	starts   int
	firstRun time.Time
	// limits, when a person extended them, replace the task's.
	limits *Limits
	result json.RawMessage
	// handoffNoted: the handed-off task's opening message is journaled.
	handoffNoted bool
}

// inputMessage is the task's input as the user message that opens it.
func inputMessage(input json.RawMessage) llm.Message {
	var text string
	if err := json.Unmarshal(input, &text); err != nil {
		text = string(input) // JSON input is given to the model as JSON
	}
	return llm.Message{Role: "user", Content: llm.TextContent(text)}
}

// replay rebuilds the conversation from a task's journal. contentOf reads a
// tool result kept in the object store.
func replay(ctx context.Context, t *Task, instructions string, events []Event, contentOf func(context.Context, *Event) (string, error)) (*convo, error) {
	c := &convo{pendingTools: map[string]*Event{}, answered: map[string]bool{}, state: t.State, ai: -1}
	if instructions != "" {
		c.messages = append(c.messages, llm.Message{Role: "system", Content: llm.TextContent(instructions)})
	}
	c.messages = append(c.messages, inputMessage(t.Input))
	for i := range events {
		ev := &events[i]
		c.last = max(c.last, ev.Seq)
		c.step = max(c.step, ev.Step)
		switch ev.Type {
		case EvStarted:
			c.starts++
			if c.firstRun.IsZero() {
				c.firstRun = ev.Time
			}
		case EvState:
			c.state, c.reason, c.detail = ev.State, ev.Reason, ev.Detail
			if ev.State.Final() {
				c.result = ev.Result
			}
		case EvModelCall:
			c.pendingModel = ev
		case EvModelAnswer:
			var m llm.Message
			if err := json.Unmarshal(ev.Message, &m); err != nil {
				return nil, fmt.Errorf("orchestrator: journal entry %d: the model's answer is unreadable: %w", ev.Seq, err)
			}
			c.answer(m, ev.Usage)
		case EvToolCall:
			c.pendingTools[ev.CallID] = ev
			if ev.Tool == requestInput {
				c.waiting = ev.CallID
			} else {
				c.noteCall(ev.Tool, ev.Detail)
			}
		case EvToolResult:
			content, err := contentOf(ctx, ev)
			if err != nil {
				return nil, err
			}
			c.toolResult(ev.CallID, content)
		case EvExtended:
			if ev.Limits != nil {
				l := *ev.Limits
				c.limits = &l
			}
			c.lastCall, c.repeats = "", 0
			c.state, c.reason = Working, ""
		case EvMessage:
			if ev.Detail == handoffNote {
				c.handoffNoted = true
			}
			var m llm.Message
			if err := json.Unmarshal(ev.Message, &m); err != nil {
				return nil, fmt.Errorf("orchestrator: journal entry %d: the message is unreadable: %w", ev.Seq, err)
			}
			if ev.CallID != "" && c.pendingTools[ev.CallID] != nil {
				c.toolResult(ev.CallID, m.Content.String())
			} else {
				c.messages = append(c.messages, m)
				c.ai = -1
			}
			if ev.CallID == c.waiting {
				c.waiting = ""
			}
		}
	}
	return c, nil
}

// answer records the model's answer.
func (c *convo) answer(m llm.Message, u *Usage) {
	c.pendingModel = nil
	c.turn++
	c.usage.Turns = c.turn
	c.usage.ModelCalls++
	if u != nil {
		c.usage.InputTokens += u.InputTokens
		c.usage.OutputTokens += u.OutputTokens
		c.usage.Cost += u.Cost
	}
	c.messages = append(c.messages, m)
	c.ai = len(c.messages) - 1
}

// toolResult records a tool call's result as the model will see it.
func (c *convo) toolResult(callID, content string) {
	delete(c.pendingTools, callID)
	c.answered[callID] = true
	c.usage.ToolCalls++
	c.messages = append(c.messages, llm.Message{Role: "tool", ToolCallID: callID, Content: llm.TextContent(content)})
}

// noteCall counts identical tool calls in a row: the same tool with the
// same arguments (digest) as the call before.
func (c *convo) noteCall(tool, digest string) {
	key := tool + "\x00" + digest
	if key == c.lastCall {
		c.repeats++
		return
	}
	c.lastCall, c.repeats = key, 1
}

// unanswered lists the tool calls of the model's last answer that have no
// result yet, in the order the model made them.
func (c *convo) unanswered() []llm.ToolCall {
	if c.ai < 0 {
		return nil
	}
	var out []llm.ToolCall
	for _, tc := range c.messages[c.ai].ToolCalls {
		if !c.answered[tc.ID] {
			out = append(out, tc)
		}
	}
	return out
}

// done reports whether the model's last answer is final: it called no
// tools, and nobody has spoken since.
func (c *convo) done() bool {
	return c.ai >= 0 && c.ai == len(c.messages)-1 && len(c.messages[c.ai].ToolCalls) == 0
}

// argsDigest identifies a call's arguments for loop detection: the same
// JSON object, whatever its key order and spacing, has the same digest.
func argsDigest(args string) string {
	var v any
	b := []byte(args)
	if json.Unmarshal(b, &v) == nil {
		if c, err := json.Marshal(v); err == nil {
			b = c
		}
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}
