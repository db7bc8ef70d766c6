package policy

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// OPA keeps, per evaluation, the rules' values (the virtual cache) and the
// data it read (the base cache) in tries of hash maps that it allocates
// anew for every evaluation: a fifth of a decision's allocations. The two
// caches here do the same work without allocating once warm: a decision
// borrows a virtual cache from a pool and returns it emptied, and the data
// an engine reads is cached for the engine's life, since its data never
// changes.

// virtualCache implements topdown.VirtualCache: a stack of frames (a `with`
// pushes one), each an index from a ref's hash to its entries. Refs are
// copied into an arena, since OPA reuses the slices it passes.
type virtualCache struct {
	frames []vframe
	depth  int
	arena  []*ast.Term
}

type vframe struct {
	index   map[int]int // hash -> 1 + the newest entry with that hash
	entries []ventry
}

type ventry struct {
	start, end int // the ref, in the arena
	next       int // 1 + the previous entry with the same hash, 0 for none
	value      *ast.Term
	undefined  bool
}

var _ topdown.VirtualCache = (*virtualCache)(nil)

// Bounds on what a pooled cache keeps between decisions: one that grew
// beyond them (a policy that evaluates thousands of rules) is dropped
// rather than held.
const (
	maxPooledEntries = 4096
	maxPooledArena   = 4 * maxPooledEntries
)

var virtualCaches = sync.Pool{New: func() any {
	c := &virtualCache{}
	c.Push()
	return c
}}

// borrowVirtualCache returns an empty cache with one frame.
func borrowVirtualCache() *virtualCache {
	return virtualCaches.Get().(*virtualCache)
}

// release empties the cache, so that it holds no term of the decision,
// and pools it again.
func (c *virtualCache) release() {
	size := 0
	for i := range c.frames {
		f := &c.frames[i]
		size += cap(f.entries)
		clear(f.index)
		clear(f.entries[:cap(f.entries)])
		f.entries = f.entries[:0]
	}
	if size > maxPooledEntries || cap(c.arena) > maxPooledArena {
		return
	}
	clear(c.arena[:cap(c.arena)])
	c.arena = c.arena[:0]
	c.depth = 1
	virtualCaches.Put(c)
}

func (c *virtualCache) Push() {
	if c.depth == len(c.frames) {
		c.frames = append(c.frames, vframe{index: make(map[int]int)})
	}
	c.depth++
}

func (c *virtualCache) Pop() {
	f := &c.frames[c.depth-1]
	clear(f.index)
	clear(f.entries)
	f.entries = f.entries[:0]
	c.depth--
}

func (c *virtualCache) top() *vframe { return &c.frames[c.depth-1] }

// find returns the entry for ref in the top frame, or nil, and ref's hash.
func (c *virtualCache) find(ref ast.Ref) (*ventry, int) {
	f := c.top()
	h := refHash(ref)
	for i := f.index[h]; i != 0; {
		e := &f.entries[i-1]
		if slices.EqualFunc(c.arena[e.start:e.end], ref, (*ast.Term).Equal) {
			return e, h
		}
		i = e.next
	}
	return nil, h
}

// Get follows topdown's contract: (value, false) when cached, (nil, true)
// when cached as undefined, (nil, false) when not cached.
func (c *virtualCache) Get(ref ast.Ref) (*ast.Term, bool) {
	e, _ := c.find(ref)
	if e == nil {
		return nil, false
	}
	if e.undefined {
		return nil, true
	}
	return e.value, false
}

// Put records value for ref, or that ref is undefined when value is nil.
func (c *virtualCache) Put(ref ast.Ref, value *ast.Term) {
	e, h := c.find(ref)
	if e == nil {
		f := c.top()
		start := len(c.arena)
		c.arena = append(c.arena, ref...)
		f.entries = append(f.entries, ventry{start: start, end: len(c.arena), next: f.index[h]})
		f.index[h] = len(f.entries)
		e = &f.entries[len(f.entries)-1]
	}
	if value != nil {
		e.value = value
	} else {
		e.undefined = true
	}
}

// Keys returns the refs with a value in the top frame.
func (c *virtualCache) Keys() []ast.Ref {
	var keys []ast.Ref
	for _, e := range c.top().entries {
		if e.value != nil {
			keys = append(keys, slices.Clone(ast.Ref(c.arena[e.start:e.end])))
		}
	}
	return keys
}

// refHash hashes a ref's terms in order (OPA's own Ref.Hash adds them up).
func refHash(ref ast.Ref) int {
	h := 0
	for _, t := range ref {
		h = h*31 + t.Value.Hash()
	}
	return h
}

// baseCache implements topdown.BaseCache for one engine, shared by its
// decisions: the engine's data is fixed when it is compiled, so a value
// read once stays right. Reads take no lock; a value read for the first
// time copies the small index (copy on write). OPA stores only what it
// found in the data, so the cache is bounded by the data's paths, and
// maxBaseEntries bounds it further.
type baseCache struct {
	mu      sync.Mutex // serialises writers
	entries atomic.Pointer[map[int][]baseEntry]
}

type baseEntry struct {
	ref   ast.Ref
	value ast.Value
}

const maxBaseEntries = 1024

var _ topdown.BaseCache = (*baseCache)(nil)

func (c *baseCache) Get(ref ast.Ref) ast.Value {
	m := c.entries.Load()
	if m == nil {
		return nil
	}
	for _, e := range (*m)[refHash(ref)] {
		if e.ref.Equal(ref) {
			return e.value
		}
	}
	return nil
}

func (c *baseCache) Put(ref ast.Ref, value ast.Value) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.entries.Load()
	n := 0
	if old != nil {
		for _, es := range *old {
			n += len(es)
		}
	}
	if n >= maxBaseEntries {
		return
	}
	m := make(map[int][]baseEntry, n+1)
	if old != nil {
		for h, es := range *old {
			m[h] = es
		}
	}
	h := refHash(ref)
	es := slices.DeleteFunc(slices.Clone(m[h]), func(e baseEntry) bool { return e.ref.Equal(ref) })
	m[h] = append(es, baseEntry{ref: ref.Copy(), value: value})
	c.entries.Store(&m)
}
