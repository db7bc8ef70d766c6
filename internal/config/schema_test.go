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
