package app

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/tools"
)

// What a replica loads before it serves calls, in the order it waits for
// them: the readiness checks of /readyz. Until all are loaded, a call could
// be refused for a cause that is only "still loading" (an unknown key, a
// kill switch not yet read, a tool not yet listed), so none is served.
const (
	checkResources   = "resources"
	checkKeys        = "keys"
	checkKillSwitch  = "killswitches"
	checkSigningKeys = "signing_keys"
	checkPolicy      = "policy"
	checkBudgets     = "budgets"
	checkLimits      = "ratelimits"
	checkModels      = "models"
	checkIssuers     = "issuers"
	checkTools       = "tools"
	checkTasks       = "tasks"
)

// toolsGrace bounds how long readiness waits for tool sources to finish
// their first attempt: a source whose upstream is down must not keep the
// replica from serving every other tool.
const toolsGrace = 30 * time.Second

// retryNotReady is the Retry-After of a call refused while loading.
const retryNotReady = time.Second

// loading records which of the checks have passed.
type loading struct {
	mu     sync.Mutex
	loaded map[string]bool
}

func newLoading() *loading {
	return &loading{loaded: map[string]bool{}}
}

func (l *loading) done(check string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.loaded[check] = true
}

// checks reports every check as "loaded" or "loading".
func (l *loading) checks() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]string{}
	for _, c := range []string{checkResources, checkKeys, checkKillSwitch, checkSigningKeys, checkPolicy, checkBudgets, checkLimits, checkModels, checkIssuers, checkTools, checkTasks} {
		out[c] = "loading"
		if l.loaded[c] {
			out[c] = "loaded"
		}
	}
	return out
}

// waitReady waits, in order, for everything a call needs to be in memory,
// marking each check as it passes. It fails only when ctx ends.
func (a *App) waitReady(ctx context.Context) error {
	steps := []struct {
		check string
		wait  func(context.Context) error
	}{
		{checkResources, a.registry.WaitLoaded},
		{checkKeys, a.creds.WaitLoaded},
		{checkKillSwitch, a.kill.WaitLoaded},
		{checkSigningKeys, a.signer.WaitLoaded},
		{checkPolicy, a.policies.WaitLoaded},
		{checkBudgets, a.budgets.WaitLoaded},
		{checkLimits, a.limits.WaitLoaded},
		{checkModels, a.models.WaitLoaded},
		{checkIssuers, a.issuers.WaitLoaded},
		{checkTools, a.waitTools},
		{checkTasks, a.tasks.WaitLoaded},
	}
	for _, s := range steps {
		if err := s.wait(ctx); err != nil {
			return err
		}
		a.loading.done(s.check)
	}
	return nil
}

// waitTools waits until every ToolSource has finished its first attempt to
// load (ready, or failed and retrying), or toolsGrace has passed. The
// catalogue has no event for that, so it looks every few milliseconds.
func (a *App) waitTools(ctx context.Context) error {
	grace := time.NewTimer(toolsGrace)
	defer grace.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		pending := a.pendingSources()
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-grace.C:
			a.logger.WarnContext(ctx, "serving before every tool source has loaded; their tools answer tool_not_found until they do",
				"sources", pending, "waited", toolsGrace)
			return nil
		case <-tick.C:
		}
	}
}

// pendingSources names the ToolSources still on their first attempt.
func (a *App) pendingSources() []string {
	attempted := map[string]bool{}
	for _, st := range a.catalog.Status() {
		if st.State != tools.Connecting || st.Error != "" {
			attempted[st.Name] = true
		}
	}
	var pending []string
	for _, res := range a.registry.List("ToolSource") {
		if !attempted[res.Metadata.Name] {
			pending = append(pending, res.Metadata.Name)
		}
	}
	return pending
}

// isReady reports whether the replica serves calls.
func (a *App) isReady() bool {
	select {
	case <-a.ready:
		return true
	default:
		return false
	}
}

// probes are answered while loading: they say how far it has come.
var probes = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// gate answers every request but the probes with 503 not_ready and
// Retry-After until the replica is ready, so that no client is told 401,
// 404 or 423 for what is only not loaded yet. It is a mux of its own because
// the HTTP middleware names routes from the mux it wraps; next, the mux
// that serves, then records the route it matched on the same request.
func (a *App) gate(logger *slog.Logger, next *http.ServeMux) *http.ServeMux {
	refuse := problem.Handle(logger, func(http.ResponseWriter, *http.Request) error {
		checks := a.loading.checks()
		var loading []string
		for _, check := range slices.Sorted(maps.Keys(checks)) {
			if checks[check] != "loaded" {
				loading = append(loading, check)
			}
		}
		return &problem.Error{Status: http.StatusServiceUnavailable, Code: problem.NotReady, RetryAfter: retryNotReady,
			Detail: "this replica is starting and serves no call yet; still loading: " + strings.Join(loading, ", ")}
	})
	gated := http.NewServeMux()
	gated.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.isReady() || probes[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		refuse.ServeHTTP(w, r)
	}))
	return gated
}
