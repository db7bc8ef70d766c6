package llm

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/corral-dev/corral/internal/config"
)

// Default base URLs, when a Model sets none.
const (
	DefaultOpenAIBaseURL    = "https://api.openai.com/v1"
	DefaultAnthropicBaseURL = "https://api.anthropic.com/v1"
)

// Resources is what the catalogue reads from the registry.
type Resources interface {
	List(kind string) []config.Resource
	Changed() <-chan struct{}
}

// SecretFunc resolves a credential named in a Model's auth.
type SecretFunc func(ctx context.Context, ref config.SecretValue) (string, error)

// Catalog follows Model resources and serves them ready to call. Models are
// cheap to build (a provider is a few strings and a shared HTTP client), so
// every change of the registry rebuilds the lot and swaps it in; lookups
// read the snapshot without a lock.
type Catalog struct {
	logger    *slog.Logger
	resources Resources
	secret    SecretFunc
	client    *http.Client
	snap      atomic.Pointer[modelSnapshot]

	loaded   chan struct{} // closed once Run has built the Model resources
	loadOnce sync.Once
}

type modelSnapshot struct {
	byName map[string]*Model
	sorted []*Model
	specs  map[string][]byte // the spec each model was built from
}

// NewCatalog returns a catalogue of the Model resources in res. Credentials
// are resolved with secret on every call, so a rotated Secret takes effect
// at once; with a nil secret, calls of models that have auth fail with
// ErrCredentials. client sends every provider request; nil means one that never
// follows redirects (a redirect would carry the credentials elsewhere).
// Nothing is served until Run has started.
func NewCatalog(logger *slog.Logger, res Resources, secret SecretFunc, client *http.Client) *Catalog {
	if client == nil {
		client = defaultClient
	}
	if secret == nil {
		secret = func(context.Context, config.SecretValue) (string, error) {
			return "", errors.New("this server resolves no credentials")
		}
	}
	c := &Catalog{logger: logger, resources: res, secret: secret, client: client, loaded: make(chan struct{})}
	c.snap.Store(&modelSnapshot{byName: map[string]*Model{}, specs: map[string][]byte{}})
	return c
}

// Run rebuilds the catalogue at once and on every change of the Model
// resources, until ctx ends.
func (c *Catalog) Run(ctx context.Context) error {
	for {
		changed := c.resources.Changed()
		c.rebuild(ctx)
		c.loadOnce.Do(func() { close(c.loaded) })
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// WaitLoaded blocks until Run has built the Model resources, or ctx ends.
func (c *Catalog) WaitLoaded(ctx context.Context) error {
	select {
	case <-c.loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("llm: waiting for models to load: %w", ctx.Err())
	}
}

// Lookup finds a model by the name agents ask for.
func (c *Catalog) Lookup(name string) (*Model, bool) {
	m, ok := c.snap.Load().byName[name]
	return m, ok
}

// List returns every model, sorted by name. The slice is shared: do not
// modify it.
func (c *Catalog) List() []*Model { return c.snap.Load().sorted }

// rebuild builds a model for every Model resource, keeping those whose
// spec did not change, and swaps the new set in. A resource that cannot be
// built is logged and left out: validation keeps that from happening.
func (c *Catalog) rebuild(ctx context.Context) {
	prev := c.snap.Load()
	next := &modelSnapshot{byName: map[string]*Model{}, specs: map[string][]byte{}}
	for _, res := range c.resources.List("Model") {
		name := res.Metadata.Name
		m := prev.byName[name]
		if m == nil || m.Revision != res.Metadata.Revision || string(prev.specs[name]) != string(res.Spec) || !sameLabels(m.Labels, res.Metadata.Labels) {
			built, err := c.build(res)
			if err != nil {
				c.logger.WarnContext(ctx, "model left out", "model", name, "revision", res.Metadata.Revision, "err", err)
				continue
			}
			m = built
		}
		next.byName[name] = m
		next.specs[name] = res.Spec
		next.sorted = append(next.sorted, m)
	}
	slices.SortFunc(next.sorted, func(a, b *Model) int { return cmp.Compare(a.Name, b.Name) })
	c.snap.Store(next)
}

func sameLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// build makes a Model resource ready to call.
func (c *Catalog) build(res config.Resource) (*Model, error) {
	var spec config.ModelSpec
	if err := json.Unmarshal(res.Spec, &spec); err != nil {
		return nil, fmt.Errorf("unreadable Model spec: %w", err)
	}
	m := &Model{Name: res.Metadata.Name, Revision: res.Metadata.Revision, Labels: res.Metadata.Labels, Spec: &spec}
	if spec.Route != nil {
		return m, nil
	}
	ep := Endpoint{
		BaseURL:         strings.TrimRight(spec.BaseURL, "/"),
		Model:           m.ProviderModel(),
		Headers:         http.Header{},
		Auth:            c.auth(spec.Provider, spec.Auth),
		Timeout:         spec.TimeoutOrDefault(),
		MaxOutputTokens: spec.MaxOutputOrDefault(),
		Client:          c.client,
	}
	for k, v := range spec.Headers {
		ep.Headers.Set(k, v)
	}
	switch spec.Provider {
	case "openai":
		ep.BaseURL = cmp.Or(ep.BaseURL, DefaultOpenAIBaseURL)
		m.Provider = NewOpenAI(ep)
		if spec.API == "responses" {
			m.Provider = NewOpenAIResponses(ep)
		}
	case "anthropic":
		ep.BaseURL = cmp.Or(ep.BaseURL, DefaultAnthropicBaseURL)
		m.Provider = NewAnthropic(ep)
	case "scripted":
		m.Provider = NewScripted(ep, spec.Script)
	default:
		return nil, fmt.Errorf("unknown provider %q", spec.Provider)
	}
	return m, nil
}

// auth returns the function that resolves a model's credentials for each
// request: bearer as Authorization: Bearer (x-api-key for Anthropic, which
// takes its keys there), apiKey in its header, basic as HTTP basic.
func (c *Catalog) auth(provider string, a *config.UpstreamAuth) func(ctx context.Context) (http.Header, error) {
	if a == nil {
		return nil
	}
	return func(ctx context.Context) (http.Header, error) {
		h := http.Header{}
		switch {
		case a.Bearer != nil:
			v, err := c.secret(ctx, *a.Bearer)
			if err != nil {
				return nil, err
			}
			if provider == "anthropic" {
				h.Set("X-Api-Key", v)
			} else {
				h.Set("Authorization", "Bearer "+v)
			}
		case a.APIKey != nil:
			v, err := c.secret(ctx, a.APIKey.Value)
			if err != nil {
				return nil, err
			}
			h.Set(a.APIKey.Header, v)
		case a.Basic != nil:
			v, err := c.secret(ctx, a.Basic.Password)
			if err != nil {
				return nil, err
			}
			h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(a.Basic.Username+":"+v)))
		}
		return h, nil
	}
}

// Plan is the models one call may reach, in order.
type Plan struct {
	// Attempts are tried in order: the next one only when the previous
	// failed in a way another model may not (Retryable).
	Attempts []*Model
	// Shadows get a copy of the call; their answers are recorded, never
	// returned.
	Shadows []*Model
}

// Plan says which models serve one call of m. A concrete model serves it
// alone. A route draws its first attempt among its targets by weight
// (pick(total) must return 0..total-1; the pipeline passes a random source,
// tests a fixed one), then falls back to its fallbacks in order, skipping
// models already planned. A route naming a model that does not exist, or
// another route, fails the plan, naming it: such a route would never do
// what its author meant.
func (c *Catalog) Plan(m *Model, pick func(n int) int) (Plan, error) {
	if !m.IsRoute() {
		return Plan{Attempts: []*Model{m}}, nil
	}
	snap := c.snap.Load()
	route := m.Spec.Route
	targets := make([]*Model, len(route.Targets))
	total := 0
	for i, t := range route.Targets {
		tm, err := snap.concrete(m.Name, "target", t.Model)
		if err != nil {
			return Plan{}, err
		}
		targets[i] = tm
		total += weight(t)
	}
	if total <= 0 {
		return Plan{}, fmt.Errorf("model %s: route has no target with a positive weight", m.Name)
	}
	n := pick(total)
	if n < 0 || n >= total {
		return Plan{}, fmt.Errorf("model %s: pick(%d) returned %d, want 0 to %d", m.Name, total, n, total-1)
	}
	var plan Plan
	for i, t := range route.Targets {
		if n < weight(t) {
			plan.Attempts = append(plan.Attempts, targets[i])
			break
		}
		n -= weight(t)
	}
	for _, name := range route.Fallbacks {
		fm, err := snap.concrete(m.Name, "fallback", name)
		if err != nil {
			return Plan{}, err
		}
		if !slices.Contains(plan.Attempts, fm) {
			plan.Attempts = append(plan.Attempts, fm)
		}
	}
	for _, name := range route.Shadow {
		sm, err := snap.concrete(m.Name, "shadow", name)
		if err != nil {
			return Plan{}, err
		}
		if !slices.Contains(plan.Shadows, sm) {
			plan.Shadows = append(plan.Shadows, sm)
		}
	}
	return plan, nil
}

// Candidates returns every concrete model a call of m may reach: m itself,
// or a route's targets and fallbacks (not its shadows), each once. Policy
// and budgets look at all of them before the call. Names that do not
// resolve to a concrete model are left out; Plan reports them.
func (c *Catalog) Candidates(m *Model) []*Model {
	if !m.IsRoute() {
		return []*Model{m}
	}
	snap := c.snap.Load()
	var out []*Model
	add := func(name string) {
		if cm, err := snap.concrete(m.Name, "", name); err == nil && !slices.Contains(out, cm) {
			out = append(out, cm)
		}
	}
	for _, t := range m.Spec.Route.Targets {
		add(t.Model)
	}
	for _, name := range m.Spec.Route.Fallbacks {
		add(name)
	}
	return out
}

// concrete finds a concrete model that the route named route refers to as
// its role ("target", "fallback", "shadow").
func (s *modelSnapshot) concrete(route, role, name string) (*Model, error) {
	m, ok := s.byName[name]
	switch {
	case !ok:
		return nil, fmt.Errorf("model %s: route %s %s does not exist", route, role, name)
	case m.IsRoute():
		return nil, fmt.Errorf("model %s: route %s %s is itself a route; name concrete models", route, role, name)
	}
	return m, nil
}

// weight is a target's share: its weight, 1 when unset (validation
// refuses anything below 1 that is set).
func weight(t config.RouteTarget) int {
	if t.Weight == 0 {
		return 1
	}
	return max(t.Weight, 0)
}
