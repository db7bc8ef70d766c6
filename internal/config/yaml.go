package config

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// Limits that keep a hostile stream from costing more than a large honest
// one: nesting (stack depth) and values produced (alias expansion), the
// latter counted across every document of the stream.
const (
	maxDepth = 64
	maxNodes = 100_000
)

// converter turns a parsed YAML node tree into the JSON value model that
// schema validation expects (string keys, json.Number). It walks the nodes
// itself rather than using yaml.Node.Decode, whose duplicate-key check is
// quadratic in the size of a mapping and whose error for a file full of
// duplicates grows quadratically too.
//
// One converter serves a whole stream, so that its budget of maxNodes values
// covers every document: once exhausted, it refuses every later value.
type converter struct {
	nodes int // values produced so far, aliases expanded
}

func newConverter() *converter { return &converter{} }

// exhausted reports whether the converter has refused a value for exceeding
// its budget.
func (c *converter) exhausted() bool { return c.nodes > maxNodes }

// isEmpty reports whether a document holds nothing (only comments, or "~").
func isEmpty(doc *yaml.Node) bool {
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	return doc.Kind == 0 || doc.Kind == yaml.DocumentNode ||
		(doc.Kind == yaml.ScalarNode && doc.ShortTag() == "!!null")
}

func (c *converter) value(n *yaml.Node, path []string) (any, error) {
	if len(path) > maxDepth {
		return nil, fieldErr(path, "nested deeper than %d levels", maxDepth)
	}
	if c.nodes++; c.nodes > maxNodes {
		return nil, fieldErr(path, "line %d: more than %d values in this file (an alias counts each time it is used)", n.Line, maxNodes)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return c.value(n.Content[0], path)
	case yaml.AliasNode:
		return c.value(n.Alias, path)
	case yaml.SequenceNode:
		out := make([]any, len(n.Content))
		for i, item := range n.Content {
			var err error
			if out[i], err = c.value(item, append(path, "["+strconv.Itoa(i)+"]")); err != nil {
				return nil, err
			}
		}
		return out, nil
	case yaml.MappingNode:
		return c.mapping(n, path)
	case yaml.ScalarNode:
		return scalar(n, path)
	}
	return nil, fieldErr(path, "line %d: unsupported YAML node", n.Line)
}

func (c *converter) mapping(n *yaml.Node, path []string) (any, error) {
	out := make(map[string]any, len(n.Content)/2)
	lines := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fieldErr(path, "line %d: field names must be strings", k.Line)
		}
		if k.ShortTag() == "!!merge" {
			return nil, fieldErr(path, "line %d: merge keys (<<) are not supported; write the fields out", k.Line)
		}
		if first, dup := lines[k.Value]; dup {
			return nil, fieldErr(append(path, k.Value), "line %d: defined twice (first at line %d)", k.Line, first)
		}
		lines[k.Value] = k.Line
		val, err := c.value(v, append(path, k.Value))
		if err != nil {
			return nil, err
		}
		out[k.Value] = val
	}
	return out, nil
}

// scalar resolves one scalar the way YAML 1.2's core schema (as yaml.v3
// implements it) does, then maps it onto JSON: numbers become json.Number,
// unquoted dates stay text, and what JSON cannot hold is refused.
func scalar(n *yaml.Node, path []string) (any, error) {
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, fieldErr(path, "line %d: %s", n.Line, yamlMessage(err))
	}
	switch v := v.(type) {
	case nil, string, bool:
		return v, nil
	case int:
		return json.Number(strconv.Itoa(v)), nil
	case int64:
		return json.Number(strconv.FormatInt(v, 10)), nil
	case uint64:
		return json.Number(strconv.FormatUint(v, 10)), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fieldErr(path, "line %d: must be a finite number, got %v", n.Line, v)
		}
		return json.Number(strconv.FormatFloat(v, 'g', -1, 64)), nil
	case time.Time:
		// JSON has no date type: keep what was written.
		return n.Value, nil
	}
	return nil, fieldErr(path, "line %d: unsupported YAML value %q", n.Line, n.Value)
}

// fieldErr is a problem at path, as a FieldError whose Source and Document
// the caller fills in.
func fieldErr(path []string, format string, args ...any) error {
	fe := FieldError{Message: fmt.Sprintf(format, args...)}
	if len(path) > 0 {
		fe.Field = fieldPath(path)
	}
	return fe
}
