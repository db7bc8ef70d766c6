package openapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBuild(t *testing.T) {
	tool := &Tool{
		Method: "POST",
		Path:   "/stores/{store}/orders/{ids}",
		Params: []Param{
			{Property: "store", In: InPath, Name: "store", Required: true, Style: "simple"},
			{Property: "ids", In: InPath, Name: "ids", Required: true, Style: "simple"},
			{Property: "tags", In: InQuery, Name: "tags", Style: "form", Explode: true},
			{Property: "pipes", In: InQuery, Name: "pipes", Style: "pipeDelimited"},
			{Property: "filter", In: InQuery, Name: "filter", Style: "deepObject", Explode: true},
			{Property: "limit", In: InQuery, Name: "limit", Style: "form", Explode: true},
			{Property: "trace", In: InHeader, Name: "X-Trace", Style: "simple"},
			{Property: "session", In: InCookie, Name: "session", Style: "form", Explode: true},
			{Property: "body", In: InBody, Required: true, MediaType: "application/json"},
		},
	}
	args := `{"store": "a b/c", "ids": [1, 2], "tags": ["x", "y"], "pipes": ["p", "q"], "filter": {"status": "open", "age": 3},
		"limit": 10, "trace": "t1", "session": "s=1", "body": {"qty": 2.5, "note": "<ok>"}}`
	got, err := Build(tool, "https://shop.example/api/", json.RawMessage(args))
	if err != nil {
		t.Fatal(err)
	}
	want := &Request{
		Method: "POST",
		URL:    "https://shop.example/api/stores/a%20b%2Fc/orders/1,2?filter%5Bage%5D=3&filter%5Bstatus%5D=open&limit=10&pipes=p%7Cq&tags=x&tags=y",
		Header: http.Header{"X-Trace": {"t1"}, "Cookie": {"session=s%3D1"}, "Content-Type": {"application/json"}},
		Body:   []byte(`{"note":"\u003cok\u003e","qty":2.5}`),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Build (-want +got):\n%s", diff)
	}

	if _, err := Build(tool, "http://x", json.RawMessage(`{"store": "s"}`)); !errors.Is(err, ErrArguments) {
		t.Errorf("Build without a required parameter: err = %v, want ErrArguments", err)
	}
	for _, seg := range []string{`".."`, `"."`, `""`} {
		if dots, err := Build(tool, "http://x", json.RawMessage(`{"store": `+seg+`, "ids": 1, "body": {}}`)); !errors.Is(err, ErrArguments) {
			t.Errorf("Build with path segment %s: %v, %v; want ErrArguments", seg, dots, err)
		}
	}
	if _, err := Build(tool, "http://x", json.RawMessage(`{"store": {"a": {"b": 1}}, "ids": 1, "body": 1}`)); !errors.Is(err, ErrArguments) {
		t.Errorf("Build with a nested object in a path parameter: err = %v, want ErrArguments", err)
	}
}

func TestBuildPetstore(t *testing.T) {
	data, err := os.ReadFile("testdata/petstore/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tools, err := Import("petstore", data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*Tool{}
	for i := range tools {
		byName[tools[i].Name] = &tools[i]
	}
	tests := []struct {
		tool, args string
		want       Request
	}{
		{"petstore.getPetById", `{"petId": 7}`, Request{Method: "GET", URL: "http://pets/api/v3/pet/7", Header: http.Header{}}},
		{"petstore.findPetsByStatus", `{"status": "sold"}`, Request{Method: "GET", URL: "http://pets/api/v3/pet/findByStatus?status=sold", Header: http.Header{}}},
		// api_key carries the document's apiKey security scheme: corral supplies
		// credentials, so it is not an argument and never reaches the request.
		{"petstore.deletePet", `{"petId": 7, "api_key": "k"}`, Request{Method: "DELETE", URL: "http://pets/api/v3/pet/7", Header: http.Header{}}},
	}
	for _, tt := range tests {
		tool := byName[tt.tool]
		if tool == nil {
			t.Fatalf("no tool %s", tt.tool)
		}
		got, err := Build(tool, "http://pets/api/v3", json.RawMessage(tt.args))
		if err != nil {
			t.Fatalf("Build(%s, %s): %v", tt.tool, tt.args, err)
		}
		if diff := cmp.Diff(&tt.want, got); diff != "" {
			t.Errorf("Build(%s, %s) (-want +got):\n%s", tt.tool, tt.args, diff)
		}
	}
	if got := Servers(data); len(got) != 1 || got[0] != "/v3" {
		t.Errorf("Servers(petstore) = %q, want [/v3]", got)
	}
}

// FuzzBuild checks that Build never panics and never produces a URL outside
// the base URL's path, for any parameter layout and arguments.
func FuzzBuild(f *testing.F) {
	f.Add("/a/{x}", "x", "path", "simple", false, `{"x": "../../etc"}`)
	f.Add("/a/{x}", "x", "path", "simple", false, `{"x": ".."}`)
	f.Add("/q", "q", "query", "deepObject", true, `{"q": {"a": [1]}}`)
	f.Add("/b", "body", "body", "", false, `{"body": "text"}`)
	f.Fuzz(func(t *testing.T, path, name, in, style string, explode bool, args string) {
		tool := &Tool{Method: "GET", Path: "/" + path, Params: []Param{{Property: name, In: in, Name: name, Style: style, Explode: explode, MediaType: "application/json"}}}
		req, err := Build(tool, "http://h/base", json.RawMessage(args))
		if err != nil {
			return
		}
		if len(req.URL) < len("http://h/base/") || req.URL[:len("http://h/base/")] != "http://h/base/" {
			t.Errorf("Build(%q, %q) URL %q escapes the base URL", tool.Path, args, req.URL)
		}
	})
}
