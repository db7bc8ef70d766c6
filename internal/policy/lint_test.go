package policy

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/openapi"
)

// lintSchemas are the input schemas of two tools: a flat one and one with
// a nested object, a $ref and an open part.
var lintSchemas = []json.RawMessage{
	json.RawMessage(`{"type": "object", "additionalProperties": false, "properties": {
		"amount": {"type": "number"}, "currency": {"type": "string"},
		"payee": {"$ref": "#/$defs/Payee"}, "meta": {"type": "object"}}, "$defs": {"Payee": {"type": "object", "properties": {"iban": {"type": "string"}}}}}`),
	json.RawMessage(`{"type": "object", "properties": {"sql": {"type": "string"}}, "allOf": [{"properties": {"limit": {"type": "integer"}}}]}`),
}

func TestLint(t *testing.T) {
	tests := []struct {
		name, src string
		want      []Warning
	}{
		{"declared arguments", `package corral.authz
deny contains "big" if input.action.arguments.amount > 1000
deny contains "sql" if contains(input.action.arguments.sql, "DROP")
deny contains "iban" if input.action.arguments.payee.iban == ""
deny contains "open" if input.action.arguments.meta.anything.below
deny contains "allOf" if input.action.arguments.limit > 10
deny contains "whole" if count(input.action.arguments) > 10
deny contains "dynamic" if { some k; input.action.arguments[k] == 1 }`, nil},
		{"a misspelt argument", `package corral.authz
deny contains "big" if {
	input.action.kind == "tool"
	input.action.arguments.amout > 1000
}`, []Warning{{Module: "m.rego", Line: 4, Rule: "deny", Ref: "input.action.arguments.amout", Argument: "amout"}}},
		{"a nested field no schema has", `package corral.authz
deny contains "x" if input.action.arguments.payee.bic == "X"`,
			[]Warning{{Module: "m.rego", Line: 2, Rule: "deny", Ref: "input.action.arguments.payee.bic", Argument: "payee.bic"}}},
		{"through a rule alias", `package corral.authz
transfer := input.action.arguments if input.action.kind == "tool"
big if transfer.amount > 1000
also_big if data.corral.authz.transfer.sum > 1000`, []Warning{
			{Module: "m.rego", Line: 4, Rule: "also_big", Ref: "data.corral.authz.transfer.sum", Argument: "sum"},
		}},
		{"through a body alias", `package corral.authz
deny contains "x" if {
	args := input.action.arguments
	args.total > 5
}`, []Warning{{Module: "m.rego", Line: 4, Rule: "deny", Ref: "args.total", Argument: "total"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Lint([]Module{{Name: "m.rego", Source: tt.src}}, lintSchemas)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Lint (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLintPayments: the payments example reads only arguments its banking
// API declares, once the importer flattens send_money's body.
func TestLintPayments(t *testing.T) {
	b, err := LoadDir("../../examples/policies/payments")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../examples/policies/payments/banking.openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ops, err := openapi.Import("banking", doc, openapi.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var schemas []json.RawMessage
	for _, op := range ops {
		schemas = append(schemas, op.InputSchema)
	}
	got, err := Lint(b.WithoutTests().Modules, schemas)
	if err != nil || len(got) != 0 {
		t.Errorf("Lint(payments) = %v, %v; want no warnings", got, err)
	}
	// The same rules against the body as one "body" argument (the shape
	// before arguments were flattened) read arguments no tool has.
	nested := []json.RawMessage{json.RawMessage(`{"type": "object", "additionalProperties": false, "properties": {"body": {"type": "object", "properties": {"amount": {}}}}}`)}
	got, err = Lint(b.WithoutTests().Modules, nested)
	if err != nil || len(got) == 0 {
		t.Errorf("Lint(payments, nested body) = %v, %v; want warnings", got, err)
	}
}

// FuzzLint: Lint never panics, whatever the module and schema.
func FuzzLint(f *testing.F) {
	f.Add(`package corral.authz
deny contains "big" if input.action.arguments.amout > 1000`, string(lintSchemas[0]))
	f.Add(`package corral.authz
t := input.action.arguments
x if t.a.b.c`, `{"properties": {"a": {"$ref": "#/$defs/a"}}, "$defs": {"a": {"$ref": "#/$defs/a"}}}`)
	f.Fuzz(func(t *testing.T, src, schema string) {
		_, _ = Lint([]Module{{Name: "f.rego", Source: src}}, []json.RawMessage{json.RawMessage(schema)})
	})
}
