package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"time"
)

// itemSpec describes the upstream. The operation has a path parameter and a
// query parameter with schemas, and a declared answer, so that corral's
// argument validation and answer inspection both do real work.
const itemSpec = `openapi: 3.0.3
info: {title: bench, version: "1"}
paths:
  /items/{id}:
    get:
      operationId: getItem
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer, minimum: 1}}
        - {name: view, in: query, schema: {type: string, enum: [short, full]}}
      responses:
        "200":
          description: the item
          content:
            application/json:
              schema:
                type: object
                required: [id, name]
                properties:
                  id: {type: integer}
                  name: {type: string}
`

// tool is the one tool the bench calls; the ToolSource and the Agent are
// both named bench.
const tool = "bench.getItem"

// server is an HTTP server of the bench's own.
type server struct {
	url  string
	stop func()
	hits *atomic.Int64 // requests the upstream answered
}

// serve serves h on a free loopback port; its goroutines carry the profiler
// label role.
func serve(ctx context.Context, role string, h http.Handler) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	pprof.Do(ctx, pprof.Labels("role", role), func(context.Context) {
		go func() { done <- srv.Serve(ln) }()
	})
	return &server{url: "http://" + ln.Addr().String(), stop: func() { srv.Close(); <-done }}, nil
}

// startUpstream serves GET /items/{id}?view=short, answering
// {"id": ID, "name": "item ID"}.
func startUpstream(ctx context.Context) (*server, error) {
	hits := new(atomic.Int64)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil || r.URL.Query().Get("view") != "short" {
			http.Error(w, "want /items/{integer}?view=short", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id": %d, "name": "item %d"}`, id, id)
	})
	s, err := serve(ctx, "upstream", mux)
	if err != nil {
		return nil, err
	}
	s.hits = hits
	return s, nil
}

// startProxy serves a bare reverse proxy to target: one HTTP hop in and one
// out, with nothing in between, which is the least any HTTP gateway costs.
// Its upstream connections are pooled like corral's.
func startProxy(ctx context.Context, target string) (*server, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	p := httputil.NewSingleHostReverseProxy(u)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	p.Transport = t
	return serve(ctx, "proxy", p)
}

// setupTool applies the ToolSource for the upstream and an Agent allowed to
// call its tool, waits until corral serves the tool, and returns a new key
// of the agent.
func setupTool(ctx context.Context, c *corral, upstreamURL string) (string, error) {
	resources := []map[string]any{{
		"apiVersion": "corral.dev/v1", "kind": "ToolSource", "metadata": map[string]any{"name": "bench"},
		"spec": map[string]any{"openapi": map[string]any{"baseURL": upstreamURL, "document": itemSpec}},
	}, {
		"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": map[string]any{"name": "bench"},
		"spec": map[string]any{"description": "calls the bench upstream", "tools": []string{tool}},
	}}
	key, err := c.applyWithKey(ctx, resources, "bench")
	if err != nil {
		return "", err
	}
	// Tool sources load in the background after their ToolSource is stored.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.call(ctx, "GET", "/v1/tools/"+tool, nil)
		if err == nil {
			return key.Secret, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("tool %s not served after 10s: %w", tool, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setupLimited applies an Agent "bench-limited" allowed the tool and a
// RateLimit on it that every call meets but none reaches (a million a
// second, a hundred thousand in flight), and returns a key of the agent.
func setupLimited(ctx context.Context, c *corral) (string, error) {
	resources := []map[string]any{{
		"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": map[string]any{"name": "bench-limited"},
		"spec": map[string]any{"description": "calls the bench upstream under a rate limit", "tools": []string{tool}},
	}, {
		"apiVersion": "corral.dev/v1", "kind": "RateLimit", "metadata": map[string]any{"name": "bench-limited"},
		"spec": map[string]any{
			"scope": map[string]any{"agent": "bench-limited", "tool": tool},
			"rate":  map[string]any{"requests": 1000000, "per": "second", "burst": 1000}, "inFlight": 100000,
		},
	}}
	key, err := c.applyWithKey(ctx, resources, "bench-limited")
	if err != nil {
		return "", err
	}
	return key.Secret, nil
}

// itemID is the item the nth call asks for.
func itemID(n int64) int64 { return n%1000 + 1 }

// item is the upstream's answer.
type item struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// getItem is the path GET base/items/{id}?view=short, as an agent would call
// the upstream without corral.
func getItem(name, base string) *path {
	client := newClient()
	return &path{name: name, upstream: true, call: func(ctx context.Context, n int64) error {
		id := itemID(n)
		req, err := http.NewRequestWithContext(ctx, "GET", base+"/items/"+strconv.FormatInt(id, 10)+"?view=short", nil)
		if err != nil {
			return err
		}
		body, err := send(client, req)
		if err != nil {
			return err
		}
		var it item
		if err := json.Unmarshal(body, &it); err != nil || it.ID != id {
			return fmt.Errorf("answer %s, want item %d", body, id)
		}
		return nil
	}}
}

// invoke is the path POST /v1/tools/bench.getItem/invoke through corral,
// with an Idempotency-Key of its own for each call when keyed. Its answers
// must carry the item and an audit id.
func invoke(name, base, key string, keyed bool) *path {
	client := newClient()
	url := base + "/v1/tools/" + tool + "/invoke"
	p := &path{name: name, upstream: true, corral: true, keyed: keyed}
	p.call = func(ctx context.Context, n int64) error {
		id := itemID(n)
		body := make([]byte, 0, 64)
		body = append(body, `{"arguments": {"id": `...)
		body = strconv.AppendInt(body, id, 10)
		body = append(body, `, "view": "short"}}`...)
		req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		if keyed {
			req.Header.Set("Idempotency-Key", "bench-"+strconv.FormatInt(n, 10))
		}
		for k, v := range p.header {
			req.Header[k] = v
		}
		out, err := send(client, req)
		if err != nil {
			return err
		}
		var resp struct {
			Result         item   `json:"result"`
			AuditID        string `json:"audit_id"`
			IsError        bool   `json:"is_error"`
			UpstreamStatus int    `json:"upstream_status"`
			Replayed       bool   `json:"replayed"`
		}
		if err := json.Unmarshal(out, &resp); err != nil || resp.Result.ID != id || resp.AuditID == "" ||
			resp.IsError || resp.UpstreamStatus != http.StatusOK || resp.Replayed != p.replayed {
			return fmt.Errorf("answer %s, want item %d, an audit id and replayed %v", out, id, p.replayed)
		}
		return nil
	}
	return p
}

// send does req and returns the answer's body, or an error for any status
// but 200.
func send(client *http.Client, req *http.Request) ([]byte, error) {
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
	}
	return body, nil
}

// newClient is a keep-alive client of its own, with room for every
// concurrent caller's connection, so that no phase pays for new connections.
func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute}}
}
