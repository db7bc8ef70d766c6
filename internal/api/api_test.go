package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/problem"
)

const agentJSON = `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"impact","labels":{"team":"logistics"}},"spec":{"description":"finds delayed orders"}}`

type response struct {
	status  int
	ctype   string
	body    []byte
	problem problem.Details
}

func send(t *testing.T, s *apptest.Server, req *http.Request) response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), body: body}
	if strings.HasPrefix(r.ctype, "application/problem+json") {
		if err := json.Unmarshal(body, &r.problem); err != nil {
			t.Fatalf("problem body %s: %v", body, err)
		}
		if r.problem.RequestID == "" || r.problem.RequestID != resp.Header.Get("X-Request-Id") {
			t.Errorf("problem request_id = %q, header %q: want the same, non-empty", r.problem.RequestID, resp.Header.Get("X-Request-Id"))
		}
		if r.problem.Status != r.status || r.problem.Type != problem.TypeURI(r.problem.Code) {
			t.Errorf("problem status/type = %d/%s, want %d/%s", r.problem.Status, r.problem.Type, r.status, problem.TypeURI(r.problem.Code))
		}
	}
	return r
}

func TestErrorsAreProblems(t *testing.T) {
	s := apptest.Start(t)
	noToken := func(method, path string) *http.Request {
		req, _ := http.NewRequestWithContext(t.Context(), method, s.URL+path, nil)
		return req
	}
	badToken := s.Request(t, "GET", "/v1/resources/agents", nil)
	badToken.Header.Set("Authorization", "Bearer corral_admin_wrong")

	tests := []struct {
		name   string
		req    *http.Request
		status int
		code   string
	}{
		{"no token", noToken("GET", "/v1/resources/agents"), 401, problem.Unauthenticated},
		{"wrong token", badToken, 401, problem.Unauthenticated},
		{"unknown kind", s.Request(t, "GET", "/v1/resources/robots", nil), 404, problem.UnknownKind},
		{"missing resource", s.Request(t, "GET", "/v1/resources/agents/nope", nil), 404, problem.ResourceNotFound},
		{"delete missing", s.Request(t, "DELETE", "/v1/resources/agents/nope", nil), 404, problem.ResourceNotFound},
		{"no such endpoint", noToken("GET", "/v2/nothing"), 404, problem.NotFound},
		{"wrong method", s.Request(t, "PATCH", "/v1/resources/agents/x", nil), 405, problem.MethodNotAllowed},
		{"apply not JSON", s.Request(t, "POST", "/v1/apply", []byte("resources: []")), 400, problem.InvalidRequest},
		{"apply nothing", s.Request(t, "POST", "/v1/apply", []byte(`{"resources":[]}`)), 400, problem.InvalidRequest},
		{"apply too large", s.Request(t, "POST", "/v1/apply", []byte(`{"resources":["`+strings.Repeat("x", 5<<20)+`"]}`)), 413, problem.RequestTooLarge},
		{"put name mismatch", s.Request(t, "PUT", "/v1/resources/agents/other", []byte(agentJSON)), 422, problem.InvalidResource},
		{"put two documents", s.Request(t, "PUT", "/v1/resources/agents/impact", []byte(agentJSON+"\n---\n"+agentJSON)), 422, problem.InvalidResource},
		// As /v1/apply: JSON's 1e999999 is a number out of range, not the
		// string YAML would make of it.
		{"put a number out of range", s.Request(t, "PUT", "/v1/resources/policies/p", []byte(`{"apiVersion":"corral.dev/v1","kind":"Policy","metadata":{"name":"p"},"spec":{"rego":["package corral.authz"],"data":{"x":1e999999}}}`)), 422, problem.InvalidResource},
		{"apply a number out of range", s.Request(t, "POST", "/v1/apply", []byte(`{"resources":[{"apiVersion":"corral.dev/v1","kind":"Policy","metadata":{"name":"p"},"spec":{"rego":["package corral.authz"],"data":{"x":1e999999}}}]}`)), 422, problem.InvalidResource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := send(t, s, tt.req)
			if r.status != tt.status || r.problem.Code != tt.code {
				t.Errorf("%s %s = %d %q, want %d %q (body %s)", tt.req.Method, tt.req.URL.Path, r.status, r.problem.Code, tt.status, tt.code, r.body)
			}
		})
	}
	t.Run("unauthenticated asks for a bearer token", func(t *testing.T) {
		resp, err := http.DefaultClient.Do(noToken("GET", "/v1/resources/agents"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("WWW-Authenticate = %q, want Bearer", got)
		}
	})
}

func TestPutGetDelete(t *testing.T) {
	s := apptest.Start(t)
	r := send(t, s, s.Request(t, "PUT", "/v1/resources/agents/impact", []byte(agentJSON)))
	if r.status != http.StatusCreated || !strings.Contains(string(r.body), `"result": "created"`) {
		t.Fatalf("PUT new = %d %s, want 201 created", r.status, r.body)
	}
	// YAML is accepted too, and the same content is unchanged.
	yamlDoc := "apiVersion: corral.dev/v1\nkind: Agent\nmetadata:\n  name: impact\n  labels: {team: logistics}\nspec:\n  description: finds delayed orders\n"
	req := s.Request(t, "PUT", "/v1/resources/Agent/impact", []byte(yamlDoc))
	req.Header.Set("Content-Type", "application/yaml")
	if r := send(t, s, req); r.status != http.StatusOK || !strings.Contains(string(r.body), `"result": "unchanged"`) {
		t.Fatalf("PUT same as YAML = %d %s, want 200 unchanged", r.status, r.body)
	}

	r = send(t, s, s.Request(t, "GET", "/v1/resources/agent/impact", nil))
	var got map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil || r.status != 200 {
		t.Fatalf("GET = %d %s", r.status, r.body)
	}
	meta := got["metadata"].(map[string]any)
	if meta["revision"] == nil || meta["updated"] == nil {
		t.Errorf("GET metadata = %v, want revision and updated set by the server", meta)
	}
	if diff := cmp.Diff(map[string]any{"description": "finds delayed orders"}, got["spec"]); diff != "" {
		t.Errorf("GET spec (-want +got):\n%s", diff)
	}

	r = send(t, s, s.Request(t, "GET", "/v1/resources/agents", nil))
	var list struct {
		Kind  string
		Items []json.RawMessage
	}
	if err := json.Unmarshal(r.body, &list); err != nil || list.Kind != "Agent" || len(list.Items) != 1 {
		t.Errorf("GET list = %s, want one Agent", r.body)
	}

	if r := send(t, s, s.Request(t, "DELETE", "/v1/resources/agents/impact", nil)); r.status != 200 {
		t.Fatalf("DELETE = %d %s", r.status, r.body)
	}
	if r := send(t, s, s.Request(t, "GET", "/v1/resources/agents/impact", nil)); r.status != 404 {
		t.Errorf("GET after DELETE = %d, want 404", r.status)
	}
}

func TestApplyIsAllOrNothing(t *testing.T) {
	s := apptest.Start(t)
	body := `{"resources":[` + agentJSON + `,{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"b"},"spec":{"description":7}}]}`
	r := send(t, s, s.Request(t, "POST", "/v1/apply", []byte(body)))
	if r.status != 422 || r.problem.Code != problem.InvalidResource {
		t.Fatalf("apply with one bad resource = %d %s, want 422 invalid_resource", r.status, r.body)
	}
	var p struct {
		Errors []map[string]any `json:"errors"`
	}
	_ = json.Unmarshal(r.body, &p)
	want := []map[string]any{{"document": 2.0, "resource": "Agent/b", "field": "spec.description", "message": "must be string, got number"}}
	if diff := cmp.Diff(want, p.Errors); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	if r := send(t, s, s.Request(t, "GET", "/v1/resources/agents/impact", nil)); r.status != 404 {
		t.Errorf("the valid resource of a refused set was stored (GET = %d)", r.status)
	}

	dup := `{"resources":[` + agentJSON + `,` + agentJSON + `]}`
	if r := send(t, s, s.Request(t, "POST", "/v1/apply", []byte(dup))); r.status != 422 || !strings.Contains(string(r.body), "declared twice") {
		t.Errorf("apply with a duplicate = %d %s, want 422 naming the duplicate", r.status, r.body)
	}
}

func TestStaleRevisionConflicts(t *testing.T) {
	s := apptest.Start(t)
	send(t, s, s.Request(t, "PUT", "/v1/resources/agents/impact", []byte(agentJSON)))
	stale := strings.Replace(agentJSON, `"name":"impact"`, `"name":"impact","revision":99`, 1)
	r := send(t, s, s.Request(t, "PUT", "/v1/resources/agents/impact", []byte(stale)))
	if r.status != http.StatusConflict || r.problem.Code != problem.Conflict {
		t.Errorf("PUT with a stale revision = %d %s, want 409 conflict", r.status, r.body)
	}
}

func TestSchemas(t *testing.T) {
	s := apptest.Start(t)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", s.URL+"/v1/schemas/agents", nil)
	r := send(t, s, req)
	var schema map[string]any
	if err := json.Unmarshal(r.body, &schema); err != nil || r.status != 200 || r.ctype != "application/schema+json" {
		t.Fatalf("GET schema = %d %s %s", r.status, r.ctype, r.body)
	}
	if schema["title"] != "Agent" {
		t.Errorf("schema title = %v, want Agent", schema["title"])
	}
	req, _ = http.NewRequestWithContext(t.Context(), "GET", s.URL+"/v1/schemas", nil)
	if r := send(t, s, req); r.status != 200 || !strings.Contains(string(r.body), `"/v1/schemas/Agent"`) {
		t.Errorf("GET schemas = %d %s", r.status, r.body)
	}
}

func TestNamesThatCannotExist(t *testing.T) {
	s := apptest.Start(t)
	for _, name := range []string{"a*b", ">", "foo..bar", "UPPER"} {
		for _, method := range []string{"GET", "DELETE"} {
			r := send(t, s, s.Request(t, method, "/v1/resources/agents/"+url.PathEscape(name), nil))
			if r.status != 404 || r.problem.Code != problem.ResourceNotFound {
				t.Errorf("%s agents/%s = %d %s, want 404 resource_not_found", method, name, r.status, r.body)
			}
		}
	}
}

func TestApplyLimits(t *testing.T) {
	s := apptest.Start(t)
	var b strings.Builder
	b.WriteString(`{"resources":[`)
	for i := range 1001 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{}`)
	}
	b.WriteString(`]}`)
	if r := send(t, s, s.Request(t, "POST", "/v1/apply", []byte(b.String()))); r.status != 400 || !strings.Contains(r.problem.Detail, "1 to 1000 resources, got 1001") {
		t.Errorf("apply of 1001 resources = %d %s, want 400 naming the limit", r.status, r.body)
	}
	// 1000 invalid resources: the count is told, the list is capped.
	body := strings.Replace(b.String(), `{},`, ``, 1) // 1000 of them
	r := send(t, s, s.Request(t, "POST", "/v1/apply", []byte(body)))
	var p struct{ Errors []json.RawMessage }
	_ = json.Unmarshal(r.body, &p)
	if r.status != 422 || !strings.HasPrefix(r.problem.Detail, "1000 problem(s)") || len(p.Errors) != 101 {
		t.Errorf("apply of 1000 empty resources = %d %q with %d errors, want 422, the full count and 100 listed + 1", r.status, r.problem.Detail, len(p.Errors))
	}
}

func TestKeysAPI(t *testing.T) {
	s := apptest.Start(t)
	send(t, s, s.Request(t, "PUT", "/v1/resources/agents/impact", []byte(agentJSON)))
	tests := []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"not JSON", `agent: impact`, 400, problem.InvalidRequest},
		{"no agent", `{}`, 400, problem.InvalidRequest},
		{"unknown agent", `{"agent":"ghost"}`, 404, problem.ResourceNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := send(t, s, s.Request(t, "POST", "/v1/keys", []byte(tt.body))); r.status != tt.status || r.problem.Code != tt.code {
				t.Errorf("POST /v1/keys %s = %d %s, want %d %s", tt.body, r.status, r.body, tt.status, tt.code)
			}
		})
	}
	r := send(t, s, s.Request(t, "POST", "/v1/keys", []byte(`{"agent":"impact"}`)))
	var created struct{ Key, ID, Agent string }
	if err := json.Unmarshal(r.body, &created); err != nil || r.status != 201 || !strings.HasPrefix(created.Key, "corral_ak_") || created.Agent != "impact" {
		t.Fatalf("POST /v1/keys = %d %s", r.status, r.body)
	}
	// An agent key opens no admin endpoint.
	req := s.Request(t, "GET", "/v1/keys", nil)
	req.Header.Set("Authorization", "Bearer "+created.Key)
	if r := send(t, s, req); r.status != 401 {
		t.Errorf("GET /v1/keys with an agent key = %d, want 401", r.status)
	}
	if r := send(t, s, s.Request(t, "DELETE", "/v1/keys/"+created.ID, nil)); r.status != 200 {
		t.Errorf("DELETE key = %d %s", r.status, r.body)
	}
	if r := send(t, s, s.Request(t, "DELETE", "/v1/keys/"+created.ID, nil)); r.status != 404 || r.problem.Code != problem.KeyNotFound {
		t.Errorf("DELETE revoked key = %d %s, want 404 key_not_found", r.status, r.body)
	}
}
