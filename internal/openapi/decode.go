package openapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"

	"github.com/corral-dev/corral/internal/yamljson"
)

// Limits on what decoding one document may cost: nesting, values produced,
// and of those the values produced by expanding aliases (each use counts),
// so that a short "billion laughs" document fails fast. The largest public
// specs (Stripe, GitHub) hold around a million values and few aliases.
const (
	maxDocDepth      = 128
	maxDocValues     = 2_000_000
	maxAliasedValues = 100_000
)

// parse decodes a YAML or JSON document (JSON is read as YAML, of which it is
// a subset) into JSON values: map[string]any, []any, string, json.Number,
// bool and nil.
func parse(data []byte) (map[string]any, error) {
	var node yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&node); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: the document is empty", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: malformed YAML or JSON: %v", ErrInvalid, err)
	}
	c := yamljson.New(yamljson.Limits{MaxDepth: maxDocDepth, MaxValues: maxDocValues, MaxAliasedValues: maxAliasedValues})
	v, err := c.Convert(&node)
	var ye *yamljson.Error
	if errors.As(err, &ye) && ye.TooLarge {
		return nil, fmt.Errorf("%w: %v", ErrTooLarge, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	root, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: the document must be a mapping, got %s", ErrInvalid, jsonType(v))
	}
	return root, nil
}

// jsonType names the JSON type of a decoded value, for messages.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}
