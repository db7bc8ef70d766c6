package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const goodWorkflow = `apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: order}
spec:
  agent: clerk
  steps:
    - name: reserve
      tool: erp.reserve
      arguments: {sku: "input.sku", qty: "input.qty * 2"}
      compensate: {tool: erp.release, arguments: {id: "output.id"}}
    - name: charge
      needs: [reserve]
      when: "input.qty > 0"
      tool: pay.charge
      arguments: {reservation: "steps.reserve.output.id", amount: "input.amount"}
      retry: {attempts: 5, backoff: 10ms, retryOn: [upstream_unavailable]}
      timeout: 5s
    - name: notify
      needs: [charge]
      agent: mailer
      input: "'order ' + string(input.sku) + ' charged'"
`

// TestWorkflowChecks: a good workflow decodes; each mistake is refused at
// apply with the field and the step named.
func TestWorkflowChecks(t *testing.T) {
	if _, err := Decode("wf.yaml", []byte(goodWorkflow)); err != nil {
		t.Fatalf("Decode(good workflow) = %v", err)
	}
	tests := []struct {
		name, from, to string
		want           []string
	}{
		{"bad CEL in an argument", `qty: "input.qty * 2"`, `qty: "input.qty *"`, []string{"spec.steps[0].arguments.qty", `step "reserve"`}},
		{"unknown variable", `"input.amount"`, `"inptu.amount"`, []string{"spec.steps[1].arguments.amount", `step "charge"`, "inptu"}},
		{"condition not a bool", `when: "input.qty > 0"`, `when: "'yes'"`, []string{"spec.steps[1].when", "bool"}},
		{"step not needed", `needs: [charge]
      agent: mailer
      input: "'order `, `agent: mailer
      input: "string(steps.charge.output) + 'order `, []string{"spec.steps[2].input", "steps.charge", "needs"}},
		{"undeclared need", `needs: [charge]`, `needs: [charg]`, []string{"spec.steps[2].needs[0]", `"charg"`}},
		{"cycle", `- name: reserve
      tool`, `- name: reserve
      needs: [notify]
      tool`, []string{"cycle", "→"}},
		{"both tool and agent", `tool: pay.charge`, `tool: pay.charge
      agent: payer`, []string{"spec.steps[1]", "not both"}},
		{"bad step name", `name: notify`, `name: notify-them`, []string{"spec.steps[2].name"}},
		{"duplicate name", `name: notify`, `name: charge`, []string{"declared twice"}},
		{"compensation names a later step", `arguments: {id: "output.id"}`, `arguments: {id: "steps.charge.output"}`, []string{"spec.steps[0].compensate.arguments.id", "steps.charge"}},
		{"bad timeout", `timeout: 5s`, `timeout: soon`, []string{"spec.steps[1].timeout", `step "charge"`}},
		{"agent step's timeout not positive", `agent: mailer`, `agent: mailer
      timeout: 0s`, []string{"spec.steps[2].timeout", `step "notify"`, "positive duration"}},
		{"bad backoff", `backoff: 10ms`, `backoff: "-1s"`, []string{"spec.steps[1].retry.backoff"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := strings.Replace(goodWorkflow, tt.from, tt.to, 1)
			if doc == goodWorkflow {
				t.Fatalf("the test's replacement %q matches nothing", tt.from)
			}
			_, err := Decode("wf.yaml", []byte(doc))
			if err == nil {
				t.Fatalf("Decode accepted:\n%s", doc)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Decode error = %v, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestAgentStepTimeout(t *testing.T) {
	long := &AgentSpec{Limits: &AgentLimits{Deadline: "3h"}}
	tests := []struct {
		name    string
		timeout string
		agent   *AgentSpec
		want    time.Duration
	}{
		{"the step's own", "90s", long, 90 * time.Second},
		{"default", "", &AgentSpec{}, DefaultAgentStepTimeout},
		{"the agent's deadline when longer", "", long, 3 * time.Hour},
		{"no agent", "", nil, DefaultAgentStepTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := WorkflowStep{Name: "s", Agent: "a", Timeout: tt.timeout}
			if got := st.AgentStepTimeout(tt.agent); got != tt.want {
				t.Errorf("AgentStepTimeout(%q) = %v, want %v", tt.timeout, got, tt.want)
			}
		})
	}
}

// FuzzWorkflow feeds workflow documents with arbitrary steps and CEL to the
// decoder: it never panics, and what it accepts compiles.
func FuzzWorkflow(f *testing.F) {
	f.Add("input.qty * 2", "steps.reserve.output.id", "input.qty > 0")
	f.Add("", "", "")
	f.Add("[1,2,3].map(x, x * x)", "{'a': steps.reserve.output}", "true")
	f.Add("input.ünïcode", "'日本語'", "size(input) > 2")
	f.Add("[1,2].all(x, [1,2].all(y, [1,2].all(z, true)))", "a.b.c.d", "1 / 0 == 1")
	f.Fuzz(func(t *testing.T, arg, input, when string) {
		doc := strings.NewReplacer("ARG", quote(arg), "INPUT", quote(input), "WHEN", quote(when)).Replace(`apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: fz}
spec:
  agent: clerk
  steps:
    - name: reserve
      tool: erp.reserve
      arguments: {a: ARG}
    - name: notify
      needs: [reserve]
      when: WHEN
      agent: mailer
      input: INPUT
`)
		docs, err := Decode("fuzz.yaml", []byte(doc))
		if err != nil {
			return
		}
		if len(docs) != 1 || docs[0].Resource.Kind != "Workflow" {
			t.Fatalf("Decode accepted %d documents", len(docs))
		}
	})
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s) + `"`
}

// TestWorkflowExamples: the worked examples of docs/workflows.md decode.
func TestWorkflowExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/workflows/*.yaml")
	if len(files) == 0 {
		t.Fatal("no examples under examples/workflows")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(f, data); err != nil {
			t.Errorf("Decode(%s) = %v", f, err)
		}
	}
}
