package config

import (
	_ "embed"
	"strings"
)

// BudgetSpec caps what the actions it covers may spend in a window.
type BudgetSpec struct {
	Description string `json:"description,omitempty"`
	// Scope says which actions the budget covers; every field set must
	// match, and an empty scope covers everything.
	Scope BudgetScope `json:"scope"`
	// Window is when the counters start again: "task" (one set per task),
	// "hour", "day", "month" (calendar, UTC) or "total" (never).
	Window string `json:"window"`
	// Limit holds at least one of tokens, cost and calls.
	Limit BudgetLimit `json:"limit"`
}

// BudgetScope selects the actions a budget covers.
type BudgetScope struct {
	Agent     string `json:"agent,omitempty"`
	Principal string `json:"principal,omitempty"`
	Model     string `json:"model,omitempty"`
	Task      string `json:"task,omitempty"`
}

// BudgetLimit caps tokens (model calls), cost (model calls, from the
// model's pricing) and calls (model and tool calls).
type BudgetLimit struct {
	Tokens *int64   `json:"tokens,omitempty"`
	Cost   *float64 `json:"cost,omitempty"`
	Calls  *int64   `json:"calls,omitempty"`
}

// The budget windows.
const (
	WindowTask  = "task"
	WindowHour  = "hour"
	WindowDay   = "day"
	WindowMonth = "month"
	WindowTotal = "total"
)

// check reports the rules the schema states poorly: a limit needs at least
// one cap (the schema's minProperties message says nothing useful), and a
// task scope is "*" or an exact id, never another glob.
func (s *BudgetSpec) check() []FieldError {
	var out []FieldError
	if s.Limit.Tokens == nil && s.Limit.Cost == nil && s.Limit.Calls == nil {
		out = append(out, FieldError{Field: "spec.limit", Message: "set at least one of tokens, cost or calls"})
	}
	if t := s.Scope.Task; t != "*" && strings.ContainsAny(t, "*?") {
		out = append(out, FieldError{Field: "spec.scope.task", Message: `must be "*" (any task) or one task's id; other globs are not supported`})
	}
	return out
}

//go:embed schemas/budget.json
var budgetSpecSchema []byte
