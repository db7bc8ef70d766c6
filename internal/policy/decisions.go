package policy

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A policy that reads neither an action's arguments nor its time, and calls
// no function whose answer changes from call to call, decides the same for
// every call of one target by one agent through one tool or model: the
// default bundle is such a policy. Its engine keeps those decisions
// (decisions), so that the next such call costs a map lookup instead of an
// evaluation. The key is the action's kind and target and the Rego values
// of its agent, tool and model, which the memos (memo.go) share only
// between equal descriptions. An action with a principal or a task is
// kept only when no rule can read input.principal (or input.task): then
// they cannot change the decision. A new policy is a new engine, with no
// decisions kept.

// unstableBuiltins answer differently over time or between calls with the
// same arguments, besides those OPA marks Nondeterministic: they read the
// clock when the caller gives no time.
var unstableBuiltins = map[string]bool{
	"io.jwt.decode_verify":                                   true,
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
	"time.now_ns": true,
}

// The parts of the input: a policy that may read the first two keeps no
// decisions; one that may read the others keeps none for actions that
// have them.
var (
	argumentsRef = ast.MustParseRef("input.action.arguments")
	timeRef      = ast.MustParseRef("input.time")
	principalRef = ast.MustParseRef("input.principal")
	taskRef      = ast.MustParseRef("input.task")
)

// reads is what decisions may depend on, from the compiled modules.
type reads struct {
	unkeyed         bool // the arguments, the time, or a function that is not stable
	principal, task bool
}

// readsOf walks every ref into the input and every call in modules.
func readsOf(modules map[string]*ast.Module) reads {
	var r reads
	for _, m := range modules {
		ast.WalkRefs(m, func(ref ast.Ref) bool {
			if ref.HasPrefix(ast.InputRootRef) {
				r.unkeyed = r.unkeyed || readsAny(ref, argumentsRef, timeRef)
				r.principal = r.principal || readsAny(ref, principalRef)
				r.task = r.task || readsAny(ref, taskRef)
			}
			return false
		})
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			r.unkeyed = r.unkeyed || e.IsCall() && !stable(e.Operator().String())
			return false
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if c, isCall := t.Value.(ast.Call); isCall && len(c) > 0 {
				r.unkeyed = r.unkeyed || !stable(c[0].String())
			}
			return false
		})
	}
	return r
}

// readsAny reports whether a ref into the input may read any of parts: its
// constant prefix (up to the first variable) is a prefix of one of them,
// or extends one.
func readsAny(r ast.Ref, parts ...ast.Ref) bool {
	prefix := r.ConstantPrefix()
	for _, p := range parts {
		if p.HasPrefix(prefix) || prefix.HasPrefix(p) {
			return true
		}
	}
	return false
}

func stable(name string) bool {
	if unstableBuiltins[name] {
		return false
	}
	b, ok := ast.BuiltinMap[name]
	return !ok || !b.Nondeterministic
}

// maxDecisions bounds the decisions an engine keeps: one per agent and
// tool or model it has seen called.
const maxDecisions = 16384

// decisions holds an engine's decisions by key; nil for an engine whose
// policy reads what no key holds.
type decisions struct {
	reads reads
	m     sync.Map // decisionKey -> Decision
	size  atomic.Int64
}

// newDecisions returns where an engine keeps decisions, or nil when the
// modules' decisions depend on more than a key holds.
func newDecisions(modules map[string]*ast.Module) *decisions {
	r := readsOf(modules)
	if r.unkeyed {
		return nil
	}
	return &decisions{reads: r}
}

type decisionKey struct {
	kind, target       string
	agent, tool, model *ast.Term
}

// key returns the key of in's decision, or false when in holds what the
// key does not (or the engine keeps no decisions).
func (ds *decisions) key(in *Input) (decisionKey, bool) {
	if ds == nil || in.Principal != nil && ds.reads.principal || in.Task != nil && ds.reads.task {
		return decisionKey{}, false
	}
	k := decisionKey{kind: in.Action.Kind, target: in.Action.Target, agent: agentTerms.term(&in.Agent)}
	if in.Tool != nil {
		k.tool = toolTerms.term(in.Tool)
	}
	if in.Model != nil {
		k.model = modelTerms.term(in.Model)
	}
	return k, true
}

func (ds *decisions) get(k decisionKey) (Decision, bool) {
	v, ok := ds.m.Load(k)
	if !ok {
		return Decision{}, false
	}
	d := v.(Decision)
	d.Reasons = slices.Clone(d.Reasons) // the caller's to keep
	return d, true
}

// put keeps d unless it has obligations (a map the caller could change).
func (ds *decisions) put(k decisionKey, d Decision) {
	if d.Obligations != nil || ds.size.Load() >= maxDecisions {
		return
	}
	if _, loaded := ds.m.LoadOrStore(k, Decision{Effect: d.Effect, Reasons: slices.Clone(d.Reasons), Revision: d.Revision}); !loaded {
		ds.size.Add(1)
	}
}
