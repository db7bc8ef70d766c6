package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Claims are the claims of a token corral signs. One shape serves three
// uses, told apart by aud and act:
//
//   - an agent's access token (client_credentials): sub and client_id are
//     the agent, aud is corral's issuer;
//   - a delegated token (token exchange): sub is the user, act.sub the
//     agent, client_id the agent, Principal the user's issuer and groups;
//   - an identity token sent to an upstream: like either of the above, with
//     aud the tool source, so it cannot be replayed against corral.
type Claims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  Audience `json:"aud"`
	IssuedAt  int64    `json:"iat"`
	NotBefore int64    `json:"nbf"`
	Expiry    int64    `json:"exp"`
	ID        string   `json:"jti"`
	// ClientID is the agent the token was issued to (RFC 8693 section 4.3).
	ClientID string `json:"client_id"`
	// Scope is the space-separated list of what the token allows:
	// "tool:<name or glob>" and "model:<name or glob>" items.
	Scope string `json:"scope,omitempty"`
	// Act is the acting party when the token is delegated (RFC 8693 4.1);
	// a nested Act records an earlier actor in a chain of delegations.
	Act *Actor `json:"act,omitempty"`
	// Task is the task the token is scoped to, if any.
	Task string `json:"task,omitempty"`
	// Principal describes the user of a delegated token.
	Principal *PrincipalClaims `json:"principal,omitempty"`
	// AgentUID is the metadata.uid of the agent (ClientID) the token was
	// issued to: the token serves that incarnation of the agent only.
	AgentUID string `json:"agent_uid,omitempty"`
	// Proof says how the agent proved who it is when it got the token,
	// when it was not with an API key.
	Proof *Proof `json:"proof,omitempty"`
}

// Proof is how an agent authenticated at the token endpoint without a key:
// with a workload token (Method "workload": Issuer is the Issuer resource,
// Subject the token's sub) or a client certificate (Method "certificate":
// Subject is the URI SAN or subject DN that matched).
type Proof struct {
	Method  string `json:"method"`
	Issuer  string `json:"issuer,omitempty"`
	Subject string `json:"sub"`
}

// The methods of a Proof.
const (
	ProofWorkload    = "workload"
	ProofCertificate = "certificate"
)

// String names the proof for the audit: "workload:k8s:system:serviceaccount:a:b".
func (p *Proof) String() string {
	if p == nil {
		return ""
	}
	if p.Issuer != "" {
		return p.Method + ":" + p.Issuer + ":" + p.Subject
	}
	return p.Method + ":" + p.Subject
}

// Actor is an RFC 8693 act claim.
type Actor struct {
	Subject string `json:"sub"`
	Act     *Actor `json:"act,omitempty"`
}

// PrincipalClaims carry what a trusted issuer said about the user, so that
// policy sees it on every call made with the delegated token.
type PrincipalClaims struct {
	// Issuer is the user's identity provider (its iss).
	Issuer string   `json:"iss"`
	Groups []string `json:"groups,omitempty"`
	Roles  []string `json:"roles,omitempty"`
}

// Agent returns the agent that acts with the token.
func (c *Claims) Agent() string { return c.ClientID }

// Delegated reports whether the token acts for a user.
func (c *Claims) Delegated() bool { return c.Act != nil }

// Scopes splits Scope.
func (c *Claims) Scopes() []string { return strings.Fields(c.Scope) }

// Audience is the aud claim: one string or a list (RFC 7519 4.1.3).
type Audience []string

// Contains reports whether aud names s.
func (a Audience) Contains(s string) bool {
	for _, x := range a {
		if x == s {
			return true
		}
	}
	return false
}

// External is a user's token from a trusted issuer, verified.
type External struct {
	// IssuerName is the Issuer resource that trusts the token's issuer.
	IssuerName string
	Issuer     string
	Subject    string
	Groups     []string
	Roles      []string
	Expiry     int64
	// Claims are all the token's claims, for policy.
	Claims map[string]any
}

// Reason says why a token was refused. Each is distinct, stable and safe to
// show: it goes in the 401's detail and the audit record.
type Reason string

// The reasons a token is refused.
const (
	ReasonMalformed     Reason = "malformed"       // not a compact JWS with JSON claims
	ReasonAlgNone       Reason = "alg_none"        // unsigned
	ReasonAlgNotAllowed Reason = "alg_not_allowed" // e.g. HS256, where an attacker signs with the public key
	ReasonUnknownKey    Reason = "unknown_key"     // no key with that kid
	ReasonBadSignature  Reason = "bad_signature"   // tampered, or signed by another key
	ReasonExpired       Reason = "expired"
	ReasonNotYetValid   Reason = "not_yet_valid" // nbf or iat in the future
	ReasonWrongIssuer   Reason = "wrong_issuer"
	ReasonWrongAudience Reason = "wrong_audience"
	ReasonMissingClaim  Reason = "missing_claim"  // a claim corral needs is absent
	ReasonAgentMismatch Reason = "agent_mismatch" // one agent's credential presented as another's
	ReasonUnknownAgent  Reason = "unknown_agent"  // the token's agent no longer exists
	ReasonIssuerDown    Reason = "issuer_unavailable"
	ReasonNoAgent       Reason = "no_agent"        // a workload identity that no Agent declares
	ReasonTwoAgents     Reason = "ambiguous_agent" // a workload identity that several Agents declare
	ReasonKeysDisabled  Reason = "keys_disabled"   // an agent key of an agent that accepts none
)

// TokenError is a refused token. Detail is safe to show to the caller.
type TokenError struct {
	Reason Reason
	Detail string
	Err    error // the cause, for logs; may be nil
}

func (e *TokenError) Error() string {
	msg := "token refused (" + string(e.Reason) + ")"
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *TokenError) Unwrap() error { return e.Err }

// Refused returns a *TokenError.
func Refused(reason Reason, format string, args ...any) *TokenError {
	return &TokenError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the reason of a *TokenError in err's chain, or "".
func ReasonOf(err error) Reason {
	var te *TokenError
	if errors.As(err, &te) {
		return te.Reason
	}
	return ""
}

// UnmarshalJSON accepts a string or a list of strings.
func (a *Audience) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*a = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = Audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud must be a string or a list of strings")
	}
	*a = many
	return nil
}

// MarshalJSON writes a single audience as a string, as most verifiers expect.
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}
