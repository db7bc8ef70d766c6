package openapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"slices"
	"strings"
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
	args := `{"store": "a b:c@d", "ids": [1, 2], "tags": ["x", "y"], "pipes": ["p", "q"], "filter": {"status": "open", "age": 3},
		"limit": 10, "trace": "t1", "session": "s=1", "body": {"qty": 2.5, "note": "<ok>"}}`
	got, err := Build(tool, "https://shop.example/api/", json.RawMessage(args))
	if err != nil {
		t.Fatal(err)
	}
	want := &Request{
		Method: "POST",
		URL:    "https://shop.example/api/stores/a%20b:c@d/orders/1,2?filter%5Bage%5D=3&filter%5Bstatus%5D=open&limit=10&pipes=p%7Cq&tags=x&tags=y",
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

// TestBuildRefuses covers the arguments Build must not turn into a request:
// reserved characters in path parameters, exploded object keys that would
// repeat a declared query parameter.
func TestBuildRefuses(t *testing.T) {
	tool := &Tool{
		Method: "GET",
		Path:   "/accounts/{id}/items",
		Params: []Param{
			{Property: "id", In: InPath, Name: "id", Required: true, Style: "simple"},
			{Property: "account", In: InQuery, Name: "account", Style: "form", Explode: true},
			{Property: "filter", In: InQuery, Name: "filter", Style: "form", Explode: true},
			{Property: "extra", In: InQuery, Name: "extra", Style: "form", Explode: true},
		},
	}
	tests := []struct {
		name, args, want string
	}{
		{"slash", `{"id": "a/b"}`, "may not hold '/'"},
		{"encoded slash", `{"id": "a%2Fb"}`, "may not hold '%'"},
		{"backslash", `{"id": "..\\x"}`, `may not hold '\\'`},
		{"query", `{"id": "a?admin=1"}`, "may not hold '?'"},
		{"fragment", `{"id": "a#b"}`, "may not hold '#'"},
		{"matrix", `{"id": "a;jsessionid=1"}`, "may not hold ';'"},
		{"control", `{"id": "a\u0000"}`, "may not hold '\\x00'"},
		{"array item", `{"id": ["a", "b/c"]}`, "may not hold '/'"},
		{"exploded key takes a declared parameter", `{"id": "1", "account": "mine", "filter": {"account": "victim"}}`, `the key "account" of filter collides`},
		{"declared parameter after the object", `{"id": "1", "filter": {"account": "victim"}}`, `the key "account" of filter collides`},
		{"two objects share a key", `{"id": "1", "filter": {"x": "1"}, "extra": {"x": "2"}}`, `the key "x" of extra collides`},
		// Finding 6: keys an upstream reads as another parameter.
		{"exploded key in another case", `{"id": "1", "account": "mine", "filter": {"Account": "victim"}}`, `the key "Account" of filter collides`},
		{"exploded key, case, object first", `{"id": "1", "filter": {"ACCOUNT": "victim"}}`, `the key "ACCOUNT" of filter collides`},
		{"exploded key as a PHP array", `{"id": "1", "account": "mine", "filter": {"account[]": "victim"}}`, `may hold only letters`},
		{"exploded key as a deepObject field", `{"id": "1", "filter": {"deep[account]": "victim"}}`, `may hold only letters`},
		{"exploded key with a trailing space", `{"id": "1", "filter": {"account ": "victim"}}`, `may hold only letters`},
		{"exploded key empty", `{"id": "1", "filter": {"": "victim"}}`, `may hold only letters`},
		{"two objects share a key in other cases", `{"id": "1", "filter": {"x": "1"}, "extra": {"X": "2"}}`, `the key "X" of extra collides`},
		// Finding 13: look-alikes of / and . that normalise to them.
		{"division slash", `{"id": "a\u2215b"}`, "may not hold '∕'"},
		{"fullwidth solidus", `{"id": "a\uff0fb"}`, "may not hold '／'"},
		{"fraction slash", `{"id": "a\u2044b"}`, "may not hold '⁄'"},
		{"fullwidth reverse solidus", `{"id": "a\uff3cb"}`, "may not hold '＼'"},
		{"fullwidth dots", `{"id": "\uff0e\uff0e"}`, "may not hold '．'"},
		{"two-dot leader", `{"id": "\u2025"}`, "may not hold '‥'"},
		{"dot segment and a space", `{"id": ".. "}`, "may not be"},
		{"space and a dot segment", `{"id": " .."}`, "may not be"},
		{"blank", `{"id": "  "}`, "may not be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := Build(tool, "http://x", json.RawMessage(tt.args))
			if !errors.Is(err, ErrArguments) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build(%s) = %v, %v; want ErrArguments saying %q", tt.args, req, err, tt.want)
			}
		})
	}
	// What stays allowed: other non-ASCII letters, dots inside a segment,
	// plain keys of an exploded object.
	req, err := Build(tool, "http://x", json.RawMessage(`{"id": "résumé v1.2 ½", "account": "mine", "filter": {"status_x.y-Z": "1"}}`))
	if err != nil || req.URL != "http://x/accounts/r%C3%A9sum%C3%A9%20v1.2%20%C2%BD/items?account=mine&status_x.y-Z=1" {
		t.Errorf("Build with plain values = %v, %v", req, err)
	}
	allowed := *tool
	allowed.Params = slices.Clone(tool.Params)
	allowed.Params[0].AllowReserved = true
	req, err = Build(&allowed, "http://x", json.RawMessage(`{"id": "a/b"}`))
	if err != nil || req.URL != "http://x/accounts/a%2Fb/items" {
		t.Errorf("Build with allowReserved = %v, %v; want http://x/accounts/a%%2Fb/items", req, err)
	}
}

// TestBuildFlatBody: a flattened body's fields, wherever they sit among the
// arguments, are sent as one body in the operation's media type.
func TestBuildFlatBody(t *testing.T) {
	fields := func(mediaType string, bodyRequired bool) []Param {
		return []Param{
			{Property: "id", In: InPath, Name: "id", Required: true, Style: "simple"},
			{Property: "amount", In: InBody, Name: "amount", MediaType: mediaType, BodyRequired: bodyRequired},
			{Property: "id_body", In: InBody, Name: "id", MediaType: mediaType, BodyRequired: bodyRequired},
			{Property: "tags", In: InBody, Name: "tags", MediaType: mediaType, BodyRequired: bodyRequired},
		}
	}
	tests := []struct {
		name, mediaType string
		bodyRequired    bool
		args            string
		wantBody        string
		wantType        string
	}{
		{"json", "application/json", true, `{"id": "7", "amount": 5000, "id_body": "b", "tags": ["x"]}`, `{"amount":5000,"id":"b","tags":["x"]}`, "application/json"},
		{"required body, no fields", "application/json", true, `{"id": "7"}`, `{}`, "application/json"},
		{"optional body, no fields", "application/json", false, `{"id": "7"}`, ``, ""},
		{"form", "application/x-www-form-urlencoded", false, `{"id": "7", "amount": 1, "tags": ["x"]}`, `amount=1&tags=%5B%22x%22%5D`, "application/x-www-form-urlencoded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := Build(&Tool{Method: "POST", Path: "/t/{id}", Params: fields(tt.mediaType, tt.bodyRequired)}, "http://x", json.RawMessage(tt.args))
			if err != nil {
				t.Fatal(err)
			}
			if string(req.Body) != tt.wantBody || req.Header.Get("Content-Type") != tt.wantType {
				t.Errorf("Build(%s) body %q type %q, want %q type %q", tt.args, req.Body, req.Header.Get("Content-Type"), tt.wantBody, tt.wantType)
			}
		})
	}
}

// TestBuildMultipart: a multipart/form-data body goes as multipart, with
// its boundary in the Content-Type, one part per field.
func TestBuildMultipart(t *testing.T) {
	tool := &Tool{Method: "POST", Path: "/upload", Params: []Param{
		{Property: "name", In: InBody, Name: "name", MediaType: "multipart/form-data", BodyRequired: true},
		{Property: "meta", In: InBody, Name: "meta", MediaType: "multipart/form-data", BodyRequired: true},
	}}
	req, err := Build(tool, "http://x", json.RawMessage(`{"name": "a.txt", "meta": {"k": 1}}`))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		t.Fatalf("Content-Type %q: %v; want multipart/form-data with a boundary", req.Header.Get("Content-Type"), err)
	}
	r := multipart.NewReader(bytes.NewReader(req.Body), params["boundary"])
	got := map[string]string{}
	for {
		part, err := r.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(part)
		got[part.FormName()+" "+part.Header.Get("Content-Type")] = string(b)
	}
	want := map[string]string{"name ": "a.txt", "meta application/json": `{"k":1}`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("multipart parts (-want +got):\n%s", diff)
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
	f.Add("/a/{x}", "x", "path", "simple", true, `{"x": {"k/": "v%2F"}}`)
	f.Add("/q", "q", "query", "form", true, `{"q": {"q": "1"}}`)
	f.Fuzz(func(t *testing.T, path, name, in, style string, explode bool, args string) {
		tool := &Tool{Method: "GET", Path: "/" + path, Params: []Param{{Property: name, In: in, Name: name, Style: style, Explode: explode, MediaType: "application/json"}}}
		req, err := Build(tool, "http://h/base", json.RawMessage(args))
		if err != nil {
			return
		}
		if len(req.URL) < len("http://h/base/") || req.URL[:len("http://h/base/")] != "http://h/base/" {
			t.Errorf("Build(%q, %q) URL %q escapes the base URL", tool.Path, args, req.URL)
		}
		if in == InPath && strings.Contains(tool.Path, "{"+name+"}") {
			for _, enc := range []string{"%2F", "%3F", "%23", "%25", "%5C", "%3B"} {
				if strings.Contains(req.URL, enc) && !strings.Contains(tool.Path, enc) {
					t.Errorf("Build(%q, %q) URL %q carries %s from a path parameter", tool.Path, args, req.URL, enc)
				}
			}
		}
	})
}

// TestFlatBodyEdgeCases: bodies that are not flattened stay "body", and a
// flattened body round-trips through Build.
func TestFlatBodyEdgeCases(t *testing.T) {
	doc := func(schema string) []byte {
		return []byte(`{"openapi": "3.1.0", "paths": {"/x/{id}": {"post": {"operationId": "op",
			"parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
			"requestBody": {"content": {"application/json": {"schema": ` + schema + `}}}, "responses": {}}}}}`)
	}
	tests := []struct {
		name, schema string
		want         []string // the tool's properties, sorted
	}{
		{"object", `{"type": "object", "properties": {"id": {"type": "string"}, "amount": {"type": "number"}}}`, []string{"amount", "id", "id_body"}},
		{"array", `{"type": "array", "items": {"type": "string"}}`, []string{"body", "id"}},
		{"map", `{"type": "object", "additionalProperties": {"type": "string"}}`, []string{"body", "id"}},
		{"oneOf", `{"oneOf": [{"type": "object", "properties": {"a": {}}}, {"type": "string"}]}`, []string{"body", "id"}},
		{"minProperties", `{"type": "object", "minProperties": 1, "properties": {"a": {}}}`, []string{"body", "id"}},
		{"empty field name", `{"type": "object", "properties": {"": {}}}`, []string{"body", "id"}},
		{"no schema", `{}`, []string{"body", "id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tools, err := Import("s", doc(tt.schema), Options{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range tools[0].Params {
				got = append(got, p.Property)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("properties = %v, want %v", got, tt.want)
			}
		})
	}
}
