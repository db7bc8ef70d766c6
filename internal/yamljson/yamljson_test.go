package yamljson

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

func convert(t *testing.T, l Limits, doc string) (any, error) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatalf("parse %q: %v", doc, err)
	}
	return New(l).Convert(&n)
}

var roomy = Limits{MaxDepth: 64, MaxValues: 1000}

func TestConvert(t *testing.T) {
	got, err := convert(t, roomy, "a: 1\nb: [x, 2.5, true, null, 2024-01-02]\nc: &c {d: yes}\ne: *c\n")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"a": json.Number("1"),
		"b": []any{"x", json.Number("2.5"), true, nil, "2024-01-02"},
		"c": map[string]any{"d": "yes"},
		"e": map[string]any{"d": "yes"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Convert mismatch (-want +got):\n%s", diff)
	}
}

func TestConvertErrors(t *testing.T) {
	tests := []struct {
		name     string
		limits   Limits
		doc      string
		want     string
		tooLarge bool
	}{
		{"duplicate", roomy, "a: 1\nb:\n  c: 1\n  c: 2\n", "b.c: line 4: defined twice (first at line 3)", false},
		{"merge key", roomy, "a: &a {x: 1}\nb:\n  <<: *a\n", "b: line 3: merge keys (<<) are not supported; write the fields out", false},
		{"mapping key", roomy, "? [a]\n: 1\n", "line 1: field names must be strings", false},
		{"infinity", roomy, "a: [.inf]\n", "a[0]: line 1: must be a finite number, got +Inf", false},
		{"too deep", Limits{MaxDepth: 2, MaxValues: 100}, "a: {b: {c: 1}}\n", "a.b.c: nested deeper than 2 levels", true},
		{"too many values", Limits{MaxDepth: 9, MaxValues: 3}, "a: [1, 2, 3]\n", "a[0]: line 1: more than 3 values (an alias counts each time it is used)", true},
		{"alias bomb", Limits{MaxDepth: 9, MaxValues: 1000, MaxAliasedValues: 5}, "a: &a [1, 2, 3]\nb: [*a, *a]\n", "b[1][0]: line 1: aliases expand to more than 5 values (an alias counts each time it is used)", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := convert(t, tt.limits, tt.doc)
			var e *Error
			if !errors.As(err, &e) || err.Error() != tt.want || e.TooLarge != tt.tooLarge {
				t.Errorf("Convert(%q) = %v, want %q (too large: %v)", tt.doc, err, tt.want, tt.tooLarge)
			}
		})
	}
}

func TestBudgetSpansConversions(t *testing.T) {
	c := New(Limits{MaxDepth: 9, MaxValues: 8}) // 4 values a conversion: document, sequence, two items
	var n yaml.Node
	_ = yaml.Unmarshal([]byte("[1, 2]"), &n)
	for i := range 3 {
		_, err := c.Convert(&n)
		if (err != nil) != (i == 2) {
			t.Errorf("conversion %d: err = %v; want only the third to exceed the shared budget", i+1, err)
		}
	}
	if !c.Exhausted() {
		t.Error("Exhausted() = false after the budget ran out")
	}
}

func TestFieldPath(t *testing.T) {
	if got := FieldPath([]string{"spec", "tools", "[0]", "name"}); got != "spec.tools[0].name" {
		t.Errorf("FieldPath = %q", got)
	}
	if got := FieldPath(nil); got != "" {
		t.Errorf("FieldPath(nil) = %q, want empty", got)
	}
}
