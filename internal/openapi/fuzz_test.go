package openapi

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzImport feeds the importer arbitrary documents. It must never panic,
// every schema of every tool it returns must compile, and importing the same
// document twice must give the same tools.
func FuzzImport(f *testing.F) {
	data, err := os.ReadFile("testdata/petstore/openapi.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	for _, tt := range importTests {
		f.Add([]byte(tt.spec))
	}
	f.Add([]byte(aliasBomb))
	f.Add([]byte("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters: [{$ref: '#/components/parameters/P'}]\n      responses: {}\ncomponents:\n  parameters:\n    P: {$ref: '#/components/parameters/P'}\n"))
	f.Add([]byte(`{"openapi":"3.0.0","paths":{"/x":{"post":{"requestBody":{"content":{"application/json":{"schema":{"$ref":"#"}}}}}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tools, err := Import("f", data, Options{Document: "fuzz.yaml"})
		if err != nil {
			if tools != nil {
				t.Fatalf("Import returned %d tools with error %v", len(tools), err)
			}
			return
		}
		assertCompile(t, tools)
		// The same document always gives the same tools: names and $defs
		// must not depend on map order.
		again, err := Import("f", data, Options{Document: "fuzz.yaml"})
		if err != nil {
			t.Fatalf("second Import failed: %v", err)
		}
		if diff := cmp.Diff(tools, again); diff != "" {
			t.Fatalf("Import is not deterministic (-first +second):\n%s", diff)
		}
	})
}
