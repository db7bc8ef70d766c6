package api_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/budget"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/registry"
)

// counting is a Reloader that counts its reloads.
type counting struct{ n atomic.Int32 }

func (c *counting) Reload(context.Context) error { c.n.Add(1); return nil }

// TestApplyPutsChangesInForce: an apply or delete that changes a kind with
// a Reloader answers after the reload, so the next call to this replica is
// decided by it. The budgets here have no Run following the registry at
// all: only the apply's reload can take the new Budget in. An unchanged
// apply, and a change of another kind, reload nothing.
func TestApplyPutsChangesInForce(t *testing.T) {
	ctx := t.Context()
	logger := slog.New(slog.DiscardHandler)
	b := bustest.Open(t)
	reg, err := registry.Open(ctx, logger, b)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := identity.Open(ctx, logger, b)
	if err != nil {
		t.Fatal(err)
	}
	path, _, err := creds.Ensure(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	token, err := identity.ReadToken(path)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for _, run := range []func(context.Context) error{reg.Run, creds.Run} {
		go func() { done <- run(runCtx) }()
	}
	t.Cleanup(func() { stop(); <-done; <-done })
	if err := reg.WaitLoaded(ctx); err != nil {
		t.Fatal(err)
	}
	if err := creds.WaitLoaded(ctx); err != nil {
		t.Fatal(err)
	}
	budgets, err := budget.Open(ctx, logger, b, reg, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	limits := &counting{}
	mux := http.NewServeMux()
	api.New(logger, reg, creds).WithInForce("Budget", budgets).WithInForce("RateLimit", limits).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	send := func(method, path, body string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: HTTP %d", method, path, resp.StatusCode)
		}
	}
	inForce := func() []string {
		st, err := budgets.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range st {
			names = append(names, s.Budget)
		}
		return names
	}

	const calls = `{"resources": [{"apiVersion": "corral.dev/v1", "kind": "Budget", "metadata": {"name": "calls"}, "spec": {"scope": {"agent": "impact"}, "window": "total", "limit": {"calls": 10}}}]}`
	send("POST", "/v1/apply", calls)
	if got := inForce(); len(got) != 1 || got[0] != "calls" {
		t.Fatalf("budgets in force right after the apply = %v, want [calls]", got)
	}
	send("POST", "/v1/apply", calls) // unchanged
	send("POST", "/v1/apply", `{"resources": [{"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": {"name": "impact"}, "spec": {}}]}`)
	if n := limits.n.Load(); n != 0 {
		t.Errorf("applies without a RateLimit reloaded the rate limits %d times", n)
	}
	send("POST", "/v1/apply", `{"resources": [{"apiVersion": "corral.dev/v1", "kind": "RateLimit", "metadata": {"name": "rate"}, "spec": {"scope": {}, "rate": {"requests": 5, "per": "second"}}}]}`)
	send("DELETE", "/v1/resources/ratelimits/rate", "")
	if n := limits.n.Load(); n != 2 {
		t.Errorf("a RateLimit applied then deleted reloaded the rate limits %d times, want 2", n)
	}
	send("DELETE", "/v1/resources/budgets/calls", "")
	if got := inForce(); len(got) != 0 {
		t.Errorf("budgets in force right after the delete = %v, want none", got)
	}
}
