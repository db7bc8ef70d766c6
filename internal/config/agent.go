package config

import (
	_ "embed"
	"fmt"
	"strings"
)

// AgentSpec declares an agent: an identity that calls tools, models and other
// agents through corral. Later issues add the model, instructions and limits
// of hosted agents.
type AgentSpec struct {
	// Description says what the agent is for; shown in listings.
	Description string `json:"description,omitempty"`
	// Tools lists the tools the agent may call: full names ("erp.get_order")
	// or globs ("erp.*", "*.get_*"). A tool that matches none is refused and
	// is not listed to the agent.
	Tools []string `json:"tools,omitempty"`
	// Models lists the models the agent may use, as names or globs.
	Models []string `json:"models,omitempty"`
	// CaptureContent records the agent's prompts, completions, tool
	// arguments and answers in its traces, redacted and capped.
	CaptureContent bool `json:"captureContent,omitempty"`
	// Keys says whether the agent's API keys authenticate it: "enabled"
	// (the default) or "disabled", when only its workload identity or its
	// certificate does.
	Keys string `json:"keys,omitempty"`
	// Workloads are the workload identities that are this agent: tokens
	// from an Issuer with use "workloads" whose subject matches.
	Workloads []WorkloadIdentity `json:"workloads,omitempty"`
	// Certificates are the client certificates (mTLS) that are this agent.
	Certificates []CertificateIdentity `json:"certificates,omitempty"`
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

func (s *AgentSpec) check() []FieldError {
	var out []FieldError
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
	return out
}

//go:embed schemas/agent.json
var agentSpecSchema []byte
