package config

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestModelValidation(t *testing.T) {
	doc := func(spec string) string {
		return `{"apiVersion":"corral.dev/v1","kind":"Model","metadata":{"name":"m"},"spec":` + spec + `}`
	}
	tests := []struct {
		name string
		spec string
		want []string // FieldError.Error() of each problem
	}{
		{
			name: "openai",
			spec: `{"provider":"openai","model":"gpt-4o-mini","auth":{"bearer":{"secretRef":"openai-key"}},"region":"us","pricing":{"inputPerMTok":0.15,"outputPerMTok":0.6},"timeout":"30s","maxOutputTokens":2048,"headers":{"OpenAI-Organization":"org-1"}}`,
		},
		{
			name: "azure",
			spec: `{"provider":"openai","baseURL":"https://res.openai.azure.com/openai/v1","model":"gpt-4o-deployment","auth":{"apiKey":{"header":"api-key","value":{"env":"AZURE_OPENAI_KEY"}}},"region":"eu-west","redact":"mask","patterns":[{"name":"EMPLOYEE_ID","regex":"E-[0-9]{6}"}]}`,
		},
		{
			name: "ollama",
			spec: `{"provider":"openai","baseURL":"http://127.0.0.1:11434/v1","model":"llama3.1:8b","redact":"off","pricing":{"inputPerMTok":0,"outputPerMTok":0}}`,
		},
		{
			name: "anthropic",
			spec: `{"provider":"anthropic","model":"claude-sonnet-4-5","auth":{"bearer":{"env":"ANTHROPIC_API_KEY"}}}`,
		},
		{
			name: "scripted",
			spec: `{"provider":"scripted","script":[{"toolCalls":[{"name":"erp.get_order","arguments":{"order_id":"A-1001"}}]},{"content":"Done."}]}`,
		},
		{
			name: "route",
			spec: `{"description":"EU first","route":{"targets":[{"model":"gpt-eu","weight":80},{"model":"gpt-us","weight":20}],"fallbacks":["claude"],"shadow":["gpt-next"]}}`,
		},
		{
			name: "route with default weights",
			spec: `{"route":{"targets":[{"model":"a"},{"model":"b"}]}}`,
		},
		{
			name: "neither provider nor route",
			spec: `{"model":"x"}`,
			want: []string{"Model/m: spec: set one of provider (a concrete model) or route"},
		},
		{
			name: "both provider and route",
			spec: `{"provider":"openai","route":{"targets":[{"model":"a"}]}}`,
			want: []string{"Model/m: spec: set only one of provider or route"},
		},
		{
			name: "unknown provider",
			spec: `{"provider":"gemini"}`,
			want: []string{`Model/m: spec.provider: must be one of "openai", "anthropic", "scripted"`},
		},
		{
			name: "base URL",
			spec: `{"provider":"openai","baseURL":"localhost:11434/v1"}`,
			want: []string{"Model/m: spec.baseURL: must be an http or https URL"},
		},
		{
			name: "redact",
			spec: `{"provider":"openai","redact":"hide"}`,
			want: []string{`Model/m: spec.redact: must be one of "off", "mask", "reversible"`},
		},
		{
			name: "negative pricing",
			spec: `{"provider":"openai","pricing":{"inputPerMTok":-1,"outputPerMTok":2}}`,
			want: []string{"Model/m: spec.pricing.inputPerMTok: must be >= 0"},
		},
		{
			name: "half a price",
			spec: `{"provider":"openai","pricing":{"inputPerMTok":1}}`,
			want: []string{"Model/m: spec.pricing.outputPerMTok: required"},
		},
		{
			name: "route weights",
			spec: `{"route":{"targets":[{"model":"a","weight":0},{"model":"b","weight":-2}]}}`,
			want: []string{"Model/m: spec.route.targets[0].weight: must be >= 1", "Model/m: spec.route.targets[1].weight: must be >= 1"},
		},
		{
			name: "route without targets",
			spec: `{"route":{"targets":[]}}`,
			want: []string{"Model/m: spec.route.targets: must have at least 1 items"},
		},
		{
			name: "route target twice",
			spec: `{"route":{"targets":[{"model":"a"},{"model":"b"},{"model":"a","weight":3}]}}`,
			want: []string{"Model/m: spec.route.targets[2].model: a is also target 0"},
		},
		{
			name: "route with a concrete model's settings",
			spec: `{"route":{"targets":[{"model":"a"}]},"baseURL":"https://x/v1","timeout":"5s","script":[{"content":"x"}],"pricing":{"inputPerMTok":1,"outputPerMTok":1}}`,
			want: []string{
				"Model/m: spec.baseURL: applies to a concrete model; set it on the route's targets",
				"Model/m: spec.pricing: applies to a concrete model; set it on the route's targets",
				"Model/m: spec.script: applies to a concrete model; set it on the route's targets",
				"Model/m: spec.timeout: applies to a concrete model; set it on the route's targets",
			},
		},
		{
			name: "route restoring tool arguments",
			spec: `{"route":{"targets":[{"model":"a"}]},"restoreToolArguments":true}`,
			want: []string{"Model/m: spec.restoreToolArguments: applies to a concrete model; set it on the route's targets"},
		},
		{
			name: "restoreToolArguments of the wrong type",
			spec: `{"provider":"openai","restoreToolArguments":"yes"}`,
			want: []string{"Model/m: spec.restoreToolArguments: must be boolean, got string"},
		},
		{
			name: "outputLimitField on anthropic",
			spec: `{"provider":"anthropic","outputLimitField":"both"}`,
			want: []string{"Model/m: spec.outputLimitField: only applies with provider openai"},
		},
		{
			name: "api on anthropic",
			spec: `{"provider":"anthropic","api":"responses"}`,
			want: []string{"Model/m: spec.api: only applies with provider openai"},
		},
		{
			name: "api unknown",
			spec: `{"provider":"openai","api":"assistants"}`,
			want: []string{`Model/m: spec.api: must be one of "chat", "responses"`},
		},
		{
			name: "outputLimitField unknown",
			spec: `{"provider":"openai","outputLimitField":"max_new_tokens"}`,
			want: []string{`Model/m: spec.outputLimitField: must be one of "max_tokens", "max_completion_tokens", "both"`},
		},
		{
			name: "script on another provider",
			spec: `{"provider":"openai","script":[{"content":"x"}]}`,
			want: []string{"Model/m: spec.script: only applies with provider scripted"},
		},
		{
			name: "scripted with a server's settings",
			spec: `{"provider":"scripted","baseURL":"http://x/v1","auth":{"bearer":{"env":"K"}}}`,
			want: []string{
				"Model/m: spec.auth: does not apply to the scripted provider, which calls no server",
				"Model/m: spec.baseURL: does not apply to the scripted provider, which calls no server",
			},
		},
		{
			name: "script arguments must be an object",
			spec: `{"provider":"scripted","script":[{"toolCalls":[{"name":"f","arguments":"{}"}]}]}`,
			want: []string{"Model/m: spec.script[0].toolCalls[0].arguments: must be object, got string"},
		},
		{
			name: "timeout does not parse",
			spec: `{"provider":"openai","timeout":"a minute"}`,
			want: []string{"Model/m: spec.timeout: must be a duration such as 30s or 2m"},
		},
		{
			name: "timeout zero",
			spec: `{"provider":"openai","timeout":"0s"}`,
			want: []string{"Model/m: spec.timeout: must be more than 0"},
		},
		{
			name: "pattern does not compile",
			spec: `{"provider":"openai","patterns":[{"name":"A","regex":"[0-9]+"},{"name":"A","regex":"(x"}]}`,
			want: []string{
				"Model/m: spec.patterns[1].name: A is also pattern 0",
				"Model/m: spec.patterns[1].regex: does not compile: error parsing regexp: missing closing ): `(x`",
			},
		},
		{
			name: "auth",
			spec: `{"provider":"openai","auth":{"bearer":{"secretRef":"a","env":"B"},"basic":{"username":"u","password":{}}}}`,
			want: []string{
				"Model/m: spec.auth: set exactly one of bearer, apiKey or basic",
				"Model/m: spec.auth.basic.password: set exactly one of secretRef or env",
				"Model/m: spec.auth.bearer: set exactly one of secretRef or env",
			},
		},
		{
			name: "empty auth",
			spec: `{"provider":"openai","auth":{}}`,
			want: []string{"Model/m: spec.auth: set exactly one of bearer, apiKey or basic"},
		},
		{
			name: "credentials in headers",
			spec: `{"provider":"openai","headers":{"Authorization":"Bearer sk-1","X-Api-Key":"k","bad header":"x","X-Ok":"a\u0000b"}}`,
			want: []string{
				"Model/m: spec.headers.Authorization: carries credentials: use auth, which keeps them in a Secret",
				"Model/m: spec.headers.X-Api-Key: carries credentials: use auth, which keeps them in a Secret",
				"Model/m: spec.headers.X-Ok: must not hold control characters",
				"Model/m: spec.headers.bad header: is not a valid header name",
			},
		},
		{
			name: "header twice",
			spec: `{"provider":"openai","headers":{"X-Team":"a","x-team":"b"}}`,
			want: []string{"Model/m: spec.headers.x-team: is X-Team again (header names ignore case)"},
		},
		{
			name: "unknown field",
			spec: `{"provider":"openai","temperature":0.2}`,
			want: []string{"Model/m: spec.temperature: unknown field"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, problems := DecodeJSON([]byte(doc(tt.spec)))
			var got []string
			for _, p := range problems {
				got = append(got, p.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DecodeJSON(%s) problems mismatch (-want +got):\n%s", tt.spec, diff)
			}
		})
	}
}

func TestModelDefaults(t *testing.T) {
	tests := []struct {
		spec    ModelSpec
		timeout time.Duration
		output  int
		redact  string
	}{
		{ModelSpec{Provider: "openai"}, 60 * time.Second, 4096, "reversible"},
		{ModelSpec{Provider: "scripted"}, 60 * time.Second, 4096, "off"},
		{ModelSpec{Provider: "anthropic", Timeout: "90s", MaxOutputTokens: 1000, Redact: "mask"}, 90 * time.Second, 1000, "mask"},
	}
	for _, tt := range tests {
		if got := tt.spec.TimeoutOrDefault(); got != tt.timeout {
			t.Errorf("TimeoutOrDefault(%+v) = %s, want %s", tt.spec, got, tt.timeout)
		}
		if got := tt.spec.MaxOutputOrDefault(); got != tt.output {
			t.Errorf("MaxOutputOrDefault(%+v) = %d, want %d", tt.spec, got, tt.output)
		}
		if got := tt.spec.RedactOrDefault(); got != tt.redact {
			t.Errorf("RedactOrDefault(%+v) = %s, want %s", tt.spec, got, tt.redact)
		}
	}
}

// TestRouteCheck covers what the schema already refuses, in case the schema
// loosens: a negative weight, and weights that send no call anywhere.
func TestRouteCheck(t *testing.T) {
	r := &RouteSpec{Targets: []RouteTarget{{Model: "a", Weight: -1}}}
	want := []FieldError{
		{Field: "spec.route.targets[0].weight", Message: "must not be negative"},
		{Field: "spec.route.targets", Message: "at least one target needs a positive weight"},
	}
	if diff := cmp.Diff(want, r.check()); diff != "" {
		t.Errorf("check() mismatch (-want +got):\n%s", diff)
	}
}
