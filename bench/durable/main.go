// Command durable measures durable agent steps per second (a step: one
// journaled model or tool call, the model scripted, the tool a no-op) on
// corral and on its peers, Temporal and DBOS Transact for Go, in one run, and
// prints each peer's median beside the others as ratios.
//
// Each peer is a program of its own under bench/durable that runs the same
// workload and prints one JSON line (bench/README.md, "Durable steps", is the
// contract). This command builds them, runs each -repeats times, rotating the
// order so that the machine's noise hits all alike, checks every line and
// prints the table. Run it from the repository root:
//
//	go run ./bench/durable                 # or: make bench-durable
//	go run ./bench/durable -duration 3s -repeats 1 -peers dbos
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// A peer is one row of the table: a program under bench/durable and the
// arguments that configure it, beside the workload's.
type peer struct {
	name      string   // the row's name, and what -peers selects
	dir       string   // the program's directory under bench/durable
	toolchain string   // GOTOOLCHAIN to build it with; empty for this one
	args      []string // its own flags
}

// peers are every row, in the table's order. A peer whose directory is
// missing is left out with a note.
var peers = []peer{
	// CORRAL: bench/durable/corral, a main package in corral's own module
	// (so that it can import internal/orchestrator), runs the workload on
	// corral's orchestrator and prints the JSON line. -sync is its only flag
	// beside the workload's: default (JetStream's own, an fsync every two
	// minutes) or always (an fsync at every write).
	{name: "corral", dir: "corral", args: []string{"-sync", "default"}},
	{name: "corral-sync-always", dir: "corral", args: []string{"-sync", "always"}},

	// Temporal's server needs a newer Go than corral's: the go command
	// fetches go1.27.3 from the module proxy.
	{name: "temporal-file", dir: "temporal", toolchain: "go1.27.3", args: []string{"-store", "file"}},
	{name: "temporal-memory", dir: "temporal", toolchain: "go1.27.3", args: []string{"-store", "memory"}},
	{name: "temporal-pg", dir: "temporal", toolchain: "go1.27.3", args: []string{"-store", "postgres"}},
	{name: "dbos", dir: "dbos"},
}

// baselines are the peers the ratio columns divide by.
var baselines = []string{"temporal-file", "temporal-memory", "temporal-pg", "dbos"}

// options are the command line.
type options struct {
	root     string // bench/durable
	only     map[string]bool
	repeats  int
	timeout  time.Duration
	workload []string // the workload's flags, passed to every peer
	json     bool
}

// result is the part of a peer's JSON line this command reads.
type result struct {
	Peer             string            `json:"peer"`
	Config           map[string]string `json:"config"`
	Workflows        int               `json:"workflows"`
	StepsPerWorkflow int               `json:"steps_per_workflow"`
	Concurrency      int               `json:"concurrency"`
	Steps            int               `json:"steps"`
	StepsExecuted    int64             `json:"steps_executed"`
	Seconds          float64           `json:"seconds"`
	WindowSteps      int64             `json:"window_steps"`
	StepsPerSec      float64           `json:"steps_per_sec"`
	WorkflowsPerSec  float64           `json:"workflows_per_sec"`
	WorkflowP50Ms    float64           `json:"workflow_p50_ms"`
	WorkflowP99Ms    float64           `json:"workflow_p99_ms"`
}

func main() {
	var o options
	var only string
	var duration time.Duration
	var workflows, steps, concurrency, payload int
	flag.StringVar(&o.root, "dir", filepath.Join("bench", "durable"), "directory of the peers")
	flag.StringVar(&only, "peers", "", "comma-separated peers to run (empty: every peer present): "+peerNames())
	flag.IntVar(&o.repeats, "repeats", 3, "runs of each peer; the table shows the median")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "time limit of one peer's run, start-up included")
	flag.BoolVar(&o.json, "json", false, "print every peer's JSON lines after the table")
	flag.DurationVar(&duration, "duration", 10*time.Second, "each run starts workflows for this long, then waits for those in flight")
	flag.IntVar(&workflows, "workflows", 0, "run exactly this many workflows instead of -duration")
	flag.IntVar(&steps, "steps", 10, "sequential steps per workflow (a scripted model call, then a no-op tool call, ...)")
	flag.IntVar(&concurrency, "concurrency", 20, "workflows in flight at once")
	flag.IntVar(&payload, "payload", 256, "bytes of each scripted model answer")
	flag.Parse()
	o.workload = []string{
		"-duration", duration.String(),
		"-workflows", strconv.Itoa(workflows),
		"-steps", strconv.Itoa(steps),
		"-concurrency", strconv.Itoa(concurrency),
		"-payload", strconv.Itoa(payload),
	}
	if only != "" {
		o.only = map[string]bool{}
		for _, name := range strings.Split(only, ",") {
			name = strings.TrimSpace(name)
			if !slices.ContainsFunc(peers, func(p peer) bool { return p.name == name }) {
				fmt.Fprintf(os.Stderr, "durable: -peers: no peer %q; the peers are %s\n", name, peerNames())
				os.Exit(2)
			}
			o.only[name] = true
		}
	}
	if o.repeats < 1 {
		fmt.Fprintf(os.Stderr, "durable: -repeats %d: want at least 1\n", o.repeats)
		os.Exit(2)
	}
	if err := run(context.Background(), o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "durable:", err)
		os.Exit(1)
	}
}

func peerNames() string {
	names := make([]string, len(peers))
	for i, p := range peers {
		names[i] = p.name
	}
	return strings.Join(names, ", ")
}

func run(ctx context.Context, o options, out io.Writer) error {
	if _, err := os.Stat(o.root); err != nil {
		return fmt.Errorf("-dir %s: %w (run from the repository root)", o.root, err)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(out, "%s %s/%s, %d CPUs, %s, load average %s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), time.Now().UTC().Format(time.RFC3339), loadavg(load))
	fmt.Fprintf(out, "workload: %s\n\n", strings.Join(o.workload, " "))

	// Build each program once, into a directory removed afterwards.
	bin, err := os.MkdirTemp("", "bench-durable-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(bin) }()
	var chosen []peer
	built := map[string]string{}
	for _, p := range peers {
		if o.only != nil && !o.only[p.name] {
			continue
		}
		dir := filepath.Join(o.root, p.dir)
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(out, "%s: left out, %s does not exist yet\n", p.name, dir)
			continue
		}
		if _, ok := built[p.dir]; !ok {
			exe := filepath.Join(bin, p.dir)
			fmt.Fprintf(os.Stderr, "building %s\n", dir)
			if err := build(ctx, dir, exe, p.toolchain); err != nil {
				return err
			}
			built[p.dir] = exe
		}
		chosen = append(chosen, p)
	}
	if len(chosen) == 0 {
		return errors.New("no peer to run")
	}

	results := map[string][]result{}
	lines := map[string][]string{}
	for r := range o.repeats {
		for k := range chosen {
			p := chosen[(k+r)%len(chosen)]
			fmt.Fprintf(os.Stderr, "run %d/%d: %s\n", r+1, o.repeats, p.name)
			res, line, err := runPeer(ctx, built[p.dir], p, o)
			if err != nil {
				return err
			}
			results[p.name] = append(results[p.name], res)
			lines[p.name] = append(lines[p.name], line)
		}
	}
	fmt.Fprintln(out)
	table(out, chosen, results, o.repeats)
	if o.json {
		fmt.Fprintln(out)
		for _, p := range chosen {
			for _, l := range lines[p.name] {
				fmt.Fprintf(out, "%s %s\n", p.name, l)
			}
		}
	}
	return nil
}

// build builds the main package in dir into exe.
func build(ctx context.Context, dir, exe, toolchain string) error {
	abs, err := filepath.Abs(exe)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", abs, ".")
	cmd.Dir = dir
	cmd.Env = os.Environ()
	if toolchain != "" {
		cmd.Env = append(cmd.Env, "GOTOOLCHAIN="+toolchain)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", dir, err, stderr.Bytes())
	}
	return nil
}

// runPeer runs p once and checks its JSON line against the contract.
func runPeer(ctx context.Context, exe string, p peer, o options) (result, string, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, append(slices.Clone(o.workload), p.args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return result{}, "", fmt.Errorf("%s: %w\n%s", p.name, err, tail(stderr.Bytes(), 4096))
	}
	line := strings.TrimSpace(stdout.String())
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	res, err := parse([]byte(line))
	if err != nil {
		return result{}, "", fmt.Errorf("%s: %w\nstdout: %s", p.name, err, tail(stdout.Bytes(), 4096))
	}
	return res, line, nil
}

// parse decodes a peer's line and checks what the table relies on.
func parse(line []byte) (result, error) {
	var r result
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&r); err != nil {
		return result{}, fmt.Errorf("JSON line: %w", err)
	}
	switch {
	case r.Peer == "":
		return result{}, errors.New("JSON line: peer is empty")
	case r.Workflows < 1 || r.StepsPerWorkflow < 1:
		return result{}, fmt.Errorf("JSON line: workflows %d, steps_per_workflow %d: want at least 1 each", r.Workflows, r.StepsPerWorkflow)
	case r.Steps != r.Workflows*r.StepsPerWorkflow:
		return result{}, fmt.Errorf("JSON line: steps %d, want workflows × steps_per_workflow = %d", r.Steps, r.Workflows*r.StepsPerWorkflow)
	case r.StepsExecuted != int64(r.Steps):
		return result{}, fmt.Errorf("JSON line: steps_executed %d, want steps = %d", r.StepsExecuted, r.Steps)
	case r.WindowSteps < 1 || r.WindowSteps > r.StepsExecuted:
		return result{}, fmt.Errorf("JSON line: window_steps %d: want 1 to steps_executed (%d)", r.WindowSteps, r.StepsExecuted)
	case !(r.Seconds > 0) || !(r.StepsPerSec > 0):
		return result{}, fmt.Errorf("JSON line: seconds %v, steps_per_sec %v: want both above 0", r.Seconds, r.StepsPerSec)
	}
	return r, nil
}

// table prints one row per peer: medians, the range of steps/s, and the
// ratio of its median to each baseline's.
func table(out io.Writer, chosen []peer, results map[string][]result, repeats int) {
	median := func(rs []result, f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	rate := func(r result) float64 { return r.StepsPerSec }
	var bases []string
	for _, b := range baselines {
		if _, ok := results[b]; ok {
			bases = append(bases, b)
		}
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "peer\tsteps/s (median of %d)\tmin–max\tworkflows/s\tp50 ms\tp99 ms\t", repeats)
	for _, b := range bases {
		fmt.Fprintf(tw, "× %s\t", b)
	}
	fmt.Fprintln(tw, "\tdurability")
	for _, p := range chosen {
		rs := results[p.name]
		lo := slices.MinFunc(rs, func(a, b result) int { return cmp.Compare(a.StepsPerSec, b.StepsPerSec) })
		hi := slices.MaxFunc(rs, func(a, b result) int { return cmp.Compare(a.StepsPerSec, b.StepsPerSec) })
		m := median(rs, rate)
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f–%.0f\t%.1f\t%.0f\t%.0f\t", p.name, m, lo.StepsPerSec, hi.StepsPerSec,
			median(rs, func(r result) float64 { return r.WorkflowsPerSec }),
			median(rs, func(r result) float64 { return r.WorkflowP50Ms }),
			median(rs, func(r result) float64 { return r.WorkflowP99Ms }))
		for _, b := range bases {
			fmt.Fprintf(tw, "%.2f\t", m/median(results[b], rate))
		}
		fmt.Fprintf(tw, "\t%s\n", rs[0].Config["durability"])
	}
	_ = tw.Flush()
	fmt.Fprintln(out)
	for _, p := range chosen {
		fmt.Fprintf(out, "%s: %s\n", p.name, describe(results[p.name][0].Config))
	}
}

// describe renders a peer's config as key=value pairs in key order.
func describe(cfg map[string]string) string {
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + cfg[k]
	}
	return strings.Join(parts, ", ")
}

// tail is the last n bytes of b.
func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// loadavg is the first three fields of /proc/loadavg, or "unknown".
func loadavg(b []byte) string {
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
