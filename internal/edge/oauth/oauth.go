// Package oauth is corral's OAuth 2.0 authorization server edge: the token
// endpoint, where agents trade their keys for short-lived JWTs
// (client_credentials) and users' tokens for delegated ones (RFC 8693 token
// exchange), and the documents that let others verify those tokens (JWKS and
// RFC 8414 metadata). Signing, verifying and policy live elsewhere; this
// package speaks the protocol and audits every token request.
package oauth

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/killswitch"
)

// DefaultTTL is an access token's lifetime unless Options say otherwise.
const DefaultTTL = 15 * time.Minute

// Keys verifies agent API keys.
type Keys interface {
	VerifyKey(secret string) (identity.Key, bool)
}

// Resources reads the registry: the Agent a client_id names, and the
// ToolSources a delegated token may be addressed to.
type Resources interface {
	Get(kind, name string) (config.Resource, bool)
	// List returns every resource of kind; the Agents are searched for the
	// one that declares a workload identity or a certificate.
	List(kind string) []config.Resource
}

// KillSwitches says whether an agent is stopped.
type KillSwitches interface {
	Killed(agent string) (killswitch.Switch, bool)
}

// Signer signs corral's tokens and verifies them.
type Signer interface {
	Issuer() string
	// JWKS returns the JWKS JSON document.
	JWKS() []byte
	// Mint fills iss, iat, nbf, exp and jti, and signs.
	Mint(c identity.Claims, ttl time.Duration) (string, error)
	// Verify checks one of corral's own tokens; refusals are *identity.TokenError.
	Verify(token, audience string) (*identity.Claims, error)
}

// Issuers verifies users' tokens from trusted external (OIDC) issuers;
// refusals are *identity.TokenError.
type Issuers interface {
	Verify(ctx context.Context, token string) (*identity.External, error)
}

// Delegations asks policy what an agent may do for a user.
type Delegations interface {
	// Scopes returns what policy lets agent do for the user: scope items
	// "tool:<name>" / "model:<name>".
	Scopes(ctx context.Context, agent, agentUID string, user *identity.External) ([]string, error)
}

// Auditor appends audit records.
type Auditor interface {
	Append(ctx context.Context, r *audit.Record) (string, error)
}

// Deps are the handler's collaborators. All are required, except Issuers
// and Workloads: without Issuers no external issuer is trusted, and only
// corral's own delegated tokens can be exchanged; without Workloads no
// agent authenticates with a workload's token.
type Deps struct {
	Keys        Keys
	Resources   Resources
	Kill        KillSwitches
	Signer      Signer
	Issuers     Issuers
	Workloads   Workloads
	Delegations Delegations
	Audit       Auditor
	// Refusals bounds the records of requests from unauthenticated
	// clients per source address (nil: every one is stored).
	Refusals *audit.Refusals
	// Tasks, when set, checks the task a token is bound to: nil takes any
	// printable text as the task.
	Tasks Tasks
}

// Tasks says whether an agent may act in a task.
type Tasks interface {
	CanAct(ctx context.Context, task, agent, agentUID string) error
}

// Options tune the handler.
type Options struct {
	// TTL is an access token's lifetime; 0 means DefaultTTL. A delegated
	// token lives no longer than the user's token it came from.
	TTL time.Duration
}

// Handler serves the token endpoint and the discovery documents.
type Handler struct {
	deps   Deps
	logger *slog.Logger
	ttl    time.Duration
	now    func() time.Time // tests stop the clock
}

// New returns the handler.
func New(logger *slog.Logger, deps Deps, opts Options) *Handler {
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	return &Handler{deps: deps, logger: logger, ttl: opts.TTL, now: time.Now}
}

// Paths the handler serves.
const (
	JWKSPath     = "/.well-known/jwks.json"
	MetadataPath = "/.well-known/oauth-authorization-server"
	TokenPath    = "/oauth2/token"
)

// Register adds the handler's routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+JWKSPath, h.jwks)
	mux.HandleFunc("GET "+MetadataPath, h.metadata)
	mux.HandleFunc("POST "+TokenPath, h.token)
	mux.HandleFunc(TokenPath, h.notAllowed)
}
