package api_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/deadletter"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/registry"
	"github.com/corral-dev/corral/internal/telemetry"
)

// startDLQ serves the dead-letter routes over a real queue on an embedded
// bus, with n trigger entries in it.
func startDLQ(t *testing.T, n int) *opsServer {
	t.Helper()
	ctx := t.Context()
	logger := slog.New(slog.DiscardHandler)
	b := bustest.Open(t)
	reg, err := registry.Open(ctx, logger, b)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := identity.Open(ctx, logger, b)
	if err != nil {
		t.Fatal(err)
	}
	path, _, err := creds.Ensure(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	token, err := identity.ReadToken(path)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- creds.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if err := creds.WaitLoaded(ctx); err != nil {
		t.Fatal(err)
	}
	dlq, err := deadletter.Open(ctx, logger, b, nil, deadletter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := dlq.Put(ctx, deadletter.Entry{Source: deadletter.SourceTrigger, Name: fmt.Sprint("n", i), Reason: "r"}); err != nil {
			t.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	api.New(logger, reg, creds).WithDeadLetters(dlq).Register(mux)
	srv := httptest.NewServer(telemetry.NewHTTPMetrics(prometheus.NewRegistry()).Middleware(logger, mux))
	t.Cleanup(srv.Close)
	return &opsServer{url: srv.URL, token: token, bus: b, reg: reg}
}

// TestDeadLetterListPages: GET /v1/dlq pages newest first with next and
// after, as GET /v1/tasks does; a bad after or limit, or a parameter it
// does not know, is refused.
func TestDeadLetterListPages(t *testing.T) {
	s := startDLQ(t, 5)
	var names []string
	path := "/v1/dlq?limit=2"
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatalf("more than 3 pages of 2 for 5 entries")
		}
		a := s.call(t, "GET", path, "")
		l := decode[api.DeadLetterList](t, a)
		if a.status != 200 || len(l.Items) > 2 {
			t.Fatalf("GET %s = %d %s", path, a.status, a.body)
		}
		for _, e := range l.Items {
			names = append(names, e.Name)
		}
		if l.Next == "" {
			break
		}
		path = "/v1/dlq?limit=2&after=" + l.Next
	}
	if got, want := fmt.Sprint(names), "[n4 n3 n2 n1 n0]"; got != want {
		t.Errorf("the pages' entries = %s, want %s", got, want)
	}
	for _, tt := range []struct{ query, detail string }{
		{"after=abc", "after:"},
		{"after=0", "after:"},
		{"after=-1", "after:"},
		{"after=99999999999999999999999", "after:"},
		{"limit=1001", "limit:"},
		{"limit=0", "limit:"},
		{"cursor=5", `unknown parameter "cursor"`},
		{"state=lost", "state:"},
	} {
		a := s.call(t, "GET", "/v1/dlq?"+tt.query, "")
		if a.status != 400 || a.problem.Code != problem.InvalidRequest || !strings.Contains(a.problem.Detail, tt.detail) {
			t.Errorf("GET /v1/dlq?%s = %d %s, want 400 invalid_request naming %q", tt.query, a.status, a.body, tt.detail)
		}
	}
	if a := s.call(t, "GET", "/v1/dlq?after=4000000", ""); a.status != 200 || len(decode[api.DeadLetterList](t, a).Items) != 5 {
		t.Errorf("GET /v1/dlq?after past the end = %d %s, want every entry", a.status, a.body)
	}
}
