package policy

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The agent and the tool of an action change only when their resources do,
// but turning them into Rego values is a third of the input's allocations.
// The memos below keep the last value built per agent and per tool and
// reuse it while the description is equal, field by field: a changed
// description builds a new value, so a decision never reads a stale one.
// Rego values are immutable once built, and OPA shares them between
// concurrent evaluations (as it does the data).

// maxMemo bounds each memo: agents and tools are resources, but the
// policy CLI and API evaluate inputs callers write.
const maxMemo = 4096

var (
	agentTerms = &memo[string, Agent]{build: agentTerm, key: func(a *Agent) string { return a.Name }, equal: agentEqual, clone: cloneAgent}
	modelTerms = &memo[string, Model]{build: modelTerm, key: func(m *Model) string { return m.Name }, equal: modelEqual, clone: cloneModel}
	// Principals are memoised only without claims (value.go): the key and
	// the comparison leave claims out.
	principalTerms = &memo[string, Principal]{build: func(p *Principal) *ast.Term { return principalObject(p, emptyObject) },
		key: func(p *Principal) string { return p.Sub }, equal: principalEqual, clone: clonePrincipal}
	taskTerms = &memo[string, Task]{build: taskTerm, key: func(t *Task) string { return t.ID }, equal: taskEqual, clone: cloneTask}
	toolTerms = &memo[Tool, Tool]{build: toolTerm, key: func(t *Tool) Tool { return *t }, equal: func(a, b *Tool) bool { return *a == *b }, clone: func(t *Tool) Tool { return *t }}
)

// memo maps a key to the value built from a description, with a copy of
// the description to compare the next one with.
type memo[K comparable, V any] struct {
	entries sync.Map // K -> *memoEntry[V]
	size    atomic.Int64
	build   func(*V) *ast.Term
	key     func(*V) K
	equal   func(a, b *V) bool
	// clone copies a description deeply enough that the caller changing
	// its slices or maps later cannot make the copy equal a value it was
	// not built from.
	clone func(*V) V
}

type memoEntry[V any] struct {
	desc V
	term *ast.Term
}

// term returns v's Rego value, reused when v equals the description it was
// last built from.
func (m *memo[K, V]) term(v *V) *ast.Term {
	k := m.key(v)
	if e, ok := m.entries.Load(k); ok {
		if e := e.(*memoEntry[V]); m.equal(&e.desc, v) {
			return e.term
		}
	}
	t := m.build(v)
	if m.size.Load() >= maxMemo {
		return t // full: built every time, as without a memo
	}
	if _, loaded := m.entries.Swap(k, &memoEntry[V]{desc: m.clone(v), term: t}); !loaded {
		m.size.Add(1)
	}
	return t
}

func cloneAgent(a *Agent) Agent {
	return Agent{Name: a.Name, Labels: maps.Clone(a.Labels), Tools: slices.Clone(a.Tools), Models: slices.Clone(a.Models), Agents: slices.Clone(a.Agents)}
}

// agentEqual reports whether two agents make the same Rego value: nil and
// empty slices and maps both become empty arrays and objects.
func agentEqual(a, b *Agent) bool {
	return a.Name == b.Name && maps.Equal(a.Labels, b.Labels) && slices.Equal(a.Tools, b.Tools) && slices.Equal(a.Models, b.Models) && slices.Equal(a.Agents, b.Agents)
}

// modelEqual reports whether two models make the same Rego value.
func modelEqual(a, b *Model) bool {
	return a.Name == b.Name && a.Provider == b.Provider && a.Region == b.Region &&
		slices.EqualFunc(a.Targets, b.Targets, func(x, y Model) bool { return modelEqual(&x, &y) })
}

func cloneModel(m *Model) Model {
	c := *m
	c.Targets = make([]Model, len(m.Targets))
	for i := range m.Targets {
		c.Targets[i] = cloneModel(&m.Targets[i])
	}
	return c
}

// emptyObject is the claims of a principal that has none.
var emptyObject = ast.ObjectTerm()

func principalEqual(a, b *Principal) bool {
	return a.Sub == b.Sub && a.Issuer == b.Issuer && slices.Equal(a.Groups, b.Groups) && slices.Equal(a.Roles, b.Roles) &&
		len(a.Claims) == 0 && len(b.Claims) == 0
}

func clonePrincipal(p *Principal) Principal {
	return Principal{Sub: p.Sub, Issuer: p.Issuer, Groups: slices.Clone(p.Groups), Roles: slices.Clone(p.Roles)}
}

func taskEqual(a, b *Task) bool {
	return a.ID == b.ID && slices.Equal(a.Chain, b.Chain) && a.Depth == b.Depth && a.Turns == b.Turns
}

func cloneTask(t *Task) Task {
	return Task{ID: t.ID, Chain: slices.Clone(t.Chain), Depth: t.Depth, Turns: t.Turns}
}
