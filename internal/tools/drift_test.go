package tools

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func tool(name, input, output string) Tool {
	t := Tool{Name: name, InputSchema: json.RawMessage(input)}
	if output != "" {
		t.OutputSchema = json.RawMessage(output)
	}
	return t
}

func TestBreaking(t *testing.T) {
	oldIn := `{"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}, "note": {"type": "string"},
		"body": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}}}`
	out := `{"type": "object", "properties": {"id": {"type": "integer"}, "sku": {"type": "string"}}}`
	old := []Tool{tool("s.get", oldIn, out), tool("s.gone", `{"type": "object"}`, "")}
	tests := []struct {
		name string
		new  []Tool
		want []Change
	}{
		{"unchanged", []Tool{tool("s.get", oldIn, out), tool("s.gone", `{"type": "object"}`, "")}, nil},
		{"additions break nothing", []Tool{
			tool("s.get", `{"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}, "note": {"type": "string"}, "extra": {"type": "string"},
				"body": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}, "more": {}}}}}`,
				`{"type": "object", "required": ["new"], "properties": {"id": {"type": "integer"}, "sku": {"type": "string"}, "new": {"type": "string"}}}`),
			tool("s.gone", `{"type": "object"}`, ""), tool("s.added", `{}`, ""),
		}, nil},
		{"every kind of break", []Tool{
			tool("s.get", `{"type": "object", "required": ["id", "note"], "properties": {"id": {"type": "string"}, "note": {"type": "string"},
				"body": {"type": "object", "properties": {"qty": {"type": ["integer", "null"]}}}}}`,
				`{"type": "object", "properties": {"id": {"type": "integer"}}}`),
		}, []Change{
			{Tool: "s.get", Kind: RequiredAdded, Pointer: "/note", Detail: "a new required field"},
			{Tool: "s.get", Kind: TypeChanged, Pointer: "/body/qty", Detail: "type integer became integer|null"},
			{Tool: "s.get", Kind: FieldRemoved, Pointer: "/body/sku", Detail: "the field is gone"},
			{Tool: "s.get", Kind: TypeChanged, Pointer: "/id", Detail: "type integer became string"},
			{Tool: "s.get", Kind: FieldRemoved, Pointer: "output:/sku", Detail: "the field is gone"},
			{Tool: "s.gone", Kind: OperationRemoved, Detail: "the operation is gone"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Breaking(old, tt.new)); diff != "" {
				t.Errorf("Breaking (-want +got):\n%s", diff)
			}
		})
	}
}
