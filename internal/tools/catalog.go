package tools

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corral-dev/corral/internal/config"
)

// Entry is one tool in the catalogue, with what calling it needs.
type Entry struct {
	Tool   Tool
	Source Source
	// Spec is the ToolSource's spec, for per-source settings (audit).
	Spec *config.ToolSourceSpec
	// Validator checks arguments; compiled once per version of the tool.
	Validator *Validator
	// Output checks answers against the tool's output schema; nil if the
	// tool declares none or it does not compile.
	Output *Validator
}

// SourceState is how far a tool source has come.
type SourceState string

// The states of a tool source.
const (
	Connecting SourceState = "connecting" // being built, or retrying after a failure
	Ready      SourceState = "ready"
	Failed     SourceState = "failed" // the last attempt failed; retrying
)

// SourceStatus reports one tool source, for `corral get toolsources` and
// readiness.
type SourceStatus struct {
	Name     string      `json:"name"`
	Revision uint64      `json:"revision"`
	State    SourceState `json:"state"`
	Error    string      `json:"error,omitempty"`
	Tools    int         `json:"tools"`
	Since    time.Time   `json:"since"`
}

// Drifter is implemented by sources that re-read their definition and hold
// back changes that would break callers.
type Drifter interface {
	// Drift returns the change held back, or nil.
	Drift() *Drift
}

// Drift is a newer definition of a tool source that would break callers,
// held back: the tools in force stay as they were until it is accepted.
type Drift struct {
	Source   string    `json:"source"`
	Detected time.Time `json:"detected"`
	// From is where the definition is read (a URL).
	From string `json:"from"`
	// InForce and Candidate are digests of the definition in force and of
	// the one held back.
	InForce   string   `json:"in_force"`
	Candidate string   `json:"candidate"`
	Changes   []Change `json:"changes"`
}

// Drift returns the drift every ready source reports, sorted by source.
func (c *Catalog) Drift() []Drift {
	c.mu.Lock()
	runners := make([]*runner, 0, len(c.sources))
	for _, r := range c.sources {
		runners = append(runners, r)
	}
	c.mu.Unlock()
	var out []Drift
	for _, r := range runners {
		r.mu.Lock()
		src := r.source
		r.mu.Unlock()
		if d, ok := src.(Drifter); ok {
			if drift := d.Drift(); drift != nil {
				out = append(out, *drift)
			}
		}
	}
	slices.SortFunc(out, func(a, b Drift) int { return cmp.Compare(a.Source, b.Source) })
	return out
}

// Resources is what the catalogue reads from the registry.
type Resources interface {
	List(kind string) []config.Resource
	Changed() <-chan struct{}
}

// Catalog turns ToolSource resources into live sources and indexes their
// tools by name. Lookups read an immutable snapshot swapped in atomically,
// so the hot path takes no lock.
type Catalog struct {
	logger    *slog.Logger
	resources Resources
	factories map[string]Factory // "openapi", "mcp"
	secret    func(ctx context.Context, ref config.SecretValue) (string, error)

	snap    atomic.Pointer[snapshot]
	rebuild chan struct{} // a source's tools changed

	mu      sync.Mutex
	sources map[string]*runner // by ToolSource name: the runner whose tools are served
	next    map[string]*runner // a newer revision being built while the current one serves
}

type snapshot struct {
	byName map[string]*Entry
	sorted []*Entry
}

// runner owns one ToolSource revision's source.
type runner struct {
	name   string
	rev    uint64
	labels map[string]string
	spec   *config.ToolSourceSpec
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	source Source
	status SourceStatus
	// entries caches the validated entries of source's current tools, so a
	// rebuild compiles only what changed.
	entries map[string]*Entry
}

// NewCatalog returns a catalogue building sources with factories, keyed by
// the spec field that selects them ("openapi", "mcp").
func NewCatalog(logger *slog.Logger, resources Resources, factories map[string]Factory,
	secret func(ctx context.Context, ref config.SecretValue) (string, error)) *Catalog {
	c := &Catalog{
		logger:    logger,
		resources: resources,
		factories: factories,
		secret:    secret,
		rebuild:   make(chan struct{}, 1),
		sources:   map[string]*runner{},
		next:      map[string]*runner{},
	}
	c.snap.Store(&snapshot{byName: map[string]*Entry{}})
	return c
}

// Lookup finds a tool by its full name.
func (c *Catalog) Lookup(name string) (*Entry, bool) {
	e, ok := c.snap.Load().byName[name]
	return e, ok
}

// List returns every tool, sorted by name. The slice is shared: do not modify it.
func (c *Catalog) List() []*Entry { return c.snap.Load().sorted }

// Status reports every tool source, sorted by name.
func (c *Catalog) Status() []SourceStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]SourceStatus, 0, len(c.sources))
	for name, r := range c.sources {
		st := r.currentStatus()
		if n := c.next[name]; n != nil {
			if ns := n.currentStatus(); ns.Error != "" {
				st.Error = fmt.Sprintf("revision %d cannot load, revision %d still serves: %s", ns.Revision, st.Revision, ns.Error)
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b SourceStatus) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Run follows ToolSource resources until ctx ends, then closes every source
// and returns once they are all closed.
func (c *Catalog) Run(ctx context.Context) error {
	defer c.stopAll()
	for {
		changed := c.resources.Changed()
		c.reconcile(ctx)
		c.publish(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-c.rebuild:
		}
	}
}

// reconcile makes the runners follow the ToolSources. A new source gets a
// runner at once. A changed one gets a second runner beside the one that
// serves, promoted by publish once it is ready, so that editing a source
// never leaves its tools missing, and a revision that cannot load leaves the
// previous one serving. A deleted one stops. Runners are stopped outside the
// lock: closing a source can take a while.
func (c *Catalog) reconcile(ctx context.Context) {
	want := map[string]config.Resource{}
	for _, res := range c.resources.List("ToolSource") {
		want[res.Metadata.Name] = res
	}
	var stop []*runner
	defer func() {
		for _, r := range stop {
			r.stop()
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, r := range c.sources {
		if _, ok := want[name]; !ok {
			stop = append(stop, r)
			delete(c.sources, name)
		}
	}
	for name, r := range c.next {
		if res, ok := want[name]; !ok || res.Metadata.Revision != r.rev {
			stop = append(stop, r)
			delete(c.next, name)
		}
	}
	for name, res := range want {
		cur := c.sources[name]
		switch {
		case cur == nil:
			c.sources[name] = c.start(ctx, res)
		case cur.rev == res.Metadata.Revision:
		case !cur.ready():
			// Nothing served yet: no reason to keep the old revision.
			stop = append(stop, cur)
			c.sources[name] = c.start(ctx, res)
		case c.next[name] == nil:
			c.next[name] = c.start(ctx, res)
		}
	}
}

// start begins building the source a ToolSource revision declares.
func (c *Catalog) start(ctx context.Context, res config.Resource) *runner {
	name := res.Metadata.Name
	rctx, cancel := context.WithCancel(ctx)
	r := &runner{name: name, rev: res.Metadata.Revision, labels: res.Metadata.Labels, cancel: cancel, done: make(chan struct{}),
		status: SourceStatus{Name: name, Revision: res.Metadata.Revision, State: Connecting, Since: time.Now()}}
	var spec config.ToolSourceSpec
	if err := json.Unmarshal(res.Spec, &spec); err != nil {
		r.status.State, r.status.Error = Failed, "unreadable ToolSource: "+err.Error()
		close(r.done)
		return r
	}
	r.spec = &spec
	go func() {
		defer close(r.done)
		c.run(rctx, r)
	}()
	return r
}

func (c *Catalog) stopAll() {
	c.mu.Lock()
	var stop []*runner
	for _, m := range []map[string]*runner{c.sources, c.next} {
		for name, r := range m {
			stop = append(stop, r)
			delete(m, name)
		}
	}
	c.mu.Unlock()
	for _, r := range stop {
		r.stop()
	}
}

// stop cancels the runner and waits until its source is closed.
func (r *runner) stop() {
	r.cancel()
	<-r.done
}

// retry bounds the backoff between attempts to build a source.
const (
	retryMin = time.Second
	retryMax = 30 * time.Second
)

// run builds the runner's source, retrying with backoff, and keeps it until
// ctx ends.
func (c *Catalog) run(ctx context.Context, r *runner) {
	logger := c.logger.With("source", r.name, "revision", r.rev)
	kind, factory := c.factoryFor(r.spec)
	if factory == nil {
		r.setStatus(Failed, fmt.Errorf("no tool source of kind %s is built into this server", kind), 0)
		return
	}
	env := Env{Logger: logger, Revision: r.rev, Labels: r.labels, Secret: c.secret, Changed: c.signal}
	wait := retryMin
	for {
		src, err := factory(ctx, r.name, r.spec, env)
		if err == nil {
			r.mu.Lock()
			r.source = src
			r.mu.Unlock()
			r.setStatus(Ready, nil, len(src.Tools()))
			logger.InfoContext(ctx, "tool source ready", "tools", len(src.Tools()))
			c.signal()
			<-ctx.Done()
			if err := src.Close(); err != nil {
				logger.WarnContext(ctx, "closing tool source", "err", err)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		r.setStatus(Failed, err, 0)
		logger.WarnContext(ctx, "tool source not ready; retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

func (c *Catalog) factoryFor(spec *config.ToolSourceSpec) (string, Factory) {
	kind := "openapi"
	if spec.MCP != nil {
		kind = "mcp"
	}
	return kind, c.factories[kind]
}

func (r *runner) currentStatus() SourceStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

func (r *runner) ready() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.source != nil
}

func (r *runner) setStatus(state SourceState, err error, tools int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.State, r.status.Tools, r.status.Since, r.status.Error = state, tools, time.Now(), ""
	if err != nil {
		r.status.Error = err.Error()
	}
}

// signal asks Run to publish a new snapshot.
func (c *Catalog) signal() {
	select {
	case c.rebuild <- struct{}{}:
	default:
	}
}

// publish promotes newer revisions that are ready, then builds a snapshot of
// every serving source's tools and swaps it in.
func (c *Catalog) publish(ctx context.Context) {
	var retired []*runner
	c.mu.Lock()
	for name, n := range c.next {
		if n.ready() {
			retired = append(retired, c.sources[name])
			c.sources[name] = n
			delete(c.next, name)
		}
	}
	runners := make([]*runner, 0, len(c.sources))
	for _, r := range c.sources {
		runners = append(runners, r)
	}
	c.mu.Unlock()
	defer func() {
		// After the swap, so that calls never find the tools missing.
		for _, r := range retired {
			r.stop()
		}
	}()

	next := &snapshot{byName: map[string]*Entry{}}
	for _, r := range runners {
		for _, e := range r.current(ctx, c.logger) {
			if prev, dup := next.byName[e.Tool.Name]; dup {
				c.logger.WarnContext(ctx, "two sources declare the same tool; keeping the first", "tool", e.Tool.Name, "sources", []string{prev.Tool.Source, e.Tool.Source})
				continue
			}
			next.byName[e.Tool.Name] = e
			next.sorted = append(next.sorted, e)
		}
	}
	slices.SortFunc(next.sorted, func(a, b *Entry) int { return cmp.Compare(a.Tool.Name, b.Tool.Name) })
	c.snap.Store(next)
}

// current returns entries for the source's tools, compiling schemas only for
// tools that changed since the last call.
func (r *runner) current(ctx context.Context, logger *slog.Logger) []*Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.source == nil {
		return nil
	}
	list := r.source.Tools()
	entries := make(map[string]*Entry, len(list))
	out := make([]*Entry, 0, len(list))
	for _, t := range list {
		if prev, ok := r.entries[t.Name]; ok && sameTool(prev.Tool, t) {
			entries[t.Name] = prev
			out = append(out, prev)
			continue
		}
		e, err := newEntry(t, r.source, r.spec)
		if err != nil {
			logger.WarnContext(ctx, "tool left out: its input schema does not compile", "tool", t.Name, "err", err)
			continue
		}
		if len(e.Validator.Unenforced) > 0 {
			logger.WarnContext(ctx, "tool input schema has patterns Go cannot check; they are not enforced", "tool", t.Name, "patterns", e.Validator.Unenforced)
		}
		entries[t.Name] = e
		out = append(out, e)
	}
	r.entries = entries
	r.status.Tools = len(out)
	return out
}

func newEntry(t Tool, src Source, spec *config.ToolSourceSpec) (*Entry, error) {
	v, err := NewValidator(t.InputSchema)
	if err != nil {
		return nil, err
	}
	e := &Entry{Tool: t, Source: src, Spec: spec, Validator: v}
	if len(t.OutputSchema) > 0 {
		e.Output, _ = NewValidator(t.OutputSchema) // a broken output schema only disables the check
	}
	return e, nil
}

func sameTool(a, b Tool) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
