package main

// This file is the same in every peer of bench/durable (temporal, dbos, and
// corral's): the workload, its flags and the JSON line it ends with. Each peer
// is a module of its own, so it is a copy, not an import; bench/README.md,
// "Durable steps", is the contract and says what each field means.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// workload is what every peer runs: workflows of steps sequential steps
// each, concurrency of them at a time, for a duration or a number of
// workflows. Step i of a workflow is a scripted
// model call when i is even (it answers payload bytes) and a no-op tool call
// when i is odd.
type workload struct {
	duration    time.Duration // start workflows for this long, then let those in flight finish
	workflows   int           // or run exactly this many, when above 0
	steps       int
	concurrency int
	warmup      int
	payload     int
}

// flags registers the workload's flags, the same for every peer.
func (w *workload) flags(fs *flag.FlagSet) {
	fs.DurationVar(&w.duration, "duration", 10*time.Second, "start workflows for this long, then wait for those in flight; the time includes the wait")
	fs.IntVar(&w.workflows, "workflows", 0, "run exactly this many workflows instead of -duration (0: use -duration)")
	fs.IntVar(&w.steps, "steps", 10, "sequential steps per workflow (even: a scripted model call, odd: a no-op tool call)")
	fs.IntVar(&w.concurrency, "concurrency", 20, "workflows in flight at once")
	fs.IntVar(&w.warmup, "warmup", -1, "workflows run before timing (-1: as many as -concurrency)")
	fs.IntVar(&w.payload, "payload", 256, "bytes of each scripted model answer")
}

// check reports the first flag out of range.
func (w *workload) check() error {
	switch {
	case w.workflows < 0:
		return fmt.Errorf("-workflows %d: want 0 or more", w.workflows)
	case w.workflows == 0 && w.duration <= 0:
		return fmt.Errorf("-duration %s: want more than 0 when -workflows is 0", w.duration)
	case w.steps < 1:
		return fmt.Errorf("-steps %d: want at least 1", w.steps)
	case w.concurrency < 1:
		return fmt.Errorf("-concurrency %d: want at least 1", w.concurrency)
	case w.payload < 0:
		return fmt.Errorf("-payload %d: want 0 or more", w.payload)
	case w.warmup < -1:
		return fmt.Errorf("-warmup %d: want -1 or more", w.warmup)
	}
	if w.warmup == -1 {
		w.warmup = w.concurrency
	}
	return nil
}

// counter counts step executions where they happen, the far side of the
// engine: after a run without faults it must equal the steps asked for.
type counter struct{ n atomic.Int64 }

// model is the scripted model: its answer to step of a workflow.
func (c *counter) model(w workload, step int) string {
	c.n.Add(1)
	prefix := fmt.Sprintf("answer to turn %d: ", step)
	if len(prefix) >= w.payload {
		return prefix[:w.payload]
	}
	return prefix + strings.Repeat("x", w.payload-len(prefix))
}

// tool is the no-op tool.
func (c *counter) tool() string {
	c.n.Add(1)
	return "{}"
}

// result is the one JSON line a peer prints on standard output.
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

// runOne runs workflow number i to completion and returns the number of
// steps it reports having completed.
type runOne func(ctx context.Context, i int) (int, error)

// drive runs w.warmup workflows untimed, then the timed phase, each
// through run with w.concurrency in flight, and checks that every workflow
// completed all its steps and that each step ran exactly once.
//
// With w.workflows set, the phase runs that many and the rate is theirs over
// the whole phase. Otherwise workflows start until w.duration has passed, and
// the rate is that of the steps executed until then, all w.concurrency in
// flight; the workflows still running are awaited and checked, not timed,
// so that a peer whose workflows take longer than the window is not charged
// for the drain.
func drive(ctx context.Context, w workload, c *counter, run runOne) (result, error) {
	if w.warmup > 0 {
		if _, err := phase(ctx, w, 0, w.warmup, time.Time{}, nil, run); err != nil {
			return result{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	before := c.n.Load()
	start := time.Now()
	var (
		until  time.Time
		once   sync.Once
		window time.Duration
		inside int64 // steps executed in the window
	)
	mark := func() {
		once.Do(func() {
			inside = c.n.Load() - before
			window = time.Since(start)
		})
	}
	if w.workflows == 0 {
		until = start.Add(w.duration)
	}
	lat, err := phase(ctx, w, w.warmup, w.workflows, until, mark, run)
	if err != nil {
		return result{}, err
	}
	if len(lat) == 0 {
		return result{}, fmt.Errorf("no workflow completed in %s", time.Since(start))
	}
	executed := c.n.Load() - before
	steps := len(lat) * w.steps
	if executed != int64(steps) {
		return result{}, fmt.Errorf("steps executed: %d, want %d", executed, steps)
	}
	if w.workflows > 0 {
		mark()
	}
	slices.Sort(lat)
	rate := float64(inside) / window.Seconds()
	return result{
		Workflows:        len(lat),
		StepsPerWorkflow: w.steps,
		Concurrency:      w.concurrency,
		Steps:            steps,
		StepsExecuted:    executed,
		Seconds:          window.Seconds(),
		WindowSteps:      inside,
		StepsPerSec:      rate,
		WorkflowsPerSec:  rate / float64(w.steps),
		WorkflowP50Ms:    ms(lat[len(lat)/2]),
		WorkflowP99Ms:    ms(lat[(len(lat)*99)/100]),
	}, nil
}

// phase runs workflows numbered from first, w.concurrency at a time: n of
// them, or when n is 0 as many as start before until, and calls mark when
// the first of its workers sees until pass. It returns each one's duration.
// The first error stops it.
func phase(ctx context.Context, w workload, first, n int, until time.Time, mark func(), run runOne) ([]time.Duration, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		next atomic.Int64
		mu   sync.Mutex
		lat  []time.Duration
		wg   sync.WaitGroup
	)
	workers := w.concurrency
	if n > 0 {
		workers = min(workers, n)
	}
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				t := time.Now()
				if n == 0 && !t.Before(until) {
					mark()
					return
				}
				i := int(next.Add(1) - 1)
				if n > 0 && i >= n {
					return
				}
				done, err := run(ctx, first+i)
				if err == nil && done != w.steps {
					err = fmt.Errorf("completed %d steps, want %d", done, w.steps)
				}
				if err != nil {
					cancel(fmt.Errorf("workflow %d: %w", first+i, err))
					return
				}
				d := time.Since(t)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return lat, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// print writes r as one JSON line.
func (r result) print(out io.Writer) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", b)
	return err
}

// moduleVersion is the version of module path built into this binary.
func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == path {
				return d.Version
			}
		}
	}
	return "unknown"
}
