package pipeline

import (
	"time"

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
	models   modelMetrics
	stages   *prometheus.HistogramVec
	// lost counts records that could not be stored; full is 1 while the
	// audit stream is full.
	lost *prometheus.CounterVec
	full prometheus.Gauge
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
	m.models = modelMetrics{
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "corral_model_tokens_total",
			Help: "Tokens used by model calls, by agent, concrete model and direction (input, output).",
		}, []string{"agent", "model", "direction"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "corral_model_cost_total",
			Help: "Cost of model calls from the models' pricing, by agent and concrete model.",
		}, []string{"agent", "model"}),
	}
	m.stages = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "corral_stage_duration_seconds",
		Help:    "Time spent in each pipeline stage that did work: policy, validate, budget, redact, invoke, audit.",
		Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, .5, 2.5, 10},
	}, []string{"stage"})
	m.lost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "corral_audit_records_lost_total",
		Help: "Audit records that could not be stored, by reason (full, unavailable); calls are refused meanwhile.",
	}, []string{"reason"})
	m.full = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "corral_audit_full",
		Help: "1 while the audit stream is full and corral refuses calls (audit_full); alert on it.",
	})
	reg.MustRegister(m.actions, m.duration, m.drift, m.policy, m.errors, m.models.tokens, m.models.cost, m.stages, m.lost, m.full)
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

// modelMetrics count what model calls used.
type modelMetrics struct {
	tokens *prometheus.CounterVec
	cost   *prometheus.CounterVec
}

func (m *Metrics) modelUsage(agent, model string, in, out int, cost float64) {
	if m == nil {
		return
	}
	m.models.tokens.WithLabelValues(agent, model, "input").Add(float64(in))
	m.models.tokens.WithLabelValues(agent, model, "output").Add(float64(out))
	m.models.cost.WithLabelValues(agent, model).Add(cost)
}

func (m *Metrics) stageTime(stage string, d time.Duration) {
	if m == nil {
		return
	}
	m.stages.WithLabelValues(stage).Observe(d.Seconds())
}

func (m *Metrics) auditLost(full bool) {
	if m == nil {
		return
	}
	reason := "unavailable"
	if full {
		reason = "full"
	}
	m.lost.WithLabelValues(reason).Inc()
	m.full.Set(map[bool]float64{true: 1}[full])
}

func (m *Metrics) auditStored() {
	if m == nil {
		return
	}
	m.full.Set(0)
}
