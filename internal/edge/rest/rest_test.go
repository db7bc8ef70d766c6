package rest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/edge/rest"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/tools"
)

// shopSpec is the OpenAPI document of the test's upstream.
const shopSpec = `openapi: 3.0.3
info: {title: shop, version: "1"}
paths:
  /orders/{id}:
    get:
      operationId: getOrder
      parameters: [{name: id, in: path, required: true, schema: {type: integer, minimum: 1}}]
      responses:
        "200":
          description: the order
          content: {application/json: {schema: {$ref: "#/components/schemas/Order"}}}
    delete:
      operationId: deleteOrder
      parameters: [{name: id, in: path, required: true, schema: {type: integer}}]
      responses: {"204": {description: deleted}}
  /orders:
    post:
      operationId: createOrder
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [sku, qty]
              additionalProperties: false
              properties:
                sku: {type: string, pattern: "^[A-Z]{3}-[0-9]+$"}
                qty: {type: integer, minimum: 1}
      responses:
        "201":
          description: created
          content: {application/json: {schema: {$ref: "#/components/schemas/Order"}}}
components:
  schemas:
    Order:
      type: object
      required: [id, sku]
      properties:
        id: {type: integer}
        sku: {type: string}
`

// shop is the upstream: it counts calls and records idempotency keys.
type shop struct {
	calls   atomic.Int64
	mu      sync.Mutex
	keys    []string
	apiKeys []string
}

func (s *shop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.calls.Add(1)
	s.mu.Lock()
	s.keys = append(s.keys, r.Header.Get("Idempotency-Key"))
	s.apiKeys = append(s.apiKeys, r.Header.Get("X-API-Key"))
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == "GET" && r.URL.Path == "/orders/404":
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"error": "no such order"}`)
	case r.Method == "GET" && r.URL.Path == "/orders/666":
		fmt.Fprint(w, `{"id": "not a number"}`) // breaks the output schema
	case r.Method == "GET":
		id := strings.TrimPrefix(r.URL.Path, "/orders/")
		fmt.Fprintf(w, `{"id": %s, "sku": "ABC-1"}`, id)
	case r.Method == "POST":
		body, _ := io.ReadAll(r.Body)
		var in struct {
			Sku string `json:"sku"`
		}
		_ = json.Unmarshal(body, &in)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id": %d, "sku": %q}`, s.calls.Load(), in.Sku)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func setup(t *testing.T) (*apptest.Server, *shop, string) {
	t.Helper()
	up := &shop{}
	upstream := httptest.NewServer(up)
	t.Cleanup(upstream.Close)
	t.Setenv("SHOP_API_KEY", "s3cret")
	srv := apptest.Start(t)
	indented := "      " + strings.ReplaceAll(shopSpec, "\n", "\n      ")
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: ToolSource
metadata: {name: shop}
spec:
  openapi:
    baseURL: `+upstream.URL+`
    document: |
`+indented+`
  auth: {apiKey: {header: X-API-Key, value: {env: SHOP_API_KEY}}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec:
  tools: [shop.getOrder, shop.create*]
`)
	srv.WaitTool(t, "shop.getOrder")
	return srv, up, srv.Key(t, "impact")
}

func invoke(t *testing.T, srv *apptest.Server, key, tool, args string, header http.Header) (int, []byte) {
	t.Helper()
	return srv.Call(t, key, "POST", "/v1/tools/"+tool+"/invoke", json.RawMessage(`{"arguments": `+args+`}`), header)
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return v
}

func TestInvoke(t *testing.T) {
	srv, up, key := setup(t)

	status, body := invoke(t, srv, key, "shop.getOrder", `{"id": 7}`, nil)
	if status != http.StatusOK {
		t.Fatalf("invoke getOrder: HTTP %d: %s", status, body)
	}
	resp := decode[rest.InvokeResponse](t, body)
	if !jsonEqual(resp.Result, `{"id": 7, "sku": "ABC-1"}`) || resp.AuditID == "" || resp.UpstreamStatus != 200 {
		t.Errorf("invoke getOrder = %s, want the upstream's order and an audit id", body)
	}
	up.mu.Lock()
	gotKey := up.apiKeys[len(up.apiKeys)-1]
	up.mu.Unlock()
	if gotKey != "s3cret" {
		t.Errorf("upstream got X-API-Key %q, want the credential from SHOP_API_KEY", gotKey)
	}

	// A 4xx from the upstream is the tool's answer, not corral's failure.
	status, body = invoke(t, srv, key, "shop.getOrder", `{"id": 404}`, nil)
	if resp := decode[rest.InvokeResponse](t, body); status != http.StatusOK || !resp.IsError || resp.UpstreamStatus != 404 {
		t.Errorf("invoke getOrder(404): HTTP %d %s, want 200 with is_error and upstream_status 404", status, body)
	}
}

func TestRefusals(t *testing.T) {
	srv, up, key := setup(t)
	before := up.calls.Load()
	tests := []struct {
		name       string
		key, tool  string
		args       string
		wantStatus int
		wantCode   string
		wantErrors []tools.Violation
	}{
		{"no key", "", "shop.getOrder", `{"id": 1}`, 401, problem.Unauthenticated, nil},
		{"bad key", "corral_ak_nope", "shop.getOrder", `{"id": 1}`, 401, problem.Unauthenticated, nil},
		{"unknown tool", key, "shop.nope", `{}`, 404, problem.ToolNotFound, nil},
		// A tool the agent may not see is answered as one that does not exist
		// (issue 22); the audit keeps policy_denied.
		{"not in the agent's tools", key, "shop.deleteOrder", `{"id": 1}`, 404, problem.ToolNotFound, nil},
		{"every bad field named", key, "shop.createOrder", `{"sku": "abc", "qty": 0, "x": 1}`, 422, problem.InvalidArguments, []tools.Violation{
			{Pointer: "/x", Message: "unknown field"},
			{Pointer: "/qty", Message: "must be >= 1"},
			{Pointer: "/sku", Message: `"abc" does not match ^[A-Z]{3}-[0-9]+$`},
		}},
		{"number out of range", key, "shop.getOrder", `{"id": 1e400}`, 422, problem.InvalidArguments, nil},
		{"nested over 100 levels", key, "shop.getOrder", `{"id": 1, "x": ` + strings.Repeat("[", 101) + strings.Repeat("]", 101) + `}`, 422, problem.InvalidArguments, nil},
		{"missing body fields", key, "shop.createOrder", `{}`, 422, problem.InvalidArguments, []tools.Violation{{Pointer: "/qty", Message: "required"}, {Pointer: "/sku", Message: "required"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := invoke(t, srv, tt.key, tt.tool, tt.args, nil)
			var got struct {
				problem.Details
				Errors []tools.Violation `json:"errors"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("HTTP %d %s: %v", status, body, err)
			}
			if status != tt.wantStatus || got.Code != tt.wantCode || got.AuditID == "" {
				t.Errorf("invoke %s: HTTP %d %s, want %d %s with an audit_id", tt.tool, status, body, tt.wantStatus, tt.wantCode)
			}
			less := func(a, b tools.Violation) bool { return a.Pointer < b.Pointer }
			if diff := cmp.Diff(tt.wantErrors, got.Errors, cmpSort(less)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
	if n := up.calls.Load() - before; n != 0 {
		t.Errorf("the upstream was called %d times by refused calls, want 0", n)
	}
}

func TestRevokedKey(t *testing.T) {
	srv, _, key := setup(t)
	status, body := srv.Call(t, srv.Token, "GET", "/v1/keys?agent=impact", nil, nil)
	var list struct {
		Items []struct{ ID string } `json:"items"`
	}
	if err := json.Unmarshal(body, &list); err != nil || status != 200 || len(list.Items) != 1 {
		t.Fatalf("list keys: HTTP %d %s", status, body)
	}
	if status, body := srv.Call(t, srv.Token, "DELETE", "/v1/keys/"+list.Items[0].ID, nil, nil); status != 200 {
		t.Fatalf("revoke: HTTP %d %s", status, body)
	}
	if status, body := invoke(t, srv, key, "shop.getOrder", `{"id": 1}`, nil); status != 401 {
		t.Errorf("invoke with a revoked key: HTTP %d %s, want 401", status, body)
	}
}

func TestIdempotencyKey(t *testing.T) {
	srv, up, key := setup(t)
	h := http.Header{"Idempotency-Key": {"order-42"}}
	status, first := invoke(t, srv, key, "shop.createOrder", `{"sku": "ABC-1", "qty": 1}`, h)
	if status != 200 {
		t.Fatalf("first call: HTTP %d %s", status, first)
	}
	calls := up.calls.Load()
	// Same arguments, written differently: the recorded answer, no second call.
	status, second := invoke(t, srv, key, "shop.createOrder", `{"qty": 1, "sku": "ABC-1"}`, h)
	r1, r2 := decode[rest.InvokeResponse](t, first), decode[rest.InvokeResponse](t, second)
	if status != 200 || !r2.Replayed || !jsonEqual(r1.Result, string(r2.Result)) {
		t.Errorf("retry: HTTP %d %s, want the first answer %s replayed", status, second, first)
	}
	if up.calls.Load() != calls {
		t.Errorf("the upstream was called again on a retry with the same Idempotency-Key")
	}
	up.mu.Lock()
	if got, want := up.keys[len(up.keys)-1], pipeline.UpstreamKey(pipeline.KeyOwner(pipeline.Caller{Agent: "impact", AgentUID: agentUID(t, srv, "impact")}), "shop.createOrder", "order-42"); got != want {
		t.Errorf("upstream got Idempotency-Key %q, want %q (the agent's key scoped to it)", got, want)
	}
	up.mu.Unlock()

	// Another agent's order-42 is its own: it reaches the upstream, under
	// another key.
	srv.Apply(t, "apiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: other}\nspec: {tools: [shop.create*]}\n")
	status, body := invoke(t, srv, srv.Key(t, "other"), "shop.createOrder", `{"sku": "ABC-1", "qty": 1}`, h)
	if r := decode[rest.InvokeResponse](t, body); status != 200 || r.Replayed {
		t.Fatalf("another agent's order-42: HTTP %d %s, want a call of its own", status, body)
	}
	up.mu.Lock()
	if n := len(up.keys); n < 2 || up.keys[n-1] == up.keys[n-2] {
		t.Errorf("two agents' order-42 reached the upstream as %q", up.keys)
	}
	up.mu.Unlock()
	status, body = invoke(t, srv, key, "shop.createOrder", `{"sku": "ABC-2", "qty": 1}`, h)
	if got := decode[problem.Details](t, body); status != 409 || got.Code != problem.IdempotencyConflict {
		t.Errorf("same key, other arguments: HTTP %d %s, want 409 idempotency_conflict", status, body)
	}
}

// TestTwoIdempotencyKeys: two Idempotency-Key headers are refused, not
// read as the first (a proxy keeping the last would see another key). At
// 1b05664 the second was ignored and the first replayed.
func TestTwoIdempotencyKeys(t *testing.T) {
	srv, up, key := setup(t)
	status, body := invoke(t, srv, key, "shop.createOrder", `{"sku": "ABC-1", "qty": 1}`, http.Header{"Idempotency-Key": {"order-42"}})
	if status != 200 {
		t.Fatalf("first call: HTTP %d %s", status, body)
	}
	calls := up.calls.Load()
	status, body = invoke(t, srv, key, "shop.createOrder", `{"sku": "ABC-1", "qty": 1}`, http.Header{"Idempotency-Key": {"order-42", "other"}})
	if got := decode[problem.Details](t, body); status != 400 || got.Code != problem.InvalidRequest {
		t.Errorf("two Idempotency-Key headers: HTTP %d %s, want 400 invalid_request", status, body)
	}
	if up.calls.Load() != calls {
		t.Error("the upstream was called for a request with two Idempotency-Key headers")
	}
}

func TestListShowsOnlyAllowedTools(t *testing.T) {
	srv, _, key := setup(t)
	status, body := srv.Call(t, key, "GET", "/v1/tools", nil, nil)
	list := decode[rest.ToolList](t, body)
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
	}
	if status != 200 || !cmp.Equal(names, []string{"shop.createOrder", "shop.getOrder"}) || list.Sources != nil {
		t.Errorf("agent's GET /v1/tools: HTTP %d, tools %v, sources %v; want only its two tools and no sources", status, names, list.Sources)
	}
	status, body = srv.Call(t, srv.Token, "GET", "/v1/tools", nil, nil)
	list = decode[rest.ToolList](t, body)
	if status != 200 || len(list.Tools) != 3 || len(list.Sources) != 1 || list.Sources[0].State != tools.Ready {
		t.Errorf("admin's GET /v1/tools: HTTP %d %s; want all three tools and the ready source", status, body)
	}
	if status, _ := srv.Call(t, key, "GET", "/v1/tools/shop.deleteOrder", nil, nil); status != 404 {
		t.Errorf("agent describing a tool it may not call: HTTP %d, want 404", status)
	}
}

func cmpSort[T any](less func(a, b T) bool) cmp.Option {
	return cmp.Transformer("sort", func(in []T) []T {
		out := append([]T(nil), in...)
		for i := 1; i < len(out); i++ {
			for j := i; j > 0 && less(out[j], out[j-1]); j-- {
				out[j], out[j-1] = out[j-1], out[j]
			}
		}
		return out
	})
}

func jsonEqual(a json.RawMessage, b string) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal([]byte(b), &y) == nil && cmp.Equal(x, y)
}

// TestInvokeBody: the invoke body is application/json and one JSON value;
// an unauthenticated caller is told 401 before anything about its body.
func TestInvokeBody(t *testing.T) {
	srv, up, key := setup(t)
	tests := []struct {
		name, token, contentType, body string
		wantStatus                     int
		wantCode                       string
	}{
		{"json with charset", key, "application/json; charset=utf-8", `{"arguments": {"id": 1}}`, 200, ""},
		{"jsonx", key, "application/jsonx", `{"arguments": {"id": 1}}`, 415, problem.UnsupportedMedia},
		{"trailing value", key, "application/json", `{"arguments": {"id": 1}} {"arguments": {"id": 2}}`, 400, problem.InvalidRequest},
		{"trailing garbage", key, "application/json", `{"arguments": {"id": 1}}x`, 400, problem.InvalidRequest},
		{"unauthenticated, wrong type", "", "text/plain", `hello`, 401, problem.Unauthenticated},
		{"bad key, bad body", "corral_ak_nope", "application/json", `{`, 401, problem.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := up.calls.Load()
			req, err := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/v1/tools/shop.getOrder/invoke", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tt.contentType)
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var got problem.Details
			_ = json.Unmarshal(body, &got)
			if resp.StatusCode != tt.wantStatus || got.Code != tt.wantCode {
				t.Errorf("POST invoke (%s) = HTTP %d %q, want %d %q: %s", tt.contentType, resp.StatusCode, got.Code, tt.wantStatus, tt.wantCode, body)
			}
			if sent := up.calls.Load() - before; tt.wantStatus != 200 && sent != 0 {
				t.Errorf("the upstream got %d calls for a refused request", sent)
			}
		})
	}
}

// TestBadIdempotencyKeyIsRefused: a call refused for its Idempotency-Key
// costs no budget and is audited as denied. At d7dc022 it was checked after
// the budget reservation, settled as a call, and recorded as allowed.
func TestBadIdempotencyKeyIsRefused(t *testing.T) {
	srv, up, key := setup(t)
	srv.Apply(t, "apiVersion: corral.dev/v1\nkind: Budget\nmetadata: {name: impact-day}\nspec: {scope: {agent: impact}, window: day, limit: {calls: 1}}\n")
	waitUntil(t, "the budget is loaded", func() bool {
		_, body := srv.Call(t, srv.Token, "GET", "/v1/budgets", nil, nil)
		return strings.Contains(string(body), `"impact-day"`)
	})
	for _, bad := range []string{"has space", strings.Repeat("k", 1000)} {
		status, body := invoke(t, srv, key, "shop.getOrder", `{"id": 1}`, http.Header{"Idempotency-Key": {bad}})
		if got := decode[problem.Details](t, body); status != 400 || got.Code != problem.InvalidRequest {
			t.Errorf("Idempotency-Key %.20q: HTTP %d %s, want 400 invalid_request", bad, status, body)
		}
	}
	if status, body := invoke(t, srv, key, "shop.getOrder", `{"id": 1}`, nil); status != 200 {
		t.Errorf("the one call the budget allows: HTTP %d %s; the refusals were charged", status, body)
	}
	if n := up.calls.Load(); n != 1 {
		t.Errorf("the upstream got %d calls, want 1", n)
	}
	_, body := srv.Call(t, srv.Token, "GET", "/v1/audit?agent=impact", nil, nil)
	list := decode[api.AuditList](t, body)
	refused := 0
	for _, r := range list.Records {
		if r.Code == problem.InvalidRequest {
			refused++
			if r.Decision != "denied" {
				t.Errorf("a refused Idempotency-Key is audited as %q, want denied", r.Decision)
			}
		}
	}
	if refused != 2 {
		t.Errorf("the audit holds %d refusals for the Idempotency-Key, want 2: %s", refused, body)
	}
}

// TestReplayAfterTheBudgetIsSpent: a retry with the same Idempotency-Key
// is answered from the record before the budgets, so the budget its first
// call spent does not refuse it (at c830e95 the retry got 429
// budget_exceeded, and the agent never learnt the answer of a call that
// had run); a call the budget refuses gives its key back, so it is not
// "still running" afterwards.
func TestReplayAfterTheBudgetIsSpent(t *testing.T) {
	srv, up, key := setup(t)
	srv.Apply(t, "apiVersion: corral.dev/v1\nkind: Budget\nmetadata: {name: impact-day}\nspec: {scope: {agent: impact}, window: day, limit: {calls: 1}}\n")
	waitUntil(t, "the budget is loaded", func() bool {
		_, body := srv.Call(t, srv.Token, "GET", "/v1/budgets", nil, nil)
		return strings.Contains(string(body), `"impact-day"`)
	})
	h := http.Header{"Idempotency-Key": {"order-7"}}
	status, first := invoke(t, srv, key, "shop.createOrder", `{"sku": "ABC-1", "qty": 1}`, h)
	if status != 200 {
		t.Fatalf("first call: HTTP %d %s", status, first)
	}
	status, second := invoke(t, srv, key, "shop.createOrder", `{"sku": "ABC-1", "qty": 1}`, h)
	if r := decode[rest.InvokeResponse](t, second); status != 200 || !r.Replayed {
		t.Errorf("retry with the budget spent: HTTP %d %s, want the first answer replayed", status, second)
	}
	other := http.Header{"Idempotency-Key": {"order-8"}}
	for range 2 { // refused by the budget both times, never "still running"
		status, body := invoke(t, srv, key, "shop.createOrder", `{"sku": "ABC-2", "qty": 1}`, other)
		if got := decode[problem.Details](t, body); status != 429 || got.Code != problem.BudgetExceeded {
			t.Errorf("a new call past the budget: HTTP %d %s, want 429 budget_exceeded", status, body)
		}
	}
	if n := up.calls.Load(); n != 1 {
		t.Errorf("the upstream got %d calls, want 1", n)
	}
}
