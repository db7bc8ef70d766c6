package config

import _ "embed"

// NotifierSpec says where corral announces each new approval: a Slack
// incoming webhook with Approve and Deny buttons, or any HTTP endpoint
// that takes CloudEvents JSON. Exactly one of Slack and Webhook is set.
type NotifierSpec struct {
	Description string           `json:"description,omitempty"`
	Slack       *SlackNotifier   `json:"slack,omitempty"`
	Webhook     *WebhookNotifier `json:"webhook,omitempty"`
}

// SlackNotifier posts to a Slack incoming webhook; corral's interactivity
// endpoint (/v1/slack/interactivity) checks the button presses with the
// app's signing secret.
type SlackNotifier struct {
	WebhookURL    SecretValue `json:"webhookURL"`
	SigningSecret SecretValue `json:"signingSecret"`
}

// WebhookNotifier posts a CloudEvent (structured mode, JSON) to URL.
type WebhookNotifier struct {
	URL SecretValue `json:"url"`
}

func (s *NotifierSpec) check() []FieldError {
	var out []FieldError
	if (s.Slack == nil) == (s.Webhook == nil) {
		return []FieldError{{Field: "spec", Message: "set exactly one of slack or webhook"}}
	}
	if s.Slack != nil {
		out = append(out, s.Slack.WebhookURL.check("spec.slack.webhookURL")...)
		out = append(out, s.Slack.SigningSecret.check("spec.slack.signingSecret")...)
	}
	if s.Webhook != nil {
		out = append(out, s.Webhook.URL.check("spec.webhook.url")...)
	}
	return out
}

//go:embed schemas/notifier.json
var notifierSpecSchema []byte
