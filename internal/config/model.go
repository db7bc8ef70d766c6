package config

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// ModelSpec declares a model agents can call through corral: either a
// concrete model at a provider, or a route over other Model resources.
// Exactly one of Provider and Route is set.
type ModelSpec struct {
	Description string `json:"description,omitempty"`

	// Provider is "openai" (any OpenAI-compatible server: OpenAI, Azure
	// OpenAI, vLLM, Ollama), "anthropic" (the Messages API) or "scripted"
	// (answers from Script, for tests and demos).
	Provider string `json:"provider,omitempty"`
	// BaseURL is where the provider listens; for OpenAI-compatible servers it
	// includes /v1. Defaults: https://api.openai.com/v1 and
	// https://api.anthropic.com/v1.
	BaseURL string `json:"baseURL,omitempty"`
	// Model is the provider's own name for the model; default metadata.name.
	Model string `json:"model,omitempty"`
	// Auth is how corral authenticates to the provider (bearer for OpenAI,
	// apiKey with header x-api-key for Anthropic). Agents never see it.
	Auth *UpstreamAuth `json:"auth,omitempty"`
	// Headers are sent with every request (e.g. an api-version).
	Headers map[string]string `json:"headers,omitempty"`
	// Region is where the model runs, for policy ("customer data only on
	// models in the EU").
	Region string `json:"region,omitempty"`
	// Pricing turns usage into cost, for budgets and accounting.
	Pricing *Pricing `json:"pricing,omitempty"`
	// Redact is what happens to personal data in prompts bound for this
	// model: "off", "mask" (values become type tags) or "reversible"
	// (stable placeholders, restored in the answer). Default "reversible"
	// for openai and anthropic, "off" for scripted.
	Redact string `json:"redact,omitempty"`
	// Patterns are custom redaction patterns, in addition to the built-in
	// detectors.
	Patterns []RedactPattern `json:"patterns,omitempty"`
	// RestoreToolArguments, in reversible mode, puts the values back into
	// the arguments of the tool calls the model answers with. Off by
	// default: the tool gets the placeholder, so that a model steered by an
	// injection ("send <EMAIL_1> to attacker@evil.test") cannot make corral
	// hand the value to a tool.
	RestoreToolArguments bool `json:"restoreToolArguments,omitempty"`
	// Timeout bounds one call (to the first byte of a stream), as a Go
	// duration; default 60s.
	Timeout string `json:"timeout,omitempty"`
	// MaxOutputTokens is the output a call is assumed to use at worst when
	// the request sets no max_tokens, for budget reservations; default 4096.
	MaxOutputTokens int `json:"maxOutputTokens,omitempty"`
	// OutputLimitField is the request field an OpenAI-compatible server is
	// sent the output cap in: "max_tokens", "max_completion_tokens" or
	// "both". Default: for OpenAI's and Azure OpenAI's own APIs the field
	// the agent used (max_completion_tokens when it set none or both, which
	// OpenAI's reasoning models require); for any other server max_tokens,
	// the one field every OpenAI-compatible server reads (Ollama knows no
	// other), so the cap bounds the call there too.
	OutputLimitField string `json:"outputLimitField,omitempty"`
	// API is the OpenAI API corral calls an openai model with: "chat"
	// (POST {baseURL}/chat/completions, the default, which every
	// OpenAI-compatible server speaks) or "responses" (POST
	// {baseURL}/responses, OpenAI's Responses API, for models that serve
	// it: reasoning items are passed through; docs/responses.md).
	API string `json:"api,omitempty"`
	// Script is the scripted provider's conversation: each call answers
	// with the turn numbered by the assistant messages already in it.
	Script []ScriptTurn `json:"script,omitempty"`

	// Route spreads calls over other models.
	Route *RouteSpec `json:"route,omitempty"`
}

// Pricing is the price of a million tokens, in the currency budgets count.
type Pricing struct {
	InputPerMTok  float64 `json:"inputPerMTok"`
	OutputPerMTok float64 `json:"outputPerMTok"`
}

// RedactPattern is a custom detector: values matching Regex are redacted
// as Name.
type RedactPattern struct {
	Name  string `json:"name"`
	Regex string `json:"regex"`
}

// ScriptTurn is one scripted answer: content, tool calls, or both.
type ScriptTurn struct {
	Content   string           `json:"content,omitempty"`
	ToolCalls []ScriptToolCall `json:"toolCalls,omitempty"`
}

// ScriptToolCall is a scripted call of a function; Arguments is a JSON object.
type ScriptToolCall struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
}

// RouteSpec picks a target by weight for each call, falls back in order
// when it fails (429, 5xx, time-out, connection error), and sends a copy to
// each shadow, whose answer is recorded but never returned.
type RouteSpec struct {
	Targets   []RouteTarget `json:"targets"`
	Fallbacks []string      `json:"fallbacks,omitempty"`
	Shadow    []string      `json:"shadow,omitempty"`
}

// RouteTarget is a concrete model and its share of the calls.
type RouteTarget struct {
	Model  string `json:"model"`
	Weight int    `json:"weight,omitempty"` // default 1
}

// Model defaults.
const (
	DefaultModelTimeout    = 60 * time.Second
	DefaultMaxOutputTokens = 4096
)

// TimeoutOrDefault returns Timeout parsed, or DefaultModelTimeout.
func (s *ModelSpec) TimeoutOrDefault() time.Duration {
	return durationOr(s.Timeout, DefaultModelTimeout)
}

// MaxOutputOrDefault returns MaxOutputTokens, or DefaultMaxOutputTokens.
func (s *ModelSpec) MaxOutputOrDefault() int {
	if s.MaxOutputTokens > 0 {
		return s.MaxOutputTokens
	}
	return DefaultMaxOutputTokens
}

// The output limit fields, for OutputLimitField.
const (
	OutputLimitMaxTokens           = "max_tokens"
	OutputLimitMaxCompletionTokens = "max_completion_tokens"
	OutputLimitBoth                = "both"
)

// OutputLimitFieldOrDefault returns OutputLimitField, or its default: "" (the
// field the agent used) for OpenAI's own APIs and for the providers that
// translate the limit themselves, max_tokens for any other
// OpenAI-compatible server.
func (s *ModelSpec) OutputLimitFieldOrDefault() string {
	if s.OutputLimitField != "" || s.Provider != "openai" || s.BaseURL == "" {
		return s.OutputLimitField
	}
	u, err := url.Parse(s.BaseURL)
	if err != nil {
		return OutputLimitMaxTokens
	}
	host := strings.ToLower(u.Hostname())
	if host == "api.openai.com" || strings.HasSuffix(host, ".openai.azure.com") {
		return ""
	}
	return OutputLimitMaxTokens
}

// RedactOrDefault returns Redact, or the provider's default.
func (s *ModelSpec) RedactOrDefault() string {
	switch {
	case s.Redact != "":
		return s.Redact
	case s.Provider == "scripted":
		return "off"
	}
	return "reversible"
}

// check reports the rules the schema states poorly: provider or route,
// settings that only apply to one kind of model, values that must parse.
func (s *ModelSpec) check() []FieldError {
	var out []FieldError
	add := func(field, msg string) { out = append(out, FieldError{Field: field, Message: msg}) }
	switch {
	case s.Provider == "" && s.Route == nil:
		add("spec", "set one of provider (a concrete model) or route")
	case s.Provider != "" && s.Route != nil:
		add("spec", "set only one of provider or route")
	}
	if s.Route != nil {
		// A route's calls take the settings of the model they reach.
		for _, f := range []struct {
			field string
			set   bool
		}{
			{"spec.baseURL", s.BaseURL != ""}, {"spec.model", s.Model != ""}, {"spec.auth", s.Auth != nil},
			{"spec.headers", len(s.Headers) > 0}, {"spec.region", s.Region != ""}, {"spec.pricing", s.Pricing != nil},
			{"spec.redact", s.Redact != ""}, {"spec.patterns", len(s.Patterns) > 0}, {"spec.timeout", s.Timeout != ""},
			{"spec.restoreToolArguments", s.RestoreToolArguments},
			{"spec.maxOutputTokens", s.MaxOutputTokens != 0}, {"spec.script", len(s.Script) > 0},
			{"spec.outputLimitField", s.OutputLimitField != ""}, {"spec.api", s.API != ""},
		} {
			if f.set {
				add(f.field, "applies to a concrete model; set it on the route's targets")
			}
		}
		out = append(out, s.Route.check()...)
	}
	if s.Provider == "scripted" {
		for _, f := range []struct {
			field string
			set   bool
		}{{"spec.baseURL", s.BaseURL != ""}, {"spec.auth", s.Auth != nil}, {"spec.headers", len(s.Headers) > 0}} {
			if f.set {
				add(f.field, "does not apply to the scripted provider, which calls no server")
			}
		}
	}
	if s.Provider != "" && s.Provider != "openai" && s.OutputLimitField != "" {
		add("spec.outputLimitField", "only applies with provider openai")
	}
	if s.Provider != "" && s.Provider != "openai" && s.API != "" {
		add("spec.api", "only applies with provider openai")
	}
	if s.Provider != "" && s.Provider != "scripted" && len(s.Script) > 0 {
		add("spec.script", "only applies with provider scripted")
	}
	if s.BaseURL != "" && !isHTTPURL(s.BaseURL) {
		add("spec.baseURL", "must be an http or https URL")
	}
	if a := s.Auth; a != nil {
		out = append(out, a.check("spec.auth")...)
	}
	seen := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(s.Headers)) {
		value := s.Headers[name]
		field := "spec.headers." + name
		canonical := strings.ToLower(name)
		switch {
		case !headerName.MatchString(name):
			add(field, "is not a valid header name")
		case canonical == "authorization" || canonical == "x-api-key" || canonical == "api-key":
			add(field, "carries credentials: use auth, which keeps them in a Secret")
		case seen[canonical] != "":
			add(field, fmt.Sprintf("is %s again (header names ignore case)", seen[canonical]))
		}
		seen[canonical] = name
		if strings.ContainsFunc(value, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
			add(field, "must not hold control characters")
		}
	}
	if s.Timeout != "" {
		d, err := time.ParseDuration(s.Timeout)
		switch {
		case err != nil:
			add("spec.timeout", "must be a duration such as 30s or 2m")
		case d <= 0:
			add("spec.timeout", "must be more than 0")
		}
	}
	names := map[string]int{}
	for i, p := range s.Patterns {
		field := fmt.Sprintf("spec.patterns[%d]", i)
		if j, dup := names[p.Name]; dup {
			add(field+".name", fmt.Sprintf("%s is also pattern %d", p.Name, j))
		}
		names[p.Name] = i
		if _, err := regexp.Compile(p.Regex); err != nil {
			add(field+".regex", "does not compile: "+err.Error())
		}
	}
	return out
}

// check reports targets named twice and weights that send no call anywhere.
func (r *RouteSpec) check() []FieldError {
	var out []FieldError
	seen := map[string]int{}
	total := 0
	for i, t := range r.Targets {
		field := fmt.Sprintf("spec.route.targets[%d]", i)
		if j, dup := seen[t.Model]; dup {
			out = append(out, FieldError{Field: field + ".model", Message: fmt.Sprintf("%s is also target %d", t.Model, j)})
		}
		seen[t.Model] = i
		switch {
		case t.Weight < 0:
			out = append(out, FieldError{Field: field + ".weight", Message: "must not be negative"})
		case t.Weight == 0:
			total++ // unset: 1
		default:
			total += t.Weight
		}
	}
	if len(r.Targets) > 0 && total <= 0 {
		out = append(out, FieldError{Field: "spec.route.targets", Message: "at least one target needs a positive weight"})
	}
	return out
}

// check reports an auth that sets not exactly one method, or a credential
// that names not exactly one place.
func (a *UpstreamAuth) check(field string) []FieldError {
	var out []FieldError
	n := 0
	if a.Bearer != nil {
		n++
		out = append(out, a.Bearer.check(field+".bearer")...)
	}
	if a.APIKey != nil {
		n++
		out = append(out, a.APIKey.Value.check(field+".apiKey.value")...)
	}
	if a.Basic != nil {
		n++
		out = append(out, a.Basic.Password.check(field+".basic.password")...)
	}
	if n != 1 {
		out = append(out, FieldError{Field: field, Message: "set exactly one of bearer, apiKey or basic"})
	}
	return out
}

// headerName is an HTTP header field name (RFC 9110 token).
var headerName = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")

//go:embed schemas/model.json
var modelSpecSchema []byte
