package tools

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const orderSchema = `{
  "type": "object",
  "required": ["id", "body"],
  "additionalProperties": false,
  "properties": {
    "id": {"type": "integer", "minimum": 1},
    "body": {
      "type": "object",
      "required": ["email"],
      "properties": {
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}},
        "code": {"type": "string", "pattern": "^(?!x)[a-z]+$"}
      }
    }
  }
}`

func TestValidate(t *testing.T) {
	v, err := NewValidator(json.RawMessage(orderSchema))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"^(?!x)[a-z]+$"}, v.Unenforced); diff != "" {
		t.Errorf("Unenforced (-want +got):\n%s", diff)
	}
	tests := []struct {
		name string
		args string
		want []Violation
	}{
		{"valid", `{"id": 3, "body": {"email": "a@b.example", "tags": ["ab"], "code": "xyz"}}`, nil},
		{"every violation with its pointer", `{"id": 0, "extra": 1, "body": {"email": "nope", "tags": ["ab", "abcd"]}}`, []Violation{
			{Pointer: "/extra", Message: "unknown field"},
			{Pointer: "/id", Message: "must be >= 1"},
			{Pointer: "/body/email", Message: "must be a valid email"},
			{Pointer: "/body/tags/1", Message: "must be at most 3 characters"},
		}},
		{"missing", `{}`, []Violation{{Pointer: "/id", Message: "required"}, {Pointer: "/body", Message: "required"}}},
		{"not an object", `[1]`, []Violation{{Pointer: "", Message: "must be object, got array"}}},
		{"not JSON", `{`, []Violation{{Pointer: "", Message: "arguments are not valid JSON"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := v.Validate(json.RawMessage(tt.args))
			if diff := cmp.Diff(tt.want, got, sortViolations); diff != "" {
				t.Errorf("Validate(%s) (-want +got):\n%s", tt.args, diff)
			}
		})
	}
}

var sortViolations = cmp.Transformer("sorted", func(in []Violation) map[string]string {
	if in == nil {
		return nil
	}
	out := map[string]string{}
	for _, v := range in {
		out[v.Pointer] += v.Message + ";"
	}
	return out
})

func TestValidatorDrafts(t *testing.T) {
	draft7 := `{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
		"properties": {"n": {"type": "integer", "exclusiveMinimum": 5}}, "dependencies": {"a": ["b"]}}`
	v, err := NewValidator(json.RawMessage(draft7))
	if err != nil {
		t.Fatal(err)
	}
	got := v.Validate(json.RawMessage(`{"n": 5, "a": 1}`))
	if len(got) != 2 {
		t.Errorf("draft-07 Validate = %v, want 2 violations (exclusiveMinimum, dependencies)", got)
	}
	if _, err := NewValidator(json.RawMessage(`{"$ref": "https://example.com/x.json"}`)); err == nil {
		t.Error("NewValidator with a remote $ref succeeded, want an error: nothing is fetched")
	}
}

// FuzzValidate checks that validation never panics and that every
// violation's pointer is a JSON pointer, for any schema and arguments.
func FuzzValidate(f *testing.F) {
	f.Add(orderSchema, `{"id": 0, "body": {"email": "x", "tags": ["abcd"]}}`)
	f.Add(`{"type": "object", "properties": {"a~/b": {"const": 1}}}`, `{"a~/b": 2}`)
	f.Add(`{"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "string"}]}`, `[1, 2]`)
	f.Add(`true`, `null`)
	f.Fuzz(func(t *testing.T, schema, args string) {
		v, err := NewValidator(json.RawMessage(schema))
		if err != nil {
			return
		}
		for _, viol := range v.Validate(json.RawMessage(args)) {
			if viol.Pointer != "" && viol.Pointer[0] != '/' {
				t.Errorf("Validate(%q against %q) pointer %q is not a JSON pointer", args, schema, viol.Pointer)
			}
			if viol.Message == "" {
				t.Errorf("Validate(%q against %q) gave a violation without a message", args, schema)
			}
		}
	})
}
