package rest_test

import (
	"net/http"
	"testing"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/edge/rest"
	"github.com/corral-dev/corral/internal/pipeline"
)

// agentUID reads the metadata.uid of an agent applied through the registry.
func agentUID(t *testing.T, srv *apptest.Server, name string) string {
	t.Helper()
	status, body := srv.Call(t, srv.Token, "GET", "/v1/resources/Agent/"+name, nil, nil)
	if status != http.StatusOK {
		t.Fatalf("get agent %s: HTTP %d %s", name, status, body)
	}
	uid := decode[config.Resource](t, body).Metadata.UID
	if uid == "" {
		t.Fatalf("agent %s has no uid", name)
	}
	return uid
}

// TestIdempotencyKeyPerIncarnation: an agent deleted and created again under
// the same name does not inherit the earlier one's idempotency records: the
// same key and arguments make a new call upstream, under another upstream
// key. At d7dc022 (finding 12) the new agent was handed the old one's
// answer, "replayed": true, and the call was never made.
func TestIdempotencyKeyPerIncarnation(t *testing.T) {
	srv, up, key := setup(t)
	h := http.Header{"Idempotency-Key": {"order-42"}}
	const args = `{"sku": "ABC-1", "qty": 1}`
	if status, body := invoke(t, srv, key, "shop.createOrder", args, h); status != http.StatusOK {
		t.Fatalf("first call: HTTP %d %s", status, body)
	}
	first := agentUID(t, srv, "impact")
	if status, body := srv.Call(t, srv.Token, "DELETE", "/v1/resources/Agent/impact", nil, nil); status != http.StatusOK {
		t.Fatalf("delete agent: HTTP %d %s", status, body)
	}
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec:
  tools: [shop.getOrder, shop.create*]
`)
	second := agentUID(t, srv, "impact")
	calls := up.calls.Load()
	status, body := invoke(t, srv, srv.Key(t, "impact"), "shop.createOrder", args, h)
	if status != http.StatusOK || decode[rest.InvokeResponse](t, body).Replayed {
		t.Fatalf("the re-created agent's call: HTTP %d %s, want a new call, not a replay", status, body)
	}
	if up.calls.Load() != calls+1 {
		t.Errorf("the upstream got %d calls, want 1", up.calls.Load()-calls)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	old := pipeline.UpstreamKey(pipeline.KeyOwner(pipeline.Caller{Agent: "impact", AgentUID: first}), "shop.createOrder", "order-42")
	want := pipeline.UpstreamKey(pipeline.KeyOwner(pipeline.Caller{Agent: "impact", AgentUID: second}), "shop.createOrder", "order-42")
	if got := up.keys[len(up.keys)-1]; got != want || got == old {
		t.Errorf("upstream Idempotency-Key %q, want %q (the new incarnation's), not %q", got, want, old)
	}
}
