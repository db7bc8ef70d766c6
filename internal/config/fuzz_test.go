package config

import (
	"encoding/json"
	"os"
	"path/filepath"
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
	f.Add([]byte("a: &a [*a]"))
	f.Add([]byte("kind: Agent\nmetadata: {name: x}\nspec: {description: !!binary aGVsbG8=}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := Decode("fuzz.yaml", data)
		if err != nil {
			if _, ok := err.(Errors); !ok {
				t.Fatalf("Decode error of type %T, want Errors: %v", err, err)
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
