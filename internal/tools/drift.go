package tools

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Change is one difference between two versions of a tool source that would
// break its callers.
type Change struct {
	Tool string `json:"tool"`
	// Kind is operation_removed, required_added, field_removed, type_changed,
	// server_changed, operation_changed, or (held back for review)
	// tool_added or annotation_changed.
	Kind string `json:"kind"`
	// Pointer locates the field in the input ("/body/sku") or, prefixed
	// "output:", in the output.
	Pointer string `json:"pointer,omitempty"`
	Detail  string `json:"detail"`
}

// The kinds of breaking change.
const (
	OperationRemoved = "operation_removed"
	RequiredAdded    = "required_added"
	FieldRemoved     = "field_removed"
	TypeChanged      = "type_changed"
	// ServerChanged: calls would go elsewhere (an OpenAPI document's
	// servers[0].url changed), and the source's credentials with them.
	ServerChanged = "server_changed"
	// OperationChanged: a tool of the same name would call another
	// operation (its method or path template changed) or send an argument
	// elsewhere (another location or name in the request), so that grants
	// and rules written for the tool would authorise something else.
	OperationChanged = "operation_changed"
)

// The kinds of change held back for review on an MCP source, whose
// annotations are the server's claims.
const (
	ToolAdded         = "tool_added"
	AnnotationChanged = "annotation_changed"
)

// Reannotated lists what a human should see before new takes over from
// old: tools that are new, and tools whose annotations changed (a tool
// re-annotated read-only would escape a policy that asks approval for
// destructive tools).
func Reannotated(old, new []Tool) []Change {
	byName := make(map[string]*Tool, len(old))
	for i := range old {
		byName[old[i].Name] = &old[i]
	}
	var out []Change
	for _, n := range new {
		o, ok := byName[n.Name]
		switch {
		case !ok:
			out = append(out, Change{Tool: n.Name, Kind: ToolAdded, Detail: "a new tool"})
		case !sameAnnotations(o.Annotations, n.Annotations):
			out = append(out, Change{Tool: n.Name, Kind: AnnotationChanged,
				Detail: fmt.Sprintf("annotations %s became %s", o.Annotations, n.Annotations)})
		}
	}
	return out
}

func sameAnnotations(a, b Annotations) bool {
	return a.ReadOnly == b.ReadOnly && a.Destructive == b.Destructive && a.Idempotent == b.Idempotent &&
		(a.OpenWorld == nil) == (b.OpenWorld == nil) && (a.OpenWorld == nil || *a.OpenWorld == *b.OpenWorld)
}

// Breaking lists the changes from old to new that would break callers: a
// tool removed; in its input, a required field added, a field removed or a
// field's type changed; in its output, a field removed or its type changed.
// A field renamed shows as one removed (and, if required, one added).
// Additions that callers may ignore — new tools, new optional inputs, new
// output fields, other descriptions — are not listed.
func Breaking(old, new []Tool) []Change {
	byName := make(map[string]*Tool, len(new))
	for i := range new {
		byName[new[i].Name] = &new[i]
	}
	var out []Change
	for _, o := range old {
		n, ok := byName[o.Name]
		if !ok {
			out = append(out, Change{Tool: o.Name, Kind: OperationRemoved, Detail: "the operation is gone"})
			continue
		}
		out = append(out, compareSchemas(o.Name, "", decodeSchema(o.InputSchema), decodeSchema(n.InputSchema), true)...)
		if len(o.OutputSchema) > 0 {
			out = append(out, compareSchemas(o.Name, "output:", decodeSchema(o.OutputSchema), decodeSchema(n.OutputSchema), false)...)
		}
	}
	return out
}

func decodeSchema(raw json.RawMessage) map[string]any {
	var m map[string]any
	_ = json.Unmarshal(raw, &m) // a schema that is not an object (true, absent) constrains nothing to compare
	return m
}

// compareSchemas walks the properties of two object schemas. For an input,
// new required fields break callers; for an output, they do not.
func compareSchemas(tool, at string, old, new map[string]any, input bool) []Change {
	if old == nil {
		return nil
	}
	if new == nil {
		return []Change{{Tool: tool, Kind: TypeChanged, Pointer: pointerOrRoot(at), Detail: "the schema is gone"}}
	}
	var out []Change
	if ot, nt := typeOf(old), typeOf(new); ot != "" && nt != "" && ot != nt {
		return []Change{{Tool: tool, Kind: TypeChanged, Pointer: pointerOrRoot(at), Detail: fmt.Sprintf("type %s became %s", ot, nt)}}
	}
	oldProps, _ := old["properties"].(map[string]any)
	newProps, _ := new["properties"].(map[string]any)
	if input {
		oldReq, newReq := stringSet(old["required"]), stringSet(new["required"])
		for _, name := range sortedNames(newReq) {
			if !oldReq[name] {
				out = append(out, Change{Tool: tool, Kind: RequiredAdded, Pointer: at + "/" + escapeToken(name), Detail: "a new required field"})
			}
		}
	}
	for _, name := range sortedKeys(oldProps) {
		np, ok := newProps[name]
		p := at + "/" + escapeToken(name)
		if !ok {
			if newProps != nil || new["additionalProperties"] == false {
				out = append(out, Change{Tool: tool, Kind: FieldRemoved, Pointer: p, Detail: "the field is gone"})
			}
			continue
		}
		op, _ := oldProps[name].(map[string]any)
		npm, _ := np.(map[string]any)
		out = append(out, compareSchemas(tool, p, op, npm, input)...)
	}
	if oi, ok := old["items"].(map[string]any); ok {
		ni, _ := new["items"].(map[string]any)
		out = append(out, compareSchemas(tool, at+"/items", oi, ni, input)...)
	}
	return out
}

func pointerOrRoot(at string) string {
	if at == "" || at == "output:" {
		return at + "/"
	}
	return at
}

// typeOf returns a schema's type as one string ("integer", "null|string").
func typeOf(s map[string]any) string {
	switch t := s["type"].(type) {
	case string:
		return t
	case []any:
		var parts []string
		for _, x := range t {
			if s, ok := x.(string); ok {
				parts = append(parts, s)
			}
		}
		slices.Sort(parts)
		return strings.Join(parts, "|")
	}
	return ""
}

func stringSet(v any) map[string]bool {
	list, _ := v.([]any)
	out := make(map[string]bool, len(list))
	for _, x := range list {
		if s, ok := x.(string); ok {
			out[s] = true
		}
	}
	return out
}

func sortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func escapeToken(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}
