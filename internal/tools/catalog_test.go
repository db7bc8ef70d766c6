package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/config"
)

// fakeResources is a registry of ToolSources that tests edit.
type fakeResources struct {
	mu      sync.Mutex
	items   map[string]config.Resource
	changed chan struct{}
}

func newFakeResources() *fakeResources {
	return &fakeResources{items: map[string]config.Resource{}, changed: make(chan struct{})}
}

func (f *fakeResources) List(string) []config.Resource {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []config.Resource
	for _, r := range f.items {
		out = append(out, r)
	}
	return out
}

func (f *fakeResources) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// put stores a ToolSource whose description names the tool it offers.
func (f *fakeResources) put(name string, rev uint64, tool string) {
	spec, _ := json.Marshal(config.ToolSourceSpec{Description: tool, OpenAPI: &config.OpenAPISource{Spec: "x"}})
	f.mu.Lock()
	defer f.mu.Unlock()
	if tool == "" {
		delete(f.items, name)
	} else {
		f.items[name] = config.Resource{Kind: "ToolSource", Metadata: config.Metadata{Name: name, Revision: rev}, Spec: spec}
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

type staticSource struct{ tools []Tool }

func (s *staticSource) Tools() []Tool                               { return s.tools }
func (s *staticSource) Call(context.Context, Call) (*Result, error) { return &Result{}, nil }
func (s *staticSource) Close() error                                { return nil }

// gate lets a test hold a factory call for a given tool until released.
type gate struct {
	mu      sync.Mutex
	blocked map[string]chan struct{}
	fail    map[string]bool
}

func (g *gate) factory(ctx context.Context, name string, spec *config.ToolSourceSpec, _ Env) (Source, error) {
	g.mu.Lock()
	wait, fail := g.blocked[spec.Description], g.fail[spec.Description]
	g.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail {
		return nil, errors.New("upstream down")
	}
	return &staticSource{tools: []Tool{{Name: name + "." + spec.Description, Source: name, InputSchema: json.RawMessage(`{"type": "object"}`)}}}, nil
}

func startCatalog(t *testing.T, res *fakeResources, g *gate) *Catalog {
	t.Helper()
	c := NewCatalog(slog.New(slog.DiscardHandler), res, map[string]Factory{"openapi": g.factory}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return c
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // generous: CI runs loaded, with the race detector
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within a minute: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCatalogReloadKeepsServing: while a ToolSource's new revision loads,
// and if it cannot, the previous revision's tools stay callable.
func TestCatalogReloadKeepsServing(t *testing.T) {
	res := newFakeResources()
	g := &gate{blocked: map[string]chan struct{}{}, fail: map[string]bool{}}
	c := startCatalog(t, res, g)

	res.put("erp", 1, "v1")
	eventually(t, "erp.v1 served", func() bool { _, ok := c.Lookup("erp.v1"); return ok })

	release := make(chan struct{})
	g.mu.Lock()
	g.blocked["v2"] = release
	g.mu.Unlock()
	res.put("erp", 2, "v2")
	time.Sleep(20 * time.Millisecond) // give a wrong implementation the chance to drop v1
	if _, ok := c.Lookup("erp.v1"); !ok {
		t.Fatal("erp.v1 vanished while revision 2 was loading")
	}
	close(release)
	eventually(t, "erp.v2 replaces erp.v1", func() bool {
		_, v2 := c.Lookup("erp.v2")
		_, v1 := c.Lookup("erp.v1")
		return v2 && !v1
	})

	g.mu.Lock()
	g.fail["v3"] = true
	g.mu.Unlock()
	res.put("erp", 3, "v3")
	eventually(t, "the failing revision is reported", func() bool {
		st := c.Status()
		return len(st) == 1 && strings.Contains(st[0].Error, "revision 3 cannot load")
	})
	if _, ok := c.Lookup("erp.v2"); !ok {
		t.Error("erp.v2 stopped being served because revision 3 cannot load")
	}
	if st := c.Status()[0]; st.State != Ready || st.Revision != 2 {
		t.Errorf("Status = %+v, want revision 2 ready", st)
	}

	res.put("erp", 0, "")
	eventually(t, "a deleted source's tools are gone", func() bool { return len(c.List()) == 0 && len(c.Status()) == 0 })
}

func TestCatalogSeveralSources(t *testing.T) {
	res := newFakeResources()
	c := startCatalog(t, res, &gate{})
	for i := range 3 {
		res.put(fmt.Sprintf("s%d", i), 1, "t")
	}
	eventually(t, "three sources' tools", func() bool { return len(c.List()) == 3 })
}
