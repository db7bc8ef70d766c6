package demo

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/corral-dev/corral/internal/openapi"
)

// TestLogisticsMatchesItsSpec keeps the mock and its document in step: every
// operation imports as a tool and answers as the document says.
func TestLogisticsMatchesItsSpec(t *testing.T) {
	tools, err := openapi.Import("logistics", LogisticsSpec, openapi.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(tools) != 3 {
		t.Fatalf("Import(logistics) = %d tools, want 3", len(tools))
	}
	srv := httptest.NewServer(NewLogistics())
	defer srv.Close()
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/shipments/delayed?min_hours=24", 200},
		{"GET", "/orders/ORD-1001", 200},
		{"GET", "/orders/ORD-9999", 404},
		{"DELETE", "/orders/ORD-1003", 204},
	} {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
		}
	}
}
