package pipeline

import (
	"bytes"
	"encoding/json"
	"testing"
)

// requestDigests are requests that are the same as another written
// otherwise (same), or another request (other).
var requestDigests = []struct {
	name, a, b string
	same       bool
}{
	{"key order", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, `{"messages":[{"content":"hi","role":"user"}],"model":"m"}`, true},
	{"space", `{"model":"m","n":1}`, "{ \"model\" : \"m\",\n\t\"n\" : 1 }\n", true},
	{"nested key order", `{"tools":[{"function":{"parameters":{"b":1,"a":2}}}]}`, `{"tools":[{"function":{"parameters":{"a":2,"b":1}}}]}`, true},
	{"escapes", `{"s":"<é>"}`, `{"s":"\u003c\u00e9\u003e"}`, true},
	{"other content", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, `{"model":"m","messages":[{"role":"user","content":"ho"}]}`, false},
	{"stream", `{"model":"m","stream":true}`, `{"model":"m"}`, false},
	{"list order", `{"stop":["a","b"]}`, `{"stop":["b","a"]}`, false},
	// Numbers are compared as written: 1 and 1.0 may mean other things to
	// a provider (an integer parameter), and no SDK rewrites them on a retry.
	{"number text", `{"n":1}`, `{"n":1.0}`, false},
	{"big number", `{"seed":12345678901234567890123}`, `{"seed":12345678901234567890124}`, false},
}

func TestRequestDigest(t *testing.T) {
	for _, tc := range requestDigests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := RequestDigest(opChat, "openai", []byte(tc.a))
			if err != nil {
				t.Fatal(err)
			}
			b, err := RequestDigest(opChat, "openai", []byte(tc.b))
			if err != nil {
				t.Fatal(err)
			}
			if (a == b) != tc.same {
				t.Errorf("RequestDigest(%s) == RequestDigest(%s) is %v, want %v", tc.a, tc.b, a == b, tc.same)
			}
		})
	}
	body := []byte(`{"model":"m","input":"hi"}`)
	chat, _ := RequestDigest(opChat, "openai", body)
	responses, _ := RequestDigest(opChat, "responses", body)
	embeddings, _ := RequestDigest(opEmbeddings, "openai", body)
	if chat == responses || chat == embeddings {
		t.Errorf("the same body has the same digest on two endpoints: %s %s %s", chat, responses, embeddings)
	}
	for _, bad := range []string{``, `{`, `{"a":1} {"a":1}`, `{"a":1}x`} {
		if d, err := RequestDigest(opChat, "openai", []byte(bad)); err == nil {
			t.Errorf("RequestDigest(%q) = %s, want an error", bad, d)
		}
	}
}

// FuzzRequestDigest: a body is refused or has one digest however it is
// laid out: indented, or re-encoded with its keys sorted.
func FuzzRequestDigest(f *testing.F) {
	for _, tc := range requestDigests {
		f.Add(tc.a)
		f.Add(tc.b)
	}
	f.Add(`{"a":[1,2,{"b":null,"c":true}],"d":"\ud800"}`)
	f.Add(`"x"`)
	f.Fuzz(func(t *testing.T, body string) {
		d, err := RequestDigest(opChat, "openai", []byte(body))
		if err != nil {
			return
		}
		var indented bytes.Buffer
		if err := json.Indent(&indented, []byte(body), " ", "\t"); err != nil {
			t.Fatalf("RequestDigest(%q) took a body json.Indent refuses: %v", body, err)
		}
		if d2, err := RequestDigest(opChat, "openai", indented.Bytes()); err != nil || d2 != d {
			t.Fatalf("RequestDigest(%q) = %s, but %s indented = %s, %v", body, d, indented.String(), d2, err)
		}
		canonical, err := canonicalJSON([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if d3, err := RequestDigest(opChat, "openai", canonical); err != nil || d3 != d {
			t.Fatalf("RequestDigest(%q) = %s, but its canonical form %s has %s, %v", body, d, canonical, d3, err)
		}
	})
}
