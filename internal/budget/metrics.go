package budget

import (
	"context"
	"maps"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corral-dev/corral/internal/config"
)

// Collector reports, per budget and limit (tokens, cost or calls):
// corral_budget_limit, the limit; corral_budget_used, what the current
// window has used (not for task windows, whose counters are per task); and
// corral_budget_exceeded_total, the calls this replica refused (counted
// since it started, for the budgets that exist now). Usage is
// read from the bucket at scrape time, so every replica reports the shared
// truth; a scrape that cannot read it reports the limits alone.
type Collector struct {
	budgets                  *Budgets
	limit, used, exceededTot *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// scrapeTimeout bounds the reads of one scrape.
const scrapeTimeout = 2 * time.Second

// NewCollector returns a collector over b, for a prometheus.Registry.
func NewCollector(b *Budgets) *Collector {
	labels := []string{"budget", "limit"}
	return &Collector{
		budgets:     b,
		limit:       prometheus.NewDesc("corral_budget_limit", "The limit of a budget (tokens, cost or calls).", labels, nil),
		used:        prometheus.NewDesc("corral_budget_used", "What the current window of a budget has used, for each of its limits; not reported for task windows.", labels, nil),
		exceededTot: prometheus.NewDesc("corral_budget_exceeded_total", "Calls refused by this replica because a budget's limit was reached.", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.limit
	ch <- c.used
	ch <- c.exceededTot
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	b := c.budgets
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	now := b.now()
	b.mu.Lock()
	exceeded := maps.Clone(b.exceeded)
	b.mu.Unlock()
	for _, bg := range *b.set.Load() {
		if bg.err != nil {
			continue
		}
		var used *Usage
		if bg.spec.Window != config.WindowTask {
			st, err := b.status(ctx, bg, now, false)
			if err != nil {
				b.logger.WarnContext(ctx, "budget: metrics: reading usage failed", "budget", bg.name, "err", err)
			} else {
				used = st.Used
			}
		}
		for _, l := range limitsOf(bg.spec.Limit, used) {
			ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, l.max, bg.name, l.name)
			if used != nil {
				ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, l.used, bg.name, l.name)
			}
			// Every limit's counter is reported from zero, so that rate()
			// sees the first refusal.
			n := exceeded[limitOf{bg.name, l.name}]
			ch <- prometheus.MustNewConstMetric(c.exceededTot, prometheus.CounterValue, float64(n), bg.name, l.name)
		}
	}
}

// limitValue is one limit that is set and its usage.
type limitValue struct {
	name      string
	max, used float64
}

// limitsOf lists the limits that are set, with their usage from u (zero when nil).
func limitsOf(lim config.BudgetLimit, u *Usage) []limitValue {
	var used Usage
	if u != nil {
		used = *u
	}
	var out []limitValue
	if lim.Tokens != nil {
		out = append(out, limitValue{LimitTokens, float64(*lim.Tokens), float64(used.Tokens)})
	}
	if lim.Cost != nil {
		out = append(out, limitValue{LimitCost, *lim.Cost, used.Cost})
	}
	if lim.Calls != nil {
		out = append(out, limitValue{LimitCalls, float64(*lim.Calls), float64(used.Calls)})
	}
	return out
}
