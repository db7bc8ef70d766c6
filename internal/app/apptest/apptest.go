// Package apptest starts the whole of corral in-process for tests: embedded
// JetStream in a temporary directory, HTTP on a free loopback port.
package apptest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/identity"
)

// Patience is how long a test waits for something that will happen: a
// resource loading in the background, a change reaching another replica, a
// task ending. It is long because CI runs every package at once with the race
// detector on two cores, where such things take ten times as long as on a
// quiet machine; a passing test never waits it out, so only a broken build
// pays for it.
const Patience = time.Minute

// Server is a running corral.
type Server struct {
	App   *app.App
	URL   string // base URL, http://127.0.0.1:PORT
	Token string // the admin token

	stop func() error
}

// Stop shuts corral down as a signal would and returns what Run returned.
// The test's cleanup calls it too; later calls return the first result.
func (s *Server) Stop() error { return s.stop() }

// Start runs corral until the test ends, and returns once it is ready.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, app.Config{})
}

// StartWith is Start with configuration; empty DataDir and HTTPAddr get a
// temporary directory and a free loopback port.
func StartWith(t testing.TB, cfg app.Config) *Server {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.PolicyTimeout == 0 {
		// The production bound (250 ms) stops a runaway policy; under -race
		// on a loaded machine a correct decision can take longer, and a
		// test of something else would fail with policy_error.
		cfg.PolicyTimeout = 10 * time.Second
	}
	if cfg.Version == "" {
		cfg.Version = "test"
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, slog.New(slog.DiscardHandler), cfg)
	if err != nil {
		cancel()
		t.Fatalf("app.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stop := sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("app.Run: %v", err)
		}
	})
	select {
	case <-a.Ready():
	case err := <-done:
		done <- err // for stop, which the cleanup calls
		t.Fatalf("app.Run ended before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("corral not ready within 30s")
	}
	path, _ := a.AdminToken()
	token, err := identity.ReadToken(path)
	if err != nil {
		t.Fatal(err)
	}
	return &Server{App: a, URL: a.URL(), Token: token, stop: stop}
}

// Request builds a request to the server carrying the admin token.
func (s *Server) Request(t testing.TB, method, path string, body []byte) *http.Request {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}
