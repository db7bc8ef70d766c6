package config

import (
	_ "embed"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/expr"
)

// WorkflowSpec declares a workflow: named steps, each an agent task or a
// tool call, ordered by needs, with inputs and conditions in CEL, retries,
// timeouts and compensations (docs/workflows.md). A run of it is a task.
type WorkflowSpec struct {
	Description string `json:"description,omitempty"`
	// Agent is the identity the run acts with: its tool steps are that
	// agent's calls (its tools, policy, budgets, kill switch), and its agent
	// steps are child tasks it opens.
	Agent string `json:"agent"`
	// OnFailure says what a step failing past its retries does: "compensate"
	// (the default: completed steps are compensated in reverse order and
	// the run fails) or "deadletter" (the run waits, dead-lettered, for a
	// person to retry the step or discard the run, which compensates).
	OnFailure string `json:"onFailure,omitempty"`
	// Output, a CEL expression, is the run's result; by default an object
	// of every completed step's output by name.
	Output string `json:"output,omitempty"`
	// Placement labels of the runs, as an Agent's.
	Placement map[string]string `json:"placement,omitempty"`
	Steps     []WorkflowStep    `json:"steps"`
}

// WorkflowStep is one step: an agent task (Agent, Input) or a tool call
// (Tool, Arguments).
type WorkflowStep struct {
	// Name identifies the step in needs, in CEL (steps.NAME.output) and in
	// routing slips: a lowercase letter, then letters, digits and _.
	Name string `json:"name"`
	// Needs are the steps that must have ended before this one starts.
	Needs []string `json:"needs,omitempty"`
	// When, a CEL condition, skips the step when false.
	When string `json:"when,omitempty"`
	// Agent and Input: a child task of that agent, its input the CEL
	// expression's value.
	Agent string `json:"agent,omitempty"`
	Input string `json:"input,omitempty"`
	// Tool and Arguments: a tool call, each argument a CEL expression.
	Tool      string            `json:"tool,omitempty"`
	Arguments map[string]string `json:"arguments,omitempty"`
	Retry     *StepRetry        `json:"retry,omitempty"`
	// Timeout bounds each attempt of the step (Go duration, "30s"): a tool
	// call, or an agent step's task, which is canceled when it has not
	// ended by then (default: AgentStepTimeout).
	Timeout string `json:"timeout,omitempty"`
	// Compensate undoes the step when a later one fails past its retries;
	// its CEL sees the step's output as output.
	Compensate *StepAction `json:"compensate,omitempty"`
}

// StepRetry is a step's retry policy.
type StepRetry struct {
	// Attempts in all, the first included (default 3).
	Attempts int `json:"attempts,omitempty"`
	// Backoff before the second attempt, doubled after each (default 1s).
	Backoff string `json:"backoff,omitempty"`
	// RetryOn lists the problem codes worth another attempt (default: the
	// transient ones, upstream_unavailable, upstream_timeout, upstream_error...).
	RetryOn []string `json:"retryOn,omitempty"`
}

// StepAction is a compensation: a tool call or an agent task.
type StepAction struct {
	Agent     string            `json:"agent,omitempty"`
	Input     string            `json:"input,omitempty"`
	Tool      string            `json:"tool,omitempty"`
	Arguments map[string]string `json:"arguments,omitempty"`
}

// The values of WorkflowSpec.OnFailure.
const (
	OnFailureCompensate = "compensate"
	OnFailureDeadLetter = "deadletter"
)

// Step retry defaults.
const (
	DefaultStepAttempts = 3
	DefaultStepBackoff  = time.Second
	MaxStepAttempts     = 20
)

// DefaultAgentStepTimeout bounds an attempt of an agent step that sets no
// timeout, unless its agent's limits.deadline is longer (AgentStepTimeout).
const DefaultAgentStepTimeout = time.Hour

// AgentStepTimeout is how long an attempt of an agent step waits for its
// task: the step's timeout, else DefaultAgentStepTimeout or the agent's own
// deadline when that is longer, so that the default never cuts short a
// task its agent's limits allow. agent may be nil (an agent since deleted).
func (st *WorkflowStep) AgentStepTimeout(agent *AgentSpec) time.Duration {
	if d, err := time.ParseDuration(st.Timeout); err == nil && d > 0 {
		return d
	}
	var limits *AgentLimits
	if agent != nil {
		limits = agent.Limits
	}
	_, _, deadline, _ := limits.Effective()
	return max(DefaultAgentStepTimeout, deadline)
}

var stepNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// Effective returns the retry policy with its defaults.
func (r *StepRetry) Effective() (attempts int, backoff time.Duration, retryOn []string) {
	attempts, backoff = DefaultStepAttempts, DefaultStepBackoff
	if r == nil {
		return attempts, backoff, nil
	}
	if r.Attempts > 0 {
		attempts = r.Attempts
	}
	if d, err := time.ParseDuration(r.Backoff); err == nil && d >= 0 && r.Backoff != "" {
		backoff = d
	}
	return attempts, backoff, r.RetryOn
}

// Step returns the step named name.
func (s *WorkflowSpec) Step(name string) (*WorkflowStep, bool) {
	i := slices.IndexFunc(s.Steps, func(st WorkflowStep) bool { return st.Name == name })
	if i < 0 {
		return nil, false
	}
	return &s.Steps[i], true
}

// Ancestors returns the steps a step needs, directly or through others.
func (s *WorkflowSpec) Ancestors(name string) map[string]bool {
	out := map[string]bool{}
	var walk func(string)
	walk = func(n string) {
		st, ok := s.Step(n)
		if !ok {
			return
		}
		for _, need := range st.Needs {
			if !out[need] {
				out[need] = true
				walk(need)
			}
		}
	}
	walk(name)
	return out
}

// check compiles every CEL expression (so a bad one is refused at apply,
// naming the step and the field), and checks names, needs (declared, no
// cycle) and durations.
func (s *WorkflowSpec) check() []FieldError {
	var out []FieldError
	add := func(field, format string, args ...any) {
		out = append(out, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if len(s.Steps) == 0 {
		add("spec.steps", "a workflow needs at least one step")
	}
	declared := map[string]int{}
	for i, st := range s.Steps {
		f := fmt.Sprintf("spec.steps[%d]", i)
		if !stepNamePattern.MatchString(st.Name) {
			add(f+".name", "%q is not a step name: a lowercase letter, then lowercase letters, digits and _ (it is read in CEL as steps.NAME)", st.Name)
			continue
		}
		if j, dup := declared[st.Name]; dup {
			add(f+".name", "step %q is declared twice (also spec.steps[%d])", st.Name, j)
			continue
		}
		declared[st.Name] = i
	}
	for i, st := range s.Steps {
		f := fmt.Sprintf("spec.steps[%d]", i)
		for j, n := range st.Needs {
			if _, ok := declared[n]; !ok {
				add(fmt.Sprintf("%s.needs[%d]", f, j), "step %q needs %q, which the workflow does not declare", st.Name, n)
			}
		}
	}
	if len(out) > 0 {
		return out
	}
	if cycle := needsCycle(s); cycle != "" {
		add("spec.steps", "the steps' needs form a cycle: %s", cycle)
		return out
	}
	if s.Output != "" {
		if p, err := expr.Compile(s.Output, false); err != nil {
			add("spec.output", "%v", err)
		} else {
			out = append(out, refsDeclared("spec.output", "the output", p.Refs(), declared)...)
		}
	}
	for i, st := range s.Steps {
		f := fmt.Sprintf("spec.steps[%d]", i)
		allowed := s.Ancestors(st.Name)
		out = append(out, checkAction(f, st.Name, StepAction{Agent: st.Agent, Input: st.Input, Tool: st.Tool, Arguments: st.Arguments}, allowed, false)...)
		if st.When != "" {
			out = append(out, compileIn(f+".when", st.Name, st.When, true, allowed)...)
		}
		if st.Timeout != "" {
			if d, err := time.ParseDuration(st.Timeout); err != nil || d <= 0 {
				add(f+".timeout", "step %q: %q is not a positive duration (30s, 2m)", st.Name, st.Timeout)
			}
		}
		if r := st.Retry; r != nil {
			if r.Attempts < 0 || r.Attempts > MaxStepAttempts {
				add(f+".retry.attempts", "step %q: attempts must be between 1 and %d", st.Name, MaxStepAttempts)
			}
			if r.Backoff != "" {
				if d, err := time.ParseDuration(r.Backoff); err != nil || d < 0 {
					add(f+".retry.backoff", "step %q: %q is not a duration (500ms, 2s)", st.Name, r.Backoff)
				}
			}
		}
		if c := st.Compensate; c != nil {
			self := maps.Clone(allowed)
			self[st.Name] = true
			out = append(out, checkAction(f+".compensate", st.Name, *c, self, true)...)
		}
	}
	return out
}

// checkAction checks one agent task or tool call: one of the two, and its
// expressions.
func checkAction(f, step string, a StepAction, allowed map[string]bool, compensation bool) []FieldError {
	var out []FieldError
	what := "step"
	if compensation {
		what = "the compensation of step"
	}
	switch {
	case a.Agent != "" && a.Tool != "":
		return []FieldError{{Field: f, Message: fmt.Sprintf("%s %q: give agent (a task) or tool (a call), not both", what, step)}}
	case a.Agent == "" && a.Tool == "":
		return []FieldError{{Field: f, Message: fmt.Sprintf("%s %q: give agent (a task with input) or tool (a call with arguments)", what, step)}}
	case a.Agent != "":
		if !ValidName(a.Agent) {
			out = append(out, FieldError{Field: f + ".agent", Message: fmt.Sprintf("%s %q: %q is not an agent name", what, step, a.Agent)})
		}
		if len(a.Arguments) > 0 {
			out = append(out, FieldError{Field: f + ".arguments", Message: fmt.Sprintf("%s %q: an agent task takes input, not arguments", what, step)})
		}
		if a.Input == "" {
			out = append(out, FieldError{Field: f + ".input", Message: fmt.Sprintf("%s %q: an agent task needs input, a CEL expression (input.text, 'a fixed text')", what, step)})
		} else {
			out = append(out, compileIn(f+".input", step, a.Input, false, allowed)...)
		}
	default:
		if a.Input != "" {
			out = append(out, FieldError{Field: f + ".input", Message: fmt.Sprintf("%s %q: a tool call takes arguments, not input", what, step)})
		}
		for _, k := range sortedKeys(a.Arguments) {
			out = append(out, compileIn(f+".arguments."+k, step, a.Arguments[k], false, allowed)...)
		}
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// compileIn compiles one expression of step, whose steps.NAME references
// must be among allowed (the steps it needs, which have ended before it).
func compileIn(field, step, src string, wantBool bool, allowed map[string]bool) []FieldError {
	p, err := expr.Compile(src, wantBool)
	if err != nil {
		return []FieldError{{Field: field, Message: fmt.Sprintf("step %q: %v", step, err)}}
	}
	var out []FieldError
	for _, ref := range p.Refs() {
		if !allowed[ref] {
			out = append(out, FieldError{Field: field, Message: fmt.Sprintf("step %q: steps.%s: %s is not a step %s needs (add it to needs, directly or through another step)", step, ref, ref, step)})
		}
	}
	return out
}

func refsDeclared(field, what string, refs []string, declared map[string]int) []FieldError {
	var out []FieldError
	for _, ref := range refs {
		if _, ok := declared[ref]; !ok {
			out = append(out, FieldError{Field: field, Message: fmt.Sprintf("%s names steps.%s, which the workflow does not declare", what, ref)})
		}
	}
	return out
}

// needsCycle returns a cycle in the steps' needs ("a → b → a"), or "".
func needsCycle(s *WorkflowSpec) string {
	const (
		unseen = iota
		onPath
		done
	)
	mark := map[string]int{}
	var path []string
	var visit func(string) string
	visit = func(n string) string {
		switch mark[n] {
		case onPath:
			i := slices.Index(path, n)
			return strings.Join(append(slices.Clone(path[i:]), n), " → ")
		case done:
			return ""
		}
		mark[n] = onPath
		path = append(path, n)
		st, _ := s.Step(n)
		for _, need := range st.Needs {
			if c := visit(need); c != "" {
				return c
			}
		}
		path = path[:len(path)-1]
		mark[n] = done
		return ""
	}
	for _, st := range s.Steps {
		if c := visit(st.Name); c != "" {
			return c
		}
	}
	return ""
}

//go:embed schemas/workflow.json
var workflowSpecSchema []byte
