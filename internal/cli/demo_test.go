package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/corral-dev/corral/internal/demo"
	"github.com/corral-dev/corral/internal/llm"
)

// TestDemoTellsTheStory runs `corral demo -o json` and checks each step of
// the port strike by its outcome, counted where it happened: the tasks'
// states and reasons, what the demo world's systems and model server
// received per Idempotency-Key, the approval, the restart, the redaction,
// the trace and the audit. The narration's wording is free to change.
func TestDemoTellsTheStory(t *testing.T) {
	out, errOut, code := run(t, "", "demo", "-o", "json")
	if code != 0 {
		t.Fatalf("demo -o json = %d\n%s\n%s", code, out, errOut)
	}
	var sum demoSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("demo -o json printed no summary: %v\n%s", err, out)
	}
	checkStory(t, sum, errOut)
}

// checkStory asserts a scripted telling of the story; test/ runs it on the
// binary's output too.
func checkStory(t *testing.T, sum demoSummary, narration string) {
	t.Helper()
	if len(sum.Steps) != 6 {
		t.Fatalf("steps = %+v, want 6", sum.Steps)
	}
	for _, s := range sum.Steps {
		if !s.OK {
			t.Errorf("step %d (%s) did not hold\n%s", s.Step, s.Name, narration)
		}
	}

	want := map[string][2]string{ // agent -> state, reason
		demo.Monitor: {"completed", ""}, demo.Impact: {"completed", ""}, demo.Negotiation: {"completed", ""},
		demo.Execution: {"completed", ""}, demo.Chaser: {"failed", "loop_detected"}, demo.Broker: {"failed", "budget_exceeded"},
	}
	for agent, w := range want {
		i := slices.IndexFunc(sum.Tasks, func(t taskOutcome) bool { return t.Agent == agent })
		if i < 0 {
			t.Errorf("no task of %s in %+v", agent, sum.Tasks)
			continue
		}
		got := sum.Tasks[i]
		if got.State != w[0] || (w[1] != "" && got.Reason != w[1]) {
			t.Errorf("task of %s = %s (%s), want %s (%s)", agent, got.State, got.Reason, w[0], w[1])
		}
		if got.ModelCalls == 0 || got.Tokens == 0 || got.Cost <= 0 {
			t.Errorf("task of %s used %d model calls, %d tokens, cost %v; want each counted", agent, got.ModelCalls, got.Tokens, got.Cost)
		}
	}

	// Exactly once, at the far side: each notification, invoice and ERP
	// write had its effect once; the notification cut by the crash reached
	// the service again and sent nothing.
	for name, counts := range map[string][]demo.Count{"notifications": sum.Notifications, "invoices": sum.Invoices, "erp writes": sum.ERPWrites} {
		for _, c := range counts {
			if c.Key == "" || c.Effects != 1 {
				t.Errorf("%s: key %q had %d effects from %d requests, want 1 effect under a key", name, c.Key, c.Effects, c.Requests)
			}
		}
	}
	if len(sum.Notifications) != 2 || len(sum.Invoices) != 2 || len(sum.ERPWrites) != 1 {
		t.Errorf("far side: %d notification keys, %d invoice keys, %d ERP write keys; want 2, 2, 1", len(sum.Notifications), len(sum.Invoices), len(sum.ERPWrites))
	}
	if !slices.ContainsFunc(sum.Notifications, func(c demo.Count) bool { return c.Requests == 2 }) {
		t.Errorf("notifications %+v: want the one cut by the crash requested twice", sum.Notifications)
	}
	if len(sum.ModelCalls) < 15 {
		t.Errorf("model calls = %d keys, want the whole story's (15 or more)", len(sum.ModelCalls))
	}
	for _, c := range sum.ModelCalls {
		if c.Requests != 1 {
			t.Errorf("model step %s was requested %d times, want 1", c.Key, c.Requests)
		}
	}
	if !sum.Restart.Done || !sum.Restart.Resumed {
		t.Errorf("restart = %+v, want corral restarted and the task taken over from its journal", sum.Restart)
	}

	if sum.Approval.ID == "" || sum.Approval.State != "executed" || sum.Approval.By != "dana" {
		t.Errorf("approval = %+v, want executed, decided by dana", sum.Approval)
	}
	if !sum.Redaction.Redacted || !sum.Redaction.Restored || strings.Contains(sum.Redaction.ModelSaw, demo.AnaEmail) {
		t.Errorf("redaction = %+v, want the model to see placeholders and the agent the values", sum.Redaction)
	}
	if sum.Redaction.Placement != storyRegion {
		t.Errorf("negotiation placed at %q, want %q", sum.Redaction.Placement, storyRegion)
	}
	for _, code := range []string{"loop_detected", "budget_exceeded"} {
		if sum.Refusals[code] == 0 {
			t.Errorf("refusals %v lack %s", sum.Refusals, code)
		}
	}
	if sum.Features.Agents && sum.Refusals["agent_cycle"] == 0 {
		t.Errorf("refusals %v lack agent_cycle", sum.Refusals)
	}
	for code := range sum.Refusals {
		if !slices.Contains([]string{"loop_detected", "budget_exceeded", "agent_cycle", "signature_invalid", "signature_missing"}, code) {
			t.Errorf("the story met a refusal it does not tell: %s (%v)", code, sum.Refusals)
		}
	}
	if sum.Features.State != "" && (!slices.Contains(sum.SharedState, "delayed_orders") || !slices.Contains(sum.SharedState, "proposal")) {
		t.Errorf("shared state holds %v, want delayed_orders and proposal", sum.SharedState)
	}
	if sum.Features.Triggers {
		if sum.Webhook.Accepted != 1 || !sum.Webhook.Duplicate || (sum.Webhook.BadStatus != 401 && sum.Webhook.BadStatus != 403) {
			t.Errorf("webhook = %+v, want one accepted, its repeat a duplicate, a forged one refused", sum.Webhook)
		}
	}
	// One trace holds every action of a task tree, across the restart:
	// the whole story with agents calling agents, execution's task without.
	wantTasks := 1
	if sum.Features.Agents {
		wantTasks = 6
	}
	if sum.Trace.ID == "" || sum.Trace.Spans == 0 || sum.Trace.Tasks < wantTasks {
		t.Errorf("trace = %+v, want the actions of %d tasks or more", sum.Trace, wantTasks)
	}
	if !sum.Audit.OK || sum.Audit.Records == 0 {
		t.Errorf("audit verify = %+v, want ok", sum.Audit)
	}
}

// TestStoryResourcesOnARealModel: with --model-url every agent's Model
// points there, asks for --model-name, and carries the key from the
// server's environment, never in the resource; negotiation's still
// redacts.
func TestStoryResourcesOnARealModel(t *testing.T) {
	docs, err := storyResources(storyModels{baseURL: "https://models.example/v1", model: "gpt-4o-mini", keyEnv: "OPENAI_API_KEY", real: true}, demo.Features{}, false, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	models := 0
	for _, d := range docs {
		if d.Resource.Kind == "Trigger" || d.Resource.Kind == "Secret" {
			t.Errorf("%s/%s without triggers", d.Resource.Kind, d.Resource.Metadata.Name)
		}
		if d.Resource.Kind != "Model" {
			continue
		}
		models++
		var spec struct {
			BaseURL, Model, Redact string
			Auth                   struct{ Bearer struct{ Env string } }
		}
		if err := json.Unmarshal(d.Resource.Spec, &spec); err != nil {
			t.Fatal(err)
		}
		if spec.BaseURL != "https://models.example/v1" || spec.Model != "gpt-4o-mini" || spec.Auth.Bearer.Env != "OPENAI_API_KEY" {
			t.Errorf("Model/%s = %+v, want the real model with its key from the environment", d.Resource.Metadata.Name, spec)
		}
		if d.Resource.Metadata.Name == modelName(demo.Negotiation) && spec.Redact != "reversible" {
			t.Errorf("negotiation's model redacts %q, want reversible", spec.Redact)
		}
	}
	if models != len(storyCast) {
		t.Errorf("%d Models, want one per agent (%d)", models, len(storyCast))
	}
}

// TestDemoOnAnOpenAICompatibleModel runs the story with --model-url, on a
// stand-in for a real model that plays each agent's part by its
// instructions and the functions it is offered, as a model would: every
// Model reaches it with the model name and the key given, and the story
// holds.
func TestDemoOnAnOpenAICompatibleModel(t *testing.T) {
	t.Setenv("DEMO_TEST_MODEL_KEY", "sk-test-123")
	var (
		mu    sync.Mutex
		auths = map[string]int{}
		names = map[string]int{}
	)
	players := map[string]*demo.Models{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req llm.ChatRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		agent := ""
		for _, a := range storyCast {
			if strings.Contains(req.Messages[0].Content.String(), a.instructions) {
				agent = a.name
			}
		}
		f := demo.Features{}
		for _, tl := range req.Tools {
			f.Agents = f.Agents || strings.HasPrefix(tl.Function.Name, "handoff_to_")
			if tl.Function.Name == stateFunction {
				f.State = stateFunction
			}
		}
		mu.Lock()
		auths[r.Header.Get("Authorization")]++
		names[req.Model]++
		key := fmt.Sprintf("%v/%s", f, agent)
		if players[key] == nil {
			players[key] = demo.NewModels(demo.StoryScripts(f))
		}
		p := players[key]
		mu.Unlock()
		req.Model = agent
		body, _ := json.Marshal(req)
		r2 := r.Clone(r.Context())
		r2.Body = io.NopCloser(bytes.NewReader(body))
		r2.URL.Path = "/v1/chat/completions"
		p.ServeHTTP(w, r2)
	}))
	defer srv.Close()

	out, errOut, code := run(t, "", "demo", "-o", "json", "--model-url", srv.URL+"/v1", "--model-name", "gpt-test", "--model-key-env", "DEMO_TEST_MODEL_KEY")
	if code != 0 {
		t.Fatalf("demo --model-url = %d\n%s\n%s", code, out, errOut)
	}
	var sum demoSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatal(err)
	}
	for _, s := range sum.Steps {
		if !s.OK {
			t.Errorf("step %d (%s) did not hold\n%s", s.Step, s.Name, errOut)
		}
	}
	if sum.Mode != "model" || len(sum.ModelCalls) != 0 {
		t.Errorf("mode %s with %d counted model calls, want model and none (the far side is not ours)", sum.Mode, len(sum.ModelCalls))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(auths) != 1 || auths["Bearer sk-test-123"] == 0 || len(names) != 1 || names["gpt-test"] == 0 {
		t.Errorf("the model was called with %v as %v, want only Bearer sk-test-123 and gpt-test", auths, names)
	}
}

// TestDemoFlags: flags that cannot work are refused before anything
// starts, naming the flag.
func TestDemoFlags(t *testing.T) {
	t.Setenv("DEMO_TEST_EMPTY_KEY", "")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--model-url", "http://127.0.0.1:1/v1"}, "--model-url and --model-name go together"},
		{[]string{"demo", "--model-name", "gpt-4o"}, "--model-url and --model-name go together"},
		{[]string{"demo", "--model-url", "http://127.0.0.1:1/v1", "--model-name", "x", "--model-key-env", "DEMO_TEST_EMPTY_KEY"}, "$DEMO_TEST_EMPTY_KEY is empty"},
		{[]string{"demo", "-o", "yaml"}, `invalid argument "yaml"`},
		{[]string{"demo", "--worker=false"}, "the demo runs its agents on its own worker"},
	} {
		_, errOut, code := run(t, "", tt.args...)
		if code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v = %d %q, want an error saying %q", tt.args, code, errOut, tt.want)
		}
	}
}
