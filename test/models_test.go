package test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/corral-dev/corral/internal/bus/bustest"
)

// TestBudgetAcrossReplicas: two corral processes on one NATS share a
// budget's counters: 20 concurrent model calls, ten through each, against
// limit {calls: 5} let exactly 5 through; the rest get 429 budget_exceeded.
// `corral budgets` on the other replica shows the use.
func TestBudgetAcrossReplicas(t *testing.T) {
	natsURL := bustest.ExternalServer(t)
	a := startCorral(t, "--nats", natsURL)
	b := startCorral(t, "--nats", natsURL, "--secrets-key", filepath.Join(a.Data, "secrets.key"))

	resources := writeFile(t, t.TempDir(), "models.yaml", `apiVersion: corral.dev/v1
kind: Model
metadata: {name: local}
spec: {provider: scripted, script: [{content: "ok"}]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: looper}
spec: {models: [local]}
---
apiVersion: corral.dev/v1
kind: Budget
metadata: {name: looper-total}
spec: {scope: {agent: looper}, window: total, limit: {calls: 5}}
`)
	if stdout, stderr, exit := runCLI(t, a.env(), "apply", "-f", resources); exit != 0 {
		t.Fatalf("apply: exit %d\n%s%s", exit, stdout, stderr)
	}
	keyJSON, stderr, exit := runCLI(t, a.env(), "keys", "create", "--agent", "looper", "-o", "json")
	var key struct {
		Key string `json:"key"`
	}
	if exit != 0 || json.Unmarshal([]byte(keyJSON), &key) != nil {
		t.Fatalf("keys create: exit %d %s %s", exit, keyJSON, stderr)
	}
	// Both replicas must have the model and the budget before the race.
	for _, p := range []*proc{a, b} {
		if !waitFor(startTimeout, func() bool {
			r := request(t, "GET", p.URL+"/openai/v1/models", key.Key, "")
			budgets, _, _ := runCLI(t, p.env(), "budgets", "-o", "json")
			return r.status == http.StatusOK && strings.Contains(string(r.body), `"local"`) && strings.Contains(budgets, "looper-total")
		}) {
			t.Fatalf("%s never served model local with budget looper-total", p.URL)
		}
	}

	body := `{"model": "local", "messages": [{"role": "user", "content": "again"}]}`
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := range 20 {
		p := []*proc{a, b}[i%2]
		wg.Go(func() {
			r := request(t, "POST", p.URL+"/openai/v1/chat/completions", key.Key, body)
			mu.Lock()
			defer mu.Unlock()
			codes[r.status]++
			if r.status == http.StatusTooManyRequests && !strings.Contains(string(r.body), `"code":"budget_exceeded"`) {
				t.Errorf("429 without budget_exceeded: %s", r.body)
			}
		})
	}
	wg.Wait()
	if codes[http.StatusOK] != 5 || codes[http.StatusTooManyRequests] != 15 {
		t.Fatalf("20 concurrent calls over two replicas against calls: 5 gave %v, want 5 × 200 and 15 × 429", codes)
	}
	out, stderr, exit := runCLI(t, b.env(), "budgets")
	if exit != 0 || !regexp.MustCompile(`looper-total\s+agent=looper\s+total\s+calls 5\s+5\s+0\s+never`).MatchString(out) {
		t.Errorf("corral budgets: exit %d\n%s%s", exit, out, stderr)
	}
	t.Logf("corral budgets:\n%s", out)
}
