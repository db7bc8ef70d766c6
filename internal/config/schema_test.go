package config

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestSchemasMatchGoTypes keeps each kind's hand-written spec schema and its
// Go type in step: every JSON field of the type is a schema property and every
// schema property is a field, at every depth.
func TestSchemasMatchGoTypes(t *testing.T) {
	for _, k := range Kinds() {
		t.Run(k.Name, func(t *testing.T) {
			var schema map[string]any
			if err := json.Unmarshal(k.specSchema, &schema); err != nil {
				t.Fatal(err)
			}
			compareFields(t, "spec", reflect.TypeOf(k.newSpec()).Elem(), schema)
		})
	}
	t.Run("Metadata", func(t *testing.T) {
		var schema map[string]any
		if err := json.Unmarshal(metadataSchema, &schema); err != nil {
			t.Fatal(err)
		}
		compareFields(t, "metadata", reflect.TypeOf(Metadata{}), schema)
	})
}

func compareFields(t *testing.T, path string, typ reflect.Type, schema map[string]any) {
	t.Helper()
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		typ = typ.Elem()
		if items, ok := schema["items"].(map[string]any); ok {
			schema = items
		}
	}
	if typ.Kind() != reflect.Struct || typ.String() == "time.Time" {
		return
	}
	props, _ := schema["properties"].(map[string]any)
	var goFields, schemaFields []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		goFields = append(goFields, name)
		if sub, ok := props[name].(map[string]any); ok {
			compareFields(t, path+"."+name, f.Type, sub)
		}
	}
	for name := range props {
		schemaFields = append(schemaFields, name)
	}
	slices.Sort(goFields)
	slices.Sort(schemaFields)
	if diff := cmp.Diff(goFields, schemaFields); diff != "" {
		t.Errorf("%s: Go fields and schema properties differ (-go +schema):\n%s", path, diff)
	}
	if schema["additionalProperties"] != false && props != nil {
		t.Errorf("%s: schema must set additionalProperties: false so that typos are errors", path)
	}
}

func TestDocumentSchemaServed(t *testing.T) {
	for _, k := range Kinds() {
		var doc map[string]any
		if err := json.Unmarshal(k.Schema(), &doc); err != nil {
			t.Fatalf("%s schema is not JSON: %v", k.Name, err)
		}
		if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" || doc["title"] != k.Name {
			t.Errorf("%s schema header = %v, %v", k.Name, doc["$schema"], doc["title"])
		}
	}
}

// TestValidNameMatchesSchema keeps ValidName and the schema's rule for
// metadata.name the same: the same pattern, and the same answer on a table
// of names.
func TestValidNameMatchesSchema(t *testing.T) {
	var schema struct {
		Properties struct {
			Name struct {
				Pattern string `json:"pattern"`
			} `json:"name"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(metadataSchema, &schema); err != nil {
		t.Fatal(err)
	}
	if got := schema.Properties.Name.Pattern; got != namePattern.String() {
		t.Errorf("schema pattern of metadata.name = %q, ValidName's = %q, want the same", got, namePattern.String())
	}

	tests := []struct {
		name string
		want bool
	}{
		{"a", true},
		{"0", true},
		{"impact", true},
		{"impact-agent-2", true},
		{"a--b", true},
		{"1a", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"-a", false},
		{"a-", false},
		{"-", false},
		{"Impact", false},
		{"a_b", false},
		{"a.b", false},
		{"a/b", false},
		{"a b", false},
		{"é", false},
		{"a\n", false},
		{"\na", false},
		{"..", false},
	}
	for _, tt := range tests {
		if got := ValidName(tt.name); got != tt.want {
			t.Errorf("ValidName(%q) = %v, want %v", tt.name, got, tt.want)
		}
		doc, err := json.Marshal(map[string]any{
			"apiVersion": APIVersion, "kind": "Agent", "metadata": map[string]any{"name": tt.name}, "spec": map[string]any{},
		})
		if err != nil {
			t.Fatal(err)
		}
		_, problems := DecodeJSON(doc)
		schemaValid := true
		for _, p := range problems {
			if p.Field == "metadata.name" {
				schemaValid = false
			}
		}
		if schemaValid != tt.want {
			t.Errorf("DecodeJSON(name %q) problems = %v, want the name valid = %v", tt.name, problems, tt.want)
		}
	}
}
