package config

import (
	_ "embed"
	"strings"
)

// RateLimitSpec bounds how fast and how many at once the calls it covers
// may go: a rate (requests per second or minute, with a burst), a cap on the
// calls in flight, or both. Every RateLimit covering a call must admit it.
type RateLimitSpec struct {
	Description string `json:"description,omitempty"`
	// Scope says which calls the limit covers; every field set must match,
	// and an empty scope covers every call.
	Scope RateLimitScope `json:"scope"`
	// Each, when set, keeps one counter per value of that part of the call
	// (each agent, each user...) instead of one shared by every call covered.
	Each string `json:"each,omitempty"`
	// Rate is the pace; nil for none.
	Rate *Rate `json:"rate,omitempty"`
	// InFlight caps the calls running at once; nil for no cap.
	InFlight *int64 `json:"inFlight,omitempty"`
}

// RateLimitScope selects the calls a rate limit covers.
type RateLimitScope struct {
	Agent      string `json:"agent,omitempty"`
	Principal  string `json:"principal,omitempty"`
	ToolSource string `json:"toolSource,omitempty"`
	Tool       string `json:"tool,omitempty"`
	Model      string `json:"model,omitempty"`
	Task       string `json:"task,omitempty"`
}

// Rate is a pace: Requests per second or per minute, and at most Burst at
// once after a quiet spell (default: Requests).
type Rate struct {
	Requests int64  `json:"requests"`
	Per      string `json:"per"`
	Burst    *int64 `json:"burst,omitempty"`
}

// The periods of a Rate, and the values of RateLimitSpec.Each.
const (
	PerSecond = "second"
	PerMinute = "minute"

	EachAgent      = "agent"
	EachPrincipal  = "principal"
	EachTask       = "task"
	EachToolSource = "toolSource"
	EachTool       = "tool"
	EachModel      = "model"
)

// BurstOrDefault is the burst of the rate: Requests when unset.
func (r *Rate) BurstOrDefault() int64 {
	if r.Burst != nil {
		return *r.Burst
	}
	return r.Requests
}

// check reports the rules the schema states poorly: at least one of rate
// and inFlight; a limit on tools and models at once covers nothing; a task
// scope is "*" or one id.
func (s *RateLimitSpec) check() []FieldError {
	var out []FieldError
	if s.Rate == nil && s.InFlight == nil {
		out = append(out, FieldError{Field: "spec", Message: "set rate, inFlight or both"})
	}
	sc := s.Scope
	if sc.Model != "" && (sc.Tool != "" || sc.ToolSource != "") {
		out = append(out, FieldError{Field: "spec.scope.model", Message: "a limit covers tool calls (tool, toolSource) or model calls (model), not both: declare two limits"})
	}
	if t := sc.Task; t != "*" && strings.ContainsAny(t, "*?") {
		out = append(out, FieldError{Field: "spec.scope.task", Message: `must be "*" (any task) or one task's id; other globs are not supported`})
	}
	if s.Each == EachModel && (sc.Tool != "" || sc.ToolSource != "") {
		out = append(out, FieldError{Field: "spec.each", Message: "each: model counts model calls, but the scope covers tool calls only"})
	}
	if (s.Each == EachTool || s.Each == EachToolSource) && sc.Model != "" {
		out = append(out, FieldError{Field: "spec.each", Message: "each: " + s.Each + " counts tool calls, but the scope covers model calls only"})
	}
	return out
}

//go:embed schemas/ratelimit.json
var rateLimitSpecSchema []byte
