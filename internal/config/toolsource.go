package config

import (
	_ "embed"
	"net/url"
	"strings"
	"time"
)

// ToolSourceSpec declares where a set of tools comes from: an HTTP API
// described by OpenAPI, or an MCP server. Each of its tools is named
// "<source>.<tool>" after the resource.
type ToolSourceSpec struct {
	// Description says what the tools are for; shown in listings.
	Description string `json:"description,omitempty"`
	// OpenAPI and MCP: exactly one is set.
	OpenAPI *OpenAPISource `json:"openapi,omitempty"`
	MCP     *MCPSource     `json:"mcp,omitempty"`
	// Auth is how corral authenticates to the upstream. Agents never see it.
	Auth *UpstreamAuth `json:"auth,omitempty"`
	// Overrides change the annotations of tools, keyed by operationId (or
	// the derived name) for OpenAPI, by tool name for MCP.
	Overrides map[string]ToolOverride `json:"overrides,omitempty"`
	// Timeout bounds one upstream attempt, as a Go duration ("10s"); default 30s.
	Timeout string `json:"timeout,omitempty"`
	// Refresh is how often a spec read from a URL, or an MCP server's tool
	// list, is read again to detect drift; default 5m, "0s" never.
	Refresh string `json:"refresh,omitempty"`
	// Breaker tunes the upstream's circuit breaker (OpenAPI sources).
	Breaker *BreakerSpec `json:"breaker,omitempty"`
	// AuditArguments keeps the argument values in the audit record; by
	// default only their digest is kept.
	AuditArguments bool `json:"auditArguments,omitempty"`
	// CaptureContent records calls' arguments and answers in traces,
	// redacted and capped.
	CaptureContent bool `json:"captureContent,omitempty"`
	// Identity says how each call tells the upstream who acts: a short-lived
	// token signed by corral, verifiable with its JWKS, with sub (the user,
	// or the agent acting for itself) and act (the agent). On by default.
	Identity *IdentityPropagation `json:"identity,omitempty"`
}

// IdentityPropagation tunes the identity token sent with each upstream call.
type IdentityPropagation struct {
	// Header carries the token; default DefaultIdentityHeader. When it is
	// Authorization, the token is sent as a Bearer token, and auth must not
	// be set.
	Header string `json:"header,omitempty"`
	// Audience is the token's aud; default the ToolSource's name.
	Audience string `json:"audience,omitempty"`
	// Disabled sends no identity token.
	Disabled bool `json:"disabled,omitempty"`
}

// DefaultIdentityHeader carries the identity token to upstreams.
const DefaultIdentityHeader = "Corral-Identity"

// HeaderOr returns the header the token goes in.
func (p *IdentityPropagation) HeaderOr() string {
	if p == nil || p.Header == "" {
		return DefaultIdentityHeader
	}
	return p.Header
}

// AudienceOr returns the token's audience for the source named source.
func (p *IdentityPropagation) AudienceOr(source string) string {
	if p == nil || p.Audience == "" {
		return source
	}
	return p.Audience
}

// Enabled reports whether calls carry an identity token.
func (p *IdentityPropagation) Enabled() bool { return p == nil || !p.Disabled }

// OpenAPISource is an HTTP API described by an OpenAPI 3.0 or 3.1 document.
type OpenAPISource struct {
	// Spec is where the document is: an http(s) URL, re-read every Refresh,
	// or a path on the server's file system, read when the resource is applied.
	Spec string `json:"spec,omitempty"`
	// Document is the document itself, for servers that cannot read the
	// path: `corral tools import openapi --apply` sends it this way.
	Document string `json:"document,omitempty"`
	// BaseURL is where the API answers; default the document's first server.
	BaseURL string `json:"baseURL,omitempty"`
}

// MCPSource is an MCP server: reached over Streamable HTTP (URL) or started
// by corral and spoken to over stdio (Command). Exactly one is set.
type MCPSource struct {
	URL     string            `json:"url,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Command []string          `json:"command,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	// AdoptChanges takes new tools and changed annotations into force as
	// the server lists them, instead of holding them back for review.
	AdoptChanges bool `json:"adoptChanges,omitempty"`
}

// UpstreamAuth is how corral authenticates to an upstream; exactly one is set.
type UpstreamAuth struct {
	Bearer *SecretValue `json:"bearer,omitempty"`
	APIKey *APIKeyAuth  `json:"apiKey,omitempty"`
	Basic  *BasicAuth   `json:"basic,omitempty"`
}

// APIKeyAuth sends a key in a request header.
type APIKeyAuth struct {
	Header string      `json:"header"`
	Value  SecretValue `json:"value"`
}

// BasicAuth is HTTP basic authentication.
type BasicAuth struct {
	Username string      `json:"username"`
	Password SecretValue `json:"password"`
}

// SecretValue names where a credential is: a Secret resource (by name) or an
// environment variable of the corral server. Exactly one is set.
type SecretValue struct {
	SecretRef string `json:"secretRef,omitempty"`
	Env       string `json:"env,omitempty"`
}

// BreakerSpec tunes a circuit breaker: after Failures consecutive failed
// calls it opens, and calls fail fast for Cooldown before one is let through
// to probe the upstream.
type BreakerSpec struct {
	Failures int    `json:"failures,omitempty"`
	Cooldown string `json:"cooldown,omitempty"`
}

// CooldownOrDefault returns Cooldown parsed, or 0 for the client's default.
func (b *BreakerSpec) CooldownOrDefault() time.Duration {
	if b == nil {
		return 0
	}
	return durationOr(b.Cooldown, 0)
}

// FailuresOrDefault returns Failures, or 0 for the client's default.
func (b *BreakerSpec) FailuresOrDefault() int {
	if b == nil {
		return 0
	}
	return b.Failures
}

// ToolOverride changes a tool's annotations; an absent field keeps the default.
type ToolOverride struct {
	ReadOnly    *bool `json:"readOnly,omitempty"`
	Destructive *bool `json:"destructive,omitempty"`
	Idempotent  *bool `json:"idempotent,omitempty"`
}

// DefaultRefresh is how often URL specs and MCP tool lists are re-read.
const DefaultRefresh = 5 * time.Minute

// DefaultToolTimeout bounds one upstream attempt.
const DefaultToolTimeout = 30 * time.Second

// TimeoutOrDefault returns Timeout parsed, or DefaultToolTimeout.
func (s *ToolSourceSpec) TimeoutOrDefault() time.Duration {
	return durationOr(s.Timeout, DefaultToolTimeout)
}

// RefreshOrDefault returns Refresh parsed (0: never), or DefaultRefresh.
func (s *ToolSourceSpec) RefreshOrDefault() time.Duration {
	return durationOr(s.Refresh, DefaultRefresh)
}

func durationOr(s string, def time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil { // check rejected it already
		return def
	}
	return d
}

// check reports the rules a JSON Schema states poorly: exactly one of two
// fields, and values that must parse.
func (s *ToolSourceSpec) check() []FieldError {
	var out []FieldError
	add := func(field, msg string) { out = append(out, FieldError{Field: field, Message: msg}) }
	switch {
	case s.OpenAPI == nil && s.MCP == nil:
		add("spec", "set one of openapi or mcp")
	case s.OpenAPI != nil && s.MCP != nil:
		add("spec", "set only one of openapi or mcp")
	}
	if o := s.OpenAPI; o != nil {
		switch {
		case o.Spec == "" && o.Document == "":
			add("spec.openapi", "set spec (a path or URL) or document")
		case o.Spec != "" && o.Document != "":
			add("spec.openapi", "set only one of spec or document")
		}
		if o.BaseURL != "" && !isHTTPURL(o.BaseURL) {
			add("spec.openapi.baseURL", "must be an http or https URL")
		}
	}
	if m := s.MCP; m != nil {
		switch {
		case m.URL == "" && len(m.Command) == 0:
			add("spec.mcp", "set url (Streamable HTTP) or command (stdio)")
		case m.URL != "" && len(m.Command) > 0:
			add("spec.mcp", "set only one of url or command")
		}
		if m.URL != "" && !isHTTPURL(m.URL) {
			add("spec.mcp.url", "must be an http or https URL")
		}
		if len(m.Command) == 0 && len(m.Env) > 0 {
			add("spec.mcp.env", "only applies with command")
		}
		if m.URL == "" && len(m.Headers) > 0 {
			add("spec.mcp.headers", "only apply with url")
		}
	}
	if a := s.Auth; a != nil {
		n := 0
		if a.Bearer != nil {
			n++
			out = append(out, a.Bearer.check("spec.auth.bearer")...)
		}
		if a.APIKey != nil {
			n++
			out = append(out, a.APIKey.Value.check("spec.auth.apiKey.value")...)
		}
		if a.Basic != nil {
			n++
			out = append(out, a.Basic.Password.check("spec.auth.basic.password")...)
		}
		if n != 1 {
			add("spec.auth", "set exactly one of bearer, apiKey or basic")
		}
		if s.MCP != nil && len(s.MCP.Command) > 0 {
			add("spec.auth", "an MCP server started with command takes credentials in env, not auth")
		}
	}
	if p := s.Identity; p != nil && !p.Disabled && strings.EqualFold(p.Header, "Authorization") && s.Auth != nil {
		add("spec.identity.header", "Authorization already carries spec.auth; pick another header or drop auth")
	}
	durations := map[string]string{"spec.timeout": s.Timeout, "spec.refresh": s.Refresh}
	if s.Breaker != nil {
		durations["spec.breaker.cooldown"] = s.Breaker.Cooldown
	}
	for field, v := range durations {
		if v == "" {
			continue
		}
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			add(field, "must be a duration such as 30s or 5m")
		case d < 0:
			add(field, "must not be negative")
		case field == "spec.timeout" && d == 0:
			add(field, "must be more than 0")
		}
	}
	return out
}

func (v SecretValue) check(field string) []FieldError {
	if (v.SecretRef == "") == (v.Env == "") {
		return []FieldError{{Field: field, Message: "set exactly one of secretRef or env"}}
	}
	return nil
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

//go:embed schemas/toolsource.json
var toolSourceSpecSchema []byte
