package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"
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
			name: "agent identities",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a"},"spec":{"keys":"disabled","workloads":[{"issuer":"k8s","subject":"system:serviceaccount:ns:*"}],"certificates":[{"uri":"spiffe://corp.example/a"},{"subject":"CN=a,O=Corp"}]}}`,
		},
		{
			name: "agent identities that match anything or nothing",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a"},"spec":{"workloads":[{"subject":"**"}],"certificates":[{},{"uri":"spiffe://x","subject":"CN=x"},{"uri":"*"}]}}`,
			want: []string{
				"Agent/a: spec.certificates[0]: set exactly one of uri and subject",
				"Agent/a: spec.certificates[1]: set exactly one of uri and subject",
				"Agent/a: spec.certificates[2]: must name a certificate, not match every one",
				"Agent/a: spec.workloads[0].subject: must name a subject, not match every one",
			},
		},
		{
			name: "keys neither enabled nor disabled",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a"},"spec":{"keys":"off"}}`,
			want: []string{`Agent/a: spec.keys: must be one of "enabled", "disabled"`},
		},
		{
			name: "kind is lenient for people, strict in documents",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"agents","metadata":{"name":"a"},"spec":{}}`,
			want: []string{`agents/a: kind: unknown kind "agents" (known kinds: Agent, ToolSource, Secret, Policy, Issuer, Model, Budget, RateLimit, Notifier, Workflow, Trigger)`},
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
			name: "label and schema problems together",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a","labels":{"bad key!":"x","ok":1}}}`,
			want: []string{
				`Agent/a: metadata.labels: invalid key "bad key!": use letters, digits, '-', '_' and '.', at most 63, starting and ending with a letter or digit, after an optional DNS-style prefix and '/'`,
				"Agent/a: metadata.labels.ok: must be string, got number",
				"Agent/a: spec: required",
			},
		},
		{
			name: "64 labels",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a","labels":` + labelsJSON(64) + `},"spec":{}}`,
		},
		{
			name: "65 labels",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a","labels":` + labelsJSON(65) + `},"spec":{}}`,
			want: []string{"Agent/a: metadata.labels: must have at most 64 entries, got 65"},
		},
		{
			name: "problems capped per document",
			doc:  `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a"},"spec":` + labelsJSON(maxProblems+5) + `}`,
			want: append(unknownSpecFields(maxProblems), "Agent/a: and 5 more problems"),
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

// labelsJSON is a JSON object of n entries, "l00": "v" and so on.
func labelsJSON(n int) string {
	entries := make([]string, n)
	for i := range entries {
		entries[i] = fmt.Sprintf(`"l%02d":"v"`, i)
	}
	return "{" + strings.Join(entries, ",") + "}"
}

// unknownSpecFields are the problems of a spec holding labelsJSON(n) or more.
func unknownSpecFields(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("Agent/a: spec.l%02d: unknown field", i)
	}
	return out
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

// aliasBomb is a document whose aliases expand to 90,123 values: under the
// value budget on its own, over it twice.
const aliasBomb = `a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: [*d, *d, *d, *d, *d, *d, *d]
`

// TestDecodeBudgetCoversStream checks that the value budget is spent across
// documents: a stream of documents that each stay just under it must not
// cost the server one budget per document.
func TestDecodeBudgetCoversStream(t *testing.T) {
	_, err := Decode("bomb.yaml", []byte(strings.Repeat("---\n"+aliasBomb, 3)))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("Decode(3 alias bombs) error = %v, want Errors", err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Error())
	}
	want := []string{
		"bomb.yaml: document 1: kind: required",
		// Document 2 runs out inside its c, at an alias written on line 9
		// (in b), and document 3 is not read.
		"bomb.yaml: document 2: c[6][0]: line 9: more than 100000 values (an alias counts each time it is used)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Decode(3 alias bombs) problems mismatch (-want +got):\n%s", diff)
	}
}

func agentDocs(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "---\napiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: a%d}\nspec: {}\n", i)
	}
	return b.String()
}

func TestDecodeDocumentLimit(t *testing.T) {
	docs, err := Decode("many.yaml", []byte(agentDocs(maxDocuments)+"---\n---\n"))
	if err != nil || len(docs) != maxDocuments {
		t.Fatalf("Decode(%d documents and empty ones) = %d documents, %v; want all of them", maxDocuments, len(docs), err)
	}
	_, err = Decode("many.yaml", []byte(agentDocs(maxDocuments+2)))
	want := Errors{{Source: "many.yaml", Document: maxDocuments + 1, Message: "the file holds more than 1000 documents; split it"}}
	if diff := cmp.Diff(error(want), err); diff != "" {
		t.Errorf("Decode(%d documents) mismatch (-want +got):\n%s", maxDocuments+2, diff)
	}
}

// TestDecodeCapsProblems checks that a stream of many bad documents yields a
// bounded report, from Decode and from Load across files.
func TestDecodeCapsProblems(t *testing.T) {
	notResources := func(n int) []byte { return []byte(strings.Repeat("x\n---\n", n)) }
	const notMapping = "a resource must be a mapping with apiVersion, kind, metadata and spec, got string"

	_, err := Decode("x.yaml", notResources(300))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("Decode(300 strings) error = %v, want Errors", err)
	}
	if len(es) != maxTotalProblems+1 {
		t.Fatalf("Decode(300 strings) = %d problems, want %d", len(es), maxTotalProblems+1)
	}
	wantFirst := FieldError{Source: "x.yaml", Document: 1, Message: notMapping}
	wantLast := FieldError{Message: "and 200 more problems"}
	if es[0] != wantFirst || es[maxTotalProblems] != wantLast {
		t.Errorf("Decode(300 strings) = [%v ... %v], want [%v ... %v]", es[0], es[maxTotalProblems], wantFirst, wantLast)
	}

	dir := t.TempDir()
	for _, name := range []string{"a.yaml", "b.yaml"} {
		if err := os.WriteFile(filepath.Join(dir, name), notResources(60), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err = Load([]string{dir}, nil)
	if !errors.As(err, &es) {
		t.Fatalf("Load(2 files of 60 strings) error = %v, want Errors", err)
	}
	want := []FieldError{
		{Source: filepath.Join(dir, "b.yaml"), Document: 40, Message: notMapping},
		{Message: "and 20 more problems"},
	}
	if len(es) != maxTotalProblems+1 {
		t.Fatalf("Load(2 files of 60 strings) = %d problems, want %d", len(es), maxTotalProblems+1)
	}
	if diff := cmp.Diff(want, []FieldError(es[maxTotalProblems-1:])); diff != "" {
		t.Errorf("Load(2 files of 60 strings) last problems mismatch (-want +got):\n%s", diff)
	}
}

func TestValidateSizeLimit(t *testing.T) {
	doc := `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a","revision":7},"spec":{"description":"` + strings.Repeat("x", 1000) + `"}}`
	value, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	res, problems := Validate(value)
	if len(problems) > 0 {
		t.Fatalf("Validate(%s) problems = %v, want none", doc, problems)
	}
	stored, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	size := len(stored)
	if _, problems := validate(value, size); len(problems) > 0 {
		t.Errorf("validate(resource of %d bytes, at most %d) = %v, want no problems", size, size, problems)
	}
	_, problems = validate(value, size-1)
	want := []FieldError{{Resource: "Agent/a", Message: fmt.Sprintf("the resource is %d bytes; at most %d", size, size-1)}}
	if diff := cmp.Diff(want, problems); diff != "" {
		t.Errorf("validate(resource of %d bytes, at most %d) mismatch (-want +got):\n%s", size, size-1, diff)
	}
}
