package config

import (
	"strings"
	"testing"
)

func TestTriggerValidation(t *testing.T) {
	doc := func(spec string) string {
		return `{"apiVersion":"corral.dev/v1","kind":"Trigger","metadata":{"name":"t"},"spec":` + spec + `}`
	}
	tests := []struct {
		name string
		spec string
		want []string // substrings of the problems, in order; none for a valid spec
	}{
		{"github webhook", `{"start":{"agent":"monitor"},"webhook":{"secret":{"secretRef":"gh"},"signature":"github"}}`, nil},
		{"stripe webhook with a window", `{"start":{"agent":"monitor"},"maxConcurrent":3,"webhook":{"secret":{"env":"STRIPE_WH"},"signature":"stripe","tolerance":"2m"}}`, nil},
		{"hmac webhook without its header", `{"start":{"agent":"m"},"webhook":{"secret":{"env":"X"},"signature":"hmac"}}`, []string{"spec.webhook.header: required with signature hmac"}},
		{"unknown scheme", `{"start":{"agent":"m"},"webhook":{"secret":{"env":"X"},"signature":"sha1"}}`, []string{"spec.webhook.signature"}},
		{"bad tolerance", `{"start":{"agent":"m"},"webhook":{"secret":{"env":"X"},"signature":"github","tolerance":"soon"}}`, []string{"spec.webhook.tolerance"}},
		{"schedule in Paris", `{"start":{"workflow":"w"},"schedule":{"cron":"30 8 * * 1-5","timeZone":"Europe/Paris","data":{"report":"daily"}}}`, nil},
		{"schedule every", `{"start":{"agent":"m"},"schedule":{"cron":"@every 10m"}}`, nil},
		{"bad cron", `{"start":{"agent":"m"},"schedule":{"cron":"61 * * * *"}}`, []string{"spec.schedule.cron"}},
		{"zone inside the cron", `{"start":{"agent":"m"},"schedule":{"cron":"CRON_TZ=Asia/Tokyo 0 9 * * *"}}`, []string{"spec.schedule.cron: put the time zone in timeZone"}},
		{"unknown zone", `{"start":{"agent":"m"},"schedule":{"cron":"@hourly","timeZone":"Mars/Olympus"}}`, []string{"spec.schedule.timeZone"}},
		{"nats on the substrate", `{"start":{"agent":"m"},"nats":{"subject":"ports.>"}}`, nil},
		{"rabbitmq", `{"start":{"agent":"m"},"rabbitmq":{"url":{"env":"AMQP_URL"},"queue":"strikes","declare":true}}`, nil},
		{"kafka", `{"start":{"agent":"m"},"kafka":{"brokers":["10.0.0.1:9092"],"topic":"port.events"}}`, nil},
		{"two sources", `{"start":{"agent":"m"},"nats":{"subject":"a"},"schedule":{"cron":"@hourly"}}`, []string{"spec: set exactly one source"}},
		{"no source", `{"start":{"agent":"m"}}`, []string{"spec: set exactly one source"}},
		{"agent and workflow", `{"start":{"agent":"m","workflow":"w"},"nats":{"subject":"a"}}`, []string{"spec.start: set exactly one of agent or workflow"}},
		{"negative cap", `{"start":{"agent":"m"},"maxConcurrent":-1,"nats":{"subject":"a"}}`, []string{"spec.maxConcurrent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, problems := DecodeJSON([]byte(doc(tt.spec)))
			if len(problems) != len(tt.want) {
				t.Fatalf("DecodeJSON(%s) = %v, want %d problem(s) %v", tt.spec, problems, len(tt.want), tt.want)
			}
			for i, p := range problems {
				if !strings.Contains(p.Error(), tt.want[i]) {
					t.Errorf("problem %d = %q, want it to contain %q", i, p.Error(), tt.want[i])
				}
			}
		})
	}
}
