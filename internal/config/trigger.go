package config

import (
	_ "embed"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// TriggerSpec starts work when something happens: a signed webhook, a
// schedule, a message on a NATS subject, a RabbitMQ queue or a Kafka topic.
// Exactly one source is set. Each event, normalised to a CloudEvent, is the
// input of the task it starts (docs/triggers.md).
type TriggerSpec struct {
	Description string       `json:"description,omitempty"`
	Start       TriggerStart `json:"start"`
	// MaxConcurrent caps the tasks this trigger started that are still
	// live; an event over it waits at its source. 0: no cap.
	MaxConcurrent int `json:"maxConcurrent,omitempty"`

	Webhook  *WebhookSource  `json:"webhook,omitempty"`
	Schedule *ScheduleSource `json:"schedule,omitempty"`
	NATS     *NATSSource     `json:"nats,omitempty"`
	RabbitMQ *RabbitMQSource `json:"rabbitmq,omitempty"`
	Kafka    *KafkaSource    `json:"kafka,omitempty"`
}

// TriggerStart says what an event starts: a task of Agent, or a run of
// Workflow. Exactly one is set.
type TriggerStart struct {
	Agent    string `json:"agent,omitempty"`
	Workflow string `json:"workflow,omitempty"`
}

// The signature schemes a webhook trigger checks.
const (
	SignatureGitHub = "github" // X-Hub-Signature-256: sha256=<hex>
	SignatureStripe = "stripe" // Stripe-Signature: t=<unix>,v1=<hex>
	SignatureHMAC   = "hmac"   // <header>: [sha256=]<hex or base64>, optionally over "<timestamp>.<body>"
)

// Webhook limits.
const (
	DefaultWebhookMaxBody = 64 << 10
	MaxWebhookBody        = 192 << 10 // the CloudEvent around it must fit a task's input
	DefaultWebhookWindow  = 5 * time.Minute
)

// WebhookSource is POST /hooks/{trigger}, signed with HMAC-SHA256.
type WebhookSource struct {
	// Secret is the HMAC key shared with the sender.
	Secret SecretValue `json:"secret"`
	// Signature is the scheme: github, stripe or hmac.
	Signature string `json:"signature"`
	// Header carries the signature (hmac; github and stripe have theirs).
	Header string `json:"header,omitempty"`
	// TimestampHeader carries the time the sender signed at, in Unix
	// seconds (hmac): the signed content is then "<timestamp>.<body>".
	TimestampHeader string `json:"timestampHeader,omitempty"`
	// Tolerance is how old (or how far ahead) a signed timestamp may be.
	Tolerance string `json:"tolerance,omitempty"`
	// IDHeader names the header carrying the sender's delivery id.
	IDHeader string `json:"idHeader,omitempty"`
	// MaxBodyBytes caps the request body.
	MaxBodyBytes int `json:"maxBodyBytes,omitempty"`
	// Type is the CloudEvent type given to the events (default
	// dev.corral.webhook, or the sender's event type when it names one).
	Type string `json:"type,omitempty"`
}

// WindowOrDefault is Tolerance parsed, or the default window.
func (w *WebhookSource) WindowOrDefault() time.Duration {
	return durationOr(w.Tolerance, DefaultWebhookWindow)
}

// MaxBodyOrDefault is MaxBodyBytes or the default cap.
func (w *WebhookSource) MaxBodyOrDefault() int {
	if w.MaxBodyBytes <= 0 {
		return DefaultWebhookMaxBody
	}
	return w.MaxBodyBytes
}

// ScheduleSource fires on a cron schedule in a time zone.
type ScheduleSource struct {
	// Cron is a five-field cron expression, or a descriptor (@hourly,
	// @every 10m).
	Cron string `json:"cron"`
	// TimeZone is an IANA zone (Europe/Paris); default UTC.
	TimeZone string `json:"timeZone,omitempty"`
	// Data is the event's data at each tick.
	Data any `json:"data,omitempty"`
}

// NATSSource consumes a subject through a JetStream durable consumer.
type NATSSource struct {
	Subject string `json:"subject"`
	// URL of an external NATS; absent: corral's own substrate.
	URL *SecretValue `json:"url,omitempty"`
	// Stream binds to an existing stream holding the subject; absent:
	// corral creates a work-queue stream for the trigger.
	Stream string `json:"stream,omitempty"`
}

// RabbitMQSource consumes a queue (competing consumers across replicas).
type RabbitMQSource struct {
	URL   SecretValue `json:"url"`
	Queue string      `json:"queue"`
	// Declare declares the queue (durable) if it does not exist.
	Declare bool `json:"declare,omitempty"`
}

// KafkaSource consumes a topic in a consumer group.
type KafkaSource struct {
	Brokers []string `json:"brokers"`
	Topic   string   `json:"topic"`
	// Group is the consumer group; default corral-trigger-<name>.
	Group string `json:"group,omitempty"`
}

func (s *TriggerSpec) check() []FieldError {
	var out []FieldError
	if (s.Start.Agent == "") == (s.Start.Workflow == "") {
		out = append(out, FieldError{Field: "spec.start", Message: "set exactly one of agent or workflow"})
	}
	n := 0
	for _, set := range []bool{s.Webhook != nil, s.Schedule != nil, s.NATS != nil, s.RabbitMQ != nil, s.Kafka != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		out = append(out, FieldError{Field: "spec", Message: "set exactly one source: webhook, schedule, nats, rabbitmq or kafka"})
	}
	if w := s.Webhook; w != nil {
		out = append(out, w.Secret.check("spec.webhook.secret")...)
		if w.Signature == SignatureHMAC && w.Header == "" {
			out = append(out, FieldError{Field: "spec.webhook.header", Message: "required with signature hmac: the header carrying the signature"})
		}
		if w.Tolerance != "" {
			if d, err := time.ParseDuration(w.Tolerance); err != nil || d <= 0 {
				out = append(out, FieldError{Field: "spec.webhook.tolerance", Message: fmt.Sprintf("%q is not a positive duration (5m, 30s)", w.Tolerance)})
			}
		}
	}
	if c := s.Schedule; c != nil {
		if c.TimeZone != "" {
			if _, err := time.LoadLocation(c.TimeZone); err != nil {
				out = append(out, FieldError{Field: "spec.schedule.timeZone", Message: fmt.Sprintf("%q is not a known time zone (Europe/Paris, America/New_York, UTC)", c.TimeZone)})
			}
		}
		if strings.HasPrefix(strings.TrimSpace(c.Cron), "TZ=") || strings.HasPrefix(strings.TrimSpace(c.Cron), "CRON_TZ=") {
			out = append(out, FieldError{Field: "spec.schedule.cron", Message: "put the time zone in timeZone, not in the expression"})
		} else if _, err := ParseCron(c.Cron); err != nil {
			out = append(out, FieldError{Field: "spec.schedule.cron", Message: err.Error() + " (five fields: minute hour day-of-month month day-of-week, or @hourly, @every 10m)"})
		}
	}
	if q := s.NATS; q != nil && q.URL != nil {
		out = append(out, q.URL.check("spec.nats.url")...)
	}
	if r := s.RabbitMQ; r != nil {
		out = append(out, r.URL.check("spec.rabbitmq.url")...)
	}
	return out
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseCron parses a schedule's cron expression: five fields (minute hour
// day-of-month month day-of-week) or a descriptor (@hourly, @every 10m).
func ParseCron(expr string) (cron.Schedule, error) { return cronParser.Parse(expr) }

//go:embed schemas/trigger.json
var triggerSpecSchema []byte
