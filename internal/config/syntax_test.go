package config

import (
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// syntaxTests are YAML streams with one syntax error each, and the message
// Decode gives for it after "malformed YAML: ". FuzzDecode starts from them too.
var syntaxTests = []struct {
	name string
	yaml string
	want string
}{
	{
		name: "bad indentation in a later document",
		yaml: "kind: Agent\n---\nkind: Agent\nmetadata:\n  name: broken\n spec: {}\n",
		want: "line 6: did not find expected key in the mapping that starts at line 3",
	},
	{
		name: "bad indentation, mapping on the first line",
		yaml: "a: 1\nb:\n  c: 2\n d: 3\n",
		want: "line 4: did not find expected key in the mapping that starts at line 1",
	},
	{
		name: "bad indentation after comments",
		yaml: "# one\n# two\n\n---\nkind: x\nspec:\n  a: 1\n b: 2\n",
		want: "line 8: did not find expected key in the mapping that starts at line 5",
	},
	{
		name: "third document",
		yaml: "a: 1\n---\nb: 1\n---\nc:\n  d: 1\n  e: 2\n f: 3\n",
		want: "line 8: did not find expected key in the mapping that starts at line 5",
	},
	{
		name: "CR LF line breaks",
		yaml: "a: 1\r\nb:\r\n  c: 2\r\n d: 3\r\n",
		want: "line 4: did not find expected key in the mapping that starts at line 1",
	},
	{
		name: "CR line breaks",
		yaml: "x: 0\r---\ra: 1\rb:\r  c: 2\r d: 3\r",
		want: "line 6: did not find expected key in the mapping that starts at line 3",
	},
	{
		name: "byte order mark",
		yaml: "\ufeffa: 1\nb:\n  c: 2\n d: 3\n",
		want: "line 4: did not find expected key in the mapping that starts at line 1",
	},
	{
		name: "mapping where a sequence item belongs",
		yaml: "- a\n- b\nc: 1\n",
		want: "line 3: did not find expected '-' indicator in the sequence that starts at line 1",
	},
	{
		name: "nested sequence",
		yaml: "- a: 1\n  b:\n    - x\n    - y\n    z: 1\n",
		want: "line 5: did not find expected '-' indicator in the sequence that starts at line 3",
	},
	{
		name: "flow mapping never closed",
		yaml: "a: 1\nb: {c: 1,\n d: 2\n",
		want: "line 4: did not find expected ',' or '}' in the mapping that starts at line 2",
	},
	{
		name: "flow sequence missing a comma",
		yaml: "a: 1\nb: [1, 2\n  c: 3]\n",
		want: "line 3: did not find expected ',' or ']' in the sequence that starts at line 2",
	},
	{
		name: "flow mapping that starts inside a flow sequence on an earlier line",
		yaml: "x: [1,\n  2, {a: 1\n  b: 2]\n",
		want: "did not find expected ',' or '}' in the mapping that starts at line 2",
	},
	{
		name: "parser error on the first line",
		yaml: "{a: 1 b: 2}\n",
		want: "line 1: did not find expected ',' or '}'",
	},
	{
		name: "no value",
		yaml: "a: 1\nb: ]\n",
		want: "line 2: did not find expected node content",
	},
	{
		name: "undefined tag handle",
		yaml: "a: 1\nb: !x!y 2\n",
		want: "line 2: found undefined tag handle",
	},
	{
		name: "content after the document end",
		yaml: "a: 1\n...\nb\nc: 1\n",
		want: "line 4: mapping values are not allowed in this context",
	},
	{
		name: "duplicate directive",
		yaml: "%YAML 1.1\n%YAML 1.1\n---\na: 1\n",
		want: "line 2: found duplicate %YAML directive",
	},
	{
		name: "scanner error on the first line",
		yaml: "a: b: c\n",
		want: "line 1: mapping values are not allowed in this context",
	},
	{
		name: "scanner error",
		yaml: "a: 1\nb: c: d\n",
		want: "line 2: mapping values are not allowed in this context",
	},
	{
		name: "tab",
		yaml: "a: 1\nb:\n\t- x\n",
		want: "line 3: found character that cannot start any token",
	},
	{
		name: "quote never closed",
		yaml: "a: 1\nb: \"abc\nc: 2\n",
		want: "line 4: found unexpected end of stream in the quoted string that starts at line 2",
	},
	{
		name: "tab in a block scalar",
		yaml: "a: |\n  x\n\ty\n",
		want: "line 3: found a tab character where an indentation space is expected in the block scalar that starts at line 1",
	},
	{
		name: "key without a colon",
		yaml: "a: 1\nb\nc: 2\n",
		want: "could not find expected ':' in the key that starts at line 2",
	},
	{
		name: "invalid UTF-8",
		yaml: "a: \xff\n",
		want: "invalid leading UTF-8 octet",
	},
	{
		name: "unknown anchor",
		yaml: "a: 1\nb: *x\n",
		want: "unknown anchor 'x' referenced",
	},
}

func TestSyntaxErrorLines(t *testing.T) {
	for _, tt := range syntaxTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode("a.yaml", []byte(tt.yaml))
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("Decode(%q) error = %v, want Errors", tt.yaml, err)
			}
			last := es[len(es)-1]
			got, ok := strings.CutPrefix(last.Message, "malformed YAML: ")
			if !ok {
				t.Fatalf("Decode(%q) last problem = %v, want a syntax error", tt.yaml, last)
			}
			if got != tt.want {
				t.Errorf("Decode(%q) syntax error = %q, want %q", tt.yaml, got, tt.want)
			}
		})
	}
}

// TestYAMLSyntaxErrorLines pins what syntaxMessage works around: yaml.v3
// reports a parser error at the 0-based line where the enclosing mapping
// starts, or at the 0-based line of the bad token when the mapping starts on
// the first line. If this fails after upgrading yaml.v3, revisit syntax.go.
func TestYAMLSyntaxErrorLines(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"x: 1\n---\na: 1\nb:\n  c: 2\n d: 3\n", "yaml: line 2: did not find expected key"},
		{"a: 1\nb:\n  c: 2\n d: 3\n", "yaml: line 3: did not find expected key"},
		{"a: 1\nb: c: d\n", "yaml: line 2: mapping values are not allowed in this context"},
	}
	for _, tt := range tests {
		var node yaml.Node
		dec := yaml.NewDecoder(strings.NewReader(tt.yaml))
		err := dec.Decode(&node)
		for err == nil {
			err = dec.Decode(&node)
		}
		if err.Error() != tt.want {
			t.Errorf("yaml.v3 Decode(%q) error = %q, want %q", tt.yaml, err, tt.want)
		}
	}
}
