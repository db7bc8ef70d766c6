// Package tools is the catalogue of the tools agents call through corral: the
// Tool and Source types that every kind of tool source implements, and the
// Catalog that turns ToolSource resources into live sources on every replica
// and answers "which tool is this name" without touching the network.
package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/config"
)

// Tool is one tool as agents and the pipeline see it.
type Tool struct {
	// Name is "<source>.<tool>": unique across corral.
	Name string `json:"name"`
	// Source is the ToolSource's name.
	Source      string `json:"source"`
	Title       string `json:"title,omitempty"`
	Description string `json:"description,omitempty"`
	// InputSchema is a JSON Schema (draft 2020-12 unless it says otherwise
	// with $schema) for the arguments object.
	InputSchema json.RawMessage `json:"inputSchema"`
	// OutputSchema is a JSON Schema for the result, when the source declares one.
	OutputSchema json.RawMessage `json:"outputSchema,omitempty"`
	Annotations  Annotations     `json:"annotations"`
	// AnnotationsSource says where each annotation came from; nil for
	// annotations corral derived itself (Origins).
	AnnotationsSource *AnnotationsSource `json:"annotationsSource,omitempty"`
	// Method and Path are the HTTP operation behind an OpenAPI tool.
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
}

// Annotations are hints about what calling a tool does. Policy reads them
// and the gateway retries only idempotent tools.
type Annotations struct {
	ReadOnly    bool `json:"readOnly"`
	Destructive bool `json:"destructive"`
	Idempotent  bool `json:"idempotent"`
	// OpenWorld: the tool reaches beyond a closed domain (MCP's hint); nil
	// when the source does not say.
	OpenWorld *bool `json:"openWorld,omitempty"`
}

// Where an annotation comes from, for policy (input.tool.annotations_source):
// upstream annotations are claims, not facts.
const (
	// FromUpstream: what the MCP server says now, followed live (the
	// ToolSource set spec.mcp.adoptChanges).
	FromUpstream = "upstream"
	// FromPinned: what the MCP server said when its tools were pinned (first
	// seen, or accepted after review); a change is held back as drift.
	FromPinned = "pinned"
	// FromOverride: the ToolSource's spec.overrides.
	FromOverride = "override"
	// FromDerived: corral derived it (an OpenAPI operation's method, or an
	// override of it).
	FromDerived = "derived"
)

// AnnotationsSource says where each of a tool's annotations came from:
// FromUpstream, FromPinned, FromOverride or FromDerived.
type AnnotationsSource struct {
	ReadOnly    string `json:"readOnly"`
	Destructive string `json:"destructive"`
	Idempotent  string `json:"idempotent"`
}

var derived = AnnotationsSource{ReadOnly: FromDerived, Destructive: FromDerived, Idempotent: FromDerived}

// Origins returns where the tool's annotations came from.
func (t *Tool) Origins() AnnotationsSource {
	if t.AnnotationsSource == nil {
		return derived
	}
	return *t.AnnotationsSource
}

// String writes the annotations for people: "readOnly destructive".
func (a Annotations) String() string {
	var parts []string
	for _, x := range []struct {
		on   bool
		name string
	}{{a.ReadOnly, "readOnly"}, {a.Destructive, "destructive"}, {a.Idempotent, "idempotent"}} {
		if x.on {
			parts = append(parts, x.name)
		}
	}
	if a.OpenWorld != nil {
		parts = append(parts, fmt.Sprintf("openWorld=%t", *a.OpenWorld))
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, " ")
}

// Apply returns a with the override's set fields in place.
func (a Annotations) Apply(o config.ToolOverride) Annotations {
	if o.ReadOnly != nil {
		a.ReadOnly = *o.ReadOnly
	}
	if o.Destructive != nil {
		a.Destructive = *o.Destructive
	}
	if o.Idempotent != nil {
		a.Idempotent = *o.Idempotent
	}
	return a
}

// Call is one invocation handed to a source.
type Call struct {
	// Tool is the tool being called, as the catalogue holds it.
	Tool *Tool
	// Arguments is a JSON object, already validated against the input schema.
	Arguments json.RawMessage
	// Value is Arguments decoded (maps, slices, json.Number, ...), when the
	// caller has it; sources may use it instead of parsing Arguments again.
	Value any
	// IdempotencyKey, when set, is passed on to the upstream.
	IdempotencyKey string
	// Identity, when set, is a corral-signed token telling the upstream who
	// acts (sub, act); sources send it as the ToolSource's spec.identity
	// says.
	Identity string
}

// Result is what a tool answered.
type Result struct {
	// Structured is the answer as one JSON value: an OpenAPI tool's JSON
	// body (a string for other text), an MCP tool's structuredContent.
	Structured json.RawMessage `json:"structured,omitempty"`
	// Content is an MCP tool's content blocks, as the server sent them.
	Content []json.RawMessage `json:"content,omitempty"`
	// IsError is set when the tool itself reports failure: an MCP result
	// with isError, or an HTTP answer 4xx. The call reached the tool.
	IsError bool `json:"isError,omitempty"`
	// Status is the upstream's HTTP status; 0 where there is none.
	Status int `json:"status,omitempty"`
	// ContentType is the upstream's media type, for HTTP upstreams.
	ContentType string `json:"contentType,omitempty"`
	// Size is the size in bytes of what the upstream sent.
	Size int `json:"size"`
	// RetryAfter is the upstream's Retry-After on a 429 or 503 answer;
	// zero when it sent none. Not recorded for replays.
	RetryAfter time.Duration `json:"-"`
}

// Source is a connected tool source: an OpenAPI-described HTTP API or an
// MCP server. Implementations pass sourcetest.Run.
type Source interface {
	// Tools returns the source's tools, named "<source>.<tool>". The slice
	// is not modified after it is returned.
	Tools() []Tool
	// Call invokes one of them. A failure to reach the tool wraps one of
	// upstream's errors (ErrUnavailable, ErrTimeout, ErrTooLarge) or
	// ErrInvalidAnswer; a tool that ran and failed is a Result with IsError.
	Call(ctx context.Context, c Call) (*Result, error)
	// Close releases connections and stops what the source started.
	Close() error
}

// Errors sources wrap, besides upstream's.
var (
	// ErrInvalidAnswer: the upstream answered something that is not a
	// valid answer (not JSON where JSON was declared, a protocol error).
	ErrInvalidAnswer = errors.New("upstream answer invalid")
	// ErrCredentials: the upstream's credentials cannot be resolved (a
	// missing Secret or variable); the request was not sent.
	ErrCredentials = errors.New("upstream credentials unavailable")
)

// Env is what a source may use while it is built and runs.
type Env struct {
	Logger *slog.Logger
	// Revision is the ToolSource resource's revision the source is built
	// for: sources that pin what they loaded key the pin by it.
	Revision uint64
	// Labels are the ToolSource's labels (AcceptDriftLabel among them).
	Labels map[string]string
	// Secret resolves a credential reference (a Secret's name or an
	// environment variable) to its value. Call it per request, so that a
	// rotated secret applies without a rebuild.
	Secret func(ctx context.Context, ref config.SecretValue) (string, error)
	// Changed tells the catalogue that Tools now answers differently (an
	// MCP server's list changed, a drift was accepted).
	Changed func()
}

// AcceptDriftLabel, on a ToolSource, names the held-back definition its
// owner accepted (the first 12 hex digits of its SHA-256): a new revision
// of the source takes that definition into force, and no other.
const AcceptDriftLabel = "drift.corral.dev/accepted"

// Factory builds the source a ToolSource resource declares. It returns once
// the source's tools are known, or with an error that says why not; the
// catalogue retries with backoff.
type Factory func(ctx context.Context, name string, spec *config.ToolSourceSpec, env Env) (Source, error)

// Match reports whether a tool name matches a pattern from Agent.spec.tools:
// a full name, or a glob where * matches any run of characters (dots
// included) and ? matches one.
func Match(pattern, name string) bool {
	if !strings.ContainsAny(pattern, "*?") {
		return pattern == name
	}
	// Iterative glob with backtracking to the last star: linear in practice
	// and never exponential.
	p, n := 0, 0
	star, next := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]):
			p++
			n++
		case p < len(pattern) && pattern[p] == '*':
			star, next = p, n
			p++
		case star >= 0:
			p = star + 1
			next++
			n = next
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// Allowed reports whether any of patterns matches name.
func Allowed(patterns []string, name string) bool {
	for _, p := range patterns {
		if Match(p, name) {
			return true
		}
	}
	return false
}
