package apptest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/config"
)

// Apply stores the resources of a YAML stream through POST /v1/apply and
// fails the test if the server refuses them.
func (s *Server) Apply(t testing.TB, yaml string) {
	t.Helper()
	docs, err := config.Decode("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	var req api.ApplyRequest
	for _, d := range docs {
		raw, err := json.Marshal(d.Resource)
		if err != nil {
			t.Fatal(err)
		}
		req.Resources = append(req.Resources, raw)
	}
	status, body := s.Call(t, s.Token, "POST", "/v1/apply", req, nil)
	if status != http.StatusOK {
		t.Fatalf("Apply: HTTP %d: %s", status, body)
	}
}

// ApplyValues stores resources given as JSON values (structs or maps)
// through POST /v1/apply and fails the test if the server refuses them.
func (s *Server) ApplyValues(t testing.TB, resources ...any) {
	t.Helper()
	status, body := s.Call(t, s.Token, "POST", "/v1/apply", map[string]any{"resources": resources}, nil)
	if status != http.StatusOK {
		t.Fatalf("ApplyValues: HTTP %d: %s", status, body)
	}
}

// Key creates an API key for agent and returns it.
func (s *Server) Key(t testing.TB, agent string) string {
	t.Helper()
	status, body := s.Call(t, s.Token, "POST", "/v1/keys", api.CreateKeyRequest{Agent: agent}, nil)
	if status != http.StatusCreated && status != http.StatusOK {
		t.Fatalf("Key(%s): HTTP %d: %s", agent, status, body)
	}
	var created api.CreatedKey
	if err := json.Unmarshal(body, &created); err != nil {
		t.Fatal(err)
	}
	return created.Secret
}

// Call sends a request with token as its bearer credential and body (if not
// nil) as JSON, and returns the status and the body read in full.
func (s *Server) Call(t testing.TB, token, method, path string, body any, header http.Header) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode, out
}

// WaitTool waits until the catalogue serves the named tool: tool sources
// load in the background after their ToolSource is applied.
func (s *Server) WaitTool(t testing.TB, name string) {
	t.Helper()
	deadline := time.Now().Add(Patience)
	for {
		status, _ := s.Call(t, s.Token, "GET", "/v1/tools/"+name, nil, nil)
		if status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			_, body := s.Call(t, s.Token, "GET", "/v1/tools", nil, nil)
			t.Fatalf("tool %s not served after %v; /v1/tools says %s", name, Patience, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
