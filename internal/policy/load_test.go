package policy

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLoadDir(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"a.rego":            "package corral.authz\nallow := true\n",
		"sub/b_test.rego":   "package corral.authz_test\ntest_x if true\n",
		"data.json":         `{"crm": {"limit": 10}}`,
		"sub/data.yaml":     "erp:\n  regions: [eu, us]\n",
		"policies.yaml":     "apiVersion: corral.dev/v1\nkind: Policy\nmetadata: {name: mail}\nspec:\n  rego:\n    - \"package corral.authz\\ndeny contains \\\"x\\\" if false\"\n    - \"package corral.authz\\nrequire_approval contains \\\"y\\\" if false\"\n  data: {mail: {domains: [example.com]}}\n---\napiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: impact}\nspec: {}\n",
		"agents.yaml":       "apiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: other}\nspec: {}\n",
		"input.json":        `{"action": {}}`,
		"notes.md":          "# notes",
		".hidden/x.rego":    "this is not rego",
		"values.yaml":       "replicas: 3\n",
		"sub/.skip.rego":    "nor this",
		"sub/deeper/c.rego": "package corral.authz\ndeny contains \"z\" if false\n",
	})
	b, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range b.Modules {
		names = append(names, strings.TrimPrefix(filepath.ToSlash(m.Name), filepath.ToSlash(dir)+"/"))
	}
	wantNames := []string{"a.rego", "mail/0.rego", "mail/1.rego", "sub/b_test.rego", "sub/deeper/c.rego"}
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Errorf("LoadDir() modules mismatch (-want +got):\n%s", diff)
	}
	wantData := map[string]any{
		"crm":  map[string]any{"limit": jsonNumber("10")},
		"erp":  map[string]any{"regions": []any{"eu", "us"}},
		"mail": map[string]any{"domains": []any{"example.com"}},
	}
	if diff := cmp.Diff(wantData, b.Data); diff != "" {
		t.Errorf("LoadDir() data mismatch (-want +got):\n%s", diff)
	}
	if got := b.WithoutTests(); len(got.Modules) != 4 {
		t.Errorf("WithoutTests() kept %d modules, want 4", len(got.Modules))
	}
	if _, err := Compile(t.Context(), b.WithoutTests(), Options{}); err != nil {
		t.Errorf("Compile(LoadDir()) error %v", err)
	}
}

func TestLoadDirErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"data key twice", map[string]string{"data.json": `{"crm": 1}`, "sub/data.yaml": "crm: 2"}, `data key "crm" is set by both`},
		{"data and policy", map[string]string{"data.json": `{"crm": 1}`, "p.yaml": "apiVersion: corral.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec: {rego: \"package corral.authz\", data: {crm: 2}}\n"}, "Policy/p"},
		{"data not an object", map[string]string{"data.json": `[1]`}, "data must be an object"},
		{"data malformed", map[string]string{"data.json": `{"a": `}, "data.json"},
		{"invalid policy", map[string]string{"p.yaml": "apiVersion: corral.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec: {rego: 5}\n"}, "spec.rego"},
		{"malformed yaml", map[string]string{"p.yaml": "kind: Policy\n  bad: [\n"}, "p.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadDir(writeFiles(t, tt.files))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadDir() error %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := LoadDir(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("LoadDir(missing) = nil error")
	}
	var ce *CompileError
	if _, err := LoadDir(writeFiles(t, map[string]string{"data.json": `{"a": 1}`, "x/data.json": `{"a": 2}`})); !errors.As(err, &ce) {
		t.Errorf("LoadDir(data key twice) error %T, want a *CompileError", err)
	}
}
