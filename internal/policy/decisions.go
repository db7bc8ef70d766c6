package policy

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A policy that reads neither an action's arguments nor its time, and calls
// no function whose answer changes from call to call, decides the same for
// every call of one tool by one agent acting for itself: the default bundle
// is such a policy. Its engine keeps those decisions (decisions), so that
// the second call of a tool costs a map lookup instead of an evaluation.
// The key is the action's kind and target and the Rego values of its agent
// and tool, which the memos (memo.go) share only between equal
// descriptions; an action with a principal, a task or a model is always
// evaluated. A new policy is a new engine, with no decisions kept.

// unstableBuiltins answer differently over time or between calls with the
// same arguments, besides those OPA marks Nondeterministic: they read the
// clock when the caller gives no time.
var unstableBuiltins = map[string]bool{
	"io.jwt.decode_verify":                                   true,
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
	"time.now_ns": true,
}

// The parts of the input a cacheable policy may not read.
var (
	argumentsRef = ast.MustParseRef("input.action.arguments")
	timeRef      = ast.MustParseRef("input.time")
)

// decidesPerTool reports whether the compiled modules' decisions depend
// only on the parts of the input the decisions' key holds.
func decidesPerTool(modules map[string]*ast.Module) bool {
	ok := true
	for _, m := range modules {
		ast.WalkRefs(m, func(r ast.Ref) bool {
			if ok && r.HasPrefix(ast.InputRootRef) {
				ok = !readsAny(r, argumentsRef, timeRef)
			}
			return !ok
		})
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			if ok && e.IsCall() {
				ok = stable(e.Operator().String())
			}
			return !ok
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if c, isCall := t.Value.(ast.Call); ok && isCall && len(c) > 0 {
				ok = stable(c[0].String())
			}
			return !ok
		})
		if !ok {
			return false
		}
	}
	return true
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
// tool it has seen called.
const maxDecisions = 16384

// decisions holds an engine's decisions by key; nil for an engine whose
// policy reads what the key does not hold.
type decisions struct {
	m    sync.Map // decisionKey -> Decision
	size atomic.Int64
}

type decisionKey struct {
	kind, target string
	agent, tool  *ast.Term
}

// key returns the key of in's decision, or false when in holds what the
// key does not (or the engine keeps no decisions).
func (ds *decisions) key(in *Input) (decisionKey, bool) {
	if ds == nil || in.Tool == nil || in.Principal != nil || in.Task != nil || in.Model != nil {
		return decisionKey{}, false
	}
	return decisionKey{kind: in.Action.Kind, target: in.Action.Target, agent: agentTerms.term(&in.Agent), tool: toolTerms.term(in.Tool)}, true
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
