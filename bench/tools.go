package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/idempotency"
)

// replays is how many idempotent calls are retried at the end, each of
// which must be answered from the idempotency record.
const replays = 20

// benchTools measures a tool call through corral against the same call
// straight to the upstream, and against a bare reverse proxy as the floor of
// any HTTP gateway: sequential latency, then throughput under concurrent
// clients. Any answer that is not a 200 with the expected item fails the
// run, and so does an audit record or idempotency record gone missing.
func benchTools(ctx context.Context, c *corral, o options) error {
	up, err := startUpstream(ctx)
	if err != nil {
		return err
	}
	defer up.stop()
	proxy, err := startProxy(ctx, up.url)
	if err != nil {
		return err
	}
	defer proxy.stop()
	key, err := setupTool(ctx, c, up.url)
	if err != nil {
		return err
	}
	limitedKey, err := setupLimited(ctx, c)
	if err != nil {
		return err
	}
	appendAudit, claim, stopStages, err := stages(ctx)
	if err != nil {
		return err
	}
	defer stopStages()
	auditBefore, err := auditCount(ctx, c)
	if err != nil {
		return err
	}

	direct := getItem("direct", up.url)
	viaProxy := getItem("bare reverse proxy", proxy.url)
	viaCorral := invoke("corral", c.url, key, false)
	keyed := invoke("corral + Idempotency-Key", c.url, key, true)
	// A caller's trace that is not sampled: corral records no span, so the
	// difference to "corral" (a new trace, recorded) is what tracing costs.
	untraced := invoke("corral, trace not sampled", c.url, key, false)
	untraced.header = http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}}
	// The same call by an agent under a RateLimit (a rate and an in-flight
	// cap it never reaches): an admission and a release on the shared
	// counter, the difference to "corral" (covered by no limit).
	limited := invoke("corral + RateLimit", c.url, limitedKey, false)
	paths := []*path{direct, viaProxy, viaCorral, keyed, untraced, limited}
	refs := []*path{
		{name: "stage: audit append", call: appendAudit},
		{name: "stage: idempotency claim + record", call: claim},
	}

	lat := measureLatency(ctx, append(paths, refs...), o)
	fmt.Printf("tool call %s, %d sequential calls per path after %d to warm up, paths interleaved in blocks of %d (µs):\n",
		tool, o.calls, o.warmup, o.block)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tp50\tp90\tp99\tallocs/call\tadded p50\tadded p99\t")
	base := lat[0]
	for i, p := range append(paths, refs...) {
		l := lat[i]
		added := "\t"
		if i > 0 && i < len(paths) {
			added = fmt.Sprintf("%+.0f\t%+.0f", us(l.p50-base.p50), us(l.p99-base.p99))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t\n", p.name, us(l.p50), us(l.p90), us(l.p99), l.allocs, added)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// What tracing and the audit add to corral's own overhead (its p50 over
	// direct): tracing as the recorded path against the unsampled one, the
	// audit as its append measured alone.
	traced, plain, appendP50 := lat[2].p50-base.p50, lat[4].p50-base.p50, lat[len(paths)].p50
	without := plain - appendP50
	fmt.Printf("\ntracing and audit: overhead p50 %.0f µs recorded, %.0f µs unsampled; the audit append alone %.0f µs\n",
		us(traced), us(plain), us(appendP50))
	if without > 0 {
		fmt.Printf("  tracing adds %+.0f%%, tracing and audit together %+.0f%% to the overhead without either (%.0f µs)\n",
			100*float64(traced-plain)/float64(plain), 100*float64(traced-without)/float64(without), us(without))
	}

	fmt.Printf("\nthroughput, requests/s, median of %d phase(s) of %s per path and concurrency, paths rotated; ratio to direct:\n", o.repeats, o.duration)
	header := "clients\t"
	for _, p := range paths {
		header += p.name + "\t"
		if p != direct {
			header += "ratio\t"
		}
	}
	fmt.Fprintln(tw, header)
	for _, n := range o.clients {
		rates := make([][]float64, len(paths))
		for r := range o.repeats {
			for k := range paths {
				i := (k + r) % len(paths) // no path always goes first
				rates[i] = append(rates[i], measureThroughput(ctx, paths[i], n, o.duration))
			}
		}
		row := fmt.Sprintf("%d\t", n)
		d := median(rates[0])
		for i, p := range paths {
			m := median(rates[i])
			row += fmt.Sprintf("%.0f\t", m)
			if p != direct {
				row += fmt.Sprintf("%.2f\t", m/d)
			}
		}
		fmt.Fprintln(tw, row)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	if o.cpuprofile != "" {
		if err := profile(ctx, viaCorral, slices.Max(o.clients), o.duration, o.cpuprofile); err != nil {
			return err
		}
	}

	// Retried idempotent calls answer from the record and do not reach the
	// upstream again; they are audited like any call.
	replay := invoke("replay", c.url, key, true)
	replay.replayed = true
	for range replays {
		_ = replay.do(ctx)
	}
	fmt.Printf("\nrate limit: an admission and a release on the shared counter add %+.0f µs at p50, %+.0f µs at p99 to a call covered by no limit\n",
		us(lat[5].p50-lat[2].p50), us(lat[5].p99-lat[2].p99))
	return verify(ctx, c, up, append([]*path{direct, viaProxy, viaCorral, keyed, untraced, limited, replay}, refs...), auditBefore)
}

// verify fails the run if any call failed, if the upstream was called other
// than once per call that should reach it, or if corral's audit stream or
// idempotency bucket lost anything under load.
func verify(ctx context.Context, c *corral, up *server, paths []*path, auditBefore uint64) error {
	var calls, failures, viaCorral, keyedCalls, replayed, upstream int64
	var errs []error
	for _, p := range paths {
		calls += p.calls.Load()
		failures += p.failures.Load()
		if p.corral {
			viaCorral += p.calls.Load()
		}
		switch {
		case p.replayed:
			replayed += p.calls.Load() - p.failures.Load()
		case p.keyed:
			keyedCalls += p.calls.Load()
		}
		if p.upstream && !p.replayed {
			upstream += p.calls.Load()
		}
		if p.firstErr != nil {
			errs = append(errs, fmt.Errorf("%s: %d failed, the first: %w", p.name, p.failures.Load(), p.firstErr))
		}
	}
	fmt.Printf("\nfailures: %d of %d calls\n", failures, calls)
	fmt.Printf("upstream: answered %d requests for %d calls that should reach it\n", up.hits.Load(), upstream)
	if up.hits.Load() != upstream {
		errs = append(errs, fmt.Errorf("upstream: %d requests for %d calls", up.hits.Load(), upstream))
	}

	after, err := auditCount(ctx, c)
	if err != nil {
		return err
	}
	stored := int64(after - auditBefore)
	fmt.Printf("audit: %d records stored for %d calls through corral\n", stored, viaCorral)
	if stored != viaCorral {
		errs = append(errs, fmt.Errorf("audit: %d records for %d calls", stored, viaCorral))
	}

	kv, err := c.bus.JetStream().KeyValue(ctx, idempotency.Bucket)
	if err != nil {
		return err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("idempotency: %d records for %d keyed calls; %d of %d retries replayed\n", st.Values(), keyedCalls, replayed, replays)
	if int64(st.Values()) != keyedCalls {
		errs = append(errs, fmt.Errorf("idempotency: %d records for %d keyed calls", st.Values(), keyedCalls))
	}
	return errors.Join(errs...)
}

// path is one way of getting an item: straight from the upstream, through
// a bare proxy, or through corral.
type path struct {
	name string
	// call makes the nth call and checks its answer.
	call func(ctx context.Context, n int64) error
	// upstream, corral, keyed and replayed say what verify should find the
	// upstream answered and corral stored.
	upstream, corral, keyed, replayed bool
	// header is sent with every call through corral.
	header http.Header

	next            atomic.Int64 // numbers the calls: item ids and idempotency keys
	calls, failures atomic.Int64
	mu              sync.Mutex
	firstErr        error
}

// do makes one call, counting it and any failure.
func (p *path) do(ctx context.Context) error {
	n := p.next.Add(1)
	p.calls.Add(1)
	err := p.call(ctx, n)
	if err != nil {
		p.failures.Add(1)
		p.mu.Lock()
		if p.firstErr == nil {
			p.firstErr = err
		}
		p.mu.Unlock()
	}
	return err
}

// latency is one path's sequential latency.
type latency struct {
	p50, p90, p99 time.Duration
	allocs        float64 // heap allocations per call in the whole process
}

// measureLatency makes o.calls sequential calls on each path, switching path
// every o.block calls so that the machine's noise hits every path alike.
func measureLatency(ctx context.Context, paths []*path, o options) []latency {
	for range o.warmup {
		for _, p := range paths {
			_ = p.do(ctx)
		}
	}
	runtime.GC()
	durs := make([][]time.Duration, len(paths))
	mallocs := make([]uint64, len(paths))
	var ms runtime.MemStats
	for done := 0; done < o.calls; done += o.block {
		n := min(o.block, o.calls-done)
		for i, p := range paths {
			runtime.ReadMemStats(&ms)
			before := ms.Mallocs
			for range n {
				start := time.Now()
				_ = p.do(ctx) // counted in p.failures
				durs[i] = append(durs[i], time.Since(start))
			}
			runtime.ReadMemStats(&ms)
			mallocs[i] += ms.Mallocs - before
		}
	}
	out := make([]latency, len(paths))
	for i, d := range durs {
		slices.Sort(d)
		out[i] = latency{p50: quantile(d, .5), p90: quantile(d, .9), p99: quantile(d, .99), allocs: float64(mallocs[i]) / float64(len(d))}
	}
	return out
}

// quantile is the nearest-rank q-quantile of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

// measureThroughput runs clients concurrent callers for d and returns the
// successful calls per second. Callers start no call after d and finish the
// one they are in, which the rate counts.
func measureThroughput(ctx context.Context, p *path, clients int, d time.Duration) float64 {
	runtime.GC()
	var ok atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	pprof.Do(ctx, pprof.Labels("role", "client"), func(ctx context.Context) {
		for range clients {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					if p.do(ctx) == nil {
						ok.Add(1)
					}
				}
			})
		}
	})
	wg.Wait()
	return float64(ok.Load()) / time.Since(start).Seconds()
}

// profile writes a CPU profile of one more throughput phase on p, and,
// halfway through it, the goroutines (where the calls in flight wait) to
// file.goroutines. The profile covers the whole process; samples are
// labelled role=corral, role=upstream, role=proxy or role=client, and the Go
// runtime's own are unlabelled.
func profile(ctx context.Context, p *path, clients int, d time.Duration, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	snapshot := make(chan error, 1)
	time.AfterFunc(d/2, func() { snapshot <- writeGoroutines(file + ".goroutines") })
	rate := measureThroughput(ctx, p, clients, d)
	pprof.StopCPUProfile()
	if err := errors.Join(f.Close(), <-snapshot, writeProfile("allocs", file+".allocs")); err != nil { // the phase outlasts d/2
		return err
	}
	fmt.Printf("\nprofiled %s, %d clients, %s: %.0f requests/s; read it with\n  go tool pprof -top -tagfocus=role=corral %s\n", p.name, clients, d, rate, file)
	fmt.Printf("allocations of the whole run (unlabelled: focus on a function):\n  go tool pprof -sample_index=alloc_objects -top -focus=Pipeline %s.allocs\n", file)
	return nil
}

func writeGoroutines(file string) error { return writeProfile("goroutine", file) }

// writeProfile writes the named runtime profile (debug 1 for goroutines,
// readable as text; the binary form for the rest).
func writeProfile(name, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	debug := 0
	if name == "goroutine" {
		debug = 1
	}
	return errors.Join(pprof.Lookup(name).WriteTo(f, debug), f.Close())
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// stages returns calls that run two of corral's own stages, as it runs
// them, on a substrate configured like corral's (embedded, in-process
// connection, its own temporary directory): an audit append, which every
// call waits for, and an idempotency claim and record, which a call with an
// Idempotency-Key waits for. They are not ways of getting an item; they
// say how much of the added latency those stages are.
func stages(ctx context.Context) (appendAudit, claim func(context.Context, int64) error, stop func(), err error) {
	dir, err := os.MkdirTemp("", "corral-bench-stages-")
	if err != nil {
		return nil, nil, nil, err
	}
	b, err := bus.Open(ctx, slog.New(slog.DiscardHandler), bus.Options{DataDir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	stop = func() { b.Close(); os.RemoveAll(dir) }
	log, err := audit.Open(ctx, slog.New(slog.DiscardHandler), b, audit.Options{})
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	idem, err := idempotency.Open(ctx, b)
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	digest := "sha256:" + strings.Repeat("0", 64)
	appendAudit = func(ctx context.Context, _ int64) error {
		_, err := log.Append(ctx, &audit.Record{
			Time: time.Now().UTC(), Kind: "tool", Agent: "bench", Target: tool, Source: "bench", Edge: "rest",
			Decision: "allowed", Status: "ok", DurationMS: 0.25, UpstreamStatus: 200, ArgsDigest: digest,
		})
		return err
	}
	result := []byte(`{"structured":{"id":1,"name":"item 1"},"status":200}`)
	claim = func(ctx context.Context, n int64) error {
		_, c, err := idem.Begin(ctx, idempotency.Key("bench", tool, strconv.FormatInt(n, 10)), digest, time.Minute)
		if err != nil {
			return err
		}
		return idem.Finish(ctx, c, result, "audit-id")
	}
	return appendAudit, claim, stop, nil
}

// auditCount is the number of records in corral's audit stream.
func auditCount(ctx context.Context, c *corral) (uint64, error) {
	s, err := c.bus.JetStream().Stream(ctx, audit.Stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}
