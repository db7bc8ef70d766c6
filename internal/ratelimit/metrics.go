package ratelimit

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector reports, per rate limit, this replica's counts:
// corral_ratelimit_admitted_total, corral_ratelimit_delayed_total (calls
// that waited their turn, through Wait), corral_ratelimit_refused_total
// and corral_ratelimit_in_flight (slots held by calls running here; the sum
// over replicas is the limit's calls in flight).
type Collector struct {
	limits                               *Limits
	admitted, delayed, refused, inFlight *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector over l, for a prometheus.Registry.
func NewCollector(l *Limits) *Collector {
	labels := []string{"limit"}
	return &Collector{
		limits:   l,
		admitted: prometheus.NewDesc("corral_ratelimit_admitted_total", "Calls a rate limit admitted on this replica.", labels, nil),
		delayed:  prometheus.NewDesc("corral_ratelimit_delayed_total", "Calls that waited for a rate limit's turn on this replica instead of being refused.", labels, nil),
		refused:  prometheus.NewDesc("corral_ratelimit_refused_total", "Calls a rate limit refused on this replica (429 rate_limited).", labels, nil),
		inFlight: prometheus.NewDesc("corral_ratelimit_in_flight", "Calls holding a slot under a rate limit's in-flight cap on this replica.", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.admitted
	ch <- c.delayed
	ch <- c.refused
	ch <- c.inFlight
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, lm := range *c.limits.set.Load() {
		if lm.err != nil {
			continue
		}
		s := lm.stats
		ch <- prometheus.MustNewConstMetric(c.admitted, prometheus.CounterValue, float64(s.admitted.Load()), lm.name)
		ch <- prometheus.MustNewConstMetric(c.delayed, prometheus.CounterValue, float64(s.delayed.Load()), lm.name)
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(s.refused.Load()), lm.name)
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(s.inFlight.Load()), lm.name)
	}
}
