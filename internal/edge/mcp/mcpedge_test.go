package mcpedge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	mcpedge "github.com/corral-dev/corral/internal/edge/mcp"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/telemetry"
	"github.com/corral-dev/corral/internal/tools"
)

// fakeGateway stands in for the pipeline: keys name agents, agents may call
// the tools listed for them, and Invoke records every action and answers
// with what answer returns.
type fakeGateway struct {
	mu      sync.Mutex
	keys    map[string]string   // secret -> agent
	allowed map[string][]string // agent -> tool names
	entries []*tools.Entry
	actions []pipeline.Action
	answer  func(a pipeline.Action) (*pipeline.Outcome, error)
}

var _ mcpedge.Gateway = (*fakeGateway)(nil)

func (g *fakeGateway) Authenticate(credential string) (pipeline.Caller, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	agent, ok := g.keys[credential]
	if !ok {
		return pipeline.Caller{}, problem.New(http.StatusUnauthorized, problem.Unauthenticated, "the key is not valid: unknown or revoked")
	}
	return pipeline.Caller{Agent: agent, KeyID: "key-" + agent}, nil
}

func (g *fakeGateway) Tools(_ context.Context, c pipeline.Caller) ([]*tools.Entry, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*tools.Entry
	for _, e := range g.entries {
		if tools.Allowed(g.allowed[c.Agent], e.Tool.Name) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (g *fakeGateway) Invoke(ctx context.Context, a pipeline.Action) (*pipeline.Outcome, error) {
	g.mu.Lock()
	g.actions = append(g.actions, a)
	n := len(g.actions)
	g.mu.Unlock()
	auditID := fmt.Sprintf("audit-%d", n)
	c, err := g.Authenticate(a.Credential)
	if err != nil {
		err.(*problem.Error).AuditID = auditID
		return nil, err
	}
	g.mu.Lock()
	var entry *tools.Entry
	for _, e := range g.entries {
		if e.Tool.Name == a.Target {
			entry = e
		}
	}
	allowed := g.allowed[c.Agent]
	g.mu.Unlock()
	switch {
	case entry == nil:
		pe := pipeline.NoSuchTool(a.Target)
		pe.AuditID = auditID
		return nil, pe
	case !tools.Allowed(allowed, a.Target):
		return nil, &problem.Error{Status: http.StatusForbidden, Code: problem.PolicyDenied, Detail: "the agent may not call " + a.Target, AuditID: auditID}
	}
	out, err := g.answer(a)
	if err != nil {
		if pe, ok := err.(*problem.Error); ok {
			pe.AuditID = auditID
		}
		return nil, err
	}
	out.AuditID = auditID
	out.Tool = &entry.Tool
	return out, nil
}

func (g *fakeGateway) revoke(secret string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.keys, secret)
}

func (g *fakeGateway) lastAction(t *testing.T) pipeline.Action {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.actions) == 0 {
		t.Fatal("the gateway saw no action")
	}
	return g.actions[len(g.actions)-1]
}

func (g *fakeGateway) setEntries(entries []*tools.Entry) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.entries = entries
}

func ptr[T any](v T) *T { return &v }

func entry(t tools.Tool) *tools.Entry { return &tools.Entry{Tool: t} }

// newGateway returns a gateway with two sources (erp and files) and two
// agents: "clerk" may call erp.get_order and files.read, "auditor" every erp tool.
func newGateway() *fakeGateway {
	return &fakeGateway{
		keys:    map[string]string{"clerk-key": "clerk", "auditor-key": "auditor"},
		allowed: map[string][]string{"clerk": {"erp.get_order", "files.read"}, "auditor": {"erp.*"}},
		entries: []*tools.Entry{
			entry(tools.Tool{
				Name: "erp.get_order", Source: "erp", Title: "Get order", Description: "Reads an order.",
				InputSchema:  json.RawMessage(`{"type":"object","properties":{"id":{"type":"string"}},"required":["id"]}`),
				OutputSchema: json.RawMessage(`{"type":"object","properties":{"id":{"type":"string"}}}`),
				Annotations:  tools.Annotations{ReadOnly: true, Idempotent: true},
			}),
			entry(tools.Tool{
				Name: "erp.list_orders", Source: "erp", Description: "Lists orders.",
				InputSchema:  json.RawMessage(`{"type":"object"}`),
				OutputSchema: json.RawMessage(`{"type":"array","items":{"type":"object"}}`),
				Annotations:  tools.Annotations{ReadOnly: true, Idempotent: true, OpenWorld: ptr(false)},
			}),
			entry(tools.Tool{
				Name: "erp.delete_order", Source: "erp", Description: "Deletes an order.",
				InputSchema: json.RawMessage(`{"type":"object"}`),
				Annotations: tools.Annotations{Destructive: true, Idempotent: true},
			}),
			entry(tools.Tool{
				Name: "files.read", Source: "files", Description: "Reads a file.",
				InputSchema: json.RawMessage(`{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","$defs":{"p":{"type":"string"}},"properties":{"path":{"$ref":"#/$defs/p"}},"additionalProperties":false}`),
				Annotations: tools.Annotations{ReadOnly: true, OpenWorld: ptr(true)},
			}),
		},
		answer: func(a pipeline.Action) (*pipeline.Outcome, error) {
			return &pipeline.Outcome{Result: &tools.Result{Structured: json.RawMessage(`{"id":"42"}`), Status: 200}}, nil
		},
	}
}

// serve starts an edge over gw and returns its base URL.
func serve(t *testing.T, gw mcpedge.Gateway) string {
	t.Helper()
	mux := http.NewServeMux()
	mcpedge.New(slog.New(slog.DiscardHandler), gw).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// withKey adds the agent key to every request, as an MCP client configured
// with an Authorization header does.
type withKey struct {
	key  string
	next http.RoundTripper
}

func (k withKey) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+k.key)
	return k.next.RoundTrip(r)
}

// protocols are the MCP versions the tests speak: the initialize handshake
// of 2025-11-25, and the SDK's latest (the sessionless 2026-07-28 protocol).
var protocols = []string{"2025-11-25", "latest"}

// connect opens an MCP client session to endpoint with the key.
func connect(t *testing.T, endpoint, key string, rt http.RoundTripper) *mcp.ClientSession {
	t.Helper()
	return connectVersion(t, endpoint, key, rt, "latest")
}

// connectVersion is connect speaking the given protocol version.
func connectVersion(t *testing.T, endpoint, key string, rt http.RoundTripper, version string) *mcp.ClientSession {
	t.Helper()
	var opts *mcp.ClientSessionOptions
	if version != "latest" {
		opts = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	if rt == nil {
		rt = http.DefaultTransport
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{
		Endpoint:   endpoint,
		HTTPClient: &http.Client{Transport: withKey{key: key, next: rt}},
	}, opts)
	if err != nil {
		t.Fatalf("Connect(%s) = %v", endpoint, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

func TestUnauthenticated(t *testing.T) {
	base := serve(t, newGateway())
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	tests := []struct {
		name, method, path, auth string
	}{
		{"no header", "POST", "/mcp", ""},
		{"wrong scheme", "POST", "/mcp", "Basic Y2xlcms6a2V5"},
		{"unknown key", "POST", "/mcp", "Bearer nope"},
		{"unknown key on a source", "POST", "/mcp/erp", "Bearer nope"},
		{"GET without key", "GET", "/mcp", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, base+tt.path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var d problem.Details
			_ = json.NewDecoder(resp.Body).Decode(&d)
			if resp.StatusCode != http.StatusUnauthorized || d.Code != problem.Unauthenticated {
				t.Errorf("%s %s = %d %q, want 401 %q", tt.method, tt.path, resp.StatusCode, d.Code, problem.Unauthenticated)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", ct)
			}
			if wa := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer") {
				t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", wa)
			}
		})
	}
}

// listedTool is what a client sees of a tool, decoded from the wire.
type listedTool struct {
	Name         string
	Title        string
	Description  string
	InputSchema  any
	OutputSchema any
	Annotations  *mcp.ToolAnnotations
}

func listTools(t *testing.T, cs *mcp.ClientSession) []listedTool {
	t.Helper()
	res, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatalf("ListTools = %v", err)
	}
	out := make([]listedTool, len(res.Tools))
	for i, tl := range res.Tools {
		out[i] = listedTool{tl.Name, tl.Title, tl.Description, tl.InputSchema, tl.OutputSchema, tl.Annotations}
	}
	return out
}

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestToolsList(t *testing.T) {
	base := serve(t, newGateway())
	tests := []struct {
		name, path, key string
		want            []listedTool
	}{
		{
			name: "only the agent's tools", path: "/mcp", key: "clerk-key",
			want: []listedTool{
				{
					Name: "erp.get_order", Title: "Get order", Description: "Reads an order.",
					InputSchema:  decode(t, `{"type":"object","properties":{"id":{"type":"string"}},"required":["id"]}`),
					OutputSchema: decode(t, `{"type":"object","properties":{"id":{"type":"string"}}}`),
					Annotations:  &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, DestructiveHint: ptr(false)},
				},
				{
					Name: "files.read", Description: "Reads a file.",
					// 2020-12 keywords survive the trip.
					InputSchema: decode(t, `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","$defs":{"p":{"type":"string"}},"properties":{"path":{"$ref":"#/$defs/p"}},"additionalProperties":false}`),
					Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, DestructiveHint: ptr(false), OpenWorldHint: ptr(true)},
				},
			},
		},
		{
			name: "an array output schema is left out", path: "/mcp", key: "auditor-key",
			want: []listedTool{
				{
					Name: "erp.get_order", Title: "Get order", Description: "Reads an order.",
					InputSchema:  decode(t, `{"type":"object","properties":{"id":{"type":"string"}},"required":["id"]}`),
					OutputSchema: decode(t, `{"type":"object","properties":{"id":{"type":"string"}}}`),
					Annotations:  &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, DestructiveHint: ptr(false)},
				},
				{
					Name: "erp.list_orders", Description: "Lists orders.", InputSchema: decode(t, `{"type":"object"}`),
					Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
				},
				{
					Name: "erp.delete_order", Description: "Deletes an order.", InputSchema: decode(t, `{"type":"object"}`),
					Annotations: &mcp.ToolAnnotations{IdempotentHint: true, DestructiveHint: ptr(true)},
				},
			},
		},
		{
			name: "a source under upstream names", path: "/mcp/files", key: "clerk-key",
			want: []listedTool{{
				Name: "read", Description: "Reads a file.",
				InputSchema: decode(t, `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","$defs":{"p":{"type":"string"}},"properties":{"path":{"$ref":"#/$defs/p"}},"additionalProperties":false}`),
				Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, DestructiveHint: ptr(false), OpenWorldHint: ptr(true)},
			}},
		},
		{name: "an unknown source lists nothing", path: "/mcp/nope", key: "clerk-key", want: []listedTool{}},
	}
	for _, tt := range tests {
		for _, v := range protocols {
			t.Run(tt.name+"/"+v, func(t *testing.T) {
				cs := connectVersion(t, base+tt.path, tt.key, nil, v)
				if diff := cmp.Diff(tt.want, listTools(t, cs)); diff != "" {
					t.Errorf("ListTools(%s as %s) mismatch (-want +got):\n%s", tt.path, tt.key, diff)
				}
			})
		}
	}
}

func TestToolsListFollowsTheCatalogue(t *testing.T) {
	gw := newGateway()
	cs := connect(t, serve(t, gw)+"/mcp", "clerk-key", nil)
	before := listTools(t, cs)
	if len(before) != 2 || before[0].Description != "Reads an order." {
		t.Fatalf("ListTools = %+v, want erp.get_order first", before)
	}
	// A new catalogue snapshot replaces the changed tool's entry.
	changed := *gw.entries[0]
	changed.Tool.Description = "Reads an order, now with lines."
	gw.setEntries(append([]*tools.Entry{&changed}, gw.entries[1:]...))
	after := listTools(t, cs)
	if len(after) != 2 || after[0].Description != "Reads an order, now with lines." {
		t.Errorf("ListTools after a change = %+v, want the new description", after)
	}
}

// called is what a client sees of a tools/call result.
type called struct {
	IsError    bool
	Content    []any
	Structured any
	Meta       map[string]any
}

func callTool(t *testing.T, cs *mcp.ClientSession, params *mcp.CallToolParams) called {
	t.Helper()
	res, err := cs.CallTool(t.Context(), params)
	if err != nil {
		t.Fatalf("CallTool(%s) = %v", params.Name, err)
	}
	// Compare the wire form: it is what every client sees.
	b, _ := json.Marshal(res)
	var wire struct {
		IsError           bool           `json:"isError"`
		Content           []any          `json:"content"`
		StructuredContent any            `json:"structuredContent"`
		Meta              map[string]any `json:"_meta"`
	}
	if err := json.Unmarshal(b, &wire); err != nil {
		t.Fatal(err)
	}
	// The SDK's own _meta (serverInfo under the 2026 protocol) is not ours.
	for k := range wire.Meta {
		if strings.HasPrefix(k, "io.modelcontextprotocol/") {
			delete(wire.Meta, k)
		}
	}
	return called{wire.IsError, wire.Content, wire.StructuredContent, wire.Meta}
}

func TestToolsCall(t *testing.T) {
	image := `{"type":"image","data":"iVBORw0KGgo=","mimeType":"image/png"}`
	tests := []struct {
		name   string
		key    string
		path   string
		params *mcp.CallToolParams
		answer func(pipeline.Action) (*pipeline.Outcome, error)
		want   called
		// target is the tool name the pipeline was asked for.
		target string
	}{
		{
			name: "JSON object answer", key: "clerk-key", path: "/mcp",
			params: &mcp.CallToolParams{Name: "erp.get_order", Arguments: map[string]any{"id": "42"}},
			answer: func(pipeline.Action) (*pipeline.Outcome, error) {
				return &pipeline.Outcome{Result: &tools.Result{Structured: json.RawMessage(`{"id":"42","total":10}`), Status: 200}}, nil
			},
			want: called{
				Content:    []any{map[string]any{"type": "text", "text": `{"id":"42","total":10}`}},
				Structured: map[string]any{"id": "42", "total": float64(10)},
				Meta:       map[string]any{mcpedge.MetaAuditID: "audit-1"},
			},
			target: "erp.get_order",
		},
		{
			name: "JSON array answer has no structuredContent", key: "auditor-key", path: "/mcp",
			params: &mcp.CallToolParams{Name: "erp.list_orders"},
			answer: func(pipeline.Action) (*pipeline.Outcome, error) {
				return &pipeline.Outcome{Result: &tools.Result{Structured: json.RawMessage(`[{"id":"42"}]`), Status: 200}}, nil
			},
			want: called{
				Content: []any{map[string]any{"type": "text", "text": `[{"id":"42"}]`}},
				Meta:    map[string]any{mcpedge.MetaAuditID: "audit-1"},
			},
			target: "erp.list_orders",
		},
		{
			name: "text answer is the text itself", key: "auditor-key", path: "/mcp",
			params: &mcp.CallToolParams{Name: "erp.list_orders"},
			answer: func(pipeline.Action) (*pipeline.Outcome, error) {
				return &pipeline.Outcome{Result: &tools.Result{Structured: json.RawMessage(`"no orders"`), Status: 200}}, nil
			},
			want: called{
				Content: []any{map[string]any{"type": "text", "text": "no orders"}},
				Meta:    map[string]any{mcpedge.MetaAuditID: "audit-1"},
			},
			target: "erp.list_orders",
		},
		{
			name: "empty answer", key: "auditor-key", path: "/mcp",
			params: &mcp.CallToolParams{Name: "erp.delete_order"},
			answer: func(pipeline.Action) (*pipeline.Outcome, error) {
				return &pipeline.Outcome{Result: &tools.Result{Status: 204}}, nil
			},
			want:   called{Content: []any{}, Meta: map[string]any{mcpedge.MetaAuditID: "audit-1"}},
			target: "erp.delete_order",
		},
		{
			name: "upstream 4xx is a tool error", key: "clerk-key", path: "/mcp",
			params: &mcp.CallToolParams{Name: "erp.get_order", Arguments: map[string]any{"id": "0"}},
			answer: func(pipeline.Action) (*pipeline.Outcome, error) {
				return &pipeline.Outcome{Result: &tools.Result{Structured: json.RawMessage(`{"error":"no such order"}`), IsError: true, Status: 404}}, nil
			},
			want: called{
				IsError:    true,
				Content:    []any{map[string]any{"type": "text", "text": `{"error":"no such order"}`}},
				Structured: map[string]any{"error": "no such order"},
				Meta:       map[string]any{mcpedge.MetaAuditID: "audit-1"},
			},
			target: "erp.get_order",
		},
		{
			name: "MCP content goes out as it came", key: "clerk-key", path: "/mcp/files",
			params: &mcp.CallToolParams{Name: "read", Arguments: map[string]any{"path": "a.png"}},
			answer: func(pipeline.Action) (*pipeline.Outcome, error) {
				return &pipeline.Outcome{Result: &tools.Result{
					Content:    []json.RawMessage{json.RawMessage(`{"type":"text","text":"a picture"}`), json.RawMessage(image)},
					Structured: json.RawMessage(`{"size":4}`),
				}}, nil
			},
			want: called{
				Content: []any{
					map[string]any{"type": "text", "text": "a picture"},
					map[string]any{"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"},
				},
				Structured: map[string]any{"size": float64(4)},
				Meta:       map[string]any{mcpedge.MetaAuditID: "audit-1"},
			},
			target: "files.read",
		},
		{
			name: "replayed answer says so", key: "clerk-key", path: "/mcp",
			params: &mcp.CallToolParams{Name: "erp.get_order", Arguments: map[string]any{"id": "42"}, Meta: mcp.Meta{mcpedge.MetaIdempotencyKey: "k1"}},
			answer: func(a pipeline.Action) (*pipeline.Outcome, error) {
				if a.IdempotencyKey != "k1" {
					return nil, fmt.Errorf("idempotency key %q, want k1", a.IdempotencyKey)
				}
				return &pipeline.Outcome{Result: &tools.Result{Structured: json.RawMessage(`{"id":"42"}`)}, Replayed: true}, nil
			},
			want: called{
				Content:    []any{map[string]any{"type": "text", "text": `{"id":"42"}`}},
				Structured: map[string]any{"id": "42"},
				Meta:       map[string]any{mcpedge.MetaAuditID: "audit-1", mcpedge.MetaReplayed: true},
			},
			target: "erp.get_order",
		},
		{
			name: "a tool outside the agent's list is refused as if missing", key: "clerk-key", path: "/mcp",
			params: &mcp.CallToolParams{Name: "erp.delete_order"},
			want: called{
				IsError: true,
				Content: []any{map[string]any{"type": "text", "text": "tool_not_found: no tool named erp.delete_order (corral get tools lists them)"}},
				Meta: map[string]any{mcpedge.MetaProblem: map[string]any{
					"code": "tool_not_found", "detail": "no tool named erp.delete_order (corral get tools lists them)", "status": float64(404), "audit_id": "audit-1",
				}},
			},
			target: "erp.delete_order",
		},
		{
			name: "a visible tool a rule denies stays policy_denied", key: "clerk-key", path: "/mcp",
			params: &mcp.CallToolParams{Name: "erp.get_order", Arguments: map[string]any{"id": "7"}},
			answer: func(pipeline.Action) (*pipeline.Outcome, error) {
				return nil, problem.New(http.StatusForbidden, problem.PolicyDenied, "order 7 is not yours")
			},
			want: called{
				IsError: true,
				Content: []any{map[string]any{"type": "text", "text": "policy_denied: order 7 is not yours"}},
				Meta: map[string]any{mcpedge.MetaProblem: map[string]any{
					"code": "policy_denied", "detail": "order 7 is not yours", "status": float64(403), "audit_id": "audit-1",
				}},
			},
			target: "erp.get_order",
		},
		{
			name: "an unknown tool reaches the pipeline", key: "clerk-key", path: "/mcp",
			params: &mcp.CallToolParams{Name: "erp.nope"},
			want: called{
				IsError: true,
				Content: []any{map[string]any{"type": "text", "text": "tool_not_found: no tool named erp.nope (corral get tools lists them)"}},
				Meta: map[string]any{mcpedge.MetaProblem: map[string]any{
					"code": "tool_not_found", "detail": "no tool named erp.nope (corral get tools lists them)", "status": float64(404), "audit_id": "audit-1",
				}},
			},
			target: "erp.nope",
		},
		{
			name: "a source's endpoint calls only its own tools", key: "clerk-key", path: "/mcp/files",
			params: &mcp.CallToolParams{Name: "get_order"},
			want: called{
				IsError: true,
				Content: []any{map[string]any{"type": "text", "text": "tool_not_found: no tool named files.get_order (corral get tools lists them)"}},
				Meta: map[string]any{mcpedge.MetaProblem: map[string]any{
					"code": "tool_not_found", "detail": "no tool named files.get_order (corral get tools lists them)", "status": float64(404), "audit_id": "audit-1",
				}},
			},
			target: "files.get_order",
		},
		{
			name: "invalid arguments list every violation", key: "clerk-key", path: "/mcp",
			params: &mcp.CallToolParams{Name: "erp.get_order", Arguments: map[string]any{}},
			answer: func(pipeline.Action) (*pipeline.Outcome, error) {
				return nil, &problem.Error{
					Status: http.StatusUnprocessableEntity, Code: problem.InvalidArguments,
					Detail: "the arguments do not match erp.get_order's input schema: missing property 'id'",
					Errors: []tools.Violation{{Pointer: "", Message: "missing property 'id'"}},
				}
			},
			want: called{
				IsError: true,
				Content: []any{map[string]any{"type": "text", "text": "invalid_arguments: the arguments do not match erp.get_order's input schema: missing property 'id'"}},
				Meta: map[string]any{mcpedge.MetaProblem: map[string]any{
					"code": "invalid_arguments", "detail": "the arguments do not match erp.get_order's input schema: missing property 'id'",
					"status": float64(422), "audit_id": "audit-1",
					"errors": []any{map[string]any{"pointer": "", "message": "missing property 'id'"}},
				}},
			},
			target: "erp.get_order",
		},
		{
			name: "an upstream failure", key: "clerk-key", path: "/mcp",
			params: &mcp.CallToolParams{Name: "erp.get_order", Arguments: map[string]any{"id": "42"}},
			answer: func(pipeline.Action) (*pipeline.Outcome, error) {
				return nil, problem.Wrap(http.StatusGatewayTimeout, problem.UpstreamTimeout, "erp.get_order: the upstream did not answer in time", context.DeadlineExceeded)
			},
			want: called{
				IsError: true,
				Content: []any{map[string]any{"type": "text", "text": "upstream_timeout: erp.get_order: the upstream did not answer in time"}},
				Meta: map[string]any{mcpedge.MetaProblem: map[string]any{
					"code": "upstream_timeout", "detail": "erp.get_order: the upstream did not answer in time", "status": float64(504), "audit_id": "audit-1",
				}},
			},
			target: "erp.get_order",
		},
	}
	for _, tt := range tests {
		for _, v := range protocols {
			t.Run(tt.name+"/"+v, func(t *testing.T) {
				gw := newGateway()
				if tt.answer != nil {
					gw.answer = tt.answer
				}
				cs := connectVersion(t, serve(t, gw)+tt.path, tt.key, nil, v)
				got := callTool(t, cs, tt.params)
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("CallTool(%s) mismatch (-want +got):\n%s", tt.params.Name, diff)
				}
				a := gw.lastAction(t)
				if a.Target != tt.target || a.Edge != "mcp" || a.Kind != "tool" || a.Credential != tt.key {
					t.Errorf("Invoke(%+v), want target %s, edge mcp, kind tool, the bearer token", a, tt.target)
				}
			})
		}
	}
}

func TestToolsCallPassesArgumentsAndContext(t *testing.T) {
	gw := newGateway()
	mux := http.NewServeMux()
	mcpedge.New(slog.New(slog.DiscardHandler), gw).Register(mux)
	// The request id rides in the HTTP request's context, as corral's
	// telemetry middleware puts it there; the SDK must hand it through.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r.WithContext(telemetry.WithRequestID(r.Context(), "req-7")))
	}))
	t.Cleanup(srv.Close)
	for _, v := range protocols {
		t.Run(v, func(t *testing.T) {
			cs := connectVersion(t, srv.URL+"/mcp", "clerk-key", nil, v)
			callTool(t, cs, &mcp.CallToolParams{
				Name: "erp.get_order", Arguments: map[string]any{"id": "42"},
				Meta: mcp.Meta{mcpedge.MetaIdempotencyKey: "retry-7"},
			})
			a := gw.lastAction(t)
			if string(a.Arguments) != `{"id":"42"}` || a.IdempotencyKey != "retry-7" || a.RequestID != "req-7" {
				t.Errorf("Invoke(arguments %s, key %q, request id %q), want {\"id\":\"42\"}, retry-7, req-7", a.Arguments, a.IdempotencyKey, a.RequestID)
			}
		})
	}
}

func TestRevokedKeyStopsTheSession(t *testing.T) {
	gw := newGateway()
	cs := connect(t, serve(t, gw)+"/mcp", "clerk-key", nil)
	callTool(t, cs, &mcp.CallToolParams{Name: "erp.get_order", Arguments: map[string]any{"id": "42"}})
	gw.revoke("clerk-key")
	if _, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "erp.get_order", Arguments: map[string]any{"id": "42"}}); err == nil {
		t.Error("CallTool after the key was revoked succeeded, want an error")
	}
}

// alternate sends each request to the next of several servers, as a load
// balancer without affinity does.
type alternate struct {
	targets []*url.URL
	n       atomic.Int64
	hits    []atomic.Int64
}

func (a *alternate) RoundTrip(r *http.Request) (*http.Response, error) {
	i := int(a.n.Add(1)-1) % len(a.targets)
	a.hits[i].Add(1)
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host = a.targets[i].Scheme, a.targets[i].Host
	r.Host = a.targets[i].Host
	return http.DefaultTransport.RoundTrip(r)
}

// TestSessionAcrossReplicas initializes on one edge and goes on on another:
// two edges (two replicas) share nothing but the gateway (NATS, in corral),
// and a client whose every request lands on the other one keeps working.
func TestSessionAcrossReplicas(t *testing.T) {
	gw := newGateway()
	var targets []*url.URL
	for range 2 {
		u, _ := url.Parse(serve(t, gw))
		targets = append(targets, u)
	}
	for _, v := range protocols {
		t.Run(v, func(t *testing.T) {
			lb := &alternate{targets: targets, hits: make([]atomic.Int64, 2)}
			cs := connectVersion(t, targets[0].String()+"/mcp", "clerk-key", lb, v)
			for i := range 3 {
				if got := listTools(t, cs); len(got) != 2 {
					t.Fatalf("ListTools #%d = %d tools, want 2", i, len(got))
				}
				if got := callTool(t, cs, &mcp.CallToolParams{Name: "erp.get_order", Arguments: map[string]any{"id": "42"}}); got.IsError {
					t.Fatalf("CallTool #%d = %+v, want a result", i, got)
				}
			}
			if lb.hits[0].Load() == 0 || lb.hits[1].Load() == 0 {
				t.Errorf("requests per replica = %d, %d; want both replicas used", lb.hits[0].Load(), lb.hits[1].Load())
			}
		})
	}
}

// post sends one JSON-RPC message as a client that kept a session id would.
func post(t *testing.T, endpoint, sessionID, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", endpoint, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer clerk-key")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	if sessionID != "" {
		req.Header.Set("Mcp-Session-Id", sessionID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestForeignSessionIDIsServed(t *testing.T) {
	gw := newGateway()
	a, b := serve(t, gw)+"/mcp", serve(t, gw)+"/mcp"
	resp, _ := post(t, a, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("initialize = %d, want 200", resp.StatusCode)
	}
	// Whatever session id the client kept (from another replica, or an
	// older corral that issued one), the next replica serves the request.
	id := resp.Header.Get("Mcp-Session-Id")
	if id == "" {
		id = "issued-elsewhere"
	}
	resp, body := post(t, b, id, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"erp.get_order"`) {
		t.Errorf("tools/list on another replica = %d %s, want 200 with the tools", resp.StatusCode, body)
	}
}

func TestGetAndDeleteAreNotAllowed(t *testing.T) {
	base := serve(t, newGateway())
	for _, method := range []string{"GET", "DELETE"} {
		req, _ := http.NewRequestWithContext(t.Context(), method, base+"/mcp", nil)
		req.Header.Set("Authorization", "Bearer clerk-key")
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// No standalone stream and no session to end: MCP clients read 405 as that.
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s /mcp = %d, want 405", method, resp.StatusCode)
		}
	}
}

func TestInvalidIdempotencyKey(t *testing.T) {
	gw := newGateway()
	resp, body := post(t, serve(t, gw)+"/mcp", "", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"erp.get_order","arguments":{"id":"1"},"_meta":{"dev.corral/idempotency-key":7}}}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"code":-32602`) {
		t.Errorf("tools/call with a numeric idempotency key = %d %s, want a -32602 error", resp.StatusCode, body)
	}
	gw.mu.Lock()
	n := len(gw.actions)
	gw.mu.Unlock()
	if n != 0 {
		t.Errorf("the gateway saw %d actions, want none", n)
	}
}

func TestInitializeAdvertisesTools(t *testing.T) {
	cs := connect(t, serve(t, newGateway())+"/mcp", "clerk-key", nil)
	res := cs.InitializeResult()
	if res.Capabilities.Tools == nil || res.ServerInfo.Name != "corral" {
		t.Errorf("InitializeResult() = %+v, want corral with the tools capability", res)
	}
	//lint:ignore SA1019 checking that the deprecated capability is not advertised
	if res.Capabilities.Logging != nil || res.Capabilities.Resources != nil || res.Capabilities.Prompts != nil {
		t.Errorf("capabilities = %+v, want tools only", res.Capabilities)
	}
}

// BenchmarkToolsList measures one tools/list over HTTP with 100 tools: the
// SDK's per-request session and corral's list (cached per agent).
func BenchmarkToolsList(b *testing.B) {
	gw := newGateway()
	var entries []*tools.Entry
	for i := range 100 {
		entries = append(entries, entry(tools.Tool{
			Name: fmt.Sprintf("erp.op_%03d", i), Source: "erp", Description: "An operation.",
			InputSchema:  json.RawMessage(`{"type":"object","properties":{"id":{"type":"string"}}}`),
			OutputSchema: json.RawMessage(`{"type":"object","properties":{"id":{"type":"string"}}}`),
		}))
	}
	gw.entries = entries
	benchPost(b, gw, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, `"erp.op_099"`)
}

// BenchmarkToolsCall measures one tools/call over HTTP, the pipeline faked.
func BenchmarkToolsCall(b *testing.B) {
	benchPost(b, newGateway(), `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"erp.get_order","arguments":{"id":"42"}}}`, `"structuredContent"`)
}

// BenchmarkPing is the floor under the two above: HTTP, authentication and
// the SDK's stateless session, with nothing of corral's behind them.
func BenchmarkPing(b *testing.B) {
	benchPost(b, newGateway(), `{"jsonrpc":"2.0","id":1,"method":"ping"}`, `"result"`)
}

func benchPost(b *testing.B, gw *fakeGateway, body, want string) {
	mux := http.NewServeMux()
	mcpedge.New(slog.New(slog.DiscardHandler), gw).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := srv.Client()
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("POST", srv.URL+"/mcp", bytes.NewReader([]byte(body)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer auditor-key")
		req.Header.Set("MCP-Protocol-Version", "2025-11-25")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(got, []byte(want)) {
			b.Fatalf("answer %s, want %s in it", got, want)
		}
	}
}

// TestBatchCallsBounded: one POST carrying a JSON-RPC batch of 200
// tools/call (protocol 2025-03-26 allows batches) runs at most
// MaxConcurrentCalls of them at once, and answers all of them.
func TestBatchCallsBounded(t *testing.T) {
	gw := newGateway()
	var active, most atomic.Int64
	release := make(chan struct{})
	gw.answer = func(pipeline.Action) (*pipeline.Outcome, error) {
		n := active.Add(1)
		defer active.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		return &pipeline.Outcome{Result: &tools.Result{Structured: json.RawMessage(`{"id":"42"}`)}}, nil
	}
	base := serve(t, gw)
	const n = 200
	calls := make([]string, n)
	for i := range calls {
		calls[i] = fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"erp.get_order","arguments":{"id":"7"}}}`, i+1)
	}
	type answer struct {
		resp *http.Response
		body string
	}
	done := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/mcp", strings.NewReader("["+strings.Join(calls, ",")+"]"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer clerk-key")
		req.Header.Set("MCP-Protocol-Version", "2025-03-26")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- answer{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- answer{resp, string(b)}
	}()
	// Wait until the batch has filled its share of calls, then let them go.
	deadline := time.Now().Add(time.Minute) // generous: CI runs loaded, with the race detector
	for active.Load() < mcpedge.MaxConcurrentCalls {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("%d calls running after a minute, want %d", active.Load(), mcpedge.MaxConcurrentCalls)
		}
		time.Sleep(time.Millisecond) // polling with a deadline: nothing to wait on from outside
	}
	// Give calls beyond the bound, if the edge let them through, a chance
	// to start: this only makes a failure likelier to show.
	for range 50 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	a := <-done
	if a.resp == nil || a.resp.StatusCode != http.StatusOK {
		t.Fatalf("batch POST = %v %s, want 200", a.resp, a.body)
	}
	if got := strings.Count(a.body, `"isError"`) + strings.Count(a.body, `"structuredContent"`); got < n {
		t.Errorf("batch answered %d results, want %d: %.300s", got, n, a.body)
	}
	if m := most.Load(); m > mcpedge.MaxConcurrentCalls {
		t.Errorf("%d tools/call of one batch ran at once, want at most %d", m, mcpedge.MaxConcurrentCalls)
	}
}

// recorder keeps the bodies of the answers that pass through it.
type recorder struct {
	mu     sync.Mutex
	bodies []string
}

func (rec *recorder) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	rec.mu.Lock()
	rec.bodies = append(rec.bodies, string(b))
	rec.mu.Unlock()
	return resp, err
}

func (rec *recorder) find(substr string) string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, b := range rec.bodies {
		if strings.Contains(b, substr) {
			return b
		}
	}
	return ""
}

// TestResultType: clients of protocol 2026-07-28 (the TypeScript SDK's
// @modelcontextprotocol/client 2.x, which the OpenAI Agents SDK uses)
// refuse a tools/list or tools/call result without resultType, and a list
// without ttlMs and cacheScope; older clients get none of them, as from
// the SDK itself.
func TestResultType(t *testing.T) {
	base := serve(t, newGateway()) + "/mcp"
	for _, version := range protocols {
		t.Run(version, func(t *testing.T) {
			rec := &recorder{}
			cs := connectVersion(t, base, "clerk-key", rec, version)
			listTools(t, cs)
			if _, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "erp.get_order", Arguments: map[string]any{"id": "42"}}); err != nil {
				t.Fatal(err)
			}
			list, call := rec.find(`"tools":[`), rec.find(`"structuredContent"`)
			if list == "" || call == "" {
				t.Fatalf("no tools/list or tools/call answer recorded: %q", rec.bodies)
			}
			newer := version == "latest"
			for _, c := range []struct {
				name, body, field string
			}{
				{"tools/list", list, `"resultType":"complete"`}, {"tools/list", list, `"ttlMs":0`}, {"tools/list", list, `"cacheScope":"private"`},
				{"tools/call", call, `"resultType":"complete"`},
			} {
				if strings.Contains(c.body, c.field) != newer {
					t.Errorf("%s answer %s: has %s = %v, want %v", c.name, c.body, c.field, !newer, newer)
				}
			}
		})
	}
}
