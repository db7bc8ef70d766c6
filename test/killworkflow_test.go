package test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKillWorkflowsRepeatsNothing runs workflow runs through the real
// binary and kills it with SIGKILL inside their steps' tool calls (the
// upstream made its side effect; corral never heard) and their
// compensations, restarting it on the same data each time. Half the runs
// are three steps that complete; the others fail at their third step
// (arguments the tool refuses) and are compensated, second step then
// first. Counted at the far side: every side effect of a step and of a
// compensation happened exactly once, and every run ended as it should,
// its compensations in reverse order.
func TestKillWorkflowsRepeatsNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the corral binary and kills it several times; -short skips it")
	}
	const runs, kills = 4, 8
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 14))
	t.Logf("seed %d", seed)
	ledger := startCountingTool(t, 20*time.Millisecond)
	undo := startCountingTool(t, 20*time.Millisecond) // the compensations
	p := startCorral(t)
	data := p.Data
	wf := func(name, third string) string {
		return `---
apiVersion: corral.dev/v1
kind: Workflow
metadata: {name: ` + name + `}
spec:
  agent: keeper
  steps:
    - name: a
      tool: ledger.record
      arguments: {text: "input + ' a'"}
      compensate: {tool: undo.record, arguments: {text: "input + ' undo a ' + output.text"}}
    - name: b
      needs: [a]
      tool: ledger.record
      arguments: {text: "input + ' b after ' + string(steps.a.output.entry)"}
      compensate: {tool: undo.record, arguments: {text: "input + ' undo b'"}}
    - name: c
      needs: [b]
      tool: ledger.record
      arguments: {text: ` + third + `}
`
	}
	apply(t, p, toolSourceYAML("ledger", ledger.URL, ledgerDoc)+"---\n"+toolSourceYAML("undo", undo.URL, ledgerDoc)+`---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: keeper}
spec: {tools: ["ledger.*", "undo.*"]}
`+wf("pay", `"input + ' c'"`)+wf("saga", `"42"`))
	if !waitFor(startTimeout, func() bool {
		return request(t, "GET", p.URL+"/v1/tools/ledger.record", p.Token, "").status == http.StatusOK &&
			request(t, "GET", p.URL+"/v1/tools/undo.record", p.Token, "").status == http.StatusOK
	}) {
		t.Fatal("tools ledger.record and undo.record never served")
	}
	created := map[string]string{} // run id -> input
	start := func(p *proc, workflow, input string) bool {
		body, _ := json.Marshal(map[string]any{"workflow": workflow, "input": input})
		r := requestWith(t, "POST", p.URL+"/v1/tasks", p.Token, string(body), map[string]string{"Idempotency-Key": "kill-" + input})
		var tk taskJSON
		if (r.status != http.StatusCreated && r.status != http.StatusOK) || json.Unmarshal(r.body, &tk) != nil {
			return false
		}
		created[tk.ID] = input
		return true
	}
	for i := range runs {
		for _, wfName := range []string{"pay", "saga"} {
			input := fmt.Sprintf("%s-%d", wfName, i)
			if !start(p, wfName, input) {
				t.Fatalf("starting run %s failed", input)
			}
		}
	}
	// Even rounds kill inside a step's tool call, odd ones inside a
	// compensation's; each round starts a saga of its own, so that a
	// compensation comes while the kill is armed.
	inCompensation := 0
	for round := range kills {
		n := 1 + rng.IntN(3)
		target := ledger
		if round%2 == 1 {
			target, n = undo, 1+rng.IntN(2)
		}
		extra := fmt.Sprintf("saga-r%d", round)
		killed := make(chan struct{})
		var calls atomic.Int32
		var once sync.Once
		proc := p
		kill := func() { once.Do(func() { _ = proc.cmd.Process.Kill(); close(killed) }) }
		// A round whose calls do not come (every run has ended) ends
		// with a kill all the same.
		fallback := time.AfterFunc(3*time.Second, kill)
		hooked := false
		target.setHook(func() {
			if calls.Add(1) == int32(n) {
				kill()
			}
		})
		if !start(p, "saga", extra) {
			t.Fatalf("starting run %s failed", extra)
		}
		<-killed
		if fallback.Stop() {
			hooked = true
		}
		p.wait(t)
		target.setHook(nil)
		if hooked && target == undo {
			inCompensation++
		}
		tc, uc := ledger.counts(), undo.counts()
		t.Logf("kill %d after %d calls to %s (fallback %v): steps %d requests, %d side effects; compensations %d requests, %d side effects",
			round+1, n, map[bool]string{true: "undo", false: "ledger"}[target == undo], !hooked, tc.requests, len(tc.effects), uc.requests, len(uc.effects))
		p = startCorral(t, "--data", data)
	}
	var tasks []taskJSON
	if !waitFor(60*time.Second, func() bool {
		tasks = listTasksOn(t, p, "keeper")
		for _, tk := range tasks {
			if !tk.final() {
				return false
			}
		}
		return len(tasks) >= len(created)
	}) {
		t.Fatalf("runs not all ended 60s after the last restart: %+v", tasks)
	}
	for _, tk := range tasks {
		input := created[tk.ID]
		if strings.HasPrefix(input, "pay") {
			if tk.State != "completed" {
				t.Errorf("run %s (%s) = %s %s %s, want completed", tk.ID, input, tk.State, tk.Reason, tk.Detail)
			}
			continue
		}
		if tk.State != "failed" || tk.Reason != "step_failed" || !strings.Contains(tk.Detail, "compensated: b, a") {
			t.Errorf("run %s (%s) = %s %s %q, want failed step_failed, compensated: b, a", tk.ID, input, tk.State, tk.Reason, tk.Detail)
		}
	}
	if inCompensation == 0 {
		t.Errorf("no kill fell inside a compensation")
	}
	tc, uc := ledger.counts(), undo.counts()
	steps, comps := 0, 0
	for _, input := range created {
		texts := []string{input + " a", input + " c"}
		steps += 2 // a and b; c for pay runs below
		if strings.HasPrefix(input, "saga") {
			texts = []string{input + " a"}
			comps += 2
			if uc.effects[input+" undo b"] != 1 {
				t.Errorf("compensation %q happened %d times; want exactly once", input+" undo b", uc.effects[input+" undo b"])
			}
		} else {
			steps++
		}
		for _, text := range texts {
			if tc.effects[text] != 1 {
				t.Errorf("side effect %q happened %d times; want exactly once", text, tc.effects[text])
			}
		}
	}
	for what, c := range map[string]toolCounts{"step": tc, "compensation": uc} {
		for text, n := range c.effects {
			if n != 1 {
				t.Errorf("%s side effect %q happened %d times; want exactly once", what, text, n)
			}
		}
		if c.nk > 0 {
			t.Errorf("%d %s requests came without an Idempotency-Key", c.nk, what)
		}
	}
	if len(tc.effects) != steps || len(uc.effects) != comps {
		t.Errorf("the tools made %d step and %d compensation side effects; want %d and %d", len(tc.effects), len(uc.effects), steps, comps)
	}
	t.Logf("%d kills, %d inside a compensation; steps: %d requests, %d side effects, %d repeats answered from the record; compensations: %d requests, %d side effects, %d repeats",
		kills, inCompensation, tc.requests, len(tc.effects), tc.repeats, uc.requests, len(uc.effects), uc.repeats)
}
