package app

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/tools"
	"github.com/corral-dev/corral/internal/upstream"
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

// breakerGauge reports corral_upstream_breaker_state{source}: 0 closed,
// 1 open, 2 half-open, set as breakers change.
type breakerGauge struct {
	g      *prometheus.GaugeVec
	logger *slog.Logger
}

func newBreakerGauge(reg prometheus.Registerer, logger *slog.Logger) *breakerGauge {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "corral_upstream_breaker_state",
		Help: "Circuit breaker state per tool source: 0 closed, 1 open, 2 half-open.",
	}, []string{"source"})
	reg.MustRegister(g)
	return &breakerGauge{g: g, logger: logger}
}

func (b *breakerGauge) set(source string, from, to upstream.State) {
	b.g.WithLabelValues(source).Set(float64(to))
	level := slog.LevelInfo
	if to == upstream.Open {
		level = slog.LevelWarn
	}
	b.logger.Log(context.Background(), level, "upstream circuit breaker "+to.String(), "source", source, "from", from.String())
}

// driftCollector reports corral_tool_drift{source}: 1 while a source holds
// back a newer definition that would break callers.
type driftCollector struct {
	drift func() []tools.Drift
	desc  *prometheus.Desc
}

func newDriftCollector(drift func() []tools.Drift) *driftCollector {
	return &driftCollector{drift: drift, desc: prometheus.NewDesc(
		"corral_tool_drift", "1 for each tool source holding back a newer definition that would break callers.", []string{"source"}, nil)}
}

func (c *driftCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *driftCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range c.drift() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1, d.Source)
	}
}
