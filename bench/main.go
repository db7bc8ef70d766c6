// Command bench measures corral against what it sits on and what it sits in
// front of, in one run on one machine, and prints each result beside its
// baseline from the same run, because absolute numbers on shared machines
// mean little:
//
//   - the resource path (registry, control-plane API) against the substrate;
//   - policy decisions with the default bundle and with the payments
//     example added, as the pipeline's policy stage makes them;
//   - a tool call through corral's whole pipeline against the same upstream
//     called directly: added latency and throughput ratio;
//   - a model call (chat completion, whole and streamed, with reversible
//     redaction of a 2 KB prompt) through corral against the same upstream
//     called directly, and through the Portkey gateway when node can run it.
//
// Usage:
//
//	go run ./bench                          # or: make bench; about a minute
//	go run ./bench -short                   # about 15 s
//	go run ./bench -cpuprofile bench.prof   # plus a profiled phase through corral
//	go run ./bench -short -resources=false -policy=false -tools=false   # model calls only
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// options are the command line.
type options struct {
	short      bool
	resources  bool
	policy     bool
	tools      bool
	models     bool
	calls      int           // sequential calls per path in the latency phase
	warmup     int           // calls per path before it
	block      int           // calls per path in a row before switching paths
	duration   time.Duration // each throughput phase
	repeats    int           // throughput phases per path and concurrency
	clients    []int         // concurrencies of the throughput phases
	cpuprofile string
}

func main() {
	var o options
	var clients string
	flag.BoolVar(&o.short, "short", false, "500 calls, throughput phases of 1s and unrepeated (-n and -d still apply)")
	flag.BoolVar(&o.resources, "resources", true, "measure the resource path against the substrate too")
	flag.BoolVar(&o.policy, "policy", true, "measure policy decisions (default bundle, and with examples/policies/payments) too")
	flag.BoolVar(&o.tools, "tools", true, "measure a tool call through corral against the upstream called directly")
	flag.BoolVar(&o.models, "models", true, "measure a model call through corral (and the Portkey gateway, when node runs it) against the upstream called directly")
	flag.IntVar(&o.calls, "n", 2000, "sequential calls per path in the latency phase")
	flag.DurationVar(&o.duration, "d", 2*time.Second, "duration of each throughput phase")
	flag.StringVar(&clients, "c", "8,32", "concurrent clients of the throughput phases, comma-separated")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of one extra throughput phase through corral to `file`")
	flag.Parse()
	o.warmup, o.block, o.repeats = 200, 100, 3
	if o.short {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["n"] {
			o.calls = 500
		}
		if !set["d"] {
			o.duration = time.Second
		}
		o.warmup, o.repeats = 100, 1
	}
	for _, s := range strings.Split(clients, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || c < 1 {
			fmt.Fprintf(os.Stderr, "bench: -c %s: want positive integers, comma-separated\n", clients)
			os.Exit(2)
		}
		o.clients = append(o.clients, c)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	// The load average says how much else the machine was doing, which the
	// ratios are meant to survive but the absolute numbers are not.
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("%s %s/%s, GOMAXPROCS %d, %d CPUs, %s, load average %s\n\n", runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.GOMAXPROCS(0), runtime.NumCPU(), time.Now().UTC().Format(time.RFC3339), loadavg(load))
	c, err := startCorral(ctx)
	if err != nil {
		return err
	}
	defer c.stop()
	if o.resources {
		if err := benchResources(ctx, c); err != nil {
			return err
		}
		fmt.Println()
	}
	if o.policy {
		if err := benchPolicy(ctx, o); err != nil {
			return err
		}
		fmt.Println()
	}
	if o.tools {
		if err := benchTools(ctx, c, o); err != nil {
			return err
		}
		fmt.Println()
	}
	if o.models {
		return benchModels(ctx, c, o)
	}
	return nil
}

// loadavg is the first three fields of /proc/loadavg, or "unknown".
func loadavg(b []byte) string {
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
