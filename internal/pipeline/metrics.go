package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/corral-dev/corral/internal/audit"
)

// Metrics counts actions; a nil *Metrics counts nothing.
type Metrics struct {
	actions  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	drift    *prometheus.CounterVec
	policy   *prometheus.CounterVec
	errors   prometheus.Counter
}

// NewMetrics registers the pipeline's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "corral_actions_total",
			Help: "Actions by kind, decision (allowed, denied), status (ok, error, refused) and code.",
		}, []string{"kind", "decision", "status", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "corral_action_duration_seconds",
			Help:    "Time from an action's arrival to its answer, by kind and status.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"kind", "status"}),
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "corral_tool_output_drift_total",
			Help: "Tool answers that broke the tool's declared output schema.",
		}, []string{"source", "tool"}),
		policy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "corral_policy_decisions_total",
			Help: "Policy decisions by kind and effect (allow, deny, approval, error).",
		}, []string{"kind", "effect"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "corral_policy_errors_total",
			Help: "Policy evaluations that failed or timed out; each denied its action (fail closed) or hid a tool.",
		}),
	}
	reg.MustRegister(m.actions, m.duration, m.drift, m.policy, m.errors)
	return m
}

func (m *Metrics) observe(r *audit.Record) {
	if m == nil {
		return
	}
	m.actions.WithLabelValues(r.Kind, r.Decision, r.Status, r.Code).Inc()
	if r.Policy != nil {
		m.policy.WithLabelValues(r.Kind, r.Policy.Effect).Inc()
	}
	m.duration.WithLabelValues(r.Kind, r.Status).Observe(r.DurationMS / 1000)
}

func (m *Metrics) outputDrift(source, tool string) {
	if m == nil {
		return
	}
	m.drift.WithLabelValues(source, tool).Inc()
}

func (m *Metrics) policyError() {
	if m == nil {
		return
	}
	m.errors.Inc()
}
