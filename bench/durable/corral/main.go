// Command corral measures durable steps per second on corral's orchestrator,
// running the workload every peer of bench/durable runs (bench/README.md,
// "Durable steps"), and prints one JSON line.
//
// corral runs in this process as `corral up` would: an embedded JetStream in
// a temporary directory, HTTP on loopback, its defaults (tracing on, audit on,
// the built-in policy). Each workflow is a task of a hosted agent: a client
// starts it with POST /v1/tasks and follows GET /v1/tasks/{id}/events until it
// ends, as `corral run` does. A model step is a call of the agent's scripted
// model (in process, as the peers' steps are); a tool step is a call of a
// no-op tool on an HTTP upstream on loopback, since corral's tools are remote
// APIs. Every step goes through corral's pipeline (a token, policy, budgets,
// the audit's intent and outcome records, an idempotency record) and is
// journaled before its effect.
//
// A task ends with a model call that answers without calling a tool, so a
// workflow of an even number of steps costs corral one model call more than
// it is credited with.
//
// With -parked N it measures memory instead: N tasks of an external agent,
// each parked in input-required, and the process's resident memory after.
//
//	go run ./bench/durable/corral -duration 5s
//	go run ./bench/durable/corral -sync always
//	go run ./bench/durable/corral -parked 100000
//	CORRAL_BENCH_LOG=1 go run ./bench/durable/corral   # corral's warnings on stderr
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/identity"
)

func main() {
	var (
		w      workload
		sync   string
		parked int
		prof   string
	)
	fs := flag.NewFlagSet("corral", flag.ExitOnError)
	w.flags(fs)
	fs.StringVar(&sync, "sync", "default", "JetStream durability: default (an fsync every two minutes) or always (an fsync at every write)")
	fs.IntVar(&parked, "parked", 0, "instead of the workload, park this many tasks in input-required and report memory")
	fs.StringVar(&prof, "cpuprofile", "", "write a CPU profile of the run to this file")
	_ = fs.Parse(os.Args[1:])
	if prof != "" {
		f, err := os.Create(prof)
		if err == nil {
			_ = pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := w.check(); err != nil {
		fmt.Fprintln(os.Stderr, "corral:", err)
		os.Exit(2)
	}
	if sync != "default" && sync != "always" {
		fmt.Fprintf(os.Stderr, "corral: -sync %q: want default or always\n", sync)
		os.Exit(2)
	}
	var err error
	if parked > 0 {
		err = park(context.Background(), parked, sync == "always")
	} else {
		err = run(context.Background(), w, sync == "always")
	}
	if err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "corral:", err)
		os.Exit(1)
	}
}

// server is corral in this process, with a client for its API.
type server struct {
	url, token string
	client     *http.Client
	stop       func() error
}

func start(ctx context.Context, syncAlways bool) (*server, error) {
	dir, err := os.MkdirTemp("", "corral-bench-durable-")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("CORRAL_BENCH_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	a, err := app.New(ctx, logger, app.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", SyncAlways: syncAlways, Version: "bench"})
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("corral stopped before it was ready: %w", err)
	}
	path, _ := a.AdminToken()
	token, err := identity.ReadToken(path)
	if err != nil {
		cancel()
		return nil, err
	}
	stop := func() error {
		cancel()
		err := <-done
		os.RemoveAll(dir)
		return err
	}
	transport := &http.Transport{MaxIdleConnsPerHost: 256}
	return &server{url: a.URL(), token: token, client: &http.Client{Transport: transport}, stop: stop}, nil
}

func (s *server) call(ctx context.Context, method, path string, body any, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: HTTP %d %s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// noopTool is the tool upstream: it counts each call and answers {}.
func noopTool(c *counter) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, c.tool())
	})}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

const toolDoc = `openapi: 3.0.3
info: {title: noop, version: "1"}
paths:
  /call:
    post:
      operationId: call
      requestBody:
        content:
          application/json:
            schema: {type: object}
      responses:
        "200": {description: done}
`

// resources are the tool source, the scripted model and the hosted agent
// for workflows of steps steps.
func resources(toolURL string, w workload) []map[string]any {
	tools := w.steps / 2
	var script []map[string]any
	answer := strings.Repeat("x", w.payload)
	for range tools {
		script = append(script, map[string]any{"content": answer, "toolCalls": []map[string]any{{"name": "noop__call", "arguments": map[string]any{}}}})
	}
	script = append(script, map[string]any{"content": answer})
	return []map[string]any{
		{"apiVersion": "corral.dev/v1", "kind": "ToolSource", "metadata": map[string]any{"name": "noop"},
			"spec": map[string]any{"openapi": map[string]any{"baseURL": toolURL, "document": toolDoc}}},
		{"apiVersion": "corral.dev/v1", "kind": "Model", "metadata": map[string]any{"name": "scripted"},
			"spec": map[string]any{"provider": "scripted", "script": script}},
		{"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": map[string]any{"name": "stepper"},
			"spec": map[string]any{"model": "scripted", "models": []string{"scripted"}, "tools": []string{"noop.*"},
				"limits": map[string]any{"maxTurns": tools + 1, "maxToolCalls": tools + 1, "repeatedCalls": tools + 2, "deadline": "10m"}}},
		{"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": map[string]any{"name": "outside"}, "spec": map[string]any{}},
	}
}

func run(ctx context.Context, w workload, syncAlways bool) error {
	var c counter
	toolURL, stopTool, err := noopTool(&c)
	if err != nil {
		return err
	}
	defer stopTool()
	s, err := start(ctx, syncAlways)
	if err != nil {
		return err
	}
	defer s.stop()
	if err := s.call(ctx, "POST", "/v1/apply", map[string]any{"resources": resources(toolURL, w)}, nil); err != nil {
		return err
	}
	if err := waitTool(ctx, s, "noop.call"); err != nil {
		return err
	}
	modelSteps := w.steps - w.steps/2
	res, err := drive(ctx, w, &c, func(ctx context.Context, i int) (int, error) {
		var task struct {
			ID string `json:"id"`
		}
		if err := s.call(ctx, "POST", "/v1/tasks", map[string]any{"agent": "stepper", "input": "workflow " + strconv.Itoa(i)}, &task); err != nil {
			return 0, err
		}
		// Model steps run inside corral (the scripted model): each counts
		// when its answer comes out of the journal, tool steps at the
		// upstream as they run.
		answers := 0
		final, err := follow(ctx, s, task.ID, func() {
			if answers < modelSteps {
				answers++
				c.model(w, 2*(answers-1)) // counts the step; corral's own scripted model wrote the answer
			}
		})
		if err != nil {
			return 0, err
		}
		if final.State != "completed" {
			return 0, fmt.Errorf("task %s ended %s %s: %s", task.ID, final.State, final.Reason, final.Detail)
		}
		return answers + final.Usage.ToolCalls, nil
	})
	if err != nil {
		return err
	}
	res.Peer = "corral"
	durability := "JetStream's default: written to the OS at once, fsynced every two minutes (survives a crash of corral, not of the machine)"
	if syncAlways {
		durability = "fsync at every write (--sync always)"
	}
	res.Config = map[string]string{"engine": "corral (this tree)", "store": "embedded JetStream (nats-server " + moduleVersion("github.com/nats-io/nats-server/v2") + "), file storage", "durability": durability,
		"sync": map[bool]string{false: "default", true: "always"}[syncAlways], "go": runtime.Version()}
	return res.print(os.Stdout)
}

func waitTool(ctx context.Context, s *server, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if s.call(ctx, "GET", "/v1/tools/"+name, nil, nil) == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("tool %s not served after 30s", name)
}

// finalState is the task's last state event.
type finalState struct {
	Type   string `json:"type"`
	State  string `json:"state"`
	Reason string `json:"reason"`
	Detail string `json:"detail"`
	Usage  struct {
		ToolCalls int `json:"tool_calls"`
	} `json:"usage"`
}

// follow reads the task's events until its final state, as corral run
// does, calling answered at each answer of the model.
func follow(ctx context.Context, s *server, id string, answered func()) (*finalState, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", s.url+"/v1/tasks/"+id+"/events", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("events of %s: HTTP %d", id, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev finalState
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return nil, err
		}
		if ev.Type == "model.answer" {
			answered()
		}
		switch ev.State {
		case "completed", "failed", "canceled", "rejected":
			return &ev, nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("the event stream of " + id + " ended before the task did")
}

// memory is the JSON line of a -parked run.
type memory struct {
	Peer         string  `json:"peer"`
	Parked       int     `json:"parked"`
	Seconds      float64 `json:"seconds"`
	RSSMiB       float64 `json:"rss_mib"`
	HeapMiB      float64 `json:"heap_mib"`
	BytesPerTask float64 `json:"bytes_per_task"`
}

// park creates n tasks of an external agent and parks each in
// input-required, then reports the process's memory.
func park(ctx context.Context, n int, syncAlways bool) error {
	s, err := start(ctx, syncAlways)
	if err != nil {
		return err
	}
	defer s.stop()
	if err := s.call(ctx, "POST", "/v1/apply", map[string]any{"resources": []map[string]any{
		{"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": map[string]any{"name": "outside"}, "spec": map[string]any{}},
	}}, nil); err != nil {
		return err
	}
	runtime.GC()
	base := rss()
	start := time.Now()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		fail error
		next = make(chan int)
	)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				var task struct {
					ID string `json:"id"`
				}
				err := s.call(ctx, "POST", "/v1/tasks", map[string]any{"agent": "outside", "input": "parked task " + strconv.Itoa(i)}, &task)
				if err == nil {
					err = s.call(ctx, "POST", "/v1/tasks/"+task.ID+"/result", map[string]any{"state": "input-required", "detail": "waiting for a person"}, nil)
				}
				if err != nil {
					mu.Lock()
					fail = err
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		mu.Lock()
		stop := fail != nil
		mu.Unlock()
		if stop {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if fail != nil {
		return fail
	}
	elapsed := time.Since(start)
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := s.call(ctx, "GET", "/v1/tasks?state=input-required&limit=1", nil, &list); err != nil || len(list.Items) != 1 {
		return fmt.Errorf("listing parked tasks: %v", err)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	now := rss()
	out, _ := json.Marshal(memory{Peer: "corral", Parked: n, Seconds: elapsed.Seconds(), RSSMiB: float64(now) / (1 << 20),
		HeapMiB: float64(ms.HeapAlloc) / (1 << 20), BytesPerTask: float64(now-base) / float64(n)})
	fmt.Println(string(out))
	return nil
}

// rss is the process's resident memory, from /proc (0 where there is none).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
