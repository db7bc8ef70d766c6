package oauth

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/tools"
)

// Workloads verifies workloads' tokens from the issuers trusted for them
// (Issuer resources with use: workloads); refusals are *identity.TokenError.
type Workloads interface {
	VerifyWorkload(ctx context.Context, token string) (*identity.External, error)
	// Workload reports whether iss is an issuer trusted for workloads.
	Workload(iss string) bool
}

// client is an authenticated client: the agent, the incarnation of it,
// and how it proved who it is.
type client struct {
	spec *config.AgentSpec
	// key has the agent and its uid; its ID is set only when an API key
	// authenticated the client.
	key identity.Key
	// proof says how an agent without a key proved itself; nil for a key.
	proof *identity.Proof
	// actor is set when the actor_token was the workload token that
	// authenticated the client, so it is not checked again.
	actor bool
	// self is set when the subject_token was the workload token that
	// authenticated the client: the exchange issues the agent's own token.
	self bool
}

// identify authenticates the client by whichever credential it brought: an
// API key (client_secret), a workload's token (an RFC 7523 client
// assertion, or the actor or subject token of a token exchange that has no
// other client authentication), or a client certificate (RFC 8705
// tls_client_auth).
func (h *Handler) identify(ctx context.Context, r *http.Request, f form, gt string, c credentials, rec *audit.Record) (client, *failure) {
	switch {
	case c.assertion != "":
		return h.federate(ctx, "client_assertion", c.assertion, c.id, rec)
	case c.secret != "":
		spec, key, fail := h.authenticate(c, rec)
		return client{spec: spec, key: key}, fail
	}
	if cert := peerCertificate(r); cert != nil {
		return h.certificate(cert, c.id, rec)
	}
	if c.id == "" && gt == GrantTokenExchange {
		if actor := f.get("actor_token"); actor != "" && h.workloadToken(actor) {
			cl, fail := h.federate(ctx, "actor_token", actor, "", rec)
			cl.actor = true
			return cl, fail
		}
		if subject := f.get("subject_token"); subject != "" && f.get("actor_token") == "" && h.workloadToken(subject) {
			cl, fail := h.federate(ctx, "subject_token", subject, "", rec)
			cl.self = true
			return cl, fail
		}
	}
	spec, key, fail := h.authenticate(c, rec)
	return client{spec: spec, key: key}, fail
}

// workloadToken reports whether token is a JWT whose (unverified) issuer
// is trusted for workloads: which verification it needs, not whether it
// passes.
func (h *Handler) workloadToken(token string) bool {
	u, ok := peek(token)
	return ok && h.deps.Workloads != nil && h.deps.Workloads.Workload(u.Issuer)
}

// federate authenticates the client by a workload's token in field: the
// token must verify against an issuer trusted for workloads, and its
// subject must be declared by exactly one Agent. claimed, when the client
// also sent a client_id, must be that agent.
func (h *Handler) federate(ctx context.Context, field, token, claimed string, rec *audit.Record) (client, *failure) {
	if h.deps.Workloads == nil {
		return client{}, refuseClient(field, identity.ReasonWrongIssuer, "no issuer is trusted for workloads")
	}
	w, err := h.deps.Workloads.VerifyWorkload(ctx, token)
	if err != nil {
		fail := tokenRefused(field, err)
		if fail.Status < 500 {
			fail.Status, fail.Code = http.StatusUnauthorized, CodeInvalidClient
		}
		return client{}, fail
	}
	proof := &identity.Proof{Method: identity.ProofWorkload, Issuer: w.IssuerName, Subject: w.Subject}
	rec.Credential = proof.String()
	match := func(spec *config.AgentSpec) bool {
		return slices.ContainsFunc(spec.Workloads, func(d config.WorkloadIdentity) bool {
			return (d.Issuer == "" || d.Issuer == w.IssuerName) && tools.Match(d.Subject, w.Subject)
		})
	}
	return h.mapped(field, "workload "+w.Subject+" of issuer "+w.IssuerName, claimed, proof, match, rec)
}

// certificate authenticates the client by its certificate, verified by the
// TLS handshake against --tls-client-ca: one of its URI SANs, or its
// subject DN, must be declared by exactly one Agent.
func (h *Handler) certificate(cert *x509.Certificate, claimed string, rec *audit.Record) (client, *failure) {
	names := certificateNames(cert)
	var matched string
	match := func(spec *config.AgentSpec) bool {
		for _, d := range spec.Certificates {
			for _, n := range names {
				if (d.URI != "" && n.uri && tools.Match(d.URI, n.value)) || (d.Subject != "" && !n.uri && tools.Match(d.Subject, n.value)) {
					matched = n.value
					return true
				}
			}
		}
		return false
	}
	what := "certificate " + cert.Subject.String()
	if len(cert.URIs) > 0 {
		what = "certificate " + cert.URIs[0].String()
	}
	proof := &identity.Proof{Method: identity.ProofCertificate}
	cl, fail := h.mapped("client certificate", what, claimed, proof, match, rec)
	proof.Subject = matched
	rec.Credential = proof.String()
	return cl, fail
}

// certName is one identity a certificate carries.
type certName struct {
	value string
	uri   bool
}

// certificateNames are a certificate's URI SANs and its subject DN.
func certificateNames(cert *x509.Certificate) []certName {
	var out []certName
	for _, u := range cert.URIs {
		out = append(out, certName{value: u.String(), uri: true})
	}
	if dn := cert.Subject.String(); dn != "" {
		out = append(out, certName{value: dn})
	}
	return out
}

// peerCertificate is the client's certificate when the TLS handshake
// verified it, else nil.
func peerCertificate(r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0][0]
}

// mapped finds the one Agent whose spec match accepts, and checks it as a
// key's agent is checked (exists, not stopped). what names the identity
// for messages.
func (h *Handler) mapped(field, what, claimed string, proof *identity.Proof, match func(*config.AgentSpec) bool, rec *audit.Record) (client, *failure) {
	var names []string
	var found config.Resource
	for _, res := range h.deps.Resources.List("Agent") {
		var spec config.AgentSpec
		if err := json.Unmarshal(res.Spec, &spec); err != nil {
			continue // an unreadable Agent declares nothing
		}
		if match(&spec) {
			names = append(names, res.Metadata.Name)
			found = res
		}
	}
	switch len(names) {
	case 0:
		return client{}, refuseClient(field, identity.ReasonNoAgent, "no Agent declares %s", clip(what, 200))
	case 1:
	default:
		return client{}, refuseClient(field, identity.ReasonTwoAgents, "%s is declared by more than one Agent (%s); it must name one", clip(what, 200), strings.Join(names, ", "))
	}
	name := names[0]
	rec.Agent = name
	if claimed != "" && claimed != name {
		f := invalidClient("%s belongs to another agent than client_id %q", field, claimed)
		f.Reason, f.Detail = identity.ReasonAgentMismatch, fmt.Sprintf("%s is agent %q, presented with client_id %q", clip(what, 200), name, claimed)
		return client{}, f
	}
	spec, fail := h.agent(name, found.Metadata.UID)
	if fail != nil {
		return client{}, fail
	}
	return client{spec: spec, key: identity.Key{Agent: name, AgentUID: found.Metadata.UID}, proof: proof}, nil
}

// refuseClient refuses a credential that was to authenticate the client:
// 401 invalid_client, with the reason for the audit and the client.
func refuseClient(field string, reason identity.Reason, format string, args ...any) *failure {
	detail := fmt.Sprintf(format, args...)
	return &failure{Status: http.StatusUnauthorized, Code: CodeInvalidClient,
		Description: fmt.Sprintf("%s refused (%s): %s", field, reason, detail), Reason: reason, Detail: detail}
}
