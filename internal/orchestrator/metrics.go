package orchestrator

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector reports corral_tasks{state}, the tasks in each state as this
// replica's mirror holds them, and corral_task_resumes_total, the times a
// worker here took over a task from its journal after another stopped (a
// crash, a lost lease). It reads memory at scrape time.
type Collector struct {
	store   *Store
	resumes *atomic.Int64
	tasks   *prometheus.Desc
	resumed *prometheus.Desc
	// deadlocks is corral_deadlocks_total (docs/agents.md).
	deadlocks *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector over the store and the worker (nil
// when this replica runs none).
func NewCollector(s *Store, w *Worker) *Collector {
	c := &Collector{store: s, resumes: new(atomic.Int64),
		tasks:     prometheus.NewDesc("corral_tasks", "Tasks by state, as this replica's mirror of the task records holds them.", []string{"state"}, nil),
		resumed:   prometheus.NewDesc("corral_task_resumes_total", "Tasks this replica's worker took over from their journal after another worker (or this one, before a restart) stopped.", nil, nil),
		deadlocks: prometheus.NewDesc("corral_deadlocks_total", "Cycles of tasks waiting on each other that this replica broke, failing the youngest task of each with reason deadlock.", nil, nil)}
	if w != nil {
		c.resumes = &w.resumes
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.tasks
	ch <- c.resumed
	ch <- c.deadlocks
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	counts := map[State]int{}
	c.store.mu.RLock()
	for _, m := range c.store.tasks {
		counts[m.task.State]++
	}
	c.store.mu.RUnlock()
	for _, st := range States {
		ch <- prometheus.MustNewConstMetric(c.tasks, prometheus.GaugeValue, float64(counts[st]), string(st))
	}
	ch <- prometheus.MustNewConstMetric(c.resumed, prometheus.CounterValue, float64(c.resumes.Load()))
	ch <- prometheus.MustNewConstMetric(c.deadlocks, prometheus.CounterValue, float64(c.store.deadlocks.Load()))
}
