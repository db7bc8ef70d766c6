package app_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
)

func get(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestHealthAndReadiness(t *testing.T) {
	s := apptest.Start(t)
	for path, want := range map[string]string{"/healthz": `"alive"`, "/readyz": `"ready"`} {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", s.URL+path, nil)
		status, h, body := get(t, req)
		if status != 200 || !strings.Contains(body, want) || h.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s = %d %s %s, want 200 JSON with %s", path, status, h.Get("Content-Type"), body, want)
		}
	}
}

func TestMetrics(t *testing.T) {
	s := apptest.Start(t)
	agent := `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"a"},"spec":{}}`
	if status, _, body := get(t, s.Request(t, "PUT", "/v1/resources/agents/a", []byte(agent))); status != 201 {
		t.Fatalf("PUT = %d %s", status, body)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", s.URL+"/metrics", nil)
	_, _, body := get(t, req)
	for _, want := range []string{
		`corral_resources{kind="Agent"} 1`,
		`corral_build_info{substrate="embedded",version="test"} 1`,
		`corral_http_requests_total{code="201",method="PUT",route="PUT /v1/resources/{kind}/{name}"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestRequestID(t *testing.T) {
	s := apptest.Start(t)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", s.URL+"/v1/resources/agents", nil)
	req.Header.Set("X-Request-Id", "caller-chosen-1")
	_, h, body := get(t, req)
	if h.Get("X-Request-Id") != "caller-chosen-1" || !strings.Contains(body, `"request_id":"caller-chosen-1"`) {
		t.Errorf("request id: header %q body %s, want the caller's id echoed", h.Get("X-Request-Id"), body)
	}
	req, _ = http.NewRequestWithContext(t.Context(), "GET", s.URL+"/healthz", nil)
	req.Header.Set("X-Request-Id", "bad id with spaces")
	_, h, _ = get(t, req)
	if id := h.Get("X-Request-Id"); id == "" || strings.Contains(id, " ") {
		t.Errorf("unsafe caller id: answered %q, want a fresh id", id)
	}
}

// TestShutdownDrainsInFlightRequests starts a request whose body arrives
// slowly, stops corral while it is in flight, and checks that the request
// still completes and is stored, and that Run ends cleanly.
func TestShutdownDrainsInFlightRequests(t *testing.T) {
	s := apptest.Start(t)
	pr, pw := io.Pipe()
	req := s.Request(t, "PUT", "/v1/resources/agents/late", nil)
	req.Body = pr
	req.Header.Set("Content-Type", "application/json")
	answered := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("in-flight request failed: %v", err)
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	if _, err := io.WriteString(pw, `{"apiVersion":"corral.dev/v1","kind":"Agent",`); err != nil {
		t.Fatal(err)
	}
	// Wait until the server serves it: in flight are the PUT and the scrape itself.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(scrape(t, s.URL), "corral_http_requests_in_flight 2") {
		if time.Now().After(deadline) {
			t.Fatal("the PUT never showed as in flight")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- s.Stop() }()
	// Finish the body only once shutdown has begun: the listener refuses
	// new connections.
	addr := strings.TrimPrefix(s.URL, "http://")
	deadline = time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("corral still accepted connections 30s after Stop")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := io.WriteString(pw, `"metadata":{"name":"late"},"spec":{}}`); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if status := <-answered; status != http.StatusCreated {
		t.Errorf("in-flight PUT during shutdown = %d, want 201", status)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run after shutdown = %v, want nil", err)
	}
}

func scrape(t *testing.T, base string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/metrics", nil)
	_, _, body := get(t, req)
	return body
}
