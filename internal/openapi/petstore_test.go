package openapi

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// TestPetstore imports the Swagger Petstore v3 spec (testdata/petstore,
// verbatim from swagger-api/swagger-petstore, Apache 2.0) and compares the
// tools with the golden file.
func TestPetstore(t *testing.T) {
	data, err := os.ReadFile("testdata/petstore/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tools, err := Import("petstore", data, Options{Document: "openapi.yaml"})
	if err != nil {
		t.Fatalf("Import(petstore) error: %v", err)
	}
	assertCompile(t, tools)

	// One tool per operation, named after its operationId: counted here
	// from the document itself, not through the package.
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `yaml:"operationId"`
		} `yaml:"paths"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, item := range doc.Paths {
		for _, op := range item {
			want = append(want, "petstore."+op.OperationID)
		}
	}
	got := toolNames(tools)
	slices.Sort(want)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tool names differ from the document's operations (-want +got):\n%s", diff)
	}
	if len(got) != 19 {
		t.Errorf("Import(petstore) = %d tools, want 19", len(got))
	}

	golden(t, filepath.Join("testdata", "petstore", "tools.golden.json"), tools)
}

// golden compares v, as indented JSON, with the file at path, or rewrites
// the file under -update.
func golden(t *testing.T, path string, v any) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), buf.String()); diff != "" {
		t.Errorf("%s differs (-want +got; go test -update rewrites it):\n%s", path, diff)
	}
}
