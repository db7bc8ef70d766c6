package app

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/corral-dev/corral/internal/config"
)

// counter is what the resource collector reads.
type counter interface{ Count() map[string]int }

// resourceCollector reports corral_resources{kind} from the registry's memory
// at scrape time, so the gauge can never drift from the truth.
type resourceCollector struct {
	reg  counter
	desc *prometheus.Desc
}

func newResourceCollector(reg counter) *resourceCollector {
	return &resourceCollector{reg: reg, desc: prometheus.NewDesc(
		"corral_resources", "Resources loaded on this replica, by kind.", []string{"kind"}, nil)}
}

func (c *resourceCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *resourceCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.reg.Count()
	for _, k := range config.Kinds() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[k.Name]), k.Name)
	}
}
