package orchestrator

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/expr"
	"github.com/corral-dev/corral/internal/problem"
)

// A workflow run is a task whose Workflow names a Workflow resource: its
// worker runs the workflow's steps instead of an agent's loop, and its
// journal holds the steps below, each written before its effect
// (docs/workflows.md).

// The workflow run's journal entries (Event.Type); Event.Workflow says
// which step.
const (
	EvStepStart       = "step.start"       // an attempt of a step is about to act (intent)
	EvStepDone        = "step.done"        // the step ended with its output
	EvStepFailed      = "step.failed"      // an attempt failed; Reason "exhausted" when no more follow
	EvStepSkipped     = "step.skipped"     // its condition was false, or no path led to it
	EvStepRetry       = "step.retry"       // a person retried the dead-lettered step: new attempts
	EvCompensateStart = "compensate.start" // a step's compensation is about to act (intent)
	EvCompensateDone  = "compensate.done"  // it ended, or failed (IsError)
	EvDeadLettered    = "dead_letter"      // the failed step is in the dead-letter queue
	EvDiscarded       = "discarded"        // a person gave up the dead-lettered run: compensate and fail
)

// Reasons of workflow runs.
const (
	ReasonAwaitingTask = "awaiting_task" // a step's child task runs
	ReasonDeadLettered = "dead_lettered" // a step failed past its retries; corral dlq retry or discard
	ReasonStepFailed   = "step_failed"   // a step failed past its retries; the run was compensated
	ReasonWorkflowGone = "workflow_gone" // the Workflow was deleted
	ReasonStepTimeout  = "step_timeout"  // on an agent step's task: canceled at the step's timeout
	reasonExhausted    = "exhausted"     // on step.failed: no attempt follows
	codeToolError      = "tool_error"    // the tool answered with an error (4xx, isError)
	codeTaskFailed     = "task_failed"   // an agent step's task did not complete
	codeExpression     = "expression_error"
	codeOutputTooLarge = "output_too_large"
)

// StepEvent says which workflow step a journal entry is about.
type StepEvent struct {
	Step    string `json:"step"`
	Attempt int    `json:"attempt,omitempty"`
	// Kind is "tool" or "agent".
	Kind string `json:"kind,omitempty"`
	// Key is a tool call's Idempotency-Key; Child an agent step's task.
	Key   string `json:"key,omitempty"`
	Child string `json:"child,omitempty"`
	// Deadline, on an agent step's start, is when its task is canceled
	// and the attempt fails if the task has not ended: recorded before the
	// task is made, so that a restart does not reset it.
	Deadline *time.Time `json:"deadline,omitempty"`
	// Output is the step's output (step.done, compensate.done).
	Output json.RawMessage `json:"output,omitempty"`
	// Next is the routing slip the step returned.
	Next []string `json:"next,omitempty"`
	// DeadLetter is the dead-letter entry of the failed step.
	DeadLetter string `json:"dead_letter,omitempty"`
}

// Step statuses in a run.
const (
	stepRunning   = "running"
	stepDone      = "done"
	stepSkipped   = "skipped"
	stepExhausted = "exhausted"
)

// stepState is what the journal says of one step.
type stepState struct {
	status string
	// attempt is the last attempt begun; open is set while it has no end.
	attempt int
	open    bool
	kind    string
	key     string
	child   string
	// deadline is when an agent step's attempt times out; started is when
	// the attempt began (for journals written before deadlines were).
	deadline, started time.Time
	// budgetFrom is the first attempt of the current budget: a retry from
	// the dead-letter queue gives the step its attempts again.
	budgetFrom int
	output     json.RawMessage
	next       []string
	slip       bool
	code       string
	detail     string

	compOpen, compDone bool
	compKey, compChild string
	compFailed         bool
}

// wfRun is a workflow run as its journal tells it.
type wfRun struct {
	steps map[string]*stepState
	// order lists the steps in the order they completed: compensations
	// run in reverse.
	order    []string
	last     uint64
	starts   int
	firstRun time.Time
	state    State
	reason   string
	result   json.RawMessage
	usage    Usage
	// failed is the step that failed past its retries; deadLetter its
	// entry; discarded: a person gave the run up.
	failed     string
	deadLetter string
	discarded  bool
}

func (r *wfRun) step(name string) *stepState {
	s := r.steps[name]
	if s == nil {
		s = &stepState{budgetFrom: 1}
		r.steps[name] = s
	}
	return s
}

// replayRun folds a run's journal.
func replayRun(events []Event) *wfRun {
	r := &wfRun{steps: map[string]*stepState{}, state: Submitted}
	for _, ev := range events {
		r.last = ev.Seq
		if ev.Usage != nil && ev.Type == EvState && ev.State.Final() {
			r.usage = *ev.Usage
		}
		switch ev.Type {
		case EvStarted:
			r.starts++
			if r.firstRun.IsZero() {
				r.firstRun = ev.Time
			}
		case EvState:
			r.state, r.reason = ev.State, ev.Reason
			if ev.State.Final() {
				r.result = ev.Result
			}
		}
		se := ev.Workflow
		if se == nil {
			continue
		}
		s := r.step(se.Step)
		switch ev.Type {
		case EvStepStart:
			s.status, s.attempt, s.open, s.kind, s.key, s.child = stepRunning, se.Attempt, true, se.Kind, se.Key, se.Child
			s.deadline, s.started = time.Time{}, ev.Time
			if se.Deadline != nil {
				s.deadline = *se.Deadline
			}
			if se.Kind == "tool" {
				r.usage.ToolCalls++
			}
		case EvStepDone:
			s.status, s.open, s.output, s.next, s.slip = stepDone, false, se.Output, se.Next, se.Next != nil
			if !slices.Contains(r.order, se.Step) {
				r.order = append(r.order, se.Step)
			}
		case EvStepFailed:
			s.open, s.code, s.detail = false, ev.Code, ev.Detail
			s.attempt = max(s.attempt, se.Attempt)
			if ev.Reason == reasonExhausted {
				s.status = stepExhausted
				r.failed = se.Step
			}
		case EvStepSkipped:
			s.status = stepSkipped
		case EvStepRetry:
			s.status, s.open, s.budgetFrom = "", false, s.attempt+1
			r.failed, r.deadLetter = "", ""
		case EvDeadLettered:
			r.deadLetter = se.DeadLetter
		case EvDiscarded:
			r.discarded = true
		case EvCompensateStart:
			s.compOpen, s.compKey, s.compChild = true, se.Key, se.Child
		case EvCompensateDone:
			s.compOpen, s.compDone, s.compFailed = false, true, ev.IsError
		}
	}
	return r
}

// stepsVar is the steps variable of the run's CEL: each ended step's
// output and status.
func (r *wfRun) stepsVar() map[string]any {
	out := map[string]any{}
	for name, s := range r.steps {
		switch s.status {
		case stepDone:
			out[name] = map[string]any{"output": decodeJSON(s.output), "status": stepDone}
		case stepSkipped:
			out[name] = map[string]any{"output": nil, "status": stepSkipped}
		}
	}
	return out
}

func decodeJSON(raw json.RawMessage) any { return expr.Decode(raw) }

// MaxSlip bounds the names a routing slip may hold.
const MaxSlip = 100

// ParseSlip reads a routing slip from a step's output: an object with a
// "next" member, a list of step names ({"next": ["refund"], ...}); an
// output that is a JSON string holding such an object (an agent's text
// answer) counts too. It returns nil, false when the output has no slip.
func ParseSlip(output json.RawMessage) ([]string, bool, error) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(output, &obj) != nil {
		var text string
		if json.Unmarshal(output, &text) != nil {
			return nil, false, nil
		}
		text = strings.TrimSpace(text)
		if !strings.HasPrefix(text, "{") || json.Unmarshal([]byte(text), &obj) != nil {
			return nil, false, nil
		}
	}
	raw, ok := obj["next"]
	if !ok {
		return nil, false, nil
	}
	var next []string
	if err := json.Unmarshal(raw, &next); err != nil || next == nil {
		return nil, true, fmt.Errorf(`next: must be a list of step names, as {"next": ["refund"]}`)
	}
	if len(next) > MaxSlip {
		return nil, true, fmt.Errorf("next: %d names, over the limit of %d", len(next), MaxSlip)
	}
	return next, true, nil
}

// checkSlip refuses a slip naming a step the workflow does not let the
// step choose: one it does not declare, or one that does not need it.
func checkSlip(spec *config.WorkflowSpec, from string, next []string) error {
	var allowed []string
	for _, st := range spec.Steps {
		if slices.Contains(st.Needs, from) {
			allowed = append(allowed, st.Name)
		}
	}
	for _, n := range next {
		if !slices.Contains(allowed, n) {
			what := "is not a step of the workflow"
			if _, ok := spec.Step(n); ok {
				what = "does not follow " + from + " (it does not need it)"
			}
			choices := "none: no step needs " + from
			if len(allowed) > 0 {
				choices = strings.Join(allowed, ", ")
			}
			return &problemSlip{fmt.Sprintf("step %s chose %q, which %s; it may choose among: %s", from, truncateName(n), what, choices)}
		}
	}
	return nil
}

type problemSlip struct{ detail string }

func (p *problemSlip) Error() string { return problem.RoutingSlipInvalid + ": " + p.detail }

func truncateName(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// defaultRetryOn are the codes a step is tried again after when its
// retry policy names none: failures a later attempt may cure.
var defaultRetryOn = []string{
	problem.UpstreamUnavailable, problem.UpstreamTimeout, problem.UpstreamError, problem.UpstreamThrottled,
	problem.RateLimited, problem.SubstrateUnavailable, problem.NotReady, problem.AuditUnavailable, problem.Overloaded,
	problem.IdempotencyConflict, codeToolError, codeTaskFailed,
}

// workflowSpec decodes a Workflow's spec.
func workflowSpec(res config.Resource) (*config.WorkflowSpec, bool) {
	var spec config.WorkflowSpec
	if len(res.Spec) == 0 || json.Unmarshal(res.Spec, &spec) != nil {
		return nil, false
	}
	return &spec, true
}
