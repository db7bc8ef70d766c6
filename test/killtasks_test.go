package test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Shape of the crash test: 20 tasks of 5 turns (a tool call on each of the
// first four), ten kills.
const (
	crashTasks     = 20
	crashToolTurns = 4
	crashKills     = 10
)

// TestKillTasksRepeatsNothing runs 20 hosted-agent tasks of five turns each
// (four side-effecting tool calls, then a final answer) through the real
// binary and kills it with SIGKILL ten times at random points, restarting
// it each time on the same data directory. Some kills fall inside a model
// call or a tool call (the provider answered, the upstream made its side
// effect, and corral never heard back), others at a random moment.
// Afterwards, counted at the far side: every task completed with the final
// answer and none is lost; the model answered exactly one distinct request
// (Idempotency-Key) per (task, turn), its re-sends carrying the key of the
// first; every side effect happened exactly once.
func TestKillTasksRepeatsNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the corral binary and kills it ten times; -short skips it")
	}
	began := time.Now()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 13))
	t.Logf("seed %d", seed)

	model := startCountingModel(t, crashToolTurns, 40*time.Millisecond)
	ledger := startCountingTool(t, 20*time.Millisecond)
	p := startCorral(t)
	data := p.Data
	apply(t, p, toolSourceYAML("ledger", ledger.URL, ledgerDoc)+`---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: counter}
spec: {provider: openai, baseURL: `+model.URL+`/v1, model: counting, redact: "off"}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: bookkeeper}
spec:
  model: counter
  models: [counter]
  tools: ["ledger.*"]
  instructions: Record each step in the ledger, then say you are done.
`)
	if !waitFor(startTimeout, func() bool {
		return request(t, "GET", p.URL+"/v1/tools/ledger.record", p.Token, "").status == http.StatusOK
	}) {
		t.Fatal("tool ledger.record never served")
	}

	// Half the tasks are created before the kills, the others one a round
	// while a kill is armed, each with an Idempotency-Key: a create the kill
	// cut off is sent again after the restart, and must make one task.
	created := map[string]string{} // task id -> input
	var pending []string           // inputs not created yet
	resentCreates := 0
	create := func(p *proc) {
		var left []string
		for _, input := range pending {
			status, tk, err := postTask(t, p, "bookkeeper", input, "crash-"+input)
			switch {
			case err == nil && (status == http.StatusCreated || status == http.StatusOK):
				created[tk.ID] = input
			case err == nil && status != http.StatusServiceUnavailable:
				t.Fatalf("POST /v1/tasks %s: HTTP %d", input, status)
			default:
				left = append(left, input) // corral is gone or not ready: again later
				resentCreates++
			}
		}
		pending = left
	}
	for i := range crashTasks - crashKills {
		pending = append(pending, fmt.Sprintf("job-%02d", i))
	}
	create(p)
	if len(pending) > 0 {
		t.Fatalf("tasks %v not created", pending)
	}

	// Ten rounds: arm a kill, wait for it, restart on the same data.
	modes := map[string]int{}
	midway := 0 // kills with a model turn still to come
	for round := range crashKills {
		mode, n, wait := killPlan(rng)
		modes[mode]++
		killed := armKill(t, p, model, ledger, mode, n, wait)
		pending = append(pending, fmt.Sprintf("job-%02d", crashTasks-crashKills+round))
		create(p)
		<-killed
		p.wait(t)
		model.setHook(nil)
		ledger.setHook(nil)
		mc, tc := model.counts(), ledger.counts()
		t.Logf("kill %d %s (%d): model %d requests for %d (task, turn)s, tool %d requests for %d side effects",
			round+1, mode, n, mc.total, len(mc.keys), tc.requests, len(tc.effects))
		if len(mc.keys) < crashTasks*(crashToolTurns+1) {
			midway++
		}
		p = startCorral(t, "--data", data)
	}
	t.Logf("ten kills (%v), %d of them with work left, took %v", modes, midway, time.Since(began).Round(time.Millisecond))
	if !waitFor(30*time.Second, func() bool {
		create(p)
		return len(pending) == 0
	}) {
		t.Fatalf("tasks %v not created 30s after the last restart", pending)
	}

	var tasks []taskJSON
	if !waitFor(60*time.Second, func() bool {
		tasks = listTasksOn(t, p, "bookkeeper")
		for _, tk := range tasks {
			if !tk.final() {
				return false
			}
		}
		return len(tasks) >= len(created)
	}) {
		t.Errorf("tasks not all ended 60s after the last restart")
	}

	// No task lost, every one completed with its answer, counted once.
	seen := map[string]bool{}
	for _, tk := range tasks {
		seen[tk.ID] = true
		input, ok := created[tk.ID]
		if !ok {
			t.Errorf("task %s (%s) was never created", tk.ID, tk.Input)
			continue
		}
		want, _ := json.Marshal("done " + input)
		if tk.State != "completed" || string(tk.Result) != string(want) {
			t.Errorf("task %s (%s) = %s %s %s, result %s; want completed with %s", tk.ID, input, tk.State, tk.Reason, tk.Detail, tk.Result, want)
		}
		if tk.Usage.ModelCalls != crashToolTurns+1 || tk.Usage.ToolCalls != crashToolTurns {
			t.Errorf("task %s (%s) usage = %d model calls, %d tool calls; want %d and %d",
				tk.ID, input, tk.Usage.ModelCalls, tk.Usage.ToolCalls, crashToolTurns+1, crashToolTurns)
		}
		// Each answer of the model reports 10 prompt and 5 completion
		// tokens: a task's tokens are its turns', each counted once.
		if in, out := tk.Usage.InputTokens, tk.Usage.OutputTokens; in != 10*(crashToolTurns+1) || out != 5*(crashToolTurns+1) {
			var zero []int
			for _, ev := range taskEventsOn(t, p, tk.ID) {
				if ev.Type == "model.answer" && (ev.Usage == nil || ev.Usage.InputTokens == 0) {
					zero = append(zero, ev.Step)
				}
			}
			t.Errorf("task %s (%s) usage = %d input and %d output tokens; want %d and %d (each turn's once); the model.answer of steps %v counts no tokens",
				tk.ID, input, in, out, 10*(crashToolTurns+1), 5*(crashToolTurns+1), zero)
		}
	}
	if len(created) != crashTasks {
		t.Errorf("%d tasks created for %d inputs; want one each", len(created), crashTasks)
	}
	for id, input := range created {
		if !seen[id] {
			t.Errorf("task %s (%s) is lost: GET /v1/tasks does not list it", id, input)
		}
	}

	// The model: exactly one distinct request per (task, turn).
	mc := model.counts()
	for _, input := range created {
		for turn := 0; turn <= crashToolTurns; turn++ {
			tk := turnKey{input, turn}
			if mc.keys[tk] != 1 {
				t.Errorf("the model got %d distinct requests (Idempotency-Keys) for %s turn %d in %d requests; want exactly 1",
					mc.keys[tk], input, turn, mc.raw[tk])
			}
		}
	}
	inputs := map[string]bool{}
	for _, input := range created {
		inputs[input] = true
	}
	for tk, n := range mc.raw {
		if !inputs[tk.task] || tk.turn > crashToolTurns {
			t.Errorf("the model got %d requests for %q turn %d, which no task should make", n, tk.task, tk.turn)
		}
	}
	if mc.noKey > 0 {
		t.Errorf("%d model requests came without an Idempotency-Key", mc.noKey)
	}

	// The tool: exactly one side effect per (task, step).
	tc := ledger.counts()
	for _, input := range created {
		for turn := range crashToolTurns {
			text := fmt.Sprintf("%s turn %d", input, turn)
			if tc.effects[text] != 1 {
				t.Errorf("side effect %q happened %d times; want exactly once", text, tc.effects[text])
			}
		}
	}
	if len(tc.effects) != crashTasks*crashToolTurns {
		t.Errorf("the tool made %d distinct side effects; want %d", len(tc.effects), crashTasks*crashToolTurns)
	}
	if tc.nk > 0 {
		t.Errorf("%d tool requests came without an Idempotency-Key", tc.nk)
	}

	// A create sent again with its Idempotency-Key finds its task.
	for id, input := range created {
		status, tk, err := postTask(t, p, "bookkeeper", input, "crash-"+input)
		if err != nil || status != http.StatusOK || tk.ID != id {
			t.Errorf("POST /v1/tasks %s again with its key: HTTP %d %v task %s; want 200 and task %s", input, status, err, tk.ID, id)
		}
	}

	// Every tool call got the upstream's answer (not a refusal corral
	// made up), and how often corral picked a task up again.
	starts := 0
	for id, input := range created {
		for _, ev := range taskEventsOn(t, p, id) {
			switch {
			case ev.Type == "started":
				starts++
			case ev.Type == "tool.result" && ev.IsError:
				t.Errorf("task %s (%s) step %d: the tool call failed with %s: %s", id, input, ev.Step, ev.Code, ev.Content)
			}
		}
	}
	distinct := 0
	for _, n := range mc.keys {
		distinct += n
	}
	t.Logf("model: %d requests for %d (task, turn)s with %d distinct keys; %d re-sent with a key already answered (and answered alike)",
		mc.total, len(mc.raw), distinct, mc.resent)
	t.Logf("tool: %d requests, %d side effects, %d repeats answered from the record; tasks started %d times in all (%d tasks, %d creates sent again); %v in all",
		tc.requests, len(tc.effects), tc.repeats, starts, crashTasks, resentCreates, time.Since(began).Round(time.Millisecond))
}

// killPlan picks where the next kill falls: inside the n-th model call of
// the round (the provider answered, corral never heard), inside the n-th
// tool call (the side effect happened, corral never heard), wait after
// the round's first call reached an upstream, or wait after the round's
// task create was sent.
func killPlan(rng *rand.Rand) (mode string, n int, wait time.Duration) {
	switch rng.IntN(4) {
	case 3:
		return "while creating a task", 0, time.Duration(rng.IntN(20)) * time.Millisecond
	case 0:
		return "in a model call", 1 + rng.IntN(3), 0
	case 1:
		return "in a tool call", 1 + rng.IntN(3), 0
	}
	return "at a moment", 1, time.Duration(rng.IntN(100)) * time.Millisecond
}

// armKill arranges for p to be killed with SIGKILL as mode says, and
// returns a channel closed once it was.
func armKill(t *testing.T, p *proc, model *countingModel, ledger *countingTool, mode string, n int, wait time.Duration) <-chan struct{} {
	t.Helper()
	killed := make(chan struct{})
	var once sync.Once
	kill := func() {
		once.Do(func() {
			_ = p.cmd.Process.Kill()
			close(killed)
		})
	}
	// A round whose kind of call does not come soon (every task is past
	// its tool calls, say) ends with a kill all the same: after the round's
	// other calls outnumber n by ten, or after three seconds of no calls,
	// so that each round moves the tasks on by a few steps only.
	fallback := time.AfterFunc(3*time.Second, kill)
	go func() {
		<-killed
		fallback.Stop()
	}()
	var mu sync.Mutex
	armed, all := 0, 0
	hook := func(kind string) func() {
		return func() {
			mu.Lock()
			all++
			if kind == mode {
				armed++
			}
			hitArmed, hitAll := armed == n, all == n+10
			mu.Unlock()
			switch {
			case hitArmed && mode == "at a moment":
				time.AfterFunc(wait, kill)
			case hitArmed, hitAll:
				kill()
			}
		}
	}
	if mode == "while creating a task" {
		time.AfterFunc(wait, kill) // the round's create follows at once
		return killed
	}
	model.setHook(hook("in a model call"))
	ledger.setHook(hook("in a tool call"))
	if mode == "at a moment" {
		model.setHook(hook(mode))
		ledger.setHook(hook(mode))
	}
	return killed
}
