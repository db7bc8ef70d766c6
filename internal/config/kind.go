package config

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Kind describes one resource kind: its names, its spec type and the JSON
// Schema its documents must satisfy.
type Kind struct {
	// Name is the kind as written in documents: "Agent".
	Name string
	// Plural is the lowercase plural the CLI and URLs accept: "agents".
	Plural string
	// Summary is one line for listings and schema titles.
	Summary string

	newSpec    func() any // a pointer to a zero spec value
	specSchema []byte     // the JSON Schema of spec, kept beside the spec type
}

// kinds is the catalogue of resource kinds, in the order listings show them.
// A new kind is one entry here, a spec type and a schema file beside it.
var kinds = []*Kind{
	{
		Name:       "Agent",
		Plural:     "agents",
		Summary:    "An agent: an identity that calls tools, models and other agents through corral.",
		newSpec:    func() any { return new(AgentSpec) },
		specSchema: agentSpecSchema,
	},
	{
		Name:       "ToolSource",
		Plural:     "toolsources",
		Summary:    "Where tools come from: an HTTP API described by OpenAPI, or an MCP server.",
		newSpec:    func() any { return new(ToolSourceSpec) },
		specSchema: toolSourceSpecSchema,
	},
	{
		Name:       "Secret",
		Plural:     "secrets",
		Summary:    "A credential for upstreams, sealed before it is stored and never returned in clear.",
		newSpec:    func() any { return new(SecretSpec) },
		specSchema: secretSpecSchema,
	},
	{
		Name:       "Policy",
		Plural:     "policies",
		Summary:    "Rego rules that decide, on every action, whether an agent may do it.",
		newSpec:    func() any { return new(PolicySpec) },
		specSchema: policySpecSchema,
	},
	{
		Name:       "Issuer",
		Plural:     "issuers",
		Summary:    "A trusted identity provider whose users' tokens agents can exchange for delegated tokens.",
		newSpec:    func() any { return new(IssuerSpec) },
		specSchema: issuerSpecSchema,
	},
	{
		Name:       "Model",
		Plural:     "models",
		Summary:    "A model agents call through corral: a concrete model at a provider, or a route over models.",
		newSpec:    func() any { return new(ModelSpec) },
		specSchema: modelSpecSchema,
	},
	{
		Name:       "Budget",
		Plural:     "budgets",
		Summary:    "A cap on the tokens, cost and calls of the actions it covers, per window.",
		newSpec:    func() any { return new(BudgetSpec) },
		specSchema: budgetSpecSchema,
	},
	{
		Name:       "RateLimit",
		Plural:     "ratelimits",
		Summary:    "A pace and a cap on calls in flight for the calls it covers, shared by every replica.",
		newSpec:    func() any { return new(RateLimitSpec) },
		specSchema: rateLimitSpecSchema,
	},
	{
		Name:       "Notifier",
		Plural:     "notifiers",
		Summary:    "Where corral announces each new approval: Slack (with Approve and Deny buttons) or a CloudEvents webhook.",
		newSpec:    func() any { return new(NotifierSpec) },
		specSchema: notifierSpecSchema,
	},
	{
		Name:       "Workflow",
		Plural:     "workflows",
		Summary:    "A process: named steps (agent tasks, tool calls) with CEL inputs, retries, compensations and routing slips; a run is a task.",
		newSpec:    func() any { return new(WorkflowSpec) },
		specSchema: workflowSpecSchema,
	},
	{
		Name:       "Trigger",
		Plural:     "triggers",
		Summary:    "Starts an agent's task (or a workflow) for each event from a webhook, a schedule, NATS, RabbitMQ or Kafka.",
		newSpec:    func() any { return new(TriggerSpec) },
		specSchema: triggerSpecSchema,
	},
}

// checker is implemented by spec types with rules their JSON Schema states
// poorly (one of two fields, values that must parse); Validate runs it after
// the schema passed.
type checker interface{ check() []FieldError }

//go:embed schemas/metadata.json
var metadataSchema []byte

// Kinds returns every resource kind, in catalogue order.
func Kinds() []*Kind { return slices.Clone(kinds) }

// KindNames returns the names of every kind, for messages.
func KindNames() string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.Name
	}
	return strings.Join(names, ", ")
}

// ErrUnknownKind is returned (wrapped) by LookupKind for a name no kind answers to.
var ErrUnknownKind = errors.New("unknown kind")

// LookupKind finds a kind by its name or plural, in any letter case:
// "Agent", "agent" and "agents" all name the Agent kind.
func LookupKind(name string) (*Kind, error) {
	for _, k := range kinds {
		if strings.EqualFold(name, k.Name) || strings.EqualFold(name, k.Plural) {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w %q (known kinds: %s)", ErrUnknownKind, name, KindNames())
}

// DecodeSpec decodes a spec of this kind into its Go type (a pointer, such as
// *AgentSpec), rejecting unknown fields.
func (k *Kind) DecodeSpec(raw json.RawMessage) (any, error) {
	spec := k.newSpec()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(spec); err != nil {
		return nil, fmt.Errorf("decode %s spec: %w", k.Name, err)
	}
	return spec, nil
}

// Schema returns the JSON Schema (draft 2020-12) of a whole document of this
// kind: apiVersion, kind, metadata and spec. Editors use it through
// GET /v1/schemas/{kind}.
func (k *Kind) Schema() []byte { return schemas().docs[k.Name] }

// validator returns the compiled schema of a whole document of this kind.
func (k *Kind) validator() *jsonschema.Schema { return schemas().compiled[k.Name] }

type compiledSchemas struct {
	docs     map[string][]byte
	compiled map[string]*jsonschema.Schema
}

// schemas builds and compiles every kind's document schema once. The schemas
// are part of the binary, so a failure here is a programming error that the
// package's tests catch; it panics rather than limp on without validation.
var schemas = sync.OnceValue(func() compiledSchemas {
	out := compiledSchemas{docs: map[string][]byte{}, compiled: map[string]*jsonschema.Schema{}}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	for _, k := range kinds {
		doc, err := documentSchema(k)
		if err != nil {
			panic(fmt.Sprintf("config: schema of %s: %v", k.Name, err))
		}
		out.docs[k.Name] = doc
		parsed, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
		if err != nil {
			panic(fmt.Sprintf("config: schema of %s: %v", k.Name, err))
		}
		url := schemaURL(k)
		if err := c.AddResource(url, parsed); err != nil {
			panic(fmt.Sprintf("config: schema of %s: %v", k.Name, err))
		}
		sch, err := c.Compile(url)
		if err != nil {
			panic(fmt.Sprintf("config: schema of %s: %v", k.Name, err))
		}
		out.compiled[k.Name] = sch
	}
	return out
})

func schemaURL(k *Kind) string { return "https://corral.dev/schemas/v1/" + k.Name + ".json" }

// documentSchema wraps a kind's spec schema in the document envelope.
func documentSchema(k *Kind) ([]byte, error) {
	var meta, spec any
	if err := json.Unmarshal(metadataSchema, &meta); err != nil {
		return nil, fmt.Errorf("metadata schema: %w", err)
	}
	if err := json.Unmarshal(k.specSchema, &spec); err != nil {
		return nil, fmt.Errorf("spec schema: %w", err)
	}
	doc := map[string]any{
		"$schema":              "https://json-schema.org/draft/2020-12/schema",
		"$id":                  schemaURL(k),
		"title":                k.Name,
		"description":          k.Summary,
		"type":                 "object",
		"required":             []string{"apiVersion", "kind", "metadata", "spec"},
		"additionalProperties": false,
		"properties": map[string]any{
			"apiVersion": map[string]any{"const": APIVersion},
			"kind":       map[string]any{"const": k.Name},
			"metadata":   meta,
			"spec":       spec,
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}
