package config

import (
	"bytes"
	"cmp"
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// AgentSpec declares an agent: an identity that calls tools, models and other
// agents through corral. An agent with a model is hosted: corral runs its
// loop (docs/tasks.md).
type AgentSpec struct {
	// Description says what the agent is for; shown in listings.
	Description string `json:"description,omitempty"`
	// Tools lists the tools the agent may call: full names ("erp.get_order")
	// or globs ("erp.*", "*.get_*"). A tool that matches none is refused and
	// is not listed to the agent.
	Tools []string `json:"tools,omitempty"`
	// Models lists the models the agent may use, as names or globs.
	Models []string `json:"models,omitempty"`
	// Agents lists the agents this agent may call (delegate to, hand off
	// to), as names or globs (docs/agents.md).
	Agents []string `json:"agents,omitempty"`
	// CaptureContent records the agent's prompts, completions, tool
	// arguments and answers in its traces, redacted and capped.
	CaptureContent bool `json:"captureContent,omitempty"`

	// Model makes the agent hosted: corral runs its loop (docs/tasks.md)
	// with this Model, calling the tools Tools and policy let it see.
	Model string `json:"model,omitempty"`
	// Instructions are the hosted agent's system message.
	Instructions string `json:"instructions,omitempty"`
	// Limits bound each of the agent's tasks.
	Limits *AgentLimits `json:"limits,omitempty"`
	// Output is a JSON Schema the hosted agent's final answer must match;
	// a mismatch goes back to the model as a correction.
	Output json.RawMessage `json:"output,omitempty"`
	// Placement labels: the agent's tasks run only on workers whose labels
	// include all of these (corral worker --labels region=eu).
	Placement map[string]string `json:"placement,omitempty"`
	// Owners are the people answerable for the agent (corral humans by
	// name, users of a trusted Issuer by subject): four eyes, they cannot
	// approve its actions.
	Owners []string `json:"owners,omitempty"`
	// Keys says whether the agent's API keys authenticate it: "enabled"
	// (the default) or "disabled", when only its workload identity or its
	// certificate does.
	Keys string `json:"keys,omitempty"`
	// Workloads are the workload identities that are this agent: tokens
	// from an Issuer with use "workloads" whose subject matches.
	Workloads []WorkloadIdentity `json:"workloads,omitempty"`
	// Certificates are the client certificates (mTLS) that are this agent.
	Certificates []CertificateIdentity `json:"certificates,omitempty"`
	// A2A makes the agent a remote A2A agent: its tasks are sent to the A2A
	// v1.0 agent at URL and mirrored (docs/a2a.md).
	A2A *A2ASpec `json:"a2a,omitempty"`
}

// A2ASpec is a remote A2A agent: where it answers and how corral
// authenticates to it.
type A2ASpec struct {
	// URL is the agent's JSON-RPC endpoint (the url of its card's JSONRPC
	// interface).
	URL string `json:"url"`
	// Auth is how corral authenticates to it; none when absent.
	Auth *UpstreamAuth `json:"auth,omitempty"`
}

// KeysDisabled reports whether the agent refuses its API keys.
func (s *AgentSpec) KeysDisabled() bool { return s.Keys == KeysDisabled }

// The values of AgentSpec.Keys.
const (
	KeysEnabled  = "enabled"
	KeysDisabled = "disabled"
)

// WorkloadIdentity names the tokens of a workload that authenticate an
// agent: a Kubernetes service account, a cloud workload identity, a SPIFFE
// JWT-SVID.
type WorkloadIdentity struct {
	// Issuer is the name of the Issuer resource (use: workloads) whose
	// tokens count; "" is any of them.
	Issuer string `json:"issuer,omitempty"`
	// Subject is the token's subject ("system:serviceaccount:ns:sa",
	// "spiffe://corp.example/ns/x/sa/y"), exactly or as a glob where *
	// matches any run of characters and ? one.
	Subject string `json:"subject"`
}

// CertificateIdentity names a client certificate that authenticates an
// agent: by a URI SAN (a SPIFFE X.509-SVID's ID), or by its subject DN.
// Exactly one is set.
type CertificateIdentity struct {
	// URI is a URI SAN, exactly or as a glob.
	URI string `json:"uri,omitempty"`
	// Subject is the subject DN as Go prints it ("CN=impact,O=Corp"),
	// exactly or as a glob.
	Subject string `json:"subject,omitempty"`
}

// Hosted reports whether corral runs the agent's loop.
func (s *AgentSpec) Hosted() bool { return s.Model != "" }

// AgentLimits bound a task of the agent. Zero fields take the defaults.
type AgentLimits struct {
	// MaxTurns bounds the model calls of a task; default 10.
	MaxTurns int `json:"maxTurns,omitempty"`
	// MaxToolCalls bounds the tool calls of a task; default 100.
	MaxToolCalls int `json:"maxToolCalls,omitempty"`
	// Deadline bounds a task's time from its start, as a Go duration;
	// default 10m.
	Deadline string `json:"deadline,omitempty"`
	// RepeatedCalls is how many calls in a row of the same tool with the
	// same arguments end a task with loop_detected; default 3.
	RepeatedCalls int `json:"repeatedCalls,omitempty"`
	// OnExceeded is what a task that reaches one of these limits (or its
	// budget) does: "fail" (the default) or "escalate": wait in
	// input-required for a person to give it more room or cancel it.
	OnExceeded string `json:"onExceeded,omitempty"`
	// EscalateTo are the groups whose people (corral humans, users of a
	// trusted Issuer) may extend an escalated task; the admin always may.
	EscalateTo []string `json:"escalateTo,omitempty"`
	// MaxDepth bounds how many agents a chain of agents calling agents may
	// hold when this agent calls (the root task's agent first, the callee
	// last): a longer one is refused with agent_depth; default 5.
	MaxDepth int `json:"maxDepth,omitempty"`
	// MaxTreeTurns and MaxTreeCost bound a task of this agent together with
	// every task it opens, directly or not (its tree): their model calls,
	// and their cost in the models' pricing currency. A task of the tree
	// that would go past one ends with max_tree_turns or max_tree_cost.
	// 0 (the default) is no bound.
	MaxTreeTurns int     `json:"maxTreeTurns,omitempty"`
	MaxTreeCost  float64 `json:"maxTreeCost,omitempty"`
}

// DefaultMaxDepth is AgentLimits.MaxDepth's default.
const DefaultMaxDepth = 5

// Depth returns the agent's maxDepth, the default filled in; l may be nil.
func (l *AgentLimits) Depth() int {
	if l == nil || l.MaxDepth <= 0 {
		return DefaultMaxDepth
	}
	return l.MaxDepth
}

// The values of AgentLimits.OnExceeded.
const (
	OnExceededFail     = "fail"
	OnExceededEscalate = "escalate"
)

// Task limits' defaults.
const (
	DefaultMaxTurns      = 10
	DefaultMaxToolCalls  = 100
	DefaultTaskDeadline  = 10 * time.Minute
	DefaultRepeatedCalls = 3
)

// Effective returns the limits with the defaults filled in; l may be nil.
func (l *AgentLimits) Effective() (maxTurns, maxToolCalls int, deadline time.Duration, repeated int) {
	var v AgentLimits
	if l != nil {
		v = *l
	}
	return cmp.Or(v.MaxTurns, DefaultMaxTurns), cmp.Or(v.MaxToolCalls, DefaultMaxToolCalls),
		durationOr(v.Deadline, DefaultTaskDeadline), cmp.Or(v.RepeatedCalls, DefaultRepeatedCalls)
}

func (s *AgentSpec) check() []FieldError {
	var out []FieldError
	add := func(field, msg string) { out = append(out, FieldError{Field: field, Message: msg}) }
	if !s.Hosted() {
		for field, set := range map[string]bool{"instructions": s.Instructions != "", "output": len(s.Output) > 0} {
			if set {
				add("spec."+field, "is for hosted agents: set spec.model too, or remove it")
			}
		}
	}
	if a := s.A2A; a != nil {
		if s.Hosted() {
			add("spec.a2a", "a remote A2A agent runs its own loop: remove spec.model, or spec.a2a")
		}
		if !isHTTPURL(a.URL) {
			add("spec.a2a.url", "must be an http or https URL (the remote agent's JSON-RPC endpoint)")
		}
		if a.Auth != nil {
			out = append(out, a.Auth.check("spec.a2a.auth")...)
		}
	}
	if s.Hosted() && !slices.ContainsFunc(s.Models, func(glob string) bool { return globMatch(glob, s.Model) }) {
		add("spec.model", fmt.Sprintf("%q is not among spec.models: list it there too (the agent's calls to it go through the same checks as any)", s.Model))
	}
	if l := s.Limits; l != nil && l.Deadline != "" {
		if d, err := time.ParseDuration(l.Deadline); err != nil || d <= 0 {
			add("spec.limits.deadline", "must be a positive Go duration such as 90s or 2h")
		}
	}
	if len(s.Output) > 0 {
		if _, err := CompileSchema(s.Output); err != nil {
			add("spec.output", "is not a usable JSON Schema: "+err.Error())
		}
	}
	for key := range s.Placement {
		if !labelKey.MatchString(key) {
			add("spec.placement", fmt.Sprintf("%q is not a valid label key", key))
		}
	}
	for i, c := range s.Certificates {
		if (c.URI == "") == (c.Subject == "") {
			out = append(out, FieldError{Field: fmt.Sprintf("spec.certificates[%d]", i), Message: "set exactly one of uri and subject"})
		}
	}
	for i, w := range s.Workloads {
		if strings.Trim(w.Subject, "*") == "" {
			out = append(out, FieldError{Field: fmt.Sprintf("spec.workloads[%d].subject", i), Message: "must name a subject, not match every one"})
		}
	}
	for i, c := range s.Certificates {
		if c.URI != "" && strings.Trim(c.URI, "*") == "" || c.Subject != "" && strings.Trim(c.Subject, "*") == "" {
			out = append(out, FieldError{Field: fmt.Sprintf("spec.certificates[%d]", i), Message: "must name a certificate, not match every one"})
		}
	}
	slices.SortFunc(out, func(a, b FieldError) int { return strings.Compare(a.Field, b.Field) })
	return out
}

// globMatch matches a name against a glob where * is any run of characters
// and ? one character, as tools.Match does (config cannot import tools):
// the two-pointer walk, linear in practice, never exponential.
func globMatch(glob, name string) bool {
	g, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case g < len(glob) && (glob[g] == '?' || glob[g] == name[n]):
			g++
			n++
		case g < len(glob) && glob[g] == '*':
			star, mark = g, n
			g++
		case star >= 0:
			g = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for g < len(glob) && glob[g] == '*' {
		g++
	}
	return g == len(glob)
}

// CompileSchema compiles a JSON Schema (draft 2020-12 unless it says
// otherwise) given as JSON.
func CompileSchema(raw json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource("corral:output.json", doc); err != nil {
		return nil, err
	}
	return c.Compile("corral:output.json")
}

//go:embed schemas/agent.json
var agentSpecSchema []byte
