package policy

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Effects of a decision.
const (
	Allow    = "allow"
	Deny     = "deny"
	Approval = "approval"
)

// NotAllowed is the reason of a denial when no rule allowed the action.
const NotAllowed = "not allowed"

// Decision is what policy decided about one action.
type Decision struct {
	// Effect is Allow, Deny or Approval.
	Effect string `json:"effect"`
	// Reasons say why, sorted: the deny set for Deny (["not allowed"] when
	// no rule allowed the action), the require_approval set for Approval,
	// empty for Allow.
	Reasons []string `json:"reasons"`
	// Obligations are hints to later stages, as the rules wrote them.
	Obligations map[string]any `json:"obligations,omitempty"`
	// Revision identifies the modules and data that decided.
	Revision string `json:"revision"`
}

// Engine decides on actions with one compiled set of modules and data. It
// is immutable and safe for concurrent use; a new policy is a new Engine.
type Engine struct {
	revision string
	timeout  time.Duration
	// unloaded, when set, is the reason of every decision of an engine that
	// has no policy: every action is denied.
	unloaded string

	decide    rego.PreparedEvalQuery
	base      *baseCache                // the data decisions read, kept for the engine's life
	decided   *decisions                // per agent and tool; nil when the policy reads more (decisions.go)
	allowable rego.PreparedPartialQuery // could allow ever be true
	mustDeny  rego.PreparedPartialQuery // is deny non-empty whatever the unknowns
	// visibleErr is why the queries of Visible could not be prepared.
	visibleErr error
}

// Revision identifies the modules and data the engine decides with:
// "sha256:" and the first 12 hex digits of their digest.
func (e *Engine) Revision() string { return e.revision }

// unloadedEngine returns an engine that denies everything with reason.
func unloadedEngine(reason string) *Engine {
	return &Engine{revision: "none", unloaded: reason}
}

// Decide applies policy to one action. It never returns Allow with an
// error: a failure to decide wraps ErrEvaluation, and the caller denies.
func (e *Engine) Decide(ctx context.Context, in *Input) (Decision, error) {
	if e.unloaded != "" {
		return Decision{Effect: Deny, Reasons: []string{e.unloaded}, Revision: e.revision}, nil
	}
	if in == nil {
		return Decision{}, fmt.Errorf("%w: no input", ErrEvaluation)
	}
	k, keep := e.decided.key(in)
	if keep {
		if d, ok := e.decided.get(k); ok {
			// As an evaluation would: a request that has ended is not decided.
			if ctx.Err() != nil {
				return Decision{}, fmt.Errorf("%w: %w", ErrEvaluation, context.Cause(ctx))
			}
			return d, nil
		}
	}
	v, err := in.value()
	if err != nil {
		return Decision{}, fmt.Errorf("%w: input %w", ErrEvaluation, err)
	}
	// A timer and a context callback cancel the evaluation, rather than a
	// context with a deadline, which costs OPA a goroutine per decision.
	c := topdown.NewCancel()
	timer := time.AfterFunc(e.timeout, c.Cancel)
	defer timer.Stop()
	defer context.AfterFunc(ctx, c.Cancel)()
	vc := borrowVirtualCache()
	defer vc.release()
	rs, err := e.decide.Eval(ctx, rego.EvalParsedInput(v), rego.EvalGenerateJSON(rawTerm), rego.EvalExternalCancel(c),
		rego.EvalVirtualCache(vc), rego.EvalBaseCache(e.base), rego.EvalMetrics(metrics.NoOp()))
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return Decision{}, fmt.Errorf("%w: %w", ErrEvaluation, context.Cause(ctx))
		case topdown.IsCancel(err):
			return Decision{}, fmt.Errorf("%w: not decided within %v", ErrEvaluation, e.timeout)
		}
		return Decision{}, fmt.Errorf("%w: %w", ErrEvaluation, err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return Decision{}, fmt.Errorf("%w: the decision is undefined", ErrEvaluation)
	}
	d, err := e.decision(rs[0].Expressions[0].Value.(*ast.Term))
	if err == nil && keep {
		e.decided.put(k, d)
	}
	return d, err
}

// rawTerm keeps a result as the Rego term it is, so that sets stay sets.
func rawTerm(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }

// decision applies the contract to [deny, require_approval, allow, obligations].
func (e *Engine) decision(t *ast.Term) (Decision, error) {
	parts, ok := t.Value.(*ast.Array)
	if !ok || parts.Len() != 4 {
		return Decision{}, fmt.Errorf("%w: malformed decision %v", ErrEvaluation, t)
	}
	deny, err := reasons("deny", parts.Elem(0))
	if err != nil {
		return Decision{}, err
	}
	approval, err := reasons("require_approval", parts.Elem(1))
	if err != nil {
		return Decision{}, err
	}
	allow, ok := parts.Elem(2).Value.(ast.Boolean)
	if !ok {
		return Decision{}, fmt.Errorf("%w: data.%s.allow is %s, want a boolean", ErrEvaluation, Package, ast.ValueName(parts.Elem(2).Value))
	}
	obj, ok := parts.Elem(3).Value.(ast.Object)
	if !ok {
		return Decision{}, fmt.Errorf("%w: data.%s.obligations is %s, want an object", ErrEvaluation, Package, ast.ValueName(parts.Elem(3).Value))
	}
	d := Decision{Revision: e.revision}
	if obj.Len() > 0 {
		o, err := ast.JSON(obj)
		if err != nil {
			return Decision{}, fmt.Errorf("%w: data.%s.obligations: %w", ErrEvaluation, Package, err)
		}
		d.Obligations = o.(map[string]any)
	}
	switch {
	case len(deny) > 0:
		d.Effect, d.Reasons = Deny, deny
	case len(approval) > 0:
		d.Effect, d.Reasons = Approval, approval
	case bool(allow):
		d.Effect, d.Reasons = Allow, []string{}
	default:
		d.Effect, d.Reasons = Deny, []string{NotAllowed}
	}
	return d, nil
}

// reasons returns a set of strings, sorted; anything else breaks the contract.
func reasons(name string, t *ast.Term) ([]string, error) {
	set, ok := t.Value.(ast.Set)
	if !ok {
		return nil, fmt.Errorf("%w: data.%s.%s is %s, want a set of strings", ErrEvaluation, Package, name, ast.ValueName(t.Value))
	}
	out := make([]string, 0, set.Len())
	var bad *ast.Term
	set.Foreach(func(m *ast.Term) {
		if s, ok := m.Value.(ast.String); ok {
			out = append(out, string(s))
		} else if bad == nil {
			bad = m
		}
	})
	if bad != nil {
		return nil, fmt.Errorf("%w: data.%s.%s holds %s %v, want only strings", ErrEvaluation, Package, name, ast.ValueName(bad.Value), bad)
	}
	slices.Sort(out)
	return out, nil
}
