package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
)

// TestShadowAnswersInAudit (issue 22, item 5): a shadow's answer reaches
// the audit only for an agent whose captureContent is on, and then with
// personal data masked. d7dc022 stored it in clear for every agent.
func TestShadowAnswersInAudit(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Model
metadata: {name: a}
spec: {provider: scripted, script: [{content: "a"}]}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: b}
spec: {provider: scripted, script: [{content: "Write to jane.doe@example.com today."}]}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: compare}
spec: {route: {targets: [{model: a}], shadow: [b]}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: quiet}
spec: {models: [compare]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: loud}
spec: {models: [compare], captureContent: true}
`)
	for _, tt := range []struct {
		agent      string
		wantAnswer bool
	}{{"quiet", false}, {"loud", true}} {
		t.Run(tt.agent, func(t *testing.T) {
			key := srv.Key(t, tt.agent)
			waitModel(t, srv, key, "compare")
			if status, body, _ := chat(t, srv, key, userMessage("compare", "hi")); status != http.StatusOK {
				t.Fatalf("compare: HTTP %d %s", status, body)
			}
			var shadow struct {
				Records []struct {
					Event  string
					Detail struct {
						Answer      string
						AnswerChars int `json:"answer_chars"`
					}
				}
			}
			deadline := time.Now().Add(apptest.Patience)
			for len(shadow.Records) == 0 && time.Now().Before(deadline) {
				_, body := srv.Call(t, srv.Token, "GET", "/v1/audit?agent="+tt.agent+"&tool=b", nil, nil)
				if err := json.Unmarshal(body, &shadow); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if len(shadow.Records) != 1 || shadow.Records[0].Event != "shadow" {
				t.Fatalf("shadow records %+v, want one", shadow.Records)
			}
			d := shadow.Records[0].Detail
			if strings.Contains(d.Answer, "jane.doe") {
				t.Errorf("shadow answer in the audit %q holds the email in clear", d.Answer)
			}
			if (d.Answer != "") != tt.wantAnswer || d.AnswerChars != len("Write to jane.doe@example.com today.") {
				t.Errorf("shadow detail %+v, want an answer %t and its length", d, tt.wantAnswer)
			}
		})
	}
}

// TestPolicySeesRedaction (issue 22, items 5 and 10): policy input carries
// each reachable model's redaction mode, so "every model this agent's
// prompts may reach must redact" can be written; and the model list hides
// what that rule refuses, shadows included.
func TestPolicySeesRedaction(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Model
metadata: {name: safe}
spec: {provider: scripted, redact: mask, script: [{content: "ok"}]}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: leaky}
spec: {provider: scripted, script: [{content: "ok"}]}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: shadowed}
spec: {route: {targets: [{model: safe}], shadow: [leaky]}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: care, labels: {data: customer}}
spec: {models: [safe, leaky, shadowed]}
---
apiVersion: corral.dev/v1
kind: Policy
metadata: {name: must-redact}
spec:
  rego: |
    package corral.authz

    deny contains sprintf("model %s would get prompts unredacted", [t.name]) if {
    	input.action.kind == "model"
    	input.agent.labels.data == "customer"
    	some t in array.concat([input.model], object.get(input.model, "targets", []))
    	t.provider != ""
    	t.redact == "off"
    }
`)
	key := srv.Key(t, "care")
	waitModel(t, srv, key, "safe")
	waitRefused(t, srv, key, "leaky", "model leaky would get prompts unredacted")
	if status, body, _ := chat(t, srv, key, userMessage("shadowed", "hello")); status != http.StatusForbidden {
		t.Errorf("shadowed: HTTP %d %s, want 403 for its unredacted shadow", status, body)
	}
	if status, body, _ := chat(t, srv, key, userMessage("safe", "hello")); status != http.StatusOK {
		t.Errorf("safe: HTTP %d %s, want 200", status, body)
	}
	status, body := srv.Call(t, key, "GET", "/openai/v1/models", nil, nil)
	var list struct{ Data []struct{ ID string } }
	if err := json.Unmarshal(body, &list); status != http.StatusOK || err != nil {
		t.Fatalf("models: HTTP %d %s", status, body)
	}
	if len(list.Data) != 1 || list.Data[0].ID != "safe" {
		t.Errorf("models list %s, want safe only: policy refuses leaky and shadowed", body)
	}
}
