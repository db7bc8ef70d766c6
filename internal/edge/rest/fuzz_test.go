package rest

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/problem"
)

// FuzzDecodeBody: decodeBody never panics, and refuses with a 4xx problem
// anything but one JSON object sent as application/json.
func FuzzDecodeBody(f *testing.F) {
	for _, seed := range [][2]string{
		{"application/json", `{"arguments": {"id": 1}}`},
		{"application/json; charset=utf-8", `{"arguments": {}}`},
		{"application/jsonx", `{"arguments": {}}`},
		{"application/json", `{"arguments": {}} {}`},
		{"application/json", `{"arguments": {}}x`},
		{"", ""},
		{"text/plain", "hello"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, contentType, body string) {
		r := httptest.NewRequest("POST", "/v1/tools/x/invoke", strings.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		var req InvokeRequest
		err := decodeBody(httptest.NewRecorder(), r, &req)
		if err == nil {
			return
		}
		var pe *problem.Error
		if !errors.As(err, &pe) || pe.Status < 400 || pe.Status > 499 {
			t.Fatalf("decodeBody(%q, %q) = %v, want a 4xx problem", contentType, body, err)
		}
	})
}
