package pipeline

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/policy"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/telemetry"
	"github.com/corral-dev/corral/internal/tools"
)

// Caller is an authenticated agent, and the user it acts for, if any.
type Caller struct {
	Agent string
	// AgentUID is the incarnation of Agent the credential was issued to
	// (its metadata.uid then); it must still be the agent's.
	AgentUID string
	// KeyID is set when an agent key authenticated the call.
	KeyID string
	// Token is set when a corral token authenticated the call.
	Token *identity.Claims
	// Principal is the user of a delegated token; nil when the agent acts
	// for itself.
	Principal *Principal
	// Scopes, from a token, bound what the call may reach; nil for an
	// agent key, whose reach is the agent's spec and policy alone.
	Scopes []string
}

// Principal is the user on whose behalf an agent acts.
type Principal struct {
	Subject string
	Issuer  string
	Groups  []string
	Roles   []string
}

// credential names the credential for the audit.
func (c Caller) credential() string {
	switch {
	case c.KeyID != "":
		return "key:" + c.KeyID
	case c.Token != nil:
		return "token:" + c.Token.ID
	}
	return ""
}

// Authenticate checks an agent key or a corral token (an agent's access
// token or a token delegated by a user). The edges call it on its own to
// list what an agent may see; Invoke calls it as its first stage.
func (p *Pipeline) Authenticate(credential string) (Caller, error) {
	if credential == "" {
		return Caller{}, problem.New(http.StatusUnauthorized, problem.Unauthenticated, "send an agent key or a corral token as Authorization: Bearer <credential>")
	}
	if identity.IsAgentKey(credential) || p.Tokens == nil {
		key, ok := p.Keys.VerifyKey(credential)
		if !ok {
			return Caller{}, problem.New(http.StatusUnauthorized, problem.Unauthenticated, "the key is not valid: unknown or revoked")
		}
		return Caller{Agent: key.Agent, AgentUID: key.AgentUID, KeyID: key.ID}, nil
	}
	claims, err := p.Tokens.Verify(credential, p.Tokens.Issuer())
	if err != nil {
		var te *identity.TokenError
		if !errors.As(err, &te) {
			te = &identity.TokenError{Reason: identity.ReasonMalformed, Detail: "the token cannot be read"}
		}
		return Caller{}, problem.New(http.StatusUnauthorized, problem.Unauthenticated, string(te.Reason)+": "+te.Detail)
	}
	c := Caller{Agent: claims.Agent(), AgentUID: claims.AgentUID, Token: claims, Scopes: claims.Scopes()}
	if claims.Delegated() {
		c.Principal = &Principal{Subject: claims.Subject}
		if pc := claims.Principal; pc != nil {
			c.Principal.Issuer, c.Principal.Groups, c.Principal.Roles = pc.Issuer, pc.Groups, pc.Roles
		}
	}
	return c, nil
}

// noteCaller copies who acts into the audit record.
func noteCaller(rec *audit.Record, c Caller) {
	rec.Agent = c.Agent
	rec.Credential = c.credential()
	if c.Principal != nil {
		rec.Principal, rec.PrincipalIssuer = c.Principal.Subject, c.Principal.Issuer
	}
	if c.Token != nil {
		rec.Task = c.Token.Task
	}
}

// inScope checks a token's scope: an item "tool:<glob>" must match the
// tool. Scope narrows what policy allows; it never widens it.
func inScope(c Caller, kind, target string) error {
	if c.Scopes == nil {
		return nil
	}
	for _, s := range c.Scopes {
		if k, pattern, ok := strings.Cut(s, ":"); ok && k == kind && tools.Match(pattern, target) {
			return nil
		}
	}
	return problem.New(http.StatusForbidden, problem.PolicyDenied, "the token's scope does not include "+kind+" "+target)
}

// input is the policy input for a tool call; value is the decoded
// arguments, or nil when listing.
func (p *Pipeline) input(c Caller, agent *agentCache, e *tools.Entry, value any) *policy.Input {
	in := &policy.Input{
		Action: policy.Action{Kind: "tool", Target: e.Tool.Name, Arguments: value},
		Agent:  policy.Agent{Name: c.Agent, Labels: agent.labels, Tools: agent.spec.Tools, Models: agent.spec.Models},
		Tool: &policy.Tool{
			Name: e.Tool.Name, Source: e.Tool.Source, Method: e.Tool.Method, Path: e.Tool.Path,
			Annotations: policy.Annotations{
				ReadOnly: e.Tool.Annotations.ReadOnly, Destructive: e.Tool.Annotations.Destructive, Idempotent: e.Tool.Annotations.Idempotent,
			},
			AnnotationsSource: policy.AnnotationsSource(e.Tool.Origins()),
		},
	}
	p.noteInput(in, c)
	return in
}

// noteInput fills what every policy input says of the caller: the time,
// the user it acts for, its task.
func (p *Pipeline) noteInput(in *policy.Input, c Caller) {
	in.Time = p.now().UTC().Format(time.RFC3339Nano)
	if c.Principal != nil {
		in.Principal = &policy.Principal{Sub: c.Principal.Subject, Issuer: c.Principal.Issuer, Groups: c.Principal.Groups, Roles: c.Principal.Roles}
	}
	if c.Token != nil && c.Token.Task != "" {
		in.Task = &policy.Task{ID: c.Token.Task}
	}
}

// decide asks policy. It records the decision and turns anything but an
// allow into the refusal the caller sees: a fault denies (fails closed).
func (p *Pipeline) decide(ctx context.Context, rec *audit.Record, in *policy.Input) (policy.Decision, error) {
	ctx, span := p.stage(ctx, telemetry.StagePolicy)
	d, err := p.decideOnce(ctx, rec, in)
	if span.IsRecording() && rec.Policy != nil {
		span.SetAttributes(
			telemetry.AttrPolicyEffect.String(rec.Policy.Effect),
			telemetry.AttrPolicyRevision.String(rec.Policy.Revision),
		)
		if len(rec.Policy.Reasons) > 0 {
			span.SetAttributes(telemetry.AttrPolicyReasons.StringSlice(rec.Policy.Reasons))
		}
	}
	p.endStage(span, err)
	return d, err
}

func (p *Pipeline) decideOnce(ctx context.Context, rec *audit.Record, in *policy.Input) (policy.Decision, error) {
	engine := p.Policy.Engine()
	d, err := engine.Decide(ctx, in)
	if err != nil {
		rec.Policy = &audit.PolicyDecision{Effect: "error", Revision: engine.Revision()}
		p.Metrics.policyError()
		p.logger.ErrorContext(ctx, "policy evaluation failed; the action is denied", "target", in.Action.Target, "agent", in.Agent.Name, "revision", engine.Revision(), "err", err)
		return d, problem.Wrap(http.StatusForbidden, problem.PolicyError, "policy could not decide on "+in.Action.Target+", so it is denied; an operator can see why in corral's log", err)
	}
	rec.Policy = &audit.PolicyDecision{Effect: d.Effect, Reasons: d.Reasons, Revision: d.Revision}
	switch d.Effect {
	case policy.Allow:
		return d, nil
	case policy.Approval:
		return d, problem.New(http.StatusForbidden, problem.ApprovalRequired, in.Action.Target+" needs a human's approval: "+strings.Join(d.Reasons, "; "))
	default:
		return d, problem.New(http.StatusForbidden, problem.PolicyDenied, "policy denies "+in.Action.Target+": "+strings.Join(d.Reasons, "; "))
	}
}

// Tools returns the tools the caller may call, for listings: those in its
// token's scope that policy could allow it for some arguments. A tool that
// policy can never allow the agent is not shown at all.
func (p *Pipeline) Tools(ctx context.Context, c Caller) ([]*tools.Entry, error) {
	agent, err := p.agent(c)
	if err != nil {
		return nil, err
	}
	engine := p.Policy.Engine()
	cache := p.visibility(engine.Revision())
	// The answer depends on the agent, its spec, the tool and the user it
	// acts for (sub, issuer, groups and roles, all in the key): arguments,
	// task and time are left unknown by Visible.
	principal := principalKey(c.Principal)
	var out []*tools.Entry
	for _, e := range p.Catalog.List() {
		if inScope(c, "tool", e.Tool.Name) != nil {
			continue
		}
		key := visibilityKey{agent: c.Agent, agentRev: agent.rev, principal: principal, entry: e}
		visible, ok := cache.get(key)
		if !ok {
			visible, err = engine.Visible(ctx, p.input(c, agent, e, nil))
			if err != nil {
				p.Metrics.policyError()
				p.logger.WarnContext(ctx, "policy cannot say whether a tool is visible; hiding it", "tool", e.Tool.Name, "agent", c.Agent, "err", err)
				continue
			}
			cache.put(key, visible)
		}
		if visible {
			out = append(out, e)
		}
	}
	return out, nil
}

// Scopes lists what policy could let agent (the incarnation agentUID names)
// do for principal, as scope items: the scope of a token delegated by that
// user. Models are listed as the agent's spec names them.
func (p *Pipeline) Scopes(ctx context.Context, agent, agentUID string, principal *Principal) ([]string, error) {
	c := Caller{Agent: agent, AgentUID: agentUID, Principal: principal}
	entries, err := p.Tools(ctx, c)
	if err != nil {
		return nil, err
	}
	spec, err := p.agent(c)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(entries)+len(spec.spec.Models))
	for _, e := range entries {
		out = append(out, "tool:"+e.Tool.Name)
	}
	for _, m := range spec.spec.Models {
		out = append(out, "model:"+m)
	}
	return out, nil
}

// visibilityKey names one answer of Visible under one policy revision.
// The entry pointer changes whenever its source reloads.
type visibilityKey struct {
	agent     string
	agentRev  uint64
	principal string // principalKey: "" when the agent acts for itself
	entry     *tools.Entry
}

// principalKey is everything policy sees of a principal, as one
// unambiguous string (each part quoted): answers for users with other
// groups or roles are kept apart.
func principalKey(pr *Principal) string {
	if pr == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString(strconv.Quote(pr.Issuer))
	b.WriteString(strconv.Quote(pr.Subject))
	for _, list := range [][]string{pr.Groups, pr.Roles} {
		b.WriteByte('[')
		for _, x := range list {
			b.WriteString(strconv.Quote(x))
		}
		b.WriteByte(']')
	}
	return b.String()
}

// visibilityCache remembers Visible's answers for one policy revision.
type visibilityCache struct {
	revision string
	mu       sync.Mutex
	m        map[visibilityKey]bool
}

// maxVisibility bounds the cache; past it, it starts again.
const maxVisibility = 1 << 16

func (v *visibilityCache) get(k visibilityKey) (bool, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	b, ok := v.m[k]
	return b, ok
}

func (v *visibilityCache) put(k visibilityKey, b bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.m) >= maxVisibility {
		clear(v.m)
	}
	v.m[k] = b
}

// visibility returns the cache for a policy revision, starting a new one
// when the policy changed.
func (p *Pipeline) visibility(revision string) *visibilityCache {
	if c := p.visible.Load(); c != nil && c.revision == revision {
		return c
	}
	c := &visibilityCache{revision: revision, m: map[visibilityKey]bool{}}
	p.visible.Store(c)
	return c
}

// identityTTL is the lifetime of the identity tokens sent to upstreams.
const identityTTL = time.Minute

// identityToken mints the token that tells the upstream who acts: sub is
// the user (or the agent acting for itself), act the agent.
func (p *Pipeline) identityToken(c Caller, e *tools.Entry) (string, error) {
	var prop *config.IdentityPropagation
	if e.Spec != nil {
		prop = e.Spec.Identity
	}
	if p.Tokens == nil || !prop.Enabled() {
		return "", nil
	}
	claims := identity.Claims{Subject: c.Agent, ClientID: c.Agent}
	ttl := identityTTL
	if c.Token != nil {
		claims.Task = c.Token.Task
		if c.Token.Delegated() {
			claims.Subject, claims.Act, claims.Principal = c.Token.Subject, c.Token.Act, c.Token.Principal
		}
		// Never longer than the caller's own token, and so the user's.
		if left := time.Unix(c.Token.Expiry, 0).Sub(p.now()); left < ttl {
			ttl = max(left, time.Second)
		}
	}
	return p.Tokens.IdentityToken(prop.AudienceOr(e.Tool.Source), claims, ttl)
}
