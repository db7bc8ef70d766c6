package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"text/tabwriter"

	"github.com/corral-dev/corral/internal/registry"
)

const agent = `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"impact"},"spec":{"description":"finds delayed orders"}}`

// benchResources measures each operation of the resource path with
// testing.Benchmark and prints it as a ratio to the same operation straight
// against the substrate, from a separate NATS client over loopback TCP.
func benchResources(ctx context.Context, c *corral) error {
	kv, err := c.bus.JetStream().KeyValue(ctx, registry.Bucket)
	if err != nil {
		return err
	}
	reg, err := registry.Open(ctx, slog.New(slog.DiscardHandler), c.bus)
	if err != nil {
		return err
	}
	regCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- reg.Run(regCtx) }()
	defer func() { stop(); <-done }()
	if err := reg.WaitLoaded(ctx); err != nil {
		return err
	}

	call := func(method, path string, body []byte) error {
		_, err := c.call(ctx, method, path, body)
		return err
	}
	if err := call("PUT", "/v1/resources/agents/impact", []byte(agent)); err != nil {
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
		{"HTTP GET /v1/resources/agents/impact", testing.Benchmark(loop(func() error { return call("GET", "/v1/resources/agents/impact", nil) })), kvGet, "KV get"},
		{"substrate: KV put over NATS", kvPut, kvPut, "itself"},
		{"HTTP PUT, unchanged resource", testing.Benchmark(loop(func() error { return call("PUT", "/v1/resources/agents/impact", []byte(agent)) })), kvPut, "KV put"},
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tns/op\tallocs/op\tratio\tagainst\t")
	for _, r := range results {
		ratio := float64(r.r.NsPerOp()) / float64(r.baseline.NsPerOp())
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.3g\t%s\t\n", r.name, r.r.NsPerOp(), r.r.AllocsPerOp(), ratio, r.against)
	}
	return tw.Flush()
}
