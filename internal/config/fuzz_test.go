package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzDecode feeds the resource decoder arbitrary bytes. It must never panic,
// and whatever it accepts must survive a round trip: the stored JSON form of an
// accepted resource decodes again to the same content.
func FuzzDecode(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/decode/*.*")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, tt := range syntaxTests {
		f.Add([]byte(tt.yaml))
	}
	f.Add([]byte("a: &a [*a]"))
	f.Add([]byte("kind: Agent\nmetadata: {name: x}\nspec: {description: !!binary aGVsbG8=}"))
	f.Add([]byte(strings.Repeat("---\n"+aliasBomb, 3)))
	f.Add([]byte(strings.Repeat("x\n---\n", 150)))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := Decode("fuzz.yaml", data)
		if err != nil {
			es, ok := err.(Errors)
			if !ok {
				t.Fatalf("Decode error of type %T, want Errors: %v", err, err)
			}
			if len(es) > maxTotalProblems+1 {
				t.Fatalf("Decode reported %d problems, want at most %d", len(es), maxTotalProblems+1)
			}
			return
		}
		for _, d := range docs {
			stored, err := json.Marshal(d.Resource)
			if err != nil {
				t.Fatalf("marshal accepted resource: %v", err)
			}
			again, problems := DecodeJSON(stored)
			if len(problems) > 0 {
				t.Fatalf("stored form %s of an accepted resource is invalid: %v", stored, problems)
			}
			if !again.SameContent(d.Resource) {
				t.Fatalf("round trip changed %s into %s", stored, mustJSON(again))
			}
		}
	})
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
