package trigger

import "github.com/prometheus/client_golang/prometheus"

// The outcomes of an event, the outcome label of
// corral_trigger_events_total.
const (
	// Received: an event arrived (every event, before its outcome).
	Received = "received"
	// Started: its task was created.
	Started = "started"
	// Duplicate: its task existed already (a redelivery, another replica's tick).
	Duplicate = "duplicate"
	// Refused: a webhook request unsigned, badly signed, stale, too large
	// or malformed; it started nothing.
	Refused = "refused"
	// Deferred: the trigger was at maxConcurrent; the source keeps the
	// event and delivers it again later (a schedule's tick is skipped).
	Deferred = "deferred"
	// DeadLettered: the event cannot start its task and went to the
	// dead-letter queue.
	DeadLettered = "dead_lettered"
)

type metrics struct {
	events *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{events: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "corral_trigger_events_total",
		Help: "Events of each trigger on this replica, by outcome: received, started, duplicate, refused, deferred, dead_lettered.",
	}, []string{"trigger", "outcome"})}
	if reg != nil {
		reg.MustRegister(m.events)
	}
	return m
}
