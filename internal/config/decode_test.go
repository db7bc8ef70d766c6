package config

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestLoadGolden loads every file in testdata/decode and compares what comes
// out (the decoded resources, or every error message) with its .golden file.
func TestLoadGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/decode/*.*")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden") {
			continue
		}
		t.Run(filepath.Base(in), func(t *testing.T) {
			docs, err := Load([]string{in}, nil)
			var got string
			switch {
			case err != nil:
				var es Errors
				if !errors.As(err, &es) {
					t.Fatalf("Load(%s) error %T, want Errors: %v", in, err, err)
				}
				if docs != nil {
					t.Errorf("Load(%s) returned %d documents with errors, want none", in, len(docs))
				}
				got = "error:\n" + err.Error() + "\n"
			default:
				b, err := json.MarshalIndent(docs, "", "  ")
				if err != nil {
					t.Fatal(err)
				}
				got = "ok:\n" + string(b) + "\n"
			}
			golden := strings.TrimSuffix(in, filepath.Ext(in)) + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("Load(%s) mismatch (-want +got):\n%s", in, diff)
			}
		})
	}
}

func TestValidateMessages(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // FieldError.Error() of each problem, no source or document
	}{
		{
			name: "valid",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a"},"spec":{}}`,
		},
		{
			name: "missing everything",
			doc:  `{}`,
			want: []string{"kind: required"},
		},
		{
			name: "kind is lenient for people, strict in documents",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"agents","metadata":{"name":"a"},"spec":{}}`,
			want: []string{`agents/a: kind: unknown kind "agents" (known kinds: Agent)`},
		},
		{
			name: "missing spec and apiVersion",
			doc:  `{"kind":"Agent","metadata":{"name":"a"}}`,
			want: []string{"Agent/a: apiVersion: required", "Agent/a: spec: required"},
		},
		{
			name: "wrong api version",
			doc:  `{"apiVersion":"v1","kind":"Agent","metadata":{"name":"a"},"spec":{}}`,
			want: []string{`Agent/a: apiVersion: must be "corral.dev/v1"`},
		},
		{
			name: "name too long",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"` + strings.Repeat("a", 64) + `"},"spec":{}}`,
			want: []string{`Agent/` + strings.Repeat("a", 64) + `: metadata.name: "` + strings.Repeat("a", 64) + `" is not a valid name: use lowercase letters, digits and '-', start and end with a letter or digit, at most 63 characters`},
		},
		{
			name: "description too long",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a"},"spec":{"description":"` + strings.Repeat("x", 1025) + `"}}`,
			want: []string{"Agent/a: spec.description: must be at most 1024 characters"},
		},
		{
			name: "negative revision",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a","revision":-1},"spec":{}}`,
			want: []string{"Agent/a: metadata.revision: must be >= 0"},
		},
		{
			name: "updated is not a date",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a","updated":"yesterday"},"spec":{}}`,
			want: []string{"Agent/a: metadata.updated: must be a valid date-time"},
		},
		{
			name: "not an object",
			doc:  `"Agent"`,
			want: []string{"a resource must be a mapping with apiVersion, kind, metadata and spec, got string"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, problems := DecodeJSON([]byte(tt.doc))
			var got []string
			for _, p := range problems {
				got = append(got, p.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DecodeJSON(%s) problems mismatch (-want +got):\n%s", tt.name, diff)
			}
		})
	}
}

func TestValidateCanonicalisesSpec(t *testing.T) {
	a, pa := DecodeJSON([]byte(`{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a","updated":"2020-01-01T00:00:00Z"},"spec":{ "description" : "x" }}`))
	docs, err := Decode("a.yaml", []byte("apiVersion: corral.dev/v1\nkind: Agent\nmetadata:\n  name: a\nspec:\n  description: x\n"))
	if len(pa) > 0 || err != nil {
		t.Fatalf("decode: %v %v", pa, err)
	}
	b := docs[0].Resource
	if string(a.Spec) != `{"description":"x"}` || !a.SameContent(b) {
		t.Errorf("specs %s and %s, want both canonical and the same content", a.Spec, b.Spec)
	}
	if !a.Metadata.Updated.IsZero() {
		t.Errorf("metadata.updated = %v, want it ignored on input", a.Metadata.Updated)
	}
}

func TestSameContent(t *testing.T) {
	base := Resource{Kind: "Agent", Metadata: Metadata{Name: "a", Labels: map[string]string{"x": "1"}, Revision: 3}, Spec: []byte(`{}`)}
	tests := []struct {
		name   string
		change func(r *Resource)
		want   bool
	}{
		{"identical", func(r *Resource) {}, true},
		{"revision ignored", func(r *Resource) { r.Metadata.Revision = 9 }, true},
		{"label value", func(r *Resource) { r.Metadata.Labels = map[string]string{"x": "2"} }, false},
		{"label added", func(r *Resource) { r.Metadata.Labels = map[string]string{"x": "1", "y": "1"} }, false},
		{"label key", func(r *Resource) { r.Metadata.Labels = map[string]string{"y": "1"} }, false},
		{"spec", func(r *Resource) { r.Spec = []byte(`{"description":"d"}`) }, false},
		{"name", func(r *Resource) { r.Metadata.Name = "b" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			tt.change(&o)
			if got := base.SameContent(o); got != tt.want {
				t.Errorf("SameContent(%s) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}

func TestLookupKind(t *testing.T) {
	for _, name := range []string{"Agent", "agent", "agents", "AGENTS"} {
		if k, err := LookupKind(name); err != nil || k.Name != "Agent" {
			t.Errorf("LookupKind(%q) = %v, %v, want Agent", name, k, err)
		}
	}
	if _, err := LookupKind("robot"); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("LookupKind(robot) error = %v, want ErrUnknownKind", err)
	}
}
