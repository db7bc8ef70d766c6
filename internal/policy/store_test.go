package policy

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/corral-dev/corral/internal/config"
)

// fakeResources is a registry holding Policy resources in memory.
type fakeResources struct {
	mu       sync.Mutex
	policies map[string]config.Resource
	changed  chan struct{}
}

func newFakeResources() *fakeResources {
	return &fakeResources{policies: map[string]config.Resource{}, changed: make(chan struct{})}
}

func (f *fakeResources) List(kind string) []config.Resource {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []config.Resource
	if kind == "Policy" {
		for _, r := range f.policies {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeResources) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeResources) put(r config.Resource) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.policies[r.Metadata.Name] = r
	close(f.changed)
	f.changed = make(chan struct{})
}

func policyResource(tb testing.TB, name string, data map[string]any, rego ...string) config.Resource {
	tb.Helper()
	spec, err := json.Marshal(config.PolicySpec{Rego: rego, Data: data})
	if err != nil {
		tb.Fatal(err)
	}
	return config.Resource{APIVersion: config.APIVersion, Kind: "Policy", Metadata: config.Metadata{Name: name}, Spec: spec}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

var crmCall = &Input{Action: Action{Kind: KindTool, Target: "crm.find"}, Agent: Agent{Name: "impact", Tools: []string{"crm.*"}}}

func decide(tb testing.TB, e *Engine, in *Input) Decision {
	tb.Helper()
	d, err := e.Decide(tb.Context(), in)
	if err != nil {
		tb.Fatalf("Decide() error %v", err)
	}
	return d
}

func TestStoreReload(t *testing.T) {
	res := newFakeResources()
	var errs []error
	s := NewStore(discard(), res, StoreOptions{Engine: slowMachine, OnError: func(err error) { errs = append(errs, err) }})

	// Before the first load: everything denied.
	if d := decide(t, s.Engine(), crmCall); d.Effect != Deny || d.Reasons[0] != reasonNotLoaded {
		t.Errorf("Engine() before loading decides %+v, want a denial saying policy is not loaded", d)
	}
	if v, err := s.Engine().Visible(t.Context(), crmCall); v || err != nil {
		t.Errorf("Visible() before loading = %v, %v; want false", v, err)
	}

	// No policies: the default bundle decides.
	if err := s.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, s.Engine(), crmCall); d.Effect != Allow {
		t.Errorf("default bundle decides %+v, want allow", d)
	}
	rev0 := s.Engine().Revision()

	// A policy adds a denial, with its data.
	res.put(policyResource(t, "crm", map[string]any{"crm": map[string]any{"blocked": []any{"impact"}}},
		"package corral.authz\ndeny contains \"blocked\" if input.agent.name in data.crm.blocked"))
	if err := s.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, s.Engine(), crmCall); d.Effect != Deny || d.Reasons[0] != "blocked" {
		t.Errorf("with Policy/crm decides %+v, want deny blocked", d)
	}
	rev1 := s.Engine().Revision()
	if rev1 == rev0 {
		t.Errorf("Revision() = %s after a policy was added, unchanged", rev1)
	}

	// A policy that does not compile leaves the previous engine serving.
	res.put(policyResource(t, "broken", nil, "package corral.authz\nallow if {"))
	err := s.Reload(t.Context())
	var ce *CompileError
	if !errors.As(err, &ce) || !strings.Contains(ce.Error(), "broken/0.rego:2") {
		t.Errorf("Reload() with a broken policy error %v, want a *CompileError naming broken/0.rego:2", err)
	}
	if got := s.Engine().Revision(); got != rev1 {
		t.Errorf("Revision() after a failed reload = %s, want the previous %s", got, rev1)
	}
	// Unchanged resources are not compiled again.
	if err := s.Reload(t.Context()); err != nil {
		t.Errorf("Reload() of the same resources error %v, want nil (already reported)", err)
	}

	// Two policies setting the same data key do not compile together.
	res.put(policyResource(t, "broken", map[string]any{"crm": 1}, "package corral.authz"))
	if err := s.Reload(t.Context()); err == nil || !strings.Contains(err.Error(), `data key "crm" is set by both`) {
		t.Errorf("Reload() with a data conflict error %v, want one naming the key", err)
	}
	if len(errs) != 0 {
		t.Errorf("OnError called %d times by Reload; only Run reports", len(errs))
	}
}

func TestStoreDefaultOptions(t *testing.T) {
	res := newFakeResources()
	res.put(policyResource(t, "p", nil, "package corral.authz\nallow if input.action.target == \"x.y\""))

	none := NewStore(discard(), res, StoreOptions{Engine: slowMachine, Default: []Module{}})
	if err := none.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, none.Engine(), crmCall); d.Effect != Deny {
		t.Errorf("without the default bundle decides %+v on a listed tool, want deny", d)
	}
	custom := NewStore(discard(), res, StoreOptions{Engine: slowMachine, Default: modules("package corral.authz\nallow := input.agent.name == \"impact\"")})
	if err := custom.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, custom.Engine(), &Input{Action: Action{Kind: KindTool, Target: "any"}, Agent: Agent{Name: "impact"}}); d.Effect != Allow {
		t.Errorf("with a custom default bundle decides %+v, want allow", d)
	}
}

// TestStoreNeverLoaded: a store whose only policy never compiled denies
// everything and says so.
func TestStoreNeverLoaded(t *testing.T) {
	res := newFakeResources()
	res.put(policyResource(t, "broken", nil, "package corral.authz\nallow := true\nallow contains \"x\""))
	s := NewStore(discard(), res, StoreOptions{Engine: slowMachine})
	if err := s.Reload(t.Context()); err == nil {
		t.Fatal("Reload() of conflicting rules = nil error")
	}
	d := decide(t, s.Engine(), crmCall)
	if d.Effect != Deny || d.Reasons[0] != reasonFailed {
		t.Errorf("Engine() after a failed first load decides %+v, want a denial saying policy failed to compile", d)
	}
}

func TestStoreCheck(t *testing.T) {
	res := newFakeResources()
	res.put(policyResource(t, "a", map[string]any{"a": 1}, "package corral.authz\nallow := true"))
	s := NewStore(discard(), res, StoreOptions{Engine: slowMachine})
	tests := []struct {
		name      string
		candidate config.Resource
		want      string
	}{
		{"compiles", policyResource(t, "b", nil, "package corral.authz\ndeny contains \"x\" if false"), ""},
		{"replaces its own revision", policyResource(t, "a", map[string]any{"a": 2}, "package corral.authz\nallow := false"), ""},
		{"conflicts with another policy", policyResource(t, "b", nil, "package corral.authz\nallow contains 1"), "rego_type_error: conflicting rules data.corral.authz.allow"},
		{"parse error", policyResource(t, "b", nil, "package corral.authz\n\ndeny contains if"), "b/0.rego:3"},
		{"wrong package", policyResource(t, "b", nil, "package b"), "b/0.rego:1: package is b"},
		{"data key taken", policyResource(t, "b", map[string]any{"a": 3}, "package corral.authz"), `data key "a" is set by both Policy/a and Policy/b`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Check(tt.candidate)
			if tt.want == "" {
				if err != nil {
					t.Errorf("Check() error %v, want nil", err)
				}
				return
			}
			var ce *CompileError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Check() error %v, want a *CompileError containing %q", err, tt.want)
			}
		})
	}
	if err := s.Check(config.Resource{Kind: "Agent", Metadata: config.Metadata{Name: "x"}}); err == nil {
		t.Error("Check(an Agent) = nil error")
	}
}

func TestStoreRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		res := newFakeResources()
		var (
			mu   sync.Mutex
			errs []error
		)
		s := NewStore(discard(), res, StoreOptions{Engine: slowMachine, OnError: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
		}})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()

		if err := s.WaitLoaded(ctx); err != nil {
			t.Fatalf("WaitLoaded() = %v", err)
		}
		if d := decide(t, s.Engine(), crmCall); d.Effect != Allow {
			t.Errorf("after Run started decides %+v, want the default bundle's allow", d)
		}
		res.put(policyResource(t, "p", nil, "package corral.authz\ndeny contains \"no\""))
		synctest.Wait()
		if d := decide(t, s.Engine(), crmCall); d.Effect != Deny || d.Reasons[0] != "no" {
			t.Errorf("after a change decides %+v, want deny no", d)
		}
		res.put(policyResource(t, "q", nil, "package corral.authz\ndeny contains"))
		synctest.Wait()
		if d := decide(t, s.Engine(), crmCall); d.Effect != Deny || d.Reasons[0] != "no" {
			t.Errorf("after a broken change decides %+v, want the previous policy's deny no", d)
		}
		mu.Lock()
		if len(errs) != 1 {
			t.Errorf("OnError called %d times, want once for the broken policy", len(errs))
		}
		mu.Unlock()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil when the context ends", err)
		}
	})
}

func TestStoreWaitLoaded(t *testing.T) {
	s := NewStore(discard(), newFakeResources(), StoreOptions{Engine: slowMachine})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.WaitLoaded(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitLoaded() before Run = %v, want context.Canceled", err)
	}
}

// TestStoreCheckDelete: deleting a policy that another one depends on is
// refused; deleting one that nothing uses is not.
func TestStoreCheckDelete(t *testing.T) {
	res := newFakeResources()
	res.put(policyResource(t, "grant", nil, "package corral.authz\nhelper if input.agent.name == \"a\""))
	res.put(policyResource(t, "user", nil, "package corral.authz\ndeny contains \"no\" if not helper"))
	res.put(policyResource(t, "alone", nil, "package corral.authz\ndeny contains \"late\" if input.time > \"2100\""))
	s := NewStore(discard(), res, StoreOptions{Engine: slowMachine})
	var ce *CompileError
	if err := s.CheckDelete("grant"); !errors.As(err, &ce) {
		t.Errorf("CheckDelete(grant) = %v, want a *CompileError (user calls its helper)", err)
	}
	if err := s.CheckDelete("alone"); err != nil {
		t.Errorf("CheckDelete(alone) = %v, want nil", err)
	}
}
