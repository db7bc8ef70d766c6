package killswitch

import "github.com/prometheus/client_golang/prometheus"

// lister is what the collector reads.
type lister interface{ List() []Switch }

// Collector reports corral_killswitches_active{scope}, the switches that are
// on as this replica knows them: scope "all" is 0 or 1, scope "agent" counts
// the agents stopped by their own switch. It reads memory at scrape time, so
// the gauge can never drift from the truth.
type Collector struct {
	switches lister
	desc     *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector over s, for a prometheus.Registry.
func NewCollector(s lister) *Collector {
	return &Collector{switches: s, desc: prometheus.NewDesc(
		"corral_killswitches_active", "Kill switches that are on, by scope (all or agent).", []string{"scope"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	var all, agents float64
	for _, s := range c.switches.List() {
		if s.All {
			all++
		} else {
			agents++
		}
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, all, "all")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, agents, "agent")
}
