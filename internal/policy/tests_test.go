package policy

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestPaymentsExample runs the example's Rego tests, so that `make test`
// fails when the example and its tests disagree.
func TestPaymentsExample(t *testing.T) {
	b, err := LoadDir(paymentsDir)
	if err != nil {
		t.Fatal(err)
	}
	results, err := RunTests(t.Context(), b, TestOptions{Default: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) < 20 {
		t.Errorf("RunTests(payments) ran %d tests, want the example's 20 or more", len(results))
	}
	for _, r := range results {
		if !r.Pass {
			t.Errorf("%s: %s failed: %s %v", r.Location, r.Name, r.Error, r.Output)
		}
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestRunTestsOutcomes(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"p.rego": "package corral.authz\n\ndeny contains \"no\" if input.x == 1\n",
		"p_test.rego": `package corral.authz_test

import data.corral.authz

test_pass if authz.deny == {"no"} with input as {"x": 1}

test_fail if authz.deny == {"no"} with input as {"x": 2}

test_error if to_number("ten") == 10

test_print if {
	print("hello", 1)
	true
}

todo_test_later if false

test_default_bundle if authz.allow with input as {"action": {"kind": "tool", "target": "a.b"}, "agent": {"tools": ["a.*"]}}
`,
	})
	b, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	results, err := RunTests(t.Context(), b, TestOptions{Default: true})
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		pass, fail, skip, err bool
		line                  string
	}
	want := map[string]outcome{
		"test_pass":           {pass: true, line: ":5"},
		"test_fail":           {fail: true, line: ":7"},
		"test_error":          {err: true, line: ":9"},
		"test_print":          {pass: true, line: ":11"},
		"todo_test_later":     {skip: true, line: ":16"},
		"test_default_bundle": {pass: true, line: ":18"},
	}
	if len(results) != len(want) {
		t.Fatalf("RunTests() = %d results, want %d: %+v", len(results), len(want), results)
	}
	order := []string{"test_pass", "test_fail", "test_error", "test_print", "todo_test_later", "test_default_bundle"}
	for i, r := range results {
		if r.Name != order[i] {
			t.Errorf("RunTests() result %d is %s, want %s: results are in the order of the file", i, r.Name, order[i])
		}
		w, ok := want[r.Name]
		if !ok {
			t.Errorf("RunTests() ran %q, not one of the tests", r.Name)
			continue
		}
		got := outcome{pass: r.Pass, fail: r.Fail, skip: r.Skip, err: r.Error != "", line: w.line}
		if got != w || !strings.HasSuffix(r.Location, "p_test.rego"+w.line) || r.Package != "corral.authz_test" {
			t.Errorf("RunTests() %s = %+v at %s in %s, want %+v", r.Name, got, r.Location, r.Package, w)
		}
		if r.Name == "test_print" && (len(r.Output) != 1 || r.Output[0] != "hello 1") {
			t.Errorf("RunTests() test_print output %q, want [\"hello 1\"]", r.Output)
		}
	}

	// Without the default bundle, nothing allows.
	results, err = RunTests(t.Context(), b, TestOptions{Run: regexp.MustCompile("default_bundle")})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || !results[0].Fail {
		t.Errorf("RunTests(-run default_bundle, no default) = %+v, want one failing test", results)
	}
}

func TestRunTestsCompileError(t *testing.T) {
	b := Bundle{Modules: []Module{{Name: "bad_test.rego", Source: "package x\ntest_a if {"}}}
	_, err := RunTests(t.Context(), b, TestOptions{})
	var ce *CompileError
	if !errors.As(err, &ce) || !strings.Contains(ce.Error(), "bad_test.rego:2") {
		t.Errorf("RunTests(bad module) error %v, want a *CompileError naming bad_test.rego:2", err)
	}
	b = Bundle{Modules: []Module{{Name: "t.rego", Source: "package x\ntest_a if corral.nope(1)"}}}
	if _, err := RunTests(t.Context(), b, TestOptions{}); !errors.As(err, &ce) || !strings.Contains(ce.Error(), "corral.nope") {
		t.Errorf("RunTests(unknown function) error %v, want a *CompileError naming it", err)
	}
}
