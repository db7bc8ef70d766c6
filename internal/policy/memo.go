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
	toolTerms  = &memo[Tool, Tool]{build: toolTerm, key: func(t *Tool) Tool { return *t }, equal: func(a, b *Tool) bool { return *a == *b }, clone: func(t *Tool) Tool { return *t }}
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
	return Agent{Name: a.Name, Labels: maps.Clone(a.Labels), Tools: slices.Clone(a.Tools), Models: slices.Clone(a.Models)}
}

// agentEqual reports whether two agents make the same Rego value: nil and
// empty slices and maps both become empty arrays and objects.
func agentEqual(a, b *Agent) bool {
	return a.Name == b.Name && maps.Equal(a.Labels, b.Labels) && slices.Equal(a.Tools, b.Tools) && slices.Equal(a.Models, b.Models)
}
