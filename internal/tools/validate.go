package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/corral-dev/corral/internal/schemamsg"
)

// Violation is one way arguments break a tool's input schema.
type Violation struct {
	// Pointer is the RFC 6901 JSON pointer to the value concerned, relative
	// to the arguments object: "/body/tags/0", "" for the object itself.
	Pointer string `json:"pointer"`
	Message string `json:"message"`
}

// maxViolations caps how many violations one call reports.
const maxViolations = 50

// Validator checks arguments against one tool's input schema, compiled once.
type Validator struct {
	schema *jsonschema.Schema
	// Unenforced lists the schema's patterns that Go's regexp cannot compile
	// (ECMAScript lookarounds, backreferences): they are not checked, rather
	// than making the tool unusable.
	Unenforced []string
}

// NewValidator compiles a tool's input schema. Schemas say their draft with
// $schema (draft-07 and 2020-12 are common in MCP and OpenAPI); without it,
// 2020-12 applies. References outside the schema are not fetched.
func NewValidator(schema json.RawMessage) (*Validator, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return nil, fmt.Errorf("input schema: %w", err)
	}
	v := &Validator{}
	var mu sync.Mutex
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noLoader{})
	c.UseRegexpEngine(func(s string) (jsonschema.Regexp, error) {
		re, err := regexp.Compile(s)
		if err != nil {
			mu.Lock() // the engine also checks patterns while validating the schema: record each once
			if !slices.Contains(v.Unenforced, s) {
				v.Unenforced = append(v.Unenforced, s)
			}
			mu.Unlock()
			return anything(s), nil
		}
		return re, nil
	})
	const url = "mem:///input.json"
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("input schema: %w", err)
	}
	if v.schema, err = c.Compile(url); err != nil {
		return nil, fmt.Errorf("input schema: %w", err)
	}
	return v, nil
}

// Validate checks arguments, a JSON value, and returns every violation (at
// most 50), or nil when they are valid. Arguments that are not JSON are one
// violation at the root.
func (v *Validator) Validate(arguments json.RawMessage) []Violation {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(arguments))
	if err != nil {
		return []Violation{{Pointer: "", Message: "arguments are not valid JSON"}}
	}
	return v.ValidateValue(inst)
}

// ValidateValue is Validate for a value already decoded by
// jsonschema.UnmarshalJSON (numbers as json.Number).
func (v *Validator) ValidateValue(inst any) []Violation {
	err := v.schema.Validate(inst)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []Violation{{Message: err.Error()}}
	}
	var out []Violation
	for _, leaf := range schemamsg.Flatten(ve) {
		if len(out) == maxViolations {
			out = append(out, Violation{Message: "more violations not shown"})
			break
		}
		out = append(out, Violation{Pointer: leaf.Pointer(), Message: leaf.Message})
	}
	return out
}

type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("reference to %s: only references inside the schema are followed", url)
}

// anything is the stand-in for a pattern Go cannot compile.
type anything string

func (a anything) MatchString(string) bool { return true }
func (a anything) String() string          { return string(a) }
