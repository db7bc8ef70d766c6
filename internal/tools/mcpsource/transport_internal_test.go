package mcpsource

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// TestCredentialsOnlyToTheEndpoint: a redirect to another host gets neither
// the configured headers nor the credentials.
func TestCredentialsOnlyToTheEndpoint(t *testing.T) {
	var got http.Header
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	defer other.Close()
	rt := &authRoundTripper{base: http.DefaultTransport, host: "mcp.internal:443", headers: map[string]string{"X-Tenant": "acme"}}
	req, _ := http.NewRequest("GET", other.URL, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got.Get("X-Tenant") != "" {
		t.Errorf("a request to another host carried the configured headers")
	}
}

// TestStdioEnvironmentIsMinimal: a server started over stdio does not see
// corral's own environment beyond what programs need.
func TestStdioEnvironmentIsMinimal(t *testing.T) {
	t.Setenv("ERP_TOKEN", "s3cret")
	t.Setenv("PATH", os.Getenv("PATH"))
	env := strings.Join(baseEnviron(), "\n")
	if strings.Contains(env, "s3cret") || !strings.Contains(env, "PATH=") {
		t.Errorf("baseEnviron() = %q, want PATH and no ERP_TOKEN", env)
	}
}
