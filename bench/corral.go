package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime/pprof"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/identity"
)

// corral is a running corral, in this process, and a separate NATS client of
// its embedded substrate, for baselines and for checking what corral stored.
type corral struct {
	app   *app.App
	url   string
	token string // the admin token
	bus   *bus.Bus
	admin *http.Client
	stop  func()
}

// startCorral runs corral with its embedded substrate in a temporary
// directory, listening on loopback so that the baselines can reach the same
// server as a separate client. corral's goroutines carry the profiler label
// role=corral, so a profile can be narrowed to corral alone.
func startCorral(ctx context.Context) (_ *corral, err error) {
	dir, err := os.MkdirTemp("", "corral-bench-")
	if err != nil {
		return nil, err
	}
	var cleanup []func()
	stop := func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	cleanup = append(cleanup, func() { os.RemoveAll(dir) })
	logger := slog.New(slog.DiscardHandler)

	var a *app.App
	pprof.Do(ctx, pprof.Labels("role", "corral"), func(ctx context.Context) {
		a, err = app.New(ctx, logger, app.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", NATSListen: "127.0.0.1:0", Version: "bench"})
		if err != nil {
			return
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(runCtx) }()
		cleanup = append(cleanup, func() { cancel(); <-done })
	})
	if err != nil {
		return nil, err
	}
	<-a.Ready()
	path, _ := a.AdminToken()
	token, err := identity.ReadToken(path)
	if err != nil {
		return nil, err
	}
	b, err := bus.Open(ctx, logger, bus.Options{URL: a.NATSURL()})
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, b.Close)
	return &corral{app: a, url: a.URL(), token: token, bus: b, admin: &http.Client{}, stop: stop}, nil
}

// call sends an admin request and returns the answer's body, or an error
// for a status of 300 or more.
func (c *corral) call(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.admin.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, out)
	}
	return out, nil
}

// applyWithKey applies resources through the API and creates a key for
// agent.
func (c *corral) applyWithKey(ctx context.Context, resources []map[string]any, agent string) (api.CreatedKey, error) {
	var req api.ApplyRequest
	for _, r := range resources {
		raw, err := json.Marshal(r)
		if err != nil {
			return api.CreatedKey{}, err
		}
		req.Resources = append(req.Resources, raw)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return api.CreatedKey{}, err
	}
	if _, err := c.call(ctx, "POST", "/v1/apply", body); err != nil {
		return api.CreatedKey{}, err
	}
	body, err = json.Marshal(api.CreateKeyRequest{Agent: agent})
	if err != nil {
		return api.CreatedKey{}, err
	}
	out, err := c.call(ctx, "POST", "/v1/keys", body)
	if err != nil {
		return api.CreatedKey{}, err
	}
	var key api.CreatedKey
	if err := json.Unmarshal(out, &key); err != nil {
		return api.CreatedKey{}, fmt.Errorf("POST /v1/keys: %w", err)
	}
	return key, nil
}
