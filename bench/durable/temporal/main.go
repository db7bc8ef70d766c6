// Command temporal measures durable steps per second on Temporal: a whole
// Temporal server (go.temporal.io/server, SQLite, one history shard) in this
// process, a worker and a client of the Go SDK, and the workload every peer
// of bench/durable runs, each step an activity. It prints one JSON line
// (bench/README.md, "Durable steps").
//
// It is a module of its own, as test/otelcol is: Temporal's dependencies
// and corral's do not share a build, and the server needs a newer Go than
// corral's. Run it from this directory with
//
//	GOTOOLCHAIN=go1.27.3 go run . -store file
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

const (
	namespace = "bench"
	taskQueue = "bench"
)

func main() {
	var w workload
	var store storeOptions
	fs := flag.NewFlagSet("temporal", flag.ExitOnError)
	w.flags(fs)
	fs.StringVar(&store.kind, "store", "file", "SQLite in a file of a temporary directory (file), SQLite in memory (memory, the dev server's default), or PostgreSQL (postgres: databases "+pgDatabase+" and "+pgDatabase+"_visibility, made anew)")
	fs.StringVar(&store.pgHost, "pg-host", "127.0.0.1", "PostgreSQL's host, for -store postgres")
	fs.IntVar(&store.pgPort, "pg-port", 5432, "PostgreSQL's port, for -store postgres")
	fs.StringVar(&store.pgUser, "pg-user", "postgres", "PostgreSQL's user (trust authentication), for -store postgres")
	fs.StringVar(&store.journal, "sqlite-journal", "", "SQLite journal_mode for -store file (empty: SQLite's default, delete)")
	fs.StringVar(&store.sync, "sqlite-sync", "", "SQLite synchronous for -store file (empty: SQLite's default, full: fsync at every commit)")
	fs.StringVar(&store.log, "server-log", "", "the server's log level on standard error: debug, info, warn or error (empty: no log)")
	var cpuprofile string
	fs.StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run (server, worker and client) to `file`")
	fs.StringVar(&store.dir, "dir", "", "directory of the SQLite file (empty: a new temporary directory, removed afterwards)")
	_ = fs.Parse(os.Args[1:])
	if err := w.check(); err != nil {
		fmt.Fprintln(os.Stderr, "temporal:", err)
		os.Exit(2)
	}
	if cpuprofile != "" {
		stop, err := profile(cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "temporal:", err)
			os.Exit(1)
		}
		defer stop()
	}
	if err := run(context.Background(), w, store); err != nil {
		fmt.Fprintln(os.Stderr, "temporal:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w workload, store storeOptions) error {
	if store.kind == "file" && store.dir == "" {
		dir, err := os.MkdirTemp("", "temporal-bench-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(dir) }()
		store.dir = dir
	}
	srv, err := startServer(&store, namespace)
	if err != nil {
		return err
	}
	defer func() { _ = srv.stop() }()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := client.DialContext(ctx, client.Options{
		HostPort:  srv.hostPort,
		Namespace: namespace,
		Logger:    sdklog.NewStructuredLogger(logger),
	})
	if err != nil {
		return fmt.Errorf("dial %s: %w", srv.hostPort, err)
	}
	defer c.Close()
	if err := ready(ctx, c, 2*time.Minute); err != nil {
		return err
	}

	var count counter
	acts := &activities{w: w, count: &count}
	wk := worker.New(c, taskQueue, worker.Options{})
	wk.RegisterWorkflow(agent)
	wk.RegisterActivity(acts)
	if err := wk.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	defer wk.Stop()

	res, err := drive(ctx, w, &count, func(ctx context.Context, i int) (int, error) {
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID:        "bench-" + strconv.Itoa(i),
			TaskQueue: taskQueue,
		}, agent, w.steps)
		if err != nil {
			return 0, fmt.Errorf("start: %w", err)
		}
		var done int
		if err := run.Get(ctx, &done); err != nil {
			return 0, fmt.Errorf("result: %w", err)
		}
		return done, nil
	})
	if err != nil {
		return err
	}
	res.Peer = "temporal"
	res.Config = map[string]string{
		"engine":         "go.temporal.io/server " + moduleVersion("go.temporal.io/server") + ", go.temporal.io/sdk " + moduleVersion("go.temporal.io/sdk"),
		"store":          "sqlite-" + store.kind,
		"history_shards": "1",
		"durability":     durability(store),
	}
	if store.kind == "postgres" {
		res.Config["store"] = "postgresql " + store.settings["server_version"] + " (plugin postgres12, 20 connections)"
		for _, k := range []string{"fsync", "synchronous_commit", "wal_sync_method"} {
			res.Config[k] = store.settings[k]
		}
	}
	if store.kind == "file" {
		res.Config["sqlite_journal_mode"] = orDefault(store.journal, "delete")
		res.Config["sqlite_synchronous"] = orDefault(store.sync, "full")
	}
	return res.print(os.Stdout)
}

// profile starts the CPU profiler writing to path and returns what stops it.
func profile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// ready waits until the server answers for the namespace and can start a
// workflow: its services find each other through the store (a ring
// bootstrapped from the cluster_membership table), which on PostgreSQL takes
// seconds after Start returns.
func ready(ctx context.Context, c client.Client, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		_, err := c.CheckHealth(ctx, &client.CheckHealthRequest{})
		if err == nil {
			_, err = c.DescribeTaskQueue(ctx, taskQueue, enumspb.TASK_QUEUE_TYPE_WORKFLOW)
		}
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server not ready after %s: %w", limit, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// durability says in a few words what survives a crash of the machine.
func durability(store storeOptions) string {
	switch {
	case store.kind == "memory":
		return "none: state in memory"
	case store.kind == "postgres" && store.settings["fsync"] != "on":
		return "no fsync"
	case store.kind == "postgres" && store.settings["synchronous_commit"] == "off":
		return "WAL fsynced in the background, not at commit"
	case store.kind == "postgres":
		return "WAL fsync at every commit (group commit)"
	}
	switch store.sync {
	case "", "full", "FULL", "2", "extra", "EXTRA", "3":
		return "fsync at every commit"
	case "off", "OFF", "0":
		return "no fsync"
	}
	if store.journal == "wal" || store.journal == "WAL" {
		return "fsync at WAL checkpoints only"
	}
	return "synchronous=" + store.sync
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// agent is the workflow: steps activities in sequence, a model call then a
// tool call then a model call..., and the number of steps completed.
func agent(ctx workflow.Context, steps int) (int, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
	var a *activities
	for i := range steps {
		var out string
		f := a.Tool
		if i%2 == 0 {
			f = a.Model
		}
		if err := workflow.ExecuteActivity(ctx, f, i).Get(ctx, &out); err != nil {
			return i, err
		}
	}
	return steps, nil
}

// activities are the steps.
type activities struct {
	w     workload
	count *counter
}

// Model is the scripted model call.
func (a *activities) Model(_ context.Context, step int) (string, error) {
	return a.count.model(a.w, step), nil
}

// Tool is the no-op tool call.
func (a *activities) Tool(_ context.Context, _ int) (string, error) {
	return a.count.tool(), nil
}
