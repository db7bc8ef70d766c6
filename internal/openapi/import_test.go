package openapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// wantTool is what a test checks of one tool; empty fields are not checked.
type wantTool struct {
	name        string
	method      string
	path        string
	annotations *Annotations
	params      []Param
	input       string // JSON, compared as a value
	output      string // JSON; "-" for no output schema
}

var importTests = []struct {
	name   string
	source string // "s" if empty
	spec   string
	opts   Options
	want   []wantTool
}{
	{
		// At 1b05664 Idempotency-Key became an argument: the agent's raw key
		// reached the upstream unscoped, and corral recorded nothing.
		name: "headers corral sets are not arguments",
		spec: `
openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /charges:
    post:
      operationId: charge
      parameters:
        - {name: Idempotency-Key, in: header, required: true, schema: {type: string}}
        - {name: traceparent, in: header, schema: {type: string}}
        - {name: X-Corral-Identity, in: header, schema: {type: string}}
        - {name: x-api-key, in: header, schema: {type: string}}
        - {name: X-Request-Tag, in: header, schema: {type: string}}
        - {name: idempotency-key, in: query, schema: {type: string}}
      responses: {"201": {description: charged}}
`,
		opts: Options{ReservedHeaders: []string{"x-corral-identity", "X-API-Key"}},
		want: []wantTool{{
			name: "s.charge",
			params: []Param{
				{Property: "X-Request-Tag", In: InHeader, Name: "X-Request-Tag", Style: "simple"},
				{Property: "idempotency-key", In: InQuery, Name: "idempotency-key", Style: "form", Explode: true},
			},
		}},
	},
	{
		name:   "3.0 YAML: parameters, nullable, exclusiveMinimum, example, $ref siblings",
		source: "t",
		spec: `
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /pets/{petId}:
    get:
      operationId: getPet
      summary: Get a pet
      description: Returns one pet.
      parameters:
        - name: petId
          in: path
          description: The pet's id
          schema: {type: integer, format: int64}
        - name: fields
          in: query
          required: false
          schema: {type: string, nullable: true, enum: [name, tag]}
        - name: X-Trace
          in: header
          required: true
          schema: {type: string}
        - name: Authorization
          in: header
          schema: {type: string}
        - name: X-API-Key
          in: header
          schema: {type: string}
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Pet"}
components:
  schemas:
    Pet:
      type: object
      required: [name]
      xml: {name: pet}
      x-internal: true
      properties:
        name: {type: string, example: Rex}
        weight: {type: number, minimum: 0, exclusiveMinimum: true}
        xml: {type: string, description: a property that happens to be called xml}
        owner: {$ref: "#/components/schemas/Owner", description: Who owns it, maxLength: 3}
    Owner: {type: string, description: An owner}
  securitySchemes:
    key: {type: apiKey, in: header, name: x-api-key}
`,
		want: []wantTool{{
			name:        "t.getPet",
			method:      "GET",
			path:        "/pets/{petId}",
			annotations: &Annotations{ReadOnly: true, Idempotent: true},
			params: []Param{
				{Property: "petId", In: "path", Name: "petId", Required: true, Style: "simple"},
				{Property: "fields", In: "query", Name: "fields", Style: "form", Explode: true},
				{Property: "X-Trace", In: "header", Name: "X-Trace", Required: true, Style: "simple"},
			},
			input: `{
				"$schema": "https://json-schema.org/draft/2020-12/schema",
				"type": "object",
				"additionalProperties": false,
				"properties": {
					"petId": {"type": "integer", "format": "int64", "description": "The pet's id"},
					"fields": {"type": ["string", "null"], "enum": ["name", "tag", null]},
					"X-Trace": {"type": "string"}
				},
				"required": ["petId", "X-Trace"]
			}`,
			output: `{
				"$schema": "https://json-schema.org/draft/2020-12/schema",
				"type": "object",
				"required": ["name"],
				"properties": {
					"name": {"type": "string", "examples": ["Rex"]},
					"weight": {"type": "number", "exclusiveMinimum": 0},
					"xml": {"type": "string", "description": "a property that happens to be called xml"},
					"owner": {"type": "string", "description": "Who owns it"}
				}
			}`,
		}},
	},
	{
		name:   "3.1 JSON: type arrays, const, $ref with description, request body",
		source: "t",
		spec: `{
  "openapi": "3.1.0",
  "info": {"title": "t", "version": "1"},
  "paths": {
    "/orders": {
      "post": {
        "operationId": "createOrder",
        "requestBody": {
          "required": true,
          "description": "The order to place",
          "content": {
            "application/xml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/Order"}}
          }
        },
        "responses": {
          "201": {"$ref": "#/components/responses/Created"},
          "200": {"description": "also ok", "content": {"application/json": {"schema": {"type": "string"}}}}
        }
      }
    }
  },
  "components": {
    "schemas": {
      "Order": {
        "type": "object",
        "properties": {
          "kind": {"const": "order"},
          "note": {"type": ["string", "null"], "examples": ["leave at door"]},
          "item": {"$ref": "#/components/schemas/Item", "description": "What to ship"},
          "count": {"$ref": "#/components/schemas/Count", "maximum": 10}
        }
      },
      "Item": {"type": "string", "description": "An item"},
      "Count": {"type": "integer", "minimum": 1}
    },
    "responses": {
      "Created": {"description": "created", "content": {"application/json": {"schema": {"type": "object"}}}}
    }
  }
}`,
		want: []wantTool{{
			name:        "t.createOrder",
			method:      "POST",
			annotations: &Annotations{},
			params: []Param{
				{Property: "count", In: "body", Name: "count", MediaType: "application/json", BodyRequired: true},
				{Property: "item", In: "body", Name: "item", MediaType: "application/json", BodyRequired: true},
				{Property: "kind", In: "body", Name: "kind", MediaType: "application/json", BodyRequired: true},
				{Property: "note", In: "body", Name: "note", MediaType: "application/json", BodyRequired: true},
			},
			input: `{
				"$schema": "https://json-schema.org/draft/2020-12/schema",
				"type": "object",
				"additionalProperties": false,
				"properties": {
					"kind": {"const": "order"},
					"note": {"type": ["string", "null"], "examples": ["leave at door"]},
					"item": {"type": "string", "description": "What to ship"},
					"count": {"maximum": 10, "allOf": [{"type": "integer", "minimum": 1}]}
				}
			}`,
			output: `{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "string"}`,
		}},
	},
	{
		name: "missing operationId: derived, stable and unique names",
		spec: `
openapi: 3.0.0
paths:
  /:
    get: {responses: {}}
  /pets:
    get: {responses: {}}
  /pets/{petId}:
    delete: {responses: {}}
  /animals:
    get: {operationId: get_pets, responses: {}}
  /weird:
    post: {operationId: "do it/now", responses: {}}
`,
		want: []wantTool{
			{name: "s.get_root"},
			{name: "s.get_pets", path: "/animals"},
			{name: "s.get_pets_2", path: "/pets"},
			{
				name: "s.delete_pets_petId", path: "/pets/{petId}", annotations: &Annotations{Destructive: true, Idempotent: true},
				// petId is not declared, but the path needs it.
				params: []Param{{Property: "petId", In: "path", Name: "petId", Required: true, Style: "simple"}},
			},
			{name: "s.do_it_now", method: "POST", input: `{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": {}, "additionalProperties": false}`, output: "-"},
		},
	},
	{
		name: "overrides by operationId and by derived name",
		spec: `
openapi: 3.1.0
paths:
  /reset:
    post: {operationId: reset, responses: {}}
  /report:
    get: {responses: {}}
  /items/{id}:
    put: {operationId: putItem, parameters: [{name: id, in: path, required: true}], responses: {}}
    head: {operationId: headItem, parameters: [{name: id, in: path, required: true}], responses: {}}
`,
		opts: Options{Overrides: map[string]Override{
			"reset":      {Destructive: ptr(true), Idempotent: ptr(true)},
			"get_report": {ReadOnly: ptr(false)},
			"putItem":    {Idempotent: ptr(false)},
		}},
		want: []wantTool{
			{name: "s.putItem", annotations: &Annotations{}},
			{name: "s.headItem", annotations: &Annotations{ReadOnly: true, Idempotent: true}},
			{name: "s.get_report", annotations: &Annotations{Idempotent: true}},
			{name: "s.reset", annotations: &Annotations{Destructive: true, Idempotent: true}},
		},
	},
	{
		name: "circular refs go to $defs",
		spec: `
openapi: 3.0.1
paths:
  /trees:
    post:
      operationId: plant
      requestBody:
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Node"}
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {$ref: "#/components/schemas/A"}
components:
  schemas:
    Node:
      type: object
      properties:
        name: {type: string}
        children: {type: array, items: {$ref: "#/components/schemas/Node"}}
    A:
      type: object
      properties:
        b: {$ref: "#/components/schemas/B"}
    B:
      type: object
      properties:
        a: {$ref: "#/components/schemas/A"}
`,
		want: []wantTool{{
			name: "s.plant",
			input: `{
				"$schema": "https://json-schema.org/draft/2020-12/schema",
				"type": "object",
				"additionalProperties": false,
				"properties": {
					"name": {"type": "string"},
					"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}
				},
				"$defs": {
					"Node": {
						"type": "object",
						"properties": {
							"name": {"type": "string"},
							"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}
						}
					}
				}
			}`,
			output: `{
				"$schema": "https://json-schema.org/draft/2020-12/schema",
				"$ref": "#/$defs/A",
				"$defs": {
					"A": {
						"type": "object",
						"properties": {"b": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}}
					}
				}
			}`,
		}},
	},
	{
		name: "name clashes, path-level parameters, content parameters, form bodies",
		spec: `
openapi: 3.0.3
paths:
  /things/{id}:
    parameters:
      - {name: id, in: path, required: true, schema: {type: string}, description: path level}
      - {name: verbose, in: query, schema: {type: boolean}}
    patch:
      operationId: patchThing
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer}, description: operation level}
        - {name: id, in: header, schema: {type: string}}
        - {name: body, in: query, style: spaceDelimited, explode: false, schema: {type: array, items: {type: string}}}
        - name: filter
          in: query
          content:
            application/json:
              schema: {type: object}
      requestBody:
        content:
          application/x-www-form-urlencoded:
            schema: {type: object, required: [id], properties: {note: {type: string}, id: {type: string}}}
      responses:
        2XX:
          description: ok
          content:
            application/vnd.api+json:
              schema: {type: object}
`,
		want: []wantTool{{
			name:        "s.patchThing",
			annotations: &Annotations{},
			params: []Param{
				{Property: "id", In: "path", Name: "id", Required: true, Style: "simple"},
				{Property: "verbose", In: "query", Name: "verbose", Style: "form", Explode: true},
				{Property: "id_header", In: "header", Name: "id", Style: "simple"},
				{Property: "body", In: "query", Name: "body", Style: "spaceDelimited"},
				{Property: "filter", In: "query", Name: "filter", Style: "form", Explode: true, MediaType: "application/json"},
				{Property: "id_body", In: "body", Name: "id", MediaType: "application/x-www-form-urlencoded", FieldRequired: true},
				{Property: "note", In: "body", Name: "note", MediaType: "application/x-www-form-urlencoded"},
			},
			input: `{
				"$schema": "https://json-schema.org/draft/2020-12/schema",
				"type": "object",
				"additionalProperties": false,
				"properties": {
					"id": {"type": "integer", "description": "operation level"},
					"verbose": {"type": "boolean"},
					"id_header": {"type": "string"},
					"body": {"type": "array", "items": {"type": "string"}},
					"filter": {"type": "object"},
					"note": {"type": "string"},
					"id_body": {"type": "string"}
				},
				"required": ["id"],
				"dependentRequired": {"note": ["id_body"]}
			}`,
			output: `{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}`,
		}},
	},
	{
		name: "a schema too large to inline falls back to $defs",
		spec: doublingSpec(20),
		want: []wantTool{{name: "s.big"}},
	},
}

func ptr[T any](v T) *T { return &v }

// doublingSpec is a document whose schema L0 refers twice to L1, which refers
// twice to L2, and so on: inlined it would hold 2^n copies of Ln.
func doublingSpec(n int) string {
	var b strings.Builder
	b.WriteString("openapi: 3.1.0\npaths:\n  /big:\n    post:\n      operationId: big\n")
	b.WriteString("      requestBody: {content: {application/json: {schema: {$ref: '#/components/schemas/L0'}}}}\n")
	b.WriteString("      responses: {}\ncomponents:\n  schemas:\n")
	for i := range n {
		fmt.Fprintf(&b, "    L%d: {type: object, properties: {a: {$ref: '#/components/schemas/L%d'}, b: {$ref: '#/components/schemas/L%d'}}}\n", i, i+1, i+1)
	}
	fmt.Fprintf(&b, "    L%d: {type: string}\n", n)
	return b.String()
}

func TestImport(t *testing.T) {
	for _, tt := range importTests {
		t.Run(tt.name, func(t *testing.T) {
			source := tt.source
			if source == "" {
				source = "s"
			}
			tools, err := Import(source, []byte(tt.spec), tt.opts)
			if err != nil {
				t.Fatalf("Import() error: %v", err)
			}
			assertCompile(t, tools)
			if len(tools) != len(tt.want) {
				t.Fatalf("Import() returned %d tools (%v), want %d", len(tools), toolNames(tools), len(tt.want))
			}
			for i, w := range tt.want {
				got := tools[i]
				check := func(field string, got, want any) {
					t.Helper()
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("tool %d (%s) %s differs (-want +got):\n%s", i, tools[i].Name, field, diff)
					}
				}
				check("name", got.Name, w.name)
				if w.method != "" {
					check("method", got.Method, w.method)
				}
				if w.path != "" {
					check("path", got.Path, w.path)
				}
				if w.annotations != nil {
					check("annotations", got.Annotations, *w.annotations)
				}
				if w.params != nil {
					check("params", got.Params, w.params)
				}
				if w.input != "" {
					check("input schema", jsonValue(t, got.InputSchema), jsonValue(t, []byte(w.input)))
				}
				switch w.output {
				case "":
				case "-":
					if got.OutputSchema != nil {
						t.Errorf("tool %s output schema = %s, want none", got.Name, got.OutputSchema)
					}
				default:
					check("output schema", jsonValue(t, got.OutputSchema), jsonValue(t, []byte(w.output)))
				}
			}
		})
	}
}

func TestImportLargeSchemaUsesDefs(t *testing.T) {
	tools, err := Import("s", []byte(doublingSpec(20)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Defs map[string]any `json:"$defs"`
	}
	if err := json.Unmarshal(tools[0].InputSchema, &schema); err != nil {
		t.Fatal(err)
	}
	if len(schema.Defs) != 21 {
		t.Errorf("input schema has %d $defs, want 21 (L0 to L20): %s", len(schema.Defs), tools[0].InputSchema)
	}
	if len(tools[0].InputSchema) > 10_000 {
		t.Errorf("input schema is %d bytes, want it small", len(tools[0].InputSchema))
	}
}

func TestImportErrors(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		opts    Options
		wantIs  error
		wantMsg string // a substring of the message
	}{
		{
			name:    "swagger 2.0",
			spec:    `{"swagger": "2.0", "info": {"title": "t", "version": "1"}, "paths": {}}`,
			wantIs:  ErrUnsupportedVersion,
			wantMsg: "spec.yaml: unsupported OpenAPI version: swagger 2.0 (OpenAPI 2.0) is not supported; convert the document to OpenAPI 3 first",
		},
		{
			name:    "openapi 4",
			spec:    "openapi: 4.0.0\npaths: {}",
			wantIs:  ErrUnsupportedVersion,
			wantMsg: `openapi "4.0.0" (this importer reads 3.0.x and 3.1.x)`,
		},
		{
			name:    "no version",
			spec:    "paths: {}",
			wantIs:  ErrUnsupportedVersion,
			wantMsg: "it has no openapi field",
		},
		{
			name: "bad $ref in a parameter",
			spec: `
openapi: 3.0.3
paths:
  /pet/{petId}:
    get:
      parameters:
        - {name: petId, in: path, required: true, schema: {$ref: "#/components/schemas/X"}}
      responses: {}
`,
			wantIs:  ErrBadRef,
			wantMsg: `spec.yaml: paths./pet/{petId}.get: parameter petId: bad $ref "#/components/schemas/X": not found (at #/paths/~1pet~1{petId}/get/parameters/0/schema)`,
		},
		{
			name: "bad $ref deep in a component",
			spec: `
openapi: 3.1.0
paths:
  /pets:
    post:
      requestBody: {content: {application/json: {schema: {$ref: "#/components/schemas/Pet"}}}}
      responses: {}
components:
  schemas:
    Pet: {type: object, properties: {tag: {$ref: "#/components/schemas/Tag"}}}
`,
			wantIs:  ErrBadRef,
			wantMsg: `paths./pets.post: request body: bad $ref "#/components/schemas/Tag": not found (at #/components/schemas/Pet/properties/tag)`,
		},
		{
			name:    "external $ref",
			spec:    "openapi: 3.0.0\npaths:\n  /a:\n    get:\n      parameters: [{$ref: 'common.yaml#/parameters/limit'}]\n      responses: {}",
			wantIs:  ErrBadRef,
			wantMsg: `points outside this document; bundle the spec into one file first`,
		},
		{
			name: "reference objects in a loop",
			spec: `
openapi: 3.0.0
paths:
  /a:
    get:
      parameters: [{$ref: "#/components/parameters/P"}]
      responses: {}
components:
  parameters:
    P: {$ref: "#/components/parameters/Q"}
    Q: {$ref: "#/components/parameters/P"}
`,
			wantIs:  ErrBadRef,
			wantMsg: `bad $ref "#/components/parameters/P": loops back on itself`,
		},
		{
			name:    "duplicate operationId",
			spec:    "openapi: 3.0.0\npaths:\n  /a: {get: {operationId: x, responses: {}}}\n  /b: {get: {operationId: x, responses: {}}}",
			wantIs:  ErrInvalid,
			wantMsg: `operationId "x" is used by both paths./a.get and paths./b.get`,
		},
		{
			name:    "override for no operation",
			spec:    "openapi: 3.0.0\npaths:\n  /a: {get: {operationId: listA, responses: {}}}",
			opts:    Options{Document: "spec.yaml", Overrides: map[string]Override{"lstA": {ReadOnly: ptr(false)}}},
			wantMsg: `overrides: no operation has the operationId "lstA"`,
		},
		{
			name:    "override that is both readOnly and destructive",
			spec:    "openapi: 3.0.0\npaths:\n  /a: {get: {operationId: listA, responses: {}}}",
			opts:    Options{Document: "spec.yaml", Overrides: map[string]Override{"listA": {Destructive: ptr(true)}}},
			wantMsg: `paths./a.get: overrides: an operation cannot be both readOnly and destructive`,
		},
		{
			name:    "schema that does not compile",
			spec:    "openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters: [{name: q, in: query, schema: {type: string, pattern: '(('}}]\n      responses: {}",
			wantIs:  ErrInvalid,
			wantMsg: `paths./a.get: input schema: invalid OpenAPI document: does not compile`,
		},
		{
			name:    "schema of the wrong type",
			spec:    "openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters: [{name: q, in: query, schema: {type: array, items: [1]}}]\n      responses: {}",
			wantIs:  ErrInvalid,
			wantMsg: `parameter q: invalid OpenAPI document: a schema must be an object or a boolean, got a number (at #/paths/~1a/get/parameters/0/schema/items/0)`,
		},
		{
			name:    "$dynamicRef",
			spec:    "openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters: [{name: q, in: query, schema: {$dynamicRef: '#meta'}}]\n      responses: {}",
			wantIs:  ErrInvalid,
			wantMsg: `$dynamicRef is not supported`,
		},
		{
			name:    "parameter without in",
			spec:    "openapi: 3.0.0\npaths:\n  /a:\n    get:\n      parameters: [{name: q}]\n      responses: {}",
			wantIs:  ErrInvalid,
			wantMsg: `paths./a.get: invalid OpenAPI document: parameter q: in must be path, query, header or cookie, got <nil>`,
		},
		{
			name:    "malformed YAML",
			spec:    "openapi: 3.0.0\npaths: [",
			wantIs:  ErrInvalid,
			wantMsg: "malformed YAML or JSON",
		},
		{
			name:    "not a mapping",
			spec:    "- 1\n- 2",
			wantIs:  ErrInvalid,
			wantMsg: "the document must be a mapping, got an array",
		},
		{
			name:    "alias bomb",
			spec:    aliasBomb,
			wantIs:  ErrTooLarge,
			wantMsg: "an alias counts each time it is used",
		},
		{
			name: "every broken operation is reported",
			spec: `
openapi: 3.0.0
paths:
  /a: {get: {parameters: [{name: x, in: query, schema: {$ref: "#/nope"}}], responses: {}}}
  /b: {get: {responses: {}}}
  /c: {get: {parameters: [{name: y, in: body}], responses: {}}}
`,
			wantMsg: "paths./a.get: parameter x: bad $ref \"#/nope\": not found (at #/paths/~1a/get/parameters/0/schema)\n" +
				"spec.yaml: paths./c.get: invalid OpenAPI document: parameter y: in must be path, query, header or cookie, got body",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			if opts.Document == "" {
				opts.Document = "spec.yaml"
			}
			tools, err := Import("s", []byte(tt.spec), opts)
			if err == nil {
				t.Fatalf("Import() = %d tools, want an error", len(tools))
			}
			if tools != nil {
				t.Errorf("Import() returned %d tools with an error, want none", len(tools))
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Import() error = %v, want one that is %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Import() error =\n%v\nwant it to contain\n%s", err, tt.wantMsg)
			}
			var e *Error
			if !errors.As(err, &e) || e.Document != "spec.yaml" {
				t.Errorf("Import() error %v is not an *Error naming the document", err)
			}
		})
	}
}

// aliasBomb expands to 10^9 values.
const aliasBomb = `openapi: 3.0.0
a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]
`

func TestErrorFormat(t *testing.T) {
	err := &Error{Document: "petstore.yaml", Operation: "paths./pet.get", Pointer: "/paths/~1pet/get", Err: ErrBadRef}
	if got, want := err.Error(), "petstore.yaml: paths./pet.get: bad $ref (at #/paths/~1pet/get)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, ErrBadRef) {
		t.Errorf("errors.Is(%v, ErrBadRef) = false", err)
	}
}

// assertCompile compiles every schema of tools with santhosh-tekuri/jsonschema
// as the argument validator does, independently of Import's own check: the
// dialect each schema declares, and no loading of other documents.
func assertCompile(t testing.TB, tools []Tool) {
	t.Helper()
	for _, tool := range tools {
		for kind, schema := range map[string]json.RawMessage{"input": tool.InputSchema, "output": tool.OutputSchema} {
			if schema == nil {
				if kind == "input" {
					t.Errorf("tool %s has no input schema", tool.Name)
				}
				continue
			}
			v, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
			if err != nil {
				t.Fatalf("tool %s %s schema is not JSON: %v", tool.Name, kind, err)
			}
			if m, _ := v.(map[string]any); m["$schema"] != draft2020 {
				t.Errorf("tool %s %s schema declares $schema %v, want %s", tool.Name, kind, m["$schema"], draft2020)
			}
			c := jsonschema.NewCompiler()
			c.UseLoader(noLoader{})
			url := "https://corral.test/" + tool.Name + "/" + kind + ".json"
			if err := c.AddResource(url, v); err != nil {
				t.Fatalf("tool %s %s schema: %v", tool.Name, kind, err)
			}
			if _, err := c.Compile(url); err != nil {
				t.Errorf("tool %s %s schema does not compile: %v\n%s", tool.Name, kind, err, schema)
			}
		}
	}
}

func jsonValue(t testing.TB, data []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, data)
	}
	return v
}

func toolNames(tools []Tool) []string {
	names := make([]string, len(tools))
	for i, tool := range tools {
		names[i] = tool.Name
	}
	return names
}
