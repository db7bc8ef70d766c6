package app_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/llm/llmtest"
)

// erpDocument is an ERP with a write tool and a read tool.
const erpDocument = `{"openapi": "3.0.3", "info": {"title": "erp", "version": "1"}, "paths": {
  "/comments": {"post": {"operationId": "create_comment", "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": {"text": {"type": "string"}}}}}}, "responses": {"201": {"description": "created"}}}},
  "/status": {"get": {"operationId": "get_status", "responses": {"200": {"description": "ok"}}}}}}`

// erp is an upstream that counts the comments it gets and how many it
// handles at once; each takes a while, so that a cap on calls in flight
// matters.
type erp struct {
	comments, statuses atomic.Int64
	now, most          atomic.Int64
	first, last        atomic.Int64 // unix nanoseconds of the first and last comment
}

func (e *erp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/status" {
		e.statuses.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
		return
	}
	at := time.Now().UnixNano()
	e.first.CompareAndSwap(0, at)
	e.last.Store(at)
	e.comments.Add(1)
	n := e.now.Add(1)
	defer e.now.Add(-1)
	for {
		m := e.most.Load()
		if n <= m || e.most.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(60 * time.Millisecond)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write([]byte(`{"id": 1}`))
}

// twoReplicas starts two corrals sharing one NATS server.
func twoReplicas(t *testing.T) (*apptest.Server, *apptest.Server) {
	t.Helper()
	url := bustest.ExternalServer(t)
	return apptest.StartWith(t, app.Config{NATSURL: url}), apptest.StartWith(t, app.Config{NATSURL: url})
}

// waitLimit waits until a replica serves the rate limit.
func waitLimit(t *testing.T, srv *apptest.Server, name string) {
	t.Helper()
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, body := srv.Call(t, srv.Token, "GET", "/v1/limits", nil, nil)
		var list struct{ Items []struct{ Limit string } }
		_ = json.Unmarshal(body, &list)
		for _, it := range list.Items {
			if status == http.StatusOK && it.Limit == name {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("rate limit %s never loaded: HTTP %d %s", name, status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSeedsIncidentRateLimited replays the seeds' first incident: an agent
// looping on a write tool, from several clients on two replicas at once,
// under a limit of 5 calls a second and 2 in flight. The ERP never sees more
// than the limit, the looping agent is told 429 rate_limited with
// Retry-After and the limit's name, and another agent's reads of the same
// ERP all go through.
func TestSeedsIncidentRateLimited(t *testing.T) {
	upstream := &erp{}
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	r1, r2 := twoReplicas(t)
	r1.ApplyValues(t,
		map[string]any{"apiVersion": "corral.dev/v1", "kind": "ToolSource", "metadata": map[string]any{"name": "erp"},
			"spec": map[string]any{"openapi": map[string]any{"baseURL": up.URL, "document": erpDocument}}},
		map[string]any{"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": map[string]any{"name": "looper"}, "spec": map[string]any{"tools": []string{"erp.*"}}},
		map[string]any{"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": map[string]any{"name": "reporter"}, "spec": map[string]any{"tools": []string{"erp.*"}}},
		map[string]any{"apiVersion": "corral.dev/v1", "kind": "RateLimit", "metadata": map[string]any{"name": "erp-writes"},
			"spec": map[string]any{"scope": map[string]any{"toolSource": "erp", "tool": "erp.create_*"}, "rate": map[string]any{"requests": 5, "per": "second"}, "inFlight": 2}},
	)
	for _, r := range []*apptest.Server{r1, r2} {
		r.WaitTool(t, "erp.create_comment")
		waitLimit(t, r, "erp-writes")
	}
	looper, reporter := r1.Key(t, "looper"), r1.Key(t, "reporter")

	const runFor = 2 * time.Second
	var admitted, refused, otherFailed atomic.Int64
	var badRefusal atomic.Value
	var wg sync.WaitGroup
	began := time.Now()
	stop := began.Add(runFor)
	for i := range 8 {
		r := []*apptest.Server{r1, r2}[i%2]
		wg.Go(func() {
			for time.Now().Before(stop) {
				req := r.Request(t, "POST", "/v1/tools/erp.create_comment/invoke", []byte(`{"arguments": {"text": "again"}}`))
				req.Header.Set("Authorization", "Bearer "+looper)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				var p struct {
					Code   string
					Detail string
					Errors []map[string]string
				}
				_ = json.NewDecoder(resp.Body).Decode(&p)
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusOK:
					admitted.Add(1)
				case resp.StatusCode == http.StatusTooManyRequests && p.Code == "rate_limited" &&
					resp.Header.Get("Retry-After") != "" && len(p.Errors) == 1 && p.Errors[0]["limit"] == "erp-writes":
					refused.Add(1)
				default:
					badRefusal.Store(strconv.Itoa(resp.StatusCode) + " " + p.Code + ": " + p.Detail)
				}
			}
		})
	}
	for i := range 2 {
		r := []*apptest.Server{r1, r2}[i]
		wg.Go(func() {
			for time.Now().Before(stop) {
				status, body := r.Call(t, reporter, "POST", "/v1/tools/erp.get_status/invoke", map[string]any{"arguments": map[string]any{}}, nil)
				if status != http.StatusOK {
					otherFailed.Add(1)
					t.Errorf("the other agent's read: HTTP %d %s", status, body)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	ended := time.Now()
	if v := badRefusal.Load(); v != nil {
		t.Errorf("a looping call was answered %s, want 200 or 429 rate_limited naming erp-writes with Retry-After", v)
	}
	got := upstream.comments.Load()
	// GCRA: in a span t, at most burst + rate*t calls. The span is the
	// clients', from before their first call to after their last answer:
	// corral admitted every call within it. (The upstream's own span, from
	// its first comment to its last, can be shorter than corral's by any
	// scheduling delay, seconds on a loaded machine.) Unlimited, the eight
	// clients would land about sixty.
	span := ended.Sub(began)
	most := 5 + int64(5*span.Seconds()) + 1
	t.Logf("ERP got %d comments in %v (%v at the ERP; at most %d allowed), at most %d at once; corral refused %d; reads %d",
		got, span, time.Duration(upstream.last.Load()-upstream.first.Load()), most, upstream.most.Load(), refused.Load(), upstream.statuses.Load())
	if got != admitted.Load() {
		t.Errorf("ERP got %d comments, corral admitted %d", got, admitted.Load())
	}
	if got > most {
		t.Errorf("ERP got %d comments in %v, want at most %d (5 a second, burst 5)", got, span, most)
	}
	if m := upstream.most.Load(); m > 2 {
		t.Errorf("ERP handled %d comments at once, want at most 2", m)
	}
	if refused.Load() == 0 {
		t.Error("no call was refused: the loop was not limited")
	}
	if upstream.statuses.Load() == 0 || otherFailed.Load() > 0 {
		t.Errorf("the other agent's reads: %d reached the ERP, %d failed; want all through", upstream.statuses.Load(), otherFailed.Load())
	}

	// The state is shared: both replicas show the refusals they made, and
	// no call is left holding a slot.
	var list struct {
		Items []struct {
			Limit    string
			Counters []struct {
				InFlight int `json:"in_flight"`
			}
			Replica struct{ Admitted, Refused int64 }
		}
	}
	var total int64
	for _, r := range []*apptest.Server{r1, r2} {
		_, body := r.Call(t, r.Token, "GET", "/v1/limits", nil, nil)
		if err := json.Unmarshal(body, &list); err != nil || len(list.Items) != 1 || len(list.Items[0].Counters) != 1 {
			t.Fatalf("GET /v1/limits = %s (%v), want erp-writes with one counter", body, err)
		}
		if n := list.Items[0].Counters[0].InFlight; n != 0 {
			t.Errorf("in flight after every call ended = %d, want 0", n)
		}
		total += list.Items[0].Replica.Admitted
	}
	if total != got {
		t.Errorf("replicas admitted %d in all, ERP got %d", total, got)
	}
}

// TestProviderRetryAfterHonoured: a provider answering 429 with
// Retry-After: 2 is not called again by corral, on either replica, for 2 s.
func TestProviderRetryAfterHonoured(t *testing.T) {
	var mu sync.Mutex
	var calls []time.Time
	provider := llmtest.Start(t)
	provider.Set(llmtest.WithHandler(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, time.Now())
		n := len(calls)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n == 1 {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error": {"message": "slow down", "type": "rate_limit_exceeded"}}`))
			return
		}
		_, _ = w.Write([]byte(`{"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}`))
	}))
	r1, r2 := twoReplicas(t)
	r1.ApplyValues(t,
		map[string]any{"apiVersion": "corral.dev/v1", "kind": "Model", "metadata": map[string]any{"name": "m"},
			"spec": map[string]any{"provider": "openai", "baseURL": provider.URL(), "redact": "off"}},
		map[string]any{"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": map[string]any{"name": "chatty"}, "spec": map[string]any{"models": []string{"m"}}},
	)
	key := r1.Key(t, "chatty")
	waitModel(t, r1, key, "m")
	waitModel(t, r2, key, "m")
	chat := map[string]any{"model": "m", "messages": []map[string]string{{"role": "user", "content": "hi"}}}

	status, body := r1.Call(t, key, "POST", "/openai/v1/chat/completions", chat, nil)
	if status != http.StatusTooManyRequests {
		t.Fatalf("first call: HTTP %d %s, want the provider's 429", status, body)
	}
	// Until 2 s have passed, every call on either replica is answered by
	// corral without calling the provider.
	sawThrottled := map[*apptest.Server]bool{}
	for {
		mu.Lock()
		n := len(calls)
		mu.Unlock()
		if n > 1 {
			break
		}
		for _, r := range []*apptest.Server{r1, r2} {
			req := r.Request(t, "POST", "/openai/v1/chat/completions", mustJSON(t, chat))
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var p struct{ Code string }
			_ = json.NewDecoder(resp.Body).Decode(&p)
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusOK:
			case resp.StatusCode == http.StatusTooManyRequests && p.Code == "upstream_throttled" && resp.Header.Get("Retry-After") != "":
				sawThrottled[r] = true
			default:
				t.Fatalf("call while throttled: HTTP %d %s", resp.StatusCode, p.Code)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	gap := calls[1].Sub(calls[0])
	mu.Unlock()
	if gap < 2*time.Second {
		t.Errorf("the provider was called again %v after its 429 with Retry-After: 2, want at least 2s", gap)
	}
	if !sawThrottled[r1] || !sawThrottled[r2] {
		t.Errorf("answered upstream_throttled on replica 1: %v, replica 2: %v; want both", sawThrottled[r1], sawThrottled[r2])
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLimitsEndpointHostile: GET /v1/limits is for admins only, other
// methods are refused, and a RateLimit that cannot be enforced is refused
// on apply naming the field.
func TestLimitsEndpointHostile(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: a}
spec: {}
`)
	key := srv.Key(t, "a")
	for _, tt := range []struct {
		name, token, method string
		want                int
	}{
		{"no credential", "", "GET", http.StatusUnauthorized},
		{"an agent's key", key, "GET", http.StatusUnauthorized},
		{"a forged token", "corral_admin_forged", "GET", http.StatusUnauthorized},
		{"POST", srv.Token, "POST", http.StatusMethodNotAllowed},
		{"DELETE", srv.Token, "DELETE", http.StatusMethodNotAllowed},
		{"admin", srv.Token, "GET", http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, body := srv.Call(t, tt.token, tt.method, "/v1/limits", nil, nil)
			if status != tt.want {
				t.Errorf("%s /v1/limits = HTTP %d %s, want %d", tt.method, status, body, tt.want)
			}
		})
	}
	status, body := srv.Call(t, srv.Token, "POST", "/v1/apply", map[string]any{"resources": []any{
		map[string]any{"apiVersion": "corral.dev/v1", "kind": "RateLimit", "metadata": map[string]any{"name": "bad"},
			"spec": map[string]any{"rate": map[string]any{"requests": 1e12, "per": "fortnight"}, "inFlight": "many"}},
	}}, nil)
	for _, field := range []string{"spec.rate.requests", "spec.rate.per", "spec.inFlight"} {
		if status != http.StatusUnprocessableEntity || !strings.Contains(string(body), field) {
			t.Errorf("apply of a bad RateLimit = HTTP %d %s, want 422 naming %s", status, body, field)
		}
	}
}

// TestToolUpstream429Honoured: a tool upstream's 429 reaches the agent as
// the tool's answer, and corral then calls none of the source's tools
// until the upstream's Retry-After has passed.
func TestToolUpstream429Honoured(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"error": "slow down"}`))
	}))
	t.Cleanup(up.Close)
	srv := apptest.Start(t)
	srv.ApplyValues(t,
		map[string]any{"apiVersion": "corral.dev/v1", "kind": "ToolSource", "metadata": map[string]any{"name": "erp"},
			"spec": map[string]any{"openapi": map[string]any{"baseURL": up.URL, "document": erpDocument}}},
		map[string]any{"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": map[string]any{"name": "a"}, "spec": map[string]any{"tools": []string{"erp.*"}}},
	)
	srv.WaitTool(t, "erp.get_status")
	key := srv.Key(t, "a")
	status, body := srv.Call(t, key, "POST", "/v1/tools/erp.get_status/invoke", map[string]any{"arguments": map[string]any{}}, nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"upstream_status":429`) {
		t.Fatalf("first call = HTTP %d %s, want 200 with the upstream's 429", status, body)
	}
	for tool, args := range map[string]string{"erp.get_status": `{}`, "erp.create_comment": `{"text": "x"}`} {
		req := srv.Request(t, "POST", "/v1/tools/"+tool+"/invoke", []byte(`{"arguments": `+args+`}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var p struct{ Code string }
		_ = json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		if resp.StatusCode != http.StatusTooManyRequests || p.Code != "upstream_throttled" || ra < 25 || ra > 30 {
			t.Errorf("%s while throttled = HTTP %d %s, Retry-After %q; want 429 upstream_throttled, about 30", tool, resp.StatusCode, p.Code, resp.Header.Get("Retry-After"))
		}
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("the upstream got %d requests, want 1: corral must hold off after its 429", n)
	}
	_, body = srv.Call(t, srv.Token, "GET", "/v1/limits", nil, nil)
	var list struct{ Throttled []struct{ Kind, Name string } }
	if err := json.Unmarshal(body, &list); err != nil || len(list.Throttled) != 1 || list.Throttled[0].Kind != "tool" || list.Throttled[0].Name != "erp" {
		t.Errorf("GET /v1/limits = %s, want erp listed as throttled", body)
	}
}
