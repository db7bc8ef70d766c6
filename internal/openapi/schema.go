package openapi

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// draft2020 is the dialect of every schema Import emits. OpenAPI 3.1 schemas
// are already of this dialect; 3.0 schemas are translated into it.
const draft2020 = "https://json-schema.org/draft/2020-12/schema"

// Limits on what expanding $refs may cost. A schema is inlined while it stays
// under inlineLimit values; past that (or past inlineDepth levels), it is
// rebuilt with every referenced schema in $defs instead, which is at most as
// large as the document. maxTotalValues bounds all the tools of one import.
const (
	inlineLimit    = 20_000
	inlineDepth    = 64
	maxTotalValues = 5_000_000
	maxRefChain    = 32
	maxRefNesting  = 1000
)

// errInlineTooLarge makes a schema fall back from inlining to $defs.
var errInlineTooLarge = errors.New("inlined schema too large")

// spec is a parsed document.
type spec struct {
	root map[string]any
	v30  bool // OpenAPI 3.0: translate its schema dialect
	// reserved are Options.ReservedHeaders; targets Options.Targets.
	reserved []string
	targets  map[string]string
}

// resolve finds the target of a local $ref. It returns the target and its
// JSON pointer (unescaped for URI, still escaped for JSON pointer).
func (s *spec) resolve(ref string) (any, string, error) {
	frag, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, "", fmt.Errorf("%w %q: points outside this document; bundle the spec into one file first", ErrBadRef, ref)
	}
	frag, err := url.PathUnescape(frag)
	if err != nil {
		return nil, "", fmt.Errorf("%w %q: %v", ErrBadRef, ref, err)
	}
	if frag == "" {
		return s.root, "", nil
	}
	if frag[0] != '/' {
		return nil, "", fmt.Errorf("%w %q: only JSON pointers (#/...) are supported, not anchors", ErrBadRef, ref)
	}
	var cur any = s.root
	for tok := range strings.SplitSeq(frag[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[tok]
			if !ok {
				return nil, "", fmt.Errorf("%w %q: not found", ErrBadRef, ref)
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) || strconv.Itoa(i) != tok {
				return nil, "", fmt.Errorf("%w %q: not found", ErrBadRef, ref)
			}
			cur = c[i]
		default:
			return nil, "", fmt.Errorf("%w %q: not found", ErrBadRef, ref)
		}
	}
	return cur, frag, nil
}

// object follows a chain of Reference Objects (for parameters, request
// bodies, responses and path items) to the object it names. A description or
// summary beside a $ref overrides the target's, as OpenAPI 3.1 says.
func (s *spec) object(v any, at, what string) (map[string]any, string, error) {
	var overrides map[string]any
	seen := map[string]bool{}
	for range maxRefChain {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, at, errAt(at, "%s must be an object, got %s", what, jsonType(v))
		}
		r, isRef := m["$ref"]
		if !isRef {
			if len(overrides) == 0 {
				return m, at, nil
			}
			out := make(map[string]any, len(m)+len(overrides))
			for k, x := range m {
				out[k] = x
			}
			for k, x := range overrides {
				out[k] = x
			}
			return out, at, nil
		}
		ref, ok := r.(string)
		if !ok {
			return nil, at, errAt(at, "%w: $ref must be a string, got %s", ErrBadRef, jsonType(r))
		}
		if seen[ref] {
			return nil, at, errAt(at, "%w %q: loops back on itself", ErrBadRef, ref)
		}
		seen[ref] = true
		for _, k := range []string{"description", "summary"} {
			if x, ok := m[k]; ok {
				if _, set := overrides[k]; !set {
					if overrides == nil {
						overrides = map[string]any{}
					}
					overrides[k] = x
				}
			}
		}
		target, ptr, err := s.resolve(ref)
		if err != nil {
			return nil, at, &pointerError{pointer: at, err: err}
		}
		v, at = target, ptr
	}
	return nil, at, errAt(at, "%w: more than %d $refs in a row", ErrBadRef, maxRefChain)
}

// schemas expands the schemas of one emitted root (a tool's input or its
// output): $refs are inlined, or kept in $defs where they recur or the
// inlined schema would be too large, and OpenAPI 3.0's dialect is translated.
//
// Maps are walked in sorted key order, so the same document always yields
// the same schemas and the same $defs names.
type schemas struct {
	spec    *spec
	allDefs bool // every $ref becomes a $defs entry
	limit   int  // values this root may hold

	size      int                 // values produced so far
	defs      map[string]any      // $defs entries by name
	defNames  map[string]string   // pointer → $defs name
	defTaken  map[string]bool     // $defs names given out
	memo      map[string]expanded // pointer → what a $ref to it expands to
	expanding map[string]bool     // pointers being expanded (cycle detection)
	recursive map[string]bool     // pointers found to refer to themselves
}

type expanded struct {
	value any
	size  int
}

func newSchemas(s *spec, allDefs bool, limit int) *schemas {
	return &schemas{
		spec: s, allDefs: allDefs, limit: limit,
		defs: map[string]any{}, defNames: map[string]string{}, defTaken: map[string]bool{},
		memo: map[string]expanded{}, expanding: map[string]bool{}, recursive: map[string]bool{},
	}
}

// grow counts n produced values against the limit.
func (c *schemas) grow(n int, at string) error {
	c.size += n
	if c.size > c.limit {
		if !c.allDefs {
			return errInlineTooLarge
		}
		return errAt(at, "%w: the schema holds more than %d values", ErrTooLarge, c.limit)
	}
	return nil
}

// Keywords whose values are schemas, arrays of schemas, or maps of schemas.
var (
	schemaKeywords = map[string]bool{
		"not": true, "additionalProperties": true, "additionalItems": true, "contains": true,
		"propertyNames": true, "if": true, "then": true, "else": true, "unevaluatedItems": true,
		"unevaluatedProperties": true, "contentSchema": true,
	}
	schemaArrayKeywords = map[string]bool{"allOf": true, "anyOf": true, "oneOf": true, "prefixItems": true}
	schemaMapKeywords   = map[string]bool{"properties": true, "patternProperties": true, "dependentSchemas": true, "$defs": true}
	// dropped are OpenAPI-only keywords that mean nothing to a JSON Schema
	// validator or to an agent, and keywords that would change how the
	// emitted schema's $refs resolve ($id, $anchor) or its dialect ($schema).
	dropped = map[string]bool{
		"xml": true, "externalDocs": true, "discriminator": true, "$comment": true,
		"$id": true, "$schema": true, "$anchor": true, "$dynamicAnchor": true, "$recursiveAnchor": true,
	}
	// annotations may sit beside a $ref and be merged into its target
	// without changing what the schema accepts.
	annotations = map[string]bool{
		"description": true, "title": true, "deprecated": true, "readOnly": true,
		"writeOnly": true, "default": true, "examples": true, "example": true,
	}
)

// schema expands the schema v found at JSON pointer at.
func (c *schemas) schema(v any, at string, depth int) (any, error) {
	if depth > inlineDepth && !c.allDefs {
		return nil, errInlineTooLarge
	}
	if depth > maxDocDepth*2 {
		return nil, errAt(at, "%w: schema nested deeper than %d levels", ErrTooLarge, maxDocDepth*2)
	}
	if err := c.grow(1, at); err != nil {
		return nil, err
	}
	switch s := v.(type) {
	case bool:
		return s, nil
	case map[string]any:
		if r, ok := s["$ref"]; ok {
			return c.ref(s, r, at, depth)
		}
		return c.object(s, at, depth)
	}
	return nil, errAt(at, "%w: a schema must be an object or a boolean, got %s", ErrInvalid, jsonType(v))
}

func (c *schemas) object(s map[string]any, at string, depth int) (map[string]any, error) {
	out := make(map[string]any, len(s))
	for _, k := range sortedKeys(s) {
		v := s[k]
		kat := at + "/" + escape(k)
		switch {
		case dropped[k] || strings.HasPrefix(k, "x-"):
		case k == "$dynamicRef" || k == "$recursiveRef":
			return nil, errAt(kat, "%w: %s is not supported", ErrInvalid, k)
		case k == "example":
			// OpenAPI's example; JSON Schema has examples.
			if _, ok := s["examples"]; !ok {
				if err := c.grow(countValues(v, c.limit-c.size+1), kat); err != nil {
					return nil, err
				}
				out["examples"] = []any{v}
			}
		case c.spec.v30 && k == "nullable":
		case c.spec.v30 && (k == "exclusiveMinimum" || k == "exclusiveMaximum") && isBool(v):
		case schemaKeywords[k], k == "items" && !isArray(v):
			x, err := c.schema(v, kat, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = x
		case schemaArrayKeywords[k], k == "items":
			arr, ok := v.([]any)
			if !ok {
				return nil, errAt(kat, "%w: %s must be an array of schemas, got %s", ErrInvalid, k, jsonType(v))
			}
			xs := make([]any, len(arr))
			for i, item := range arr {
				x, err := c.schema(item, kat+"/"+strconv.Itoa(i), depth+1)
				if err != nil {
					return nil, err
				}
				xs[i] = x
			}
			out[k] = xs
		case schemaMapKeywords[k]:
			m, ok := v.(map[string]any)
			if !ok {
				return nil, errAt(kat, "%w: %s must be an object of schemas, got %s", ErrInvalid, k, jsonType(v))
			}
			xm := make(map[string]any, len(m))
			for _, name := range sortedKeys(m) {
				x, err := c.schema(m[name], kat+"/"+escape(name), depth+1)
				if err != nil {
					return nil, err
				}
				xm[name] = x
			}
			out[k] = xm
		default:
			// A value (enum, const, default, ...) or a keyword this package
			// does not know: kept as written, and counted, as it will be
			// encoded once for every $ref that reaches it.
			if err := c.grow(countValues(v, c.limit-c.size+1), kat); err != nil {
				return nil, err
			}
			out[k] = v
		}
	}
	if c.spec.v30 {
		translate30(s, out)
	}
	return out, nil
}

// translate30 rewrites what OpenAPI 3.0's schema dialect says differently
// from JSON Schema 2020-12: nullable, and exclusiveMinimum/exclusiveMaximum
// as booleans beside minimum/maximum.
func translate30(in, out map[string]any) {
	if in["nullable"] == true {
		if t, ok := out["type"].(string); ok && t != "null" {
			out["type"] = []any{t, "null"}
			if enum, ok := out["enum"].([]any); ok && !slices.Contains(enum, nil) {
				out["enum"] = append(slices.Clip(enum), nil)
			}
		}
	}
	for _, b := range [][2]string{{"exclusiveMinimum", "minimum"}, {"exclusiveMaximum", "maximum"}} {
		if in[b[0]] == true {
			if limit, ok := in[b[1]]; ok {
				out[b[0]] = limit
				delete(out, b[1])
			}
		}
	}
}

// ref expands a schema that holds a $ref.
func (c *schemas) ref(s map[string]any, r any, at string, depth int) (any, error) {
	ref, ok := r.(string)
	if !ok {
		return nil, errAt(at, "%w: $ref must be a string, got %s", ErrBadRef, jsonType(r))
	}
	target, ptr, err := c.spec.resolve(ref)
	if err != nil {
		return nil, &pointerError{pointer: at, err: err}
	}
	var res any
	switch e, done := c.memo[ptr]; {
	case done:
		res = e.value
		if err := c.grow(e.size, at); err != nil {
			return nil, err
		}
	case c.expanding[ptr]:
		// A cycle: the schema at ptr refers to itself, so it goes to $defs.
		c.recursive[ptr] = true
		res = c.defRef(ptr)
	default:
		// In $defs mode the target is emitted at the top of $defs, so its
		// nesting starts afresh; what bounds the recursion is then the
		// chain of $refs being expanded.
		next := depth + 1
		if c.allDefs {
			next = 0
		}
		if len(c.expanding) >= maxRefNesting {
			return nil, errAt(at, "%w: more than %d $refs nested in one another", ErrTooLarge, maxRefNesting)
		}
		c.expanding[ptr] = true
		before := c.size
		x, err := c.schema(target, ptr, next)
		delete(c.expanding, ptr)
		if err != nil {
			return nil, err
		}
		if c.allDefs || c.recursive[ptr] {
			res = c.defRef(ptr)
			c.defs[c.defNames[ptr]] = x
			c.memo[ptr] = expanded{value: res, size: 1}
		} else {
			res = x
			c.memo[ptr] = expanded{value: res, size: c.size - before}
		}
	}
	if len(s) == 1 {
		return res, nil
	}
	// Keywords beside the $ref: annotations are merged into (a copy of)
	// the target; in OpenAPI 3.1, where $ref is a JSON Schema keyword like
	// any other, anything that constrains is kept with the target as allOf.
	// OpenAPI 3.0 says to ignore whatever sits beside a $ref; descriptions
	// there are common and help agents, so only those are kept.
	siblings := make(map[string]any, len(s)-1)
	onlyAnnotations := true
	for k, v := range s {
		if k == "$ref" {
			continue
		}
		isAnnotation := annotations[k] || dropped[k] || strings.HasPrefix(k, "x-")
		if c.spec.v30 && !isAnnotation {
			continue
		}
		siblings[k] = v
		onlyAnnotations = onlyAnnotations && isAnnotation
	}
	extra, err := c.object(siblings, at, depth)
	if err != nil {
		return nil, err
	}
	if len(extra) == 0 {
		return res, nil
	}
	if m, ok := res.(map[string]any); ok && onlyAnnotations {
		return withAnnotations(m, extra), nil
	}
	allOf := []any{res}
	if own, ok := extra["allOf"].([]any); ok {
		allOf = append(allOf, own...)
	}
	extra["allOf"] = allOf
	return extra, nil
}

// defRef returns a $ref to the $defs entry for the schema at ptr, naming
// the entry after the pointer's last segment on first use.
func (c *schemas) defRef(ptr string) map[string]any {
	name, ok := c.defNames[ptr]
	if !ok {
		base := ptr[strings.LastIndexByte(ptr, '/')+1:]
		base = strings.ReplaceAll(strings.ReplaceAll(base, "~1", "/"), "~0", "~")
		base = sanitize(base, "._-")
		if base == "" {
			base = "schema"
		}
		name = base
		for i := 2; c.defTaken[name]; i++ {
			name = base + "_" + strconv.Itoa(i)
		}
		c.defNames[ptr] = name
		c.defTaken[name] = true
	}
	return map[string]any{"$ref": "#/$defs/" + name}
}

// withAnnotations returns a copy of schema with the given keywords set.
// Schemas may be shared (memoized $ref expansions), so they are never changed
// in place.
func withAnnotations(schema, extra map[string]any) map[string]any {
	out := make(map[string]any, len(schema)+len(extra))
	for k, v := range schema {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// asObject turns a boolean schema into its object form, so that keywords can
// be added to it; an object is copied.
func asObject(v any) map[string]any {
	switch s := v.(type) {
	case map[string]any:
		return withAnnotations(s, nil)
	case bool:
		if !s {
			return map[string]any{"not": map[string]any{}}
		}
	}
	return map[string]any{}
}

// root makes an emitted schema's root: the dialect, and the $defs that its
// $refs point to.
func (c *schemas) root(v any) map[string]any {
	out := asObject(v)
	if len(c.defs) > 0 {
		if _, clash := out["$defs"]; clash {
			// The schema has $defs of its own (unreachable from the
			// document's $refs, which resolve against the document root):
			// keep them one level down.
			out = map[string]any{"allOf": []any{out}}
		}
		out["$defs"] = c.defs
	}
	out["$schema"] = draft2020
	return out
}

// countValues counts the JSON values in v, stopping once past limit.
func countValues(v any, limit int) int {
	n := 1
	switch v := v.(type) {
	case map[string]any:
		for _, x := range v {
			if n > limit {
				break
			}
			n += countValues(x, limit-n)
		}
	case []any:
		for _, x := range v {
			if n > limit {
				break
			}
			n += countValues(x, limit-n)
		}
	}
	return n
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// escape escapes one JSON pointer token.
func escape(tok string) string {
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
}

// sanitize replaces every character but ASCII letters, digits and those in
// extra with an underscore.
func sanitize(s, extra string) string {
	b := []byte(s)
	for i, ch := range b {
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || strings.IndexByte(extra, ch) >= 0) {
			b[i] = '_'
		}
	}
	return string(b)
}

func isBool(v any) bool  { _, ok := v.(bool); return ok }
func isArray(v any) bool { _, ok := v.([]any); return ok }
