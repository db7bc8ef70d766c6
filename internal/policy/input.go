package policy

// Action kinds: what an agent is trying to call.
const (
	KindTool  = "tool"
	KindModel = "model"
	KindAgent = "agent"
)

// Input is what policy sees of one action, as `input` in Rego.
// docs/policy.md documents every field and holds its JSON Schema.
type Input struct {
	Action Action `json:"action"`
	Agent  Agent  `json:"agent"`
	// Principal is the human or system the agent acts for; nil when the
	// agent acts for itself.
	Principal *Principal `json:"principal,omitempty"`
	// Task is the task the action belongs to; nil when there is none.
	Task *Task `json:"task,omitempty"`
	// Tool is the tool called, for kind tool.
	Tool *Tool `json:"tool,omitempty"`
	// Model is the model called, for kind model.
	Model *Model `json:"model,omitempty"`
	// Time is when the action was attempted, RFC 3339 in UTC, set by the
	// caller so that rules never read a clock.
	Time string `json:"time"`
}

// Action is the call itself.
type Action struct {
	// Kind is KindTool, KindModel or KindAgent.
	Kind string `json:"kind"`
	// Target is the tool's, model's or agent's name.
	Target string `json:"target"`
	// Arguments are the call's arguments as decoded JSON: map[string]any,
	// []any, json.Number or float64, string, bool or nil.
	Arguments any `json:"arguments,omitempty"`
}

// Agent is the acting agent, as its Agent resource declares it.
type Agent struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	// Tools and Models are the agent's spec.tools and spec.models globs.
	Tools  []string `json:"tools,omitempty"`
	Models []string `json:"models,omitempty"`
	// Agents are its spec.agents globs: the agents it may call.
	Agents []string `json:"agents,omitempty"`
}

// Principal is the identity the agent acts for.
type Principal struct {
	Sub    string         `json:"sub"`
	Issuer string         `json:"issuer,omitempty"`
	Groups []string       `json:"groups,omitempty"`
	Roles  []string       `json:"roles,omitempty"`
	Claims map[string]any `json:"claims,omitempty"`
}

// Task is the durable task an action belongs to.
type Task struct {
	ID string `json:"id"`
	// Chain is the agents from the root task down to this one.
	Chain []string `json:"chain,omitempty"`
	Depth int      `json:"depth"`
	Turns int      `json:"turns"`
}

// Tool describes the tool called.
type Tool struct {
	Name        string      `json:"name"`
	Source      string      `json:"source"`
	Method      string      `json:"method,omitempty"`
	Path        string      `json:"path,omitempty"`
	Annotations Annotations `json:"annotations"`
	// AnnotationsSource says where each annotation came from: "upstream"
	// (an MCP server's claim, followed live), "pinned" (its claim as
	// pinned; changes are held for review), "override" (the ToolSource's
	// overrides) or "derived" (corral derived it from an OpenAPI operation).
	AnnotationsSource AnnotationsSource `json:"annotations_source"`
}

// AnnotationsSource says, per annotation, where it came from.
type AnnotationsSource struct {
	ReadOnly    string `json:"readOnly"`
	Destructive string `json:"destructive"`
	Idempotent  string `json:"idempotent"`
}

// Annotations are the tool's hints, overrides applied.
type Annotations struct {
	ReadOnly    bool `json:"readOnly"`
	Destructive bool `json:"destructive"`
	Idempotent  bool `json:"idempotent"`
}

// Model describes the model called.
type Model struct {
	Name     string `json:"name"`
	Provider string `json:"provider,omitempty"`
	Region   string `json:"region,omitempty"`
	// Redact is a concrete model's redaction mode ("off", "mask",
	// "reversible"), defaults applied; "" for a route.
	Redact string `json:"redact,omitempty"`
	// Targets are, for a route, every concrete model a call may reach
	// (targets and fallbacks): a rule about regions must hold for each.
	Targets []Model `json:"targets,omitempty"`
}
