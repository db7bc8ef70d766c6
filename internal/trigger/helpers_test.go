package trigger

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/problem"
)

// resources is an in-memory registry.
type resources struct {
	mu      sync.Mutex
	items   map[string]config.Resource // kind/name
	rev     uint64
	changed chan struct{}
}

func newResources() *resources {
	return &resources{items: map[string]config.Resource{}, changed: make(chan struct{})}
}

func (r *resources) put(kind, name string, spec any) {
	raw, err := json.Marshal(spec)
	if err != nil {
		panic(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rev++
	r.items[kind+"/"+name] = config.Resource{APIVersion: config.APIVersion, Kind: kind, Metadata: config.Metadata{Name: name, Revision: r.rev, UID: fmt.Sprint("uid-", r.rev)}, Spec: raw}
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *resources) del(kind, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.items, kind+"/"+name)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *resources) Get(kind, name string) (config.Resource, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, ok := r.items[kind+"/"+name]
	return res, ok
}

func (r *resources) List(kind string) []config.Resource {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []config.Resource
	for _, res := range r.items {
		if res.Kind == kind {
			out = append(out, res)
		}
	}
	return out
}

func (r *resources) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// deadLetters records what it is given.
type deadLetters struct {
	mu    sync.Mutex
	items []string // name: reason
}

func (d *deadLetters) Put(_ context.Context, source, name, reason string, payload json.RawMessage) error {
	if source != "trigger" || !json.Valid(payload) {
		return fmt.Errorf("bad dead letter %s %s", source, payload)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.items = append(d.items, name+": "+reason)
	return nil
}

func (d *deadLetters) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.items...)
}

// env is a test's corral: a substrate, the task service, a manager.
type env struct {
	t       testing.TB
	bus     *bus.Bus
	res     *resources
	tasks   *orchestrator.Service
	m       *Manager
	dead    *deadLetters
	metrics *prometheus.Registry
	hooks   *httptest.Server
}

var secrets = map[string]string{"HOOK_SECRET": "It's a Secret to Everybody", "OTHER_SECRET": "another one"}

func resolveSecret(_ context.Context, ref config.SecretValue) (string, error) {
	if v, ok := secrets[ref.Env]; ok {
		return v, nil
	}
	return "", fmt.Errorf("no secret %s", ref.Env)
}

// newEnv starts a manager over its own embedded substrate, with agents
// "monitor" and "impact" (external agents: their tasks stay submitted).
func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvOn(t, bustest.Open(t), newResources())
}

// newEnvOn starts a manager (a replica) over b and res.
func newEnvOn(t testing.TB, b *bus.Bus, res *resources) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logger := slog.New(slog.DiscardHandler)
	store, err := orchestrator.Open(ctx, logger, b)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = store.Run(ctx) }()
	if err := store.WaitLoaded(ctx); err != nil {
		t.Fatal(err)
	}
	res.put("Agent", "monitor", map[string]any{})
	res.put("Agent", "impact", map[string]any{})
	e := &env{t: t, bus: b, res: res, tasks: orchestrator.NewService(logger, store, res), dead: &deadLetters{}, metrics: prometheus.NewRegistry()}
	e.m = New(logger, Deps{Resources: res, Tasks: e.tasks, Secret: resolveSecret, Bus: b, Metrics: e.metrics, DeadLetters: e.dead})
	go func() { defer wg.Done(); _ = e.m.Run(ctx) }()
	mux := http.NewServeMux()
	mux.Handle("POST /hooks/{trigger}", problem.Handle(logger, e.m.ServeHook))
	e.hooks = httptest.NewServer(mux)
	t.Cleanup(func() {
		e.hooks.Close()
		cancel()
		wg.Wait()
	})
	return e
}

// apply declares a trigger and waits until it runs.
func (e *env) apply(name string, spec config.TriggerSpec) {
	e.t.Helper()
	e.res.put("Trigger", name, spec)
	rev := e.res.items["Trigger/"+name].Metadata.Revision
	e.waitFor(patience, "trigger "+name+" running", func() bool {
		st, ok := e.m.Lookup(name)
		return ok && st.Revision == rev && st.State == StateRunning
	})
}

// started lists the tasks trigger name created, by id.
func (e *env) started(name string) map[string]*orchestrator.Task {
	out := map[string]*orchestrator.Task{}
	tasks, _ := e.tasks.List(orchestrator.Filter{})
	for _, t := range tasks {
		if t.CreatedBy == "trigger:"+name {
			out[t.ID] = t
		}
	}
	return out
}

func (e *env) count(name, outcome string) int {
	return int(testutil.ToFloat64(e.m.metrics.events.WithLabelValues(name, outcome)))
}

// patience is how long a test waits for something that will happen: long,
// because CI runs every package at once with the race detector on two cores;
// a passing test never waits it out.
const patience = time.Minute

func (e *env) waitFor(timeout time.Duration, what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("waited %v for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
