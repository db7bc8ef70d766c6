// Command bench measures corral's resource path against the substrate it sits
// on, in one run on one machine, and prints each result as a ratio to its
// baseline, because absolute numbers on shared machines mean little.
//
//	go run ./bench            # or: make bench
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"text/tabwriter"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/registry"
)

const agent = `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"impact"},"spec":{"description":"finds delayed orders"}}`

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "corral-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logger := slog.New(slog.DiscardHandler)

	// corral itself, with its embedded substrate listening so the baseline
	// below can reach the same server as a separate client.
	a, err := app.New(ctx, logger, app.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", NATSListen: "127.0.0.1:0", Version: "bench"})
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	defer func() { stop(); <-done }()
	<-a.Ready()
	path, _ := a.AdminToken()
	token, err := identity.ReadToken(path)
	if err != nil {
		return err
	}

	b, err := bus.Open(ctx, logger, bus.Options{URL: a.NATSURL()})
	if err != nil {
		return err
	}
	defer b.Close()
	kv, err := b.JetStream().KeyValue(ctx, registry.Bucket)
	if err != nil {
		return err
	}
	reg, err := registry.Open(ctx, logger, b)
	if err != nil {
		return err
	}
	go func() { _ = reg.Run(runCtx) }()
	if err := reg.WaitLoaded(ctx); err != nil {
		return err
	}

	client := &http.Client{}
	call := func(method, url string, body []byte) error {
		req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s %s: %s", method, url, resp.Status)
		}
		return nil
	}
	if err := call("PUT", a.URL()+"/v1/resources/agents/impact", []byte(agent)); err != nil {
		return err
	}

	loop := func(f func() error) func(*testing.B) {
		return func(tb *testing.B) {
			for tb.Loop() {
				if err := f(); err != nil {
					tb.Fatal(err)
				}
			}
		}
	}
	kvGet := testing.Benchmark(loop(func() error { _, err := kv.Get(ctx, "Agent.impact"); return err }))
	kvPut := testing.Benchmark(loop(func() error { _, err := kv.Put(ctx, "Bench.put", []byte(agent)); return err }))
	results := []struct {
		name     string
		r        testing.BenchmarkResult
		baseline testing.BenchmarkResult
		against  string
	}{
		{"substrate: KV get over NATS", kvGet, kvGet, "itself"},
		{"registry.Get (in-memory mirror)", testing.Benchmark(loop(func() error { reg.Get("Agent", "impact"); return nil })), kvGet, "KV get"},
		{"HTTP GET /v1/resources/agents/impact", testing.Benchmark(loop(func() error { return call("GET", a.URL()+"/v1/resources/agents/impact", nil) })), kvGet, "KV get"},
		{"substrate: KV put over NATS", kvPut, kvPut, "itself"},
		{"HTTP PUT, unchanged resource", testing.Benchmark(loop(func() error { return call("PUT", a.URL()+"/v1/resources/agents/impact", []byte(agent)) })), kvPut, "KV put"},
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tns/op\tallocs/op\tratio\tagainst\t")
	for _, r := range results {
		ratio := float64(r.r.NsPerOp()) / float64(r.baseline.NsPerOp())
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.3g\t%s\t\n", r.name, r.r.NsPerOp(), r.r.AllocsPerOp(), ratio, r.against)
	}
	return tw.Flush()
}
