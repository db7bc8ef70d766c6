package mcpedge

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/tools"
)

type listKey struct{ agent, source string }

// toolList is a rendered tools/list for one agent and endpoint, and the
// catalogue entries it was rendered from.
type toolList struct {
	entries []*tools.Entry
	// tools is the JSON array of the tools, encoded once: encoding a
	// hundred tools costs more than the rest of the request.
	tools json.RawMessage
}

// listResult is a tools/list result with the tools already encoded.
type listResult struct {
	mcp.ResultBase
	Tools json.RawMessage `json:"tools"`
	// ResultType is "complete" for clients of protocol revision 2026-07-28
	// or later, which require it (the SDK sets it on its own result types,
	// not on this one); older clients get none, as from the SDK.
	ResultType string `json:"resultType,omitempty"`
	// TTLMs and CacheScope, which the same clients require of a list:
	// 0 (stale at once: an agent's tools change with the registry and
	// policy) and "private" (the list is the agent's own).
	TTLMs      *int   `json:"ttlMs,omitempty"`
	CacheScope string `json:"cacheScope,omitempty"`
}

// resultTypeRevision is the protocol revision from which results carry
// resultType.
const resultTypeRevision = "2026-07-28"

// wantsResultType reports whether the client of req speaks a protocol
// revision whose results carry resultType.
func wantsResultType(req mcp.Request) bool {
	ss, ok := req.GetSession().(*mcp.ServerSession)
	if !ok || ss == nil {
		return false
	}
	p := ss.InitializeParams()
	return p != nil && p.ProtocolVersion >= resultTypeRevision
}

// listTools answers tools/list with the tools the caller may call. The
// catalogue's entries are immutable and shared between snapshots while a
// tool is unchanged, so the same entries mean the same list: the common
// case costs one pass comparing pointers. The cache holds one list per
// agent and source that has tools, and is bounded by those.
func (e *Edge) listTools(ctx context.Context, r *request) (mcp.Result, error) {
	entries, err := e.gw.Tools(ctx, r.caller)
	if err != nil {
		e.logProblem(ctx, "tools/list", err)
		return nil, rpcError(err)
	}
	if r.source != "" {
		entries = fromSource(entries, r.source)
	}
	if len(entries) == 0 {
		// Not cached: the source in /mcp/{source} is the caller's to choose,
		// and made-up names must not grow the cache.
		if e.statusTool != nil {
			return &listResult{Tools: json.RawMessage("[" + string(e.statusTool) + "]")}, nil
		}
		return &listResult{Tools: json.RawMessage("[]")}, nil
	}
	key := listKey{agent: r.caller.Agent, source: r.source}
	if v, ok := e.lists.Load(key); ok && sameEntries(v.(*toolList).entries, entries) {
		return &listResult{Tools: v.(*toolList).tools}, nil
	}
	wire := make([]any, 0, len(entries)+1)
	for _, en := range entries {
		t := wireTool(en, r.source)
		if e.statusTool != nil && t.Name == ApprovalStatusTool {
			continue // corral's own tool answers this name
		}
		wire = append(wire, t)
	}
	if e.statusTool != nil {
		wire = append(wire, e.statusTool)
	}
	b, err := json.Marshal(wire)
	if err != nil {
		// A schema that is not valid JSON got past the catalogue.
		e.logger.ErrorContext(ctx, "encoding the tool list", "agent", r.caller.Agent, "err", err)
		return nil, rpcError(err)
	}
	e.lists.Store(key, &toolList{entries: entries, tools: b})
	return &listResult{Tools: b}, nil
}

// fromSource keeps the entries of one tool source.
func fromSource(entries []*tools.Entry, source string) []*tools.Entry {
	out := make([]*tools.Entry, 0, len(entries))
	for _, en := range entries {
		if en.Tool.Source == source {
			out = append(out, en)
		}
	}
	return out
}

func sameEntries(a, b []*tools.Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// wireTool renders a catalogue entry as an MCP tool. On a per-source
// endpoint the name loses its "<source>." prefix.
func wireTool(en *tools.Entry, source string) *mcp.Tool {
	t := &en.Tool
	name := t.Name
	if source != "" {
		name = strings.TrimPrefix(name, source+".")
	}
	destructive := t.Annotations.Destructive
	input := t.InputSchema
	if len(input) == 0 {
		input = json.RawMessage(`{"type":"object"}`)
	}
	out := &mcp.Tool{
		Name:        name,
		Title:       t.Title,
		Description: t.Description,
		// The schemas go out as the bytes the source declared: keywords the
		// SDK's schema type does not know ($defs, 2020-12 features) survive.
		InputSchema: input,
		Annotations: &mcp.ToolAnnotations{
			ReadOnlyHint:    t.Annotations.ReadOnly,
			DestructiveHint: &destructive,
			IdempotentHint:  t.Annotations.Idempotent,
			OpenWorldHint:   t.Annotations.OpenWorld,
		},
	}
	// MCP requires an output schema to describe an object, since
	// structuredContent is one; an operation answering an array or a string
	// declares none to MCP clients.
	if objectSchema(t.OutputSchema) {
		out.OutputSchema = t.OutputSchema
	}
	return out
}

// objectSchema reports whether a JSON Schema says "type": "object".
func objectSchema(schema json.RawMessage) bool {
	if len(schema) == 0 {
		return false
	}
	var s struct {
		Type json.RawMessage `json:"type"`
	}
	if json.Unmarshal(schema, &s) != nil {
		return false
	}
	return string(s.Type) == `"object"`
}
