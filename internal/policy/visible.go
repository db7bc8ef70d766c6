package policy

import (
	"context"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// The parts of the input that Visible treats as unknown: the principal is
// among them only when the caller names none.
var (
	unknownsNoPrincipal   = mustParseTerms("input.action.arguments", "input.task", "input.time")
	unknownsWithPrincipal = mustParseTerms("input.action.arguments", "input.task", "input.time", "input.principal")
)

func mustParseTerms(refs ...string) []*ast.Term {
	out := make([]*ast.Term, len(refs))
	for i, r := range refs {
		out[i] = ast.MustParseTerm(r)
	}
	return out
}

// Visible reports whether policy could ever allow this agent this action's
// tool or model: whether allow can be true for some arguments, task and
// time (and principal, when in names none), and deny is not certain to
// hold. Listings use it to hide what an agent can never call. Of in, only
// the agent, the tool or model, the action's kind and target, and the
// principal are read. The answer is not cached: callers keep it per
// Revision.
func (e *Engine) Visible(ctx context.Context, in *Input) (bool, error) {
	if e.unloaded != "" {
		return false, nil
	}
	if e.visibleErr != nil {
		return false, fmt.Errorf("%w: %w", ErrEvaluation, e.visibleErr)
	}
	if in == nil {
		return false, fmt.Errorf("%w: no input", ErrEvaluation)
	}
	known := *in
	known.Action.Arguments, known.Task, known.Time = nil, nil, ""
	unknowns := unknownsNoPrincipal
	if in.Principal == nil {
		unknowns = unknownsWithPrincipal
	}
	v, err := known.value()
	if err != nil {
		return false, fmt.Errorf("%w: input %w", ErrEvaluation, err)
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	opts := []rego.EvalOption{rego.EvalParsedInput(v), rego.EvalParsedUnknowns(unknowns)}
	allow, err := e.allowable.Partial(ctx, opts...)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrEvaluation, err)
	}
	if len(allow.Queries) == 0 {
		return false, nil
	}
	deny, err := e.mustDeny.Partial(ctx, opts...)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrEvaluation, err)
	}
	for _, q := range deny.Queries {
		if unconditional(q) {
			return false, nil // some reason to deny holds whatever the unknowns are
		}
	}
	return true, nil
}

// unconditional reports whether a query left by partial evaluation holds
// whatever the unknowns are: it only binds the query's variable to values
// (`reason = "blocked agent"`); a condition on the unknowns would be an
// expression over input.
func unconditional(q ast.Body) bool {
	for _, expr := range q {
		if !expr.IsEquality() || expr.Negated || len(expr.With) > 0 {
			return false
		}
		a, b := expr.Operand(0), expr.Operand(1)
		if !(isVar(a) && b.IsGround()) && !(isVar(b) && a.IsGround()) {
			return false
		}
	}
	return true
}

func isVar(t *ast.Term) bool {
	_, ok := t.Value.(ast.Var)
	return ok
}
