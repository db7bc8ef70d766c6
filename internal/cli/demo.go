package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/budget"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/demo"
	"github.com/corral-dev/corral/internal/edge/rest"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/tools"
)

func newDemo(s streams) *cobra.Command {
	var (
		f      serverFlags
		keep   bool
		models storyModels
		output *string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch corral govern six agents through a port strike, end to end",
		Long: `Run the port-strike story on a corral started for the occasion (embedded
JetStream in a fresh temporary directory, or --data), against a demo world on
loopback: a shipping API, an ERP holding customers' personal data, a carrier
marketplace, a notification service and billing, each an OpenAPI-described
HTTP API, and a model server that plays each agent's script (offline, the
same every run).

  1. the shipping API posts a signed webhook: a strike at Rotterdam; the
     monitor agent's task starts;
  2. monitor hands off to impact, which reads the ERP through governed tools
     and writes the delayed orders to the shared task state;
  3. negotiation, placed in another region with its own model (customer data
     redacted before it leaves, restored after), asks the carriers for
     alternatives and proposes a reroute;
  4. execution's write to the ERP waits for a person's approval; a logistics
     lead approves it; then it notifies the customers and bills them;
  5. along the way corral is killed and restarted on the same data: no model
     call is repeated and no customer is told twice; a looping agent is
     stopped, a delegation back up the chain is refused, a budget holds;
  6. the task tree with usage and cost, a trace, and the audit verified.

Each step says what happened, why it matters and the command to see more.
-o json prints, at the end, each step's outcome for scripts and tests (the
narration then goes to standard error).

With --keep, corral stays up afterwards, and the approval is left to you.
With --model-url and --model-name, the agents think with a real
OpenAI-compatible model (the key in $OPENAI_API_KEY, or --model-key-env)
instead of the scripts; a real model may tell the story its own way.`,
		Example: `  corral demo
  corral demo --keep
  corral demo -o json | jq .steps
  OPENAI_API_KEY=sk-... corral demo --model-url https://api.openai.com/v1 --model-name gpt-4o-mini`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (models.baseURL == "") != (models.model == "") {
				return usageError{cmd: cmd, err: errors.New("--model-url and --model-name go together")}
			}
			models.real = models.baseURL != ""
			if models.real && models.keyEnv != "" && os.Getenv(models.keyEnv) == "" {
				return fmt.Errorf("--model-url: $%s is empty; set it to the model's key, or pass --model-key-env \"\" for a model without one", models.keyEnv)
			}
			if !models.real {
				models.keyEnv = ""
			}
			if f.data == "" {
				dir, err := os.MkdirTemp("", "corral-demo-")
				if err != nil {
					return err
				}
				defer func() {
					if !keep {
						os.RemoveAll(dir)
					}
				}()
				f.data = dir
			}
			cfg, logger, err := f.build(s)
			if err != nil {
				return err
			}
			if cfg.NoWorker {
				return errors.New("--worker=false: the demo runs its agents on its own worker")
			}
			if cfg.WorkerLabels == nil {
				cfg.WorkerLabels = map[string]string{}
			}
			cfg.WorkerLabels["region"] = storyRegion
			narrate := s.out
			if *output == "json" {
				narrate = s.err
			}
			r := &storyRun{out: narrate, logger: logger, cfg: cfg, models: models, keep: keep,
				sum: &demoSummary{Mode: "scripted"}}
			if models.real {
				r.sum.Mode = "model"
			}
			err = r.run(cmd.Context())
			if *output == "json" {
				if werr := writeJSON(s.out, r.sum); err == nil {
					err = werr
				}
			}
			return err
		},
	}
	f.register(cmd, serverDefaults{
		dataUsage: "data directory (default: a new temporary directory, removed afterwards unless --keep)",
		http:      "127.0.0.1:0", // never collide with a corral already on the default port
		logLevel:  "error",       // the story's output is the point
	})
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the approval to you, and keep serving after the story, until interrupted")
	cmd.Flags().StringVar(&models.baseURL, "model-url", "", "run the agents on this OpenAI-compatible server (its /v1 URL) instead of the scripted demo models")
	cmd.Flags().StringVar(&models.model, "model-name", "", "the model to ask for at --model-url")
	cmd.Flags().StringVar(&models.keyEnv, "model-key-env", "OPENAI_API_KEY", "environment variable holding --model-url's key (sent as a bearer token; corral reads it, never the agents)")
	output = outputFlag(cmd, "text", "json")
	return cmd
}

// demoSummary is what -o json prints: each step's outcome, and the counts
// taken at the far side (the demo world's systems and model server).
type demoSummary struct {
	Mode     string         `json:"mode"` // scripted or model
	Features demoFeatures   `json:"features"`
	Steps    []stepOutcome  `json:"steps"`
	Tasks    []taskOutcome  `json:"tasks"`
	Refusals map[string]int `json:"refusals"` // problem codes and task reasons the story met
	// SharedState lists the members of the story's shared task state.
	SharedState []string `json:"shared_state,omitempty"`
	Approval    struct {
		ID    string `json:"id,omitempty"`
		State string `json:"state,omitempty"`
		By    string `json:"by,omitempty"`
	} `json:"approval"`
	Restart struct {
		Done    bool `json:"done"`
		Resumed bool `json:"resumed"` // the interrupted task was taken over from its journal
	} `json:"restart"`
	// Far-side counts per Idempotency-Key: requests that reached the
	// system, and effects (0 or 1).
	Notifications []demo.Count `json:"notifications"`
	Invoices      []demo.Count `json:"invoices"`
	ERPWrites     []demo.Count `json:"erp_writes"`
	ModelCalls    []demo.Count `json:"model_calls"` // scripted mode only: per model step
	Webhook       struct {
		Accepted  int    `json:"accepted"`
		Duplicate bool   `json:"duplicate"`
		BadStatus int    `json:"bad_signature_status,omitempty"`
		BadCode   string `json:"bad_signature_code,omitempty"`
	} `json:"webhook"`
	Redaction struct {
		ModelSaw   string `json:"model_saw,omitempty"`
		AgentGot   string `json:"agent_got,omitempty"`
		Redacted   bool   `json:"redacted"`
		Restored   bool   `json:"restored"`
		Placement  string `json:"placement,omitempty"`
		WorkerSeen string `json:"worker,omitempty"`
	} `json:"redaction"`
	Trace struct {
		ID    string `json:"id,omitempty"`
		Spans int    `json:"spans"`
		Tasks int    `json:"tasks"` // the tasks whose actions the trace holds
	} `json:"trace"`
	Audit struct {
		OK      bool   `json:"ok"`
		Records uint64 `json:"records"`
	} `json:"audit"`
}

type demoFeatures struct {
	Agents   bool   `json:"agents"`
	State    string `json:"state,omitempty"`
	Triggers bool   `json:"triggers"`
	Console  bool   `json:"console"`
}

type stepOutcome struct {
	Step    int     `json:"step"`
	Name    string  `json:"name"`
	OK      bool    `json:"ok"`
	Skipped string  `json:"skipped,omitempty"`
	Seconds float64 `json:"seconds"`

	start time.Time
}

type taskOutcome struct {
	ID         string  `json:"id"`
	Agent      string  `json:"agent"`
	Parent     string  `json:"parent,omitempty"`
	State      string  `json:"state"`
	Reason     string  `json:"reason,omitempty"`
	ModelCalls int     `json:"model_calls"`
	ToolCalls  int     `json:"tool_calls"`
	Tokens     int     `json:"tokens"`
	Cost       float64 `json:"cost"`
	Attempts   int     `json:"attempts"`
}

// storyTask is a task as GET /v1/tasks gives it, with the fields of task
// trees read when the server has them.
type storyTask struct {
	ID        string             `json:"id"`
	Agent     string             `json:"agent"`
	State     string             `json:"state"`
	Reason    string             `json:"reason"`
	Detail    string             `json:"detail"`
	Input     json.RawMessage    `json:"input"`
	Result    json.RawMessage    `json:"result"`
	Parent    string             `json:"parent"`
	Root      string             `json:"root"`
	Chain     []string           `json:"chain"`
	Placement map[string]string  `json:"placement"`
	Worker    string             `json:"worker"`
	Attempts  int                `json:"attempts"`
	Usage     orchestrator.Usage `json:"usage"`
	Created   time.Time          `json:"created"`
}

func (t storyTask) final() bool {
	switch orchestrator.State(t.State) {
	case orchestrator.Completed, orchestrator.Failed, orchestrator.Canceled, orchestrator.Rejected:
		return true
	}
	return false
}

// storyRun is one telling of the story.
type storyRun struct {
	out    io.Writer
	logger *slog.Logger
	cfg    app.Config
	models storyModels
	keep   bool
	sum    *demoSummary

	corral *corralInstance
	c      *client
	token  string
	world  *demo.World
	feat   demo.Features
	trig   bool
	ids    map[string]string // agent -> the story's task of it

	webhookSecret string    // the shipping API's secret shared with corral
	restarted     time.Time // when corral came back after the crash
	cycle         string    // what negotiation was told when it delegated back up the chain
}

// The story's steps, as the summary names them.
var storySteps = []string{"strike", "impact", "negotiation", "execution", "resilience", "record"}

func (r *storyRun) step(n int, title string) {
	fmt.Fprintf(r.out, "\n[%d/6] %s\n", n, title)
	r.sum.Steps = append(r.sum.Steps, stepOutcome{Step: n, Name: storySteps[n-1], start: time.Now()})
}

// done marks the current step's outcome.
func (r *storyRun) done(ok bool) {
	s := &r.sum.Steps[len(r.sum.Steps)-1]
	s.OK, s.Seconds = ok, float64(time.Since(s.start).Milliseconds())/1000
}

func (r *storyRun) say(format string, args ...any) {
	fmt.Fprintf(r.out, "  "+format+"\n", args...)
}

func (r *storyRun) see(cmd string) { fmt.Fprintf(r.out, "  see: %s\n", cmd) }

// run tells the story.
func (r *storyRun) run(ctx context.Context) error {
	r.ids = map[string]string{}
	r.sum.Refusals = map[string]int{}
	start := time.Now()
	var err error
	if r.corral, err = startCorral(ctx, r.logger, r.cfg); err != nil {
		return err
	}
	defer func() { _ = r.corral.stop() }()
	path, _ := r.corral.a.AdminToken()
	if r.token, err = identity.ReadToken(path); err != nil {
		return err
	}
	r.c = newClient(r.corral.a.URL(), r.token)
	if err := r.detect(ctx); err != nil {
		return err
	}
	if r.world, err = demo.Start(demo.StoryScripts(r.feat)); err != nil {
		return err
	}
	defer r.world.Close()
	fmt.Fprintf(r.out, "corral listening on %s (data in %s; worker labelled region=%s)\n", r.corral.a.URL(), r.cfg.DataDir, storyRegion)
	if err := r.setup(ctx); err != nil {
		return err
	}
	for _, s := range []func(context.Context) error{r.strike, r.impact, r.negotiation, r.execution, r.resilience, r.record} {
		if err := s(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintf(r.out, "\nThe story took %.1fs.\n", time.Since(start).Seconds())
	if !r.keep {
		fmt.Fprintf(r.out, "Run 'corral demo --keep' to approve the write yourself, then try the 'see:' commands against the corral it keeps.\n")
		return nil
	}
	fmt.Fprintf(r.out, "\ncorral keeps serving; in another shell:\n  export CORRAL_SERVER=%s CORRAL_TOKEN=$(cat %s)\n  corral tasks list\n  corral audit\n", r.c.base, path)
	if r.sum.Features.Console {
		fmt.Fprintf(r.out, "  and the console: %s/ui/ (sign in with the admin token)\n", r.c.base)
	}
	fmt.Fprintf(r.out, "Interrupt (Ctrl-C) to stop.\n")
	<-ctx.Done()
	return nil
}

// detect asks the server which of the story's capabilities it has: agents
// calling agents (Agent.spec.agents), shared task state, triggers, the
// console. The story uses what is there and says what is not.
func (r *storyRun) detect(ctx context.Context) error {
	var schema map[string]any
	if err := r.c.do(ctx, "GET", "/v1/schemas/Agent", nil, &schema); err != nil {
		return err
	}
	r.feat.Agents = hasProperty(schema, "agents")
	// The shared state's route answers task_not_found for a task that does
	// not exist; without the route the answer is another 404.
	err := r.c.do(ctx, "GET", "/v1/tasks/task_00000000000000000000000000/state", nil, nil)
	var ae *apiError
	if r.feat.Agents && errors.As(err, &ae) && ae.Code == "task_not_found" {
		r.feat.State = stateFunction
	}
	r.trig = r.c.do(ctx, "GET", "/v1/schemas/Trigger", nil, &map[string]any{}) == nil
	r.sum.Features = demoFeatures{Agents: r.feat.Agents, State: r.feat.State, Triggers: r.trig, Console: r.reachable(ctx, "/ui/")}
	return nil
}

// stateFunction is the function hosted agents change the shared task
// state with (docs/agents.md).
const stateFunction = "update_shared_state"

// hasProperty reports whether a JSON Schema (or its spec) declares name.
func hasProperty(schema map[string]any, name string) bool {
	props, _ := schema["properties"].(map[string]any)
	if _, ok := props[name]; ok {
		return true
	}
	if spec, ok := props["spec"].(map[string]any); ok {
		return hasProperty(spec, name)
	}
	return false
}

// reachable reports whether GET path answers 2xx or 3xx.
func (r *storyRun) reachable(ctx context.Context, path string) bool {
	req, err := http.NewRequestWithContext(ctx, "GET", r.c.base+path, nil)
	if err != nil {
		return false
	}
	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode < 400
}

// setup applies the story's resources and waits until the server has
// loaded them.
func (r *storyRun) setup(ctx context.Context) error {
	m := r.models
	if !m.real {
		m.baseURL = r.world.ModelsURL()
	}
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	r.webhookSecret = hex.EncodeToString(secret)
	docs, err := storyResources(m, r.feat, r.trig, r.webhookSecret)
	if err != nil {
		return err
	}
	var sources []config.Document
	for i, sys := range demo.Systems {
		src, _, err := importOpenAPIData(sys.Name, sys.Spec, r.world.BaseURL(sys.Name))
		if err != nil {
			return err
		}
		sources = append(sources, config.Document{Source: "demo", Index: i + 1, Resource: src})
	}
	if _, err := r.c.apply(ctx, append(sources, docs...)); err != nil {
		return err
	}
	fmt.Fprintf(r.out, "the demo world runs on %s: %d systems (logistics, ERP, carriers, notifications, billing) imported as ToolSources from their OpenAPI documents; %d agents, each with its Model; a Policy; a Budget",
		r.world.URL, len(demo.Systems), len(storyCast))
	if r.trig {
		fmt.Fprint(r.out, "; a Trigger")
	}
	fmt.Fprintln(r.out)
	return r.awaitLoaded(ctx)
}

// awaitLoaded waits until every tool and every agent's model is served:
// the catalogues follow the registry in the background.
func (r *storyRun) awaitLoaded(ctx context.Context) error {
	keys := map[string]*client{}
	for _, a := range storyCast {
		var k api.CreatedKey
		if err := r.c.do(ctx, "POST", "/v1/keys", api.CreateKeyRequest{Agent: a.name}, &k); err != nil {
			return err
		}
		keys[a.name] = newClient(r.c.base, k.Secret)
	}
	var want []string
	for _, a := range storyCast {
		want = append(want, a.tools...)
	}
	return r.await(ctx, "the tools and models to load", 20*time.Second, func() (bool, error) {
		var list rest.ToolList
		if err := r.c.do(ctx, "GET", "/v1/tools", nil, &list); err != nil {
			return false, err
		}
		for _, w := range want {
			if !slices.ContainsFunc(list.Tools, func(t tools.Tool) bool { return t.Name == w }) {
				return false, nil
			}
		}
		for name, k := range keys {
			var models struct{ Data []struct{ ID string } }
			if err := k.do(ctx, "GET", "/openai/v1/models", nil, &models); err != nil {
				return false, err
			}
			if !slices.ContainsFunc(models.Data, func(m struct{ ID string }) bool { return m.ID == modelName(name) }) {
				return false, nil
			}
		}
		// The policy that parks the write, and the broker's budget.
		var d struct{ Effect string }
		input := map[string]any{"action": map[string]any{"kind": "tool", "target": "erp.reroute_orders", "arguments": map[string]any{}},
			"agent": map[string]any{"name": demo.Execution, "tools": []string{"erp.reroute_orders"}}}
		if err := r.c.do(ctx, "POST", "/v1/policy/eval", input, &d); err != nil || d.Effect != "approval" {
			return false, err
		}
		var budgets api.BudgetList
		if err := r.c.do(ctx, "GET", "/v1/budgets", nil, &budgets); err != nil {
			return false, err
		}
		return slices.ContainsFunc(budgets.Items, func(b budget.Status) bool { return b.Budget == "broker-spot" }), nil
	})
}

// await polls cond every 50 ms until it holds, for at most d.
func (r *storyRun) await(ctx context.Context, what string, d time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("demo: waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: %s did not happen within %v", what, d)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// tasks lists the server's tasks, oldest first.
func (r *storyRun) tasks(ctx context.Context) ([]storyTask, error) {
	var list struct {
		Items []storyTask `json:"items"`
	}
	if err := r.c.do(ctx, "GET", "/v1/tasks?limit=1000", nil, &list); err != nil {
		return nil, err
	}
	slices.Reverse(list.Items)
	return list.Items, nil
}

func (r *storyRun) task(ctx context.Context, id string) (storyTask, error) {
	var t storyTask
	err := r.c.do(ctx, "GET", "/v1/tasks/"+id, nil, &t)
	return t, err
}

// begin finds the story's task of agent: with agents calling agents, the
// one the story's agents opened; without, the demo starts it with input,
// as the agent before would have handed it on.
func (r *storyRun) begin(ctx context.Context, agent string, input json.RawMessage) (storyTask, error) {
	if !r.feat.Agents {
		var t storyTask
		if err := r.c.do(ctx, "POST", "/v1/tasks", api.TaskRequest{Agent: agent, Input: input}, &t); err != nil {
			return t, err
		}
		r.ids[agent] = t.ID
		return t, nil
	}
	var found storyTask
	wait := 60 * time.Second
	if r.models.real {
		wait = 5 * time.Minute
	}
	err := r.await(ctx, "a task of Agent/"+agent+" (the agent before did not hand the work on, or delegate it)", wait, func() (bool, error) {
		all, err := r.tasks(ctx)
		if err != nil {
			return false, err
		}
		for _, t := range all {
			if t.Agent == agent {
				found = t
				return true, nil
			}
		}
		return false, nil
	})
	r.ids[agent] = found.ID
	return found, err
}

// finish waits for a task to end (or, with handoffs, to hand its work on).
func (r *storyRun) finish(ctx context.Context, id string) (storyTask, error) {
	var t storyTask
	wait := 60 * time.Second
	if r.models.real {
		wait = 5 * time.Minute // real models think slowly, and retry
	}
	err := r.await(ctx, "task "+id+" to end", wait, func() (bool, error) {
		var err error
		t, err = r.task(ctx, id)
		return t.final(), err
	})
	return t, err
}

// completed ends the story when a task of its main line did not complete:
// the next agent would have nothing to go on.
func completed(t storyTask, err error) (storyTask, error) {
	if err != nil || t.State == string(orchestrator.Completed) {
		return t, err
	}
	return t, fmt.Errorf("demo: Agent/%s's task %s ended %s (%s): %s; see corral tasks events %s", t.Agent, t.ID, t.State, t.Reason, t.Detail, t.ID)
}

// resultText is a task's result as text.
func resultText(raw json.RawMessage) json.RawMessage {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return raw
	}
	b, _ := json.Marshal(string(raw))
	return b
}

// events reads a task's journal as it stands.
func (r *storyRun) events(ctx context.Context, id string) ([]orchestrator.Event, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", r.c.base+"/v1/tasks/"+id+"/events?follow=false", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("events of %s: HTTP %d", id, resp.StatusCode)
	}
	var out []orchestrator.Event
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev orchestrator.Event
		if json.Unmarshal([]byte(data), &ev) == nil {
			out = append(out, ev)
		}
	}
	return out, sc.Err()
}

// refusal notes a refusal the story met.
func (r *storyRun) refusal(code string) { r.sum.Refusals[code]++ }

// corralInstance is a corral running in this process.
type corralInstance struct {
	a      *app.App
	cancel context.CancelFunc
	done   chan error
}

// startCorral starts corral and waits until it is ready.
func startCorral(ctx context.Context, logger *slog.Logger, cfg app.Config) (*corralInstance, error) {
	a, err := app.New(ctx, logger, cfg)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	select {
	case err := <-done:
		cancel()
		return nil, err
	case <-a.Ready():
	}
	return &corralInstance{a: a, cancel: cancel, done: done}, nil
}

// stop ends corral at once: what runs is abandoned, as a crash would
// leave it (its leases lapse; the journal has the rest). A second stop
// returns nil.
func (c *corralInstance) stop() error {
	if c.done == nil {
		return nil
	}
	c.cancel()
	err := <-c.done
	c.done = nil
	return err
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}
