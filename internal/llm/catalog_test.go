package llm_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/llm/llmtest"
)

// fakeModels is a registry of Model resources that tests edit.
type fakeModels struct {
	mu      sync.Mutex
	items   map[string]config.Resource
	changed chan struct{}
}

func newFakeModels() *fakeModels {
	return &fakeModels{items: map[string]config.Resource{}, changed: make(chan struct{})}
}

func (f *fakeModels) List(kind string) []config.Resource {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []config.Resource
	for _, r := range f.items {
		if r.Kind == kind {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeModels) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// put stores a Model (spec nil deletes it) and tells the catalogue.
func (f *fakeModels) put(t *testing.T, name string, rev uint64, spec *config.ModelSpec) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if spec == nil {
		delete(f.items, name)
	} else {
		raw, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		f.items[name] = config.Resource{APIVersion: config.APIVersion, Kind: "Model", Metadata: config.Metadata{Name: name, Revision: rev}, Spec: raw}
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

// startCatalog runs a catalogue over res until the test ends.
func startCatalog(t *testing.T, res *fakeModels, secret llm.SecretFunc) *llm.Catalog {
	t.Helper()
	if secret == nil {
		secret = func(context.Context, config.SecretValue) (string, error) { return "", errors.New("no secrets here") }
	}
	c := llm.NewCatalog(slog.New(slog.DiscardHandler), res, secret, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
	return c
}

// eventually polls cond until it holds, failing the test after a while.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // generous: CI runs loaded, with the race detector
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func lookup(t *testing.T, c *llm.Catalog, name string) *llm.Model {
	t.Helper()
	var m *llm.Model
	eventually(t, "model "+name, func() bool {
		var ok bool
		m, ok = c.Lookup(name)
		return ok
	})
	return m
}

func concrete(name string) *config.ModelSpec {
	return &config.ModelSpec{Provider: "scripted", Model: name, Script: []config.ScriptTurn{{Content: "I am " + name}}}
}

func route(targets []config.RouteTarget, fallbacks, shadow []string) *config.ModelSpec {
	return &config.ModelSpec{Route: &config.RouteSpec{Targets: targets, Fallbacks: fallbacks, Shadow: shadow}}
}

func names(ms []*llm.Model) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func TestCatalogFollowsResources(t *testing.T) {
	res := newFakeModels()
	res.put(t, "b-model", 1, concrete("b"))
	res.put(t, "a-model", 1, concrete("a"))
	c := startCatalog(t, res, nil)
	a := lookup(t, c, "a-model")
	lookup(t, c, "b-model")
	if got := names(c.List()); !slices.Equal(got, []string{"a-model", "b-model"}) {
		t.Errorf("List() = %v, want sorted", got)
	}
	resp, err := a.Provider.Chat(t.Context(), userRequest("who?"))
	if err != nil || resp.Choices[0].Message.Content.String() != "I am a" || resp.Model != "a" {
		t.Fatalf("Chat through a-model = %+v, %v", resp, err)
	}

	// A change elsewhere keeps the model as it was built; a new revision
	// rebuilds it; a deletion removes it.
	res.put(t, "c-model", 1, concrete("c"))
	lookup(t, c, "c-model")
	if again, _ := c.Lookup("a-model"); again != a {
		t.Errorf("an unchanged model was rebuilt")
	}
	res.put(t, "a-model", 2, concrete("a2"))
	eventually(t, "a-model revision 2", func() bool {
		m, ok := c.Lookup("a-model")
		return ok && m.Revision == 2 && m.ProviderModel() == "a2"
	})
	res.put(t, "b-model", 0, nil)
	eventually(t, "b-model gone", func() bool {
		_, ok := c.Lookup("b-model")
		return !ok
	})
}

func TestCatalogLeavesOutUnbuildable(t *testing.T) {
	res := newFakeModels()
	res.put(t, "odd", 1, &config.ModelSpec{Provider: "carrier-pigeon"})
	res.put(t, "fine", 1, concrete("fine"))
	c := startCatalog(t, res, nil)
	lookup(t, c, "fine")
	if _, ok := c.Lookup("odd"); ok {
		t.Errorf("a model with an unknown provider was served")
	}
}

func TestCatalogAuth(t *testing.T) {
	up := llmtest.Start(t)
	var mu sync.Mutex
	secrets := map[string]string{"openai-key": "sk-one", "CORRAL_TEST_KEY": "k-env", "pw": "hunter2"}
	secret := func(_ context.Context, ref config.SecretValue) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		v, ok := secrets[ref.SecretRef+ref.Env]
		if !ok {
			return "", fmt.Errorf("secret %s%s not found", ref.SecretRef, ref.Env)
		}
		return v, nil
	}
	res := newFakeModels()
	res.put(t, "bearer", 1, &config.ModelSpec{Provider: "openai", BaseURL: up.URL() + "/", Model: "gpt-x",
		Auth: &config.UpstreamAuth{Bearer: &config.SecretValue{SecretRef: "openai-key"}}, Headers: map[string]string{"api-version": "1"}})
	res.put(t, "apikey", 1, &config.ModelSpec{Provider: "openai", BaseURL: up.URL(),
		Auth: &config.UpstreamAuth{APIKey: &config.APIKeyAuth{Header: "api-key", Value: config.SecretValue{Env: "CORRAL_TEST_KEY"}}}})
	res.put(t, "basic", 1, &config.ModelSpec{Provider: "openai", BaseURL: up.URL(),
		Auth: &config.UpstreamAuth{Basic: &config.BasicAuth{Username: "ada", Password: config.SecretValue{SecretRef: "pw"}}}})
	res.put(t, "missing", 1, &config.ModelSpec{Provider: "openai", BaseURL: up.URL(),
		Auth: &config.UpstreamAuth{Bearer: &config.SecretValue{SecretRef: "nope"}}})
	c := startCatalog(t, res, secret)

	call := func(name string) error {
		_, err := lookup(t, c, name).Provider.Chat(t.Context(), userRequest("x"))
		return err
	}
	lastHeader := func(name string) string {
		reqs := up.Requests()
		return reqs[len(reqs)-1].Header.Get(name)
	}
	if err := call("bearer"); err != nil {
		t.Fatal(err)
	}
	if got := lastHeader("Authorization"); got != "Bearer sk-one" || lastHeader("Api-Version") != "1" {
		t.Errorf("bearer: Authorization %q, Api-Version %q", got, lastHeader("Api-Version"))
	}
	if got := up.ChatRequests()[0].Model; got != "gpt-x" {
		t.Errorf("the provider got model %q, want gpt-x", got)
	}
	// A rotated secret is used by the next call.
	mu.Lock()
	secrets["openai-key"] = "sk-two"
	mu.Unlock()
	if err := call("bearer"); err != nil {
		t.Fatal(err)
	}
	if got := lastHeader("Authorization"); got != "Bearer sk-two" {
		t.Errorf("after rotation: Authorization %q, want Bearer sk-two", got)
	}
	if err := call("apikey"); err != nil || lastHeader("Api-Key") != "k-env" || lastHeader("Authorization") != "" {
		t.Errorf("apiKey: %v, Api-Key %q, Authorization %q", err, lastHeader("Api-Key"), lastHeader("Authorization"))
	}
	if err := call("basic"); err != nil || lastHeader("Authorization") != "Basic YWRhOmh1bnRlcjI=" {
		t.Errorf("basic: %v, Authorization %q", err, lastHeader("Authorization"))
	}
	before := len(up.Requests())
	if err := call("missing"); !errors.Is(err, llm.ErrCredentials) {
		t.Errorf("missing secret: %v, want ErrCredentials", err)
	}
	if len(up.Requests()) != before {
		t.Errorf("a call without its credentials reached the provider")
	}
}

// TestCatalogAnthropicBearer checks that a bearer secret reaches Anthropic
// as x-api-key, where it takes its keys.
func TestCatalogAnthropicBearer(t *testing.T) {
	got := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- r.Header.Clone():
		default:
		}
		http.Error(w, `{"type":"error","error":{"type":"overloaded_error","message":"busy"}}`, 529)
	}))
	defer srv.Close()
	res := newFakeModels()
	res.put(t, "claude", 1, &config.ModelSpec{Provider: "anthropic", BaseURL: srv.URL + "/v1",
		Auth: &config.UpstreamAuth{Bearer: &config.SecretValue{SecretRef: "anthropic-key"}}})
	c := startCatalog(t, res, func(context.Context, config.SecretValue) (string, error) { return "sk-ant", nil })
	_, _ = lookup(t, c, "claude").Provider.Chat(t.Context(), userRequest("x"))
	h := <-got
	if h.Get("X-Api-Key") != "sk-ant" || h.Get("Authorization") != "" {
		t.Errorf("headers X-Api-Key %q, Authorization %q; want the key in x-api-key only", h.Get("X-Api-Key"), h.Get("Authorization"))
	}
}

func TestCatalogPlan(t *testing.T) {
	res := newFakeModels()
	for _, n := range []string{"gpt-eu", "gpt-us", "claude", "shadow-new"} {
		res.put(t, n, 1, concrete(n))
	}
	res.put(t, "smart", 1, route(
		[]config.RouteTarget{{Model: "gpt-eu", Weight: 80}, {Model: "gpt-us", Weight: 20}},
		[]string{"gpt-us", "claude", "claude"}, []string{"shadow-new", "shadow-new"}))
	res.put(t, "even", 1, route([]config.RouteTarget{{Model: "gpt-eu"}, {Model: "claude"}}, nil, nil))
	res.put(t, "broken", 1, route([]config.RouteTarget{{Model: "gpt-eu"}, {Model: "gpt-gone"}}, nil, nil))
	res.put(t, "nested", 1, route([]config.RouteTarget{{Model: "gpt-eu"}}, []string{"smart"}, nil))
	res.put(t, "lost-fallback", 1, route([]config.RouteTarget{{Model: "gpt-eu"}}, []string{"gpt-gone"}, nil))
	res.put(t, "lost-shadow", 1, route([]config.RouteTarget{{Model: "gpt-eu"}}, nil, []string{"gpt-gone"}))
	c := startCatalog(t, res, nil)
	lookup(t, c, "lost-shadow")
	eventually(t, "every model", func() bool { return len(c.List()) == 10 })
	model := func(name string) *llm.Model { m, _ := c.Lookup(name); return m }
	fixed := func(n int) func(int) int { return func(int) int { return n } }

	tests := []struct {
		model    string
		pick     int
		attempts []string
		shadows  []string
		err      string
	}{
		{"gpt-eu", 0, []string{"gpt-eu"}, nil, ""},
		{"smart", 0, []string{"gpt-eu", "gpt-us", "claude"}, []string{"shadow-new"}, ""},
		{"smart", 79, []string{"gpt-eu", "gpt-us", "claude"}, []string{"shadow-new"}, ""},
		{"smart", 80, []string{"gpt-us", "claude"}, []string{"shadow-new"}, ""},
		{"smart", 99, []string{"gpt-us", "claude"}, []string{"shadow-new"}, ""},
		{"smart", 100, nil, nil, "model smart: pick(100) returned 100, want 0 to 99"},
		{"even", 1, []string{"claude"}, nil, ""},
		{"broken", 0, nil, nil, "model broken: route target gpt-gone does not exist"},
		{"nested", 0, nil, nil, "model nested: route fallback smart is itself a route; name concrete models"},
		{"lost-fallback", 0, nil, nil, "model lost-fallback: route fallback gpt-gone does not exist"},
		{"lost-shadow", 0, nil, nil, "model lost-shadow: route shadow gpt-gone does not exist"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.model, tt.pick), func(t *testing.T) {
			plan, err := c.Plan(model(tt.model), fixed(tt.pick))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("Plan(%s) error = %v, want %q", tt.model, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := names(plan.Attempts); !slices.Equal(got, tt.attempts) {
				t.Errorf("Plan(%s, pick %d) attempts = %v, want %v", tt.model, tt.pick, got, tt.attempts)
			}
			if got := names(plan.Shadows); !slices.Equal(got, tt.shadows) {
				t.Errorf("Plan(%s, pick %d) shadows = %v, want %v", tt.model, tt.pick, got, tt.shadows)
			}
		})
	}

	if got := names(c.Candidates(model("smart"))); !slices.Equal(got, []string{"gpt-eu", "gpt-us", "claude"}) {
		t.Errorf("Candidates(smart) = %v", got)
	}
	if got := names(c.Candidates(model("broken"))); !slices.Equal(got, []string{"gpt-eu"}) {
		t.Errorf("Candidates(broken) = %v", got)
	}
	if got := names(c.Candidates(model("claude"))); !slices.Equal(got, []string{"claude"}) {
		t.Errorf("Candidates(claude) = %v", got)
	}
}

func TestCatalogWeights(t *testing.T) {
	res := newFakeModels()
	res.put(t, "eu", 1, concrete("eu"))
	res.put(t, "us", 1, concrete("us"))
	res.put(t, "split", 1, route([]config.RouteTarget{{Model: "eu", Weight: 80}, {Model: "us", Weight: 20}}, nil, nil))
	c := startCatalog(t, res, nil)
	lookup(t, c, "eu")
	lookup(t, c, "us")
	m := lookup(t, c, "split")
	rng := rand.New(rand.NewPCG(1, 2))
	const picks = 10000
	counts := map[string]int{}
	for range picks {
		plan, err := c.Plan(m, rng.IntN)
		if err != nil {
			t.Fatal(err)
		}
		counts[plan.Attempts[0].Name]++
	}
	eu := 100 * float64(counts["eu"]) / picks
	if eu < 78 || eu > 82 || counts["eu"]+counts["us"] != picks {
		t.Errorf("eu got %.1f%% of %d calls (%v), want 80 ± 2", eu, picks, counts)
	}
}
