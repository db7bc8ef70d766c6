package config

import (
	_ "embed"
	"encoding/json"
	"fmt"
)

// PolicySpec holds Rego modules that decide, on every action, whether an
// agent may do it. Every module is `package corral.authz` (Rego v1); the
// modules of all Policy resources and the built-in default bundle form one
// policy. docs/policy.md states the decision contract and the input.
type PolicySpec struct {
	// Description says what the rules are for.
	Description string `json:"description,omitempty"`
	// Rego is one module or several, as source text.
	Rego Modules `json:"rego"`
	// Data is a JSON object available to the rules as data (merged with the
	// other policies' data; two policies may not set the same top-level key).
	Data map[string]any `json:"data,omitempty"`
}

// Modules is one Rego module written as a string, or several as a list.
type Modules []string

// UnmarshalJSON accepts a string or a list of strings.
func (m *Modules) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*m = Modules{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("rego must be a string or a list of strings")
	}
	*m = many
	return nil
}

//go:embed schemas/policy.json
var policySpecSchema []byte

// IssuerSpec trusts an external identity provider: users' tokens it signs
// can be exchanged (RFC 8693) for corral tokens delegated to an agent.
type IssuerSpec struct {
	// Description says which provider this is.
	Description string `json:"description,omitempty"`
	// Issuer is the provider's issuer URL, exactly as its tokens' iss claim
	// says. Its keys are found through OpenID discovery
	// (<issuer>/.well-known/openid-configuration) unless JWKSURL is set.
	Issuer string `json:"issuer"`
	// JWKSURL is where the provider's public keys are, for providers
	// without discovery.
	JWKSURL string `json:"jwksURL,omitempty"`
	// Audience is the value the users' tokens must carry in aud.
	Audience string `json:"audience"`
	// Claims name the claims that carry the user's identity and groups.
	Claims IssuerClaims `json:"claims,omitzero"`
	// Use says whose tokens the issuer signs: "users" (the default), whose
	// tokens agents exchange for delegated ones, or "workloads", whose
	// tokens authenticate agents themselves (AgentSpec.Workloads). An
	// issuer serves one use only, so that a service account's token can
	// never pass for a user's, nor a user's for an agent's.
	Use string `json:"use,omitempty"`
}

// The values of IssuerSpec.Use.
const (
	IssuerUsers     = "users"
	IssuerWorkloads = "workloads"
)

// ForWorkloads reports whether the issuer's tokens authenticate agents.
func (s *IssuerSpec) ForWorkloads() bool { return s.Use == IssuerWorkloads }

// IssuerClaims name the claims of an external token that corral reads;
// absent fields take the defaults in the Or methods.
type IssuerClaims struct {
	Subject string `json:"subject,omitempty"`
	Groups  string `json:"groups,omitempty"`
	Roles   string `json:"roles,omitempty"`
}

// SubjectOr returns the subject claim's name, "sub" by default.
func (c IssuerClaims) SubjectOr() string { return or(c.Subject, "sub") }

// GroupsOr returns the groups claim's name, "groups" by default.
func (c IssuerClaims) GroupsOr() string { return or(c.Groups, "groups") }

// RolesOr returns the roles claim's name, "roles" by default.
func (c IssuerClaims) RolesOr() string { return or(c.Roles, "roles") }

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (s *IssuerSpec) check() []FieldError {
	var out []FieldError
	if !isHTTPURL(s.Issuer) {
		out = append(out, FieldError{Field: "spec.issuer", Message: "must be an http or https URL"})
	}
	if s.JWKSURL != "" && !isHTTPURL(s.JWKSURL) {
		out = append(out, FieldError{Field: "spec.jwksURL", Message: "must be an http or https URL"})
	}
	return out
}

//go:embed schemas/issuer.json
var issuerSpecSchema []byte
