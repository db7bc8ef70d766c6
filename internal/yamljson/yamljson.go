// Package yamljson converts parsed YAML into JSON values (map[string]any,
// []any, string, json.Number, bool and nil) within limits, so that a hostile
// document costs no more than a large honest one.
//
// It walks yaml.Node trees itself rather than using yaml.Node.Decode, whose
// duplicate-key check is quadratic in the size of a mapping and whose error
// for a document full of duplicates grows quadratically too.
package yamljson

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Limits bound one Converter's work, across every tree it converts.
type Limits struct {
	MaxDepth  int // nesting of mappings and sequences
	MaxValues int // values produced, an alias counting each time it is used
	// MaxAliasedValues, when set, separately bounds the values produced by
	// expanding aliases, so that a short "billion laughs" fails fast even
	// where MaxValues is generous.
	MaxAliasedValues int
}

// Error is a problem at a place in the tree. Its Message carries the line.
type Error struct {
	Path     []string // field names and "[i]" indices from the root
	Message  string
	TooLarge bool // a limit was exceeded, rather than the YAML being wrong
}

func (e *Error) Error() string {
	if len(e.Path) == 0 {
		return e.Message
	}
	return FieldPath(e.Path) + ": " + e.Message
}

// FieldPath joins path elements as "spec.tools[0].name".
func FieldPath(path []string) string {
	var b strings.Builder
	for i, p := range path {
		if i > 0 && !strings.HasPrefix(p, "[") {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

// Converter converts node trees; its budget spans all of them.
type Converter struct {
	limits  Limits
	values  int
	aliased int
	inAlias int // depth of aliases being expanded
}

// New returns a converter with the given limits.
func New(l Limits) *Converter { return &Converter{limits: l} }

// Exhausted reports whether a value was refused for exceeding MaxValues or
// MaxAliasedValues: every later conversion would be refused too.
func (c *Converter) Exhausted() bool {
	return c.values > c.limits.MaxValues || c.limits.MaxAliasedValues > 0 && c.aliased > c.limits.MaxAliasedValues
}

// Convert converts one tree (a document node or any node in one).
func (c *Converter) Convert(n *yaml.Node) (any, error) { return c.value(n, nil) }

func fail(path []string, format string, args ...any) error {
	return &Error{Path: path, Message: fmt.Sprintf(format, args...)}
}

func tooLarge(path []string, format string, args ...any) error {
	return &Error{Path: path, Message: fmt.Sprintf(format, args...), TooLarge: true}
}

func (c *Converter) value(n *yaml.Node, path []string) (any, error) {
	if len(path) > c.limits.MaxDepth {
		return nil, tooLarge(path, "nested deeper than %d levels", c.limits.MaxDepth)
	}
	if c.values++; c.values > c.limits.MaxValues {
		return nil, tooLarge(path, "line %d: more than %d values (an alias counts each time it is used)", n.Line, c.limits.MaxValues)
	}
	if c.inAlias > 0 && c.limits.MaxAliasedValues > 0 {
		if c.aliased++; c.aliased > c.limits.MaxAliasedValues {
			return nil, tooLarge(path, "line %d: aliases expand to more than %d values (an alias counts each time it is used)", n.Line, c.limits.MaxAliasedValues)
		}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return c.value(n.Content[0], path)
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil, fail(path, "line %d: unknown alias", n.Line)
		}
		c.inAlias++
		defer func() { c.inAlias-- }()
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
	return nil, fail(path, "line %d: unsupported YAML node", n.Line)
}

func (c *Converter) mapping(n *yaml.Node, path []string) (any, error) {
	out := make(map[string]any, len(n.Content)/2)
	lines := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fail(path, "line %d: field names must be strings", k.Line)
		}
		if k.ShortTag() == "!!merge" {
			return nil, fail(path, "line %d: merge keys (<<) are not supported; write the fields out", k.Line)
		}
		if first, dup := lines[k.Value]; dup {
			return nil, fail(append(path, k.Value), "line %d: defined twice (first at line %d)", k.Line, first)
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
		return nil, fail(path, "line %d: %s", n.Line, strings.TrimPrefix(err.Error(), "yaml: "))
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
			return nil, fail(path, "line %d: must be a finite number, got %v", n.Line, v)
		}
		return json.Number(strconv.FormatFloat(v, 'g', -1, 64)), nil
	case time.Time:
		// JSON has no date type: keep what was written.
		return n.Value, nil
	}
	return nil, fail(path, "line %d: unsupported YAML value %q", n.Line, n.Value)
}
