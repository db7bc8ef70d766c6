package orchestrator

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The examples of RFC 7386, appendix A, and a few of corral's own.
func TestMergePatch(t *testing.T) {
	tests := []struct{ doc, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`["a","b"]`, `["c","d"]`, `["c","d"]`},
		{`{"a":"b"}`, `["c"]`, `["c"]`},
		{`{"a":"foo"}`, `null`, `null`},
		{`{"a":"foo"}`, `"bar"`, `"bar"`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
		{``, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
		{`{"n":12345678901234567890}`, `{"m":0.1}`, `{"m":0.1,"n":12345678901234567890}`},
		{`{"städte":["Zürich"]}`, `{"städte":["Zürich","Kraków"],"注":"ok"}`, `{"städte":["Zürich","Kraków"],"注":"ok"}`},
	}
	for _, tt := range tests {
		got, err := MergePatch([]byte(tt.doc), []byte(tt.patch))
		if err != nil || !sameJSON(t, string(got), tt.want) {
			t.Errorf("MergePatch(%s, %s) = %s, %v, want %s", tt.doc, tt.patch, got, err, tt.want)
		}
	}
	for _, bad := range []string{``, `{`, `{"a":1} {"b":2}`, strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat(`}`, 100)} {
		if got, err := MergePatch([]byte(`{}`), []byte(bad)); err == nil {
			t.Errorf("MergePatch({}, %.40s) = %s, want an error", bad, got)
		}
	}
}

// sameJSON compares two documents as JSON values, numbers by their text:
// a number no float64 holds (a 300-digit one) is still JSON, kept as sent.
func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	decode := func(s string) (any, bool) {
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		var v any
		return v, dec.Decode(&v) == nil
	}
	x, okA := decode(a)
	y, okB := decode(b)
	return okA && okB && reflect.DeepEqual(x, y)
}

// FuzzMergePatch: any document and patch are merged or refused, never a
// panic; a merge patch applied twice changes nothing more (RFC 7386 patches
// are idempotent, which lets a resumed step apply its patch again).
func FuzzMergePatch(f *testing.F) {
	f.Add([]byte(`{"a":{"b":1}}`), []byte(`{"a":{"b":null,"c":[1]}}`))
	f.Add([]byte(``), []byte(`null`))
	f.Add([]byte(`[1]`), []byte(`{"x":{"y":{"z":"ü"}}}`))
	f.Fuzz(func(t *testing.T, doc, patch []byte) {
		once, err := MergePatch(doc, patch)
		if err != nil {
			return
		}
		twice, err := MergePatch(once, patch)
		if err != nil {
			t.Fatalf("a patch that applied once fails on its own result: %v", err)
		}
		if !sameJSON(t, string(once), string(twice)) {
			t.Fatalf("not idempotent: %s then %s", once, twice)
		}
	})
}
