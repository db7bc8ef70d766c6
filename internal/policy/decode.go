package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/corral-dev/corral/internal/yamljson"
)

// Limits on an input document read by DecodeInput.
const (
	maxInputDepth  = 64
	maxInputValues = 100_000
)

// DecodeInput reads an input document, JSON or YAML, strictly: a field
// the Input type does not have is an error naming it, and action.kind must
// be one of the three kinds. Numbers in arguments and claims are kept as
// json.Number.
func DecodeInput(data []byte) (*Input, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var node yaml.Node
	if err := dec.Decode(&node); errors.Is(err, io.EOF) {
		return nil, errors.New("policy: input: empty document")
	} else if err != nil {
		return nil, fmt.Errorf("policy: input: %w", err)
	}
	if err := dec.Decode(new(yaml.Node)); !errors.Is(err, io.EOF) {
		return nil, errors.New("policy: input: want one document")
	}
	v, err := yamljson.New(yamljson.Limits{MaxDepth: maxInputDepth, MaxValues: maxInputValues}).Convert(&node)
	if err != nil {
		return nil, fmt.Errorf("policy: input: %w", err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, errors.New("policy: input: must be an object")
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("policy: input: %w", err)
	}
	jd := json.NewDecoder(bytes.NewReader(b))
	jd.DisallowUnknownFields()
	jd.UseNumber()
	var in Input
	if err := jd.Decode(&in); err != nil {
		return nil, fmt.Errorf("policy: input: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	switch in.Action.Kind {
	case KindTool, KindModel, KindAgent:
	default:
		return nil, fmt.Errorf("policy: input: action.kind is %q, want %q, %q or %q", in.Action.Kind, KindTool, KindModel, KindAgent)
	}
	return &in, nil
}
