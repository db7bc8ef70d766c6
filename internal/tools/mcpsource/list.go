package mcpsource

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/tools"
)

// maxListPages bounds tools/list pagination, so that a server handing out
// cursors forever cannot keep a refresh running forever.
const maxListPages = 1000

// emptyObjectSchema stands in for a tool that declares no input schema
// (MCP requires one; some servers omit it anyway).
var emptyObjectSchema = json.RawMessage(`{"type":"object"}`)

// list reads the server's whole tool list, following cursors, and swaps it
// in. If it differs from the list before, the catalogue is told.
func (s *Source) list(ctx context.Context, cs *mcp.ClientSession) error {
	s.listMu.Lock()
	defer s.listMu.Unlock()
	var all []*mcp.Tool
	cursors := make(map[string]bool)
	params := &mcp.ListToolsParams{}
	for page := 0; ; page++ {
		if page == maxListPages {
			return fmt.Errorf("tools/list: more than %d pages", maxListPages)
		}
		res, err := cs.ListTools(ctx, params)
		if err != nil {
			return fmt.Errorf("tools/list: %w", err)
		}
		all = append(all, res.Tools...)
		next := res.NextCursor
		if next == "" {
			break
		}
		if cursors[next] {
			return fmt.Errorf("tools/list: the server repeated cursor %q", next)
		}
		cursors[next] = true
		params = &mcp.ListToolsParams{Cursor: next}
	}
	l, err := newListed(all)
	if err != nil {
		return err
	}
	first := s.force.Load() == nil
	changed, err := s.install(ctx, l)
	if err != nil || !changed {
		return err
	}
	s.warnUnknownOverrides(ctx, all)
	if !first {
		s.log.InfoContext(ctx, "mcp tool list changed", "tools", len(s.Tools()))
		if s.env.Changed != nil {
			s.env.Changed()
		}
	}
	return nil
}

// convert turns the server's tools into corral's, named "<source>.<tool>",
// with the overrides applied. A name listed twice keeps its first entry.
func (s *Source) convert(ctx context.Context, in []*mcp.Tool) ([]tools.Tool, error) {
	out := make([]tools.Tool, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, t := range in {
		if t == nil || t.Name == "" {
			continue
		}
		if seen[t.Name] {
			s.log.WarnContext(ctx, "mcp server lists a tool twice; keeping the first", "tool", t.Name)
			continue
		}
		seen[t.Name] = true
		tool, err := convertTool(s.name, t, s.overrides[t.Name], s.claims())
		if err != nil {
			return nil, err
		}
		out = append(out, tool)
	}
	return out, nil
}

// claims is where the annotations the server gives come from, for policy.
func (s *Source) claims() string {
	if s.adoptChanges {
		return tools.FromUpstream
	}
	return tools.FromPinned
}

func convertTool(source string, t *mcp.Tool, o config.ToolOverride, claims string) (tools.Tool, error) {
	a, from := annotations(t.Annotations, o, claims)
	tool := tools.Tool{
		Name:              source + "." + t.Name,
		Source:            source,
		Title:             t.Title,
		Description:       t.Description,
		InputSchema:       emptyObjectSchema,
		Annotations:       a,
		AnnotationsSource: from,
	}
	if tool.Title == "" && t.Annotations != nil {
		tool.Title = t.Annotations.Title // MCP's display-name fallback
	}
	// The SDK decodes schemas into map[string]any; encoding them again
	// gives the same JSON value with sorted keys.
	if t.InputSchema != nil {
		b, err := json.Marshal(t.InputSchema)
		if err != nil {
			return tools.Tool{}, fmt.Errorf("tool %s: input schema: %w", t.Name, err)
		}
		tool.InputSchema = b
	}
	if t.OutputSchema != nil {
		b, err := json.Marshal(t.OutputSchema)
		if err != nil {
			return tools.Tool{}, fmt.Errorf("tool %s: output schema: %w", t.Name, err)
		}
		tool.OutputSchema = b
	}
	return tool, nil
}

// annotations maps MCP's hints to corral's, with MCP's defaults for what
// the server leaves out (readOnly false, destructive true, idempotent
// false, openWorld unknown), then applies the override. Destructive means
// nothing for a read-only tool, so it is false there unless the override
// says otherwise. It also says where each came from: the override, or the
// server's claims.
func annotations(h *mcp.ToolAnnotations, o config.ToolOverride, claims string) (tools.Annotations, *tools.AnnotationsSource) {
	from := &tools.AnnotationsSource{ReadOnly: origin(o.ReadOnly, claims), Destructive: origin(o.Destructive, claims), Idempotent: origin(o.Idempotent, claims)}
	a := tools.Annotations{Destructive: true}
	if h != nil {
		a.ReadOnly = h.ReadOnlyHint
		a.Idempotent = h.IdempotentHint
		if h.DestructiveHint != nil {
			a.Destructive = *h.DestructiveHint
		}
		if h.OpenWorldHint != nil {
			v := *h.OpenWorldHint
			a.OpenWorld = &v
		}
	}
	a = a.Apply(o)
	if a.ReadOnly && o.Destructive == nil {
		a.Destructive = false
		from.Destructive = from.ReadOnly // not destructive because read-only
	}
	return a, from
}

func origin(override *bool, claims string) string {
	if override != nil {
		return tools.FromOverride
	}
	return claims
}

// warnUnknownOverrides logs overrides that name no tool the server lists:
// likely a typo, or a tool the server dropped.
func (s *Source) warnUnknownOverrides(ctx context.Context, listed []*mcp.Tool) {
	var unknown []string
	for name := range s.overrides {
		if !slices.ContainsFunc(listed, func(t *mcp.Tool) bool { return t != nil && t.Name == name }) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		s.log.WarnContext(ctx, "overrides name tools the mcp server does not list", "overrides", strings.Join(unknown, ","))
	}
}
