package main

// This file is the same in every peer of bench/durable, as workload.go is.

import (
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

// fake runs workflow i's steps on c, the way an engine would, with an
// optional fault.
func fake(w workload, c *counter, fault func(i, step int) (again bool, stop error)) runOne {
	return func(_ context.Context, i int) (int, error) {
		for s := range w.steps {
			run := func() {
				if s%2 == 0 {
					c.model(w, s)
				} else {
					c.tool()
				}
			}
			run()
			if fault != nil {
				again, err := fault(i, s)
				if again {
					run()
				}
				if err != nil {
					return s, err
				}
			}
		}
		return w.steps, nil
	}
}

func TestDrive(t *testing.T) {
	w := workload{workflows: 30, steps: 4, concurrency: 5, warmup: 3, payload: 8}
	var c counter
	r, err := drive(t.Context(), w, &c, fake(w, &c, nil))
	if err != nil {
		t.Fatalf("drive = %v", err)
	}
	if r.Workflows != 30 || r.Steps != 120 || r.StepsExecuted != 120 || r.StepsPerWorkflow != 4 || r.Concurrency != 5 {
		t.Errorf("drive = %+v, want 30 workflows, 120 steps executed once each", r)
	}
	if got := c.n.Load(); got != 33*4 {
		t.Errorf("steps run with the warm-up = %d, want %d", got, 33*4)
	}
	if r.WindowSteps != 120 || !(r.StepsPerSec > 0) || !(r.Seconds > 0) || r.WorkflowP99Ms < r.WorkflowP50Ms {
		t.Errorf("drive = %+v, want positive rates and p99 ≥ p50", r)
	}
}

func TestDriveDuration(t *testing.T) {
	w := workload{duration: 50 * time.Millisecond, steps: 2, concurrency: 3, payload: 4}
	var c counter
	slow := func(_ context.Context, _ int) (int, error) {
		c.model(w, 0)
		time.Sleep(time.Millisecond)
		c.tool()
		return 2, nil
	}
	r, err := drive(t.Context(), w, &c, slow)
	if err != nil {
		t.Fatalf("drive = %v", err)
	}
	if r.Workflows < 1 || r.StepsExecuted != int64(r.Workflows*2) {
		t.Errorf("drive = %+v, want at least one workflow and two steps executed per workflow", r)
	}
	if r.Seconds < w.duration.Seconds() || r.WindowSteps < 1 || r.WindowSteps > r.StepsExecuted {
		t.Errorf("drive = %+v, want a window of at least %s holding some of the steps executed", r, w.duration)
	}
}

func TestDriveFaults(t *testing.T) {
	w := workload{workflows: 10, steps: 3, concurrency: 2, payload: 4}
	boom := errors.New("boom")
	for _, tc := range []struct {
		name  string
		fault func(i, step int) (bool, error)
		run   func(c *counter) runOne
		want  string
	}{
		{
			name:  "a step run twice",
			fault: func(i, step int) (bool, error) { return i == 4 && step == 1, nil },
			want:  "steps executed: 31, want 30",
		},
		{
			name: "a workflow fails",
			fault: func(i, step int) (bool, error) {
				if i == 6 && step == 2 {
					return false, boom
				}
				return false, nil
			},
			want: "workflow 6: boom",
		},
		{
			name: "a workflow reports fewer steps",
			run: func(c *counter) runOne {
				return func(context.Context, int) (int, error) { c.tool(); return 1, nil }
			},
			want: "completed 1 steps, want 3",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c counter
			run := fake(w, &c, tc.fault)
			if tc.run != nil {
				run = tc.run(&c)
			}
			_, err := drive(t.Context(), w, &c, run)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("drive = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestDriveCanceled(t *testing.T) {
	w := workload{workflows: 5, steps: 1, concurrency: 1, payload: 1}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var c counter
	if _, err := drive(ctx, w, &c, fake(w, &c, nil)); !errors.Is(err, context.Canceled) {
		t.Errorf("drive(canceled) = %v, want context.Canceled", err)
	}
}

func TestWorkloadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "" for no error
	}{
		{nil, ""},
		{[]string{"-workflows", "5", "-duration", "0s"}, ""},
		{[]string{"-workflows", "-1"}, "-workflows -1"},
		{[]string{"-duration", "0s"}, "-duration 0s"},
		{[]string{"-steps", "0"}, "-steps 0"},
		{[]string{"-concurrency", "0"}, "-concurrency 0"},
		{[]string{"-payload", "-3"}, "-payload -3"},
		{[]string{"-warmup", "-2"}, "-warmup -2"},
	} {
		var w workload
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		w.flags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("Parse(%q) = %v", tc.args, err)
		}
		err := w.check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("check(%q) = %v, want %q", tc.args, err, tc.want)
		}
		if err == nil && w.warmup != w.concurrency {
			t.Errorf("check(%q): warmup %d, want -concurrency's %d", tc.args, w.warmup, w.concurrency)
		}
	}
}

func TestModelAnswerSize(t *testing.T) {
	for _, payload := range []int{0, 5, 256, 4096} {
		var c counter
		if got := len(c.model(workload{payload: payload}, 12)); got != payload {
			t.Errorf("len(model(payload %d)) = %d", payload, got)
		}
	}
}
