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
      compensate: {tool: ledger.record, arguments: {text: "input + ' undo a ' + output.text"}}
    - name: b
      needs: [a]
      tool: ledger.record
      arguments: {text: "input + ' b after ' + string(steps.a.output.entry)"}
      compensate: {tool: ledger.record, arguments: {text: "input + ' undo b'"}}
    - name: c
      needs: [b]
      tool: ledger.record
      arguments: {text: ` + third + `}
`
	}
	apply(t, p, toolSourceYAML("ledger", ledger.URL, ledgerDoc)+`---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: keeper}
spec: {tools: ["ledger.*"]}
`+wf("pay", `"input + ' c'"`)+wf("saga", `"42"`))
	if !waitFor(startTimeout, func() bool {
		return request(t, "GET", p.URL+"/v1/tools/ledger.record", p.Token, "").status == http.StatusOK
	}) {
		t.Fatal("tool ledger.record never served")
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
	for round := range kills {
		n := 1 + rng.IntN(3)
		killed := make(chan struct{})
		var calls atomic.Int32
		var once sync.Once
		proc := p
		kill := func() { once.Do(func() { _ = proc.cmd.Process.Kill(); close(killed) }) }
		// A round whose calls do not come (every run has ended) ends
		// with a kill all the same.
		fallback := time.AfterFunc(3*time.Second, kill)
		ledger.setHook(func() {
			if calls.Add(1) == int32(n) {
				kill()
			}
		})
		<-killed
		fallback.Stop()
		p.wait(t)
		ledger.setHook(nil)
		tc := ledger.counts()
		t.Logf("kill %d after %d calls: %d requests, %d side effects", round+1, n, tc.requests, len(tc.effects))
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
	tc := ledger.counts()
	want := 0
	for _, input := range created {
		texts := []string{input + " a", input + " undo b"}
		if strings.HasPrefix(input, "pay") {
			texts = []string{input + " a", input + " c"}
		}
		want += 3
		if strings.HasPrefix(input, "saga") {
			want++ // a, b, undo b, undo a
		}
		for _, text := range texts {
			if tc.effects[text] != 1 {
				t.Errorf("side effect %q happened %d times; want exactly once", text, tc.effects[text])
			}
		}
	}
	for text, n := range tc.effects {
		if n != 1 {
			t.Errorf("side effect %q happened %d times; want exactly once", text, n)
		}
	}
	if len(tc.effects) != want {
		t.Errorf("the tool made %d distinct side effects; want %d", len(tc.effects), want)
	}
	if tc.nk > 0 {
		t.Errorf("%d tool requests came without an Idempotency-Key", tc.nk)
	}
	t.Logf("tool: %d requests, %d side effects, %d repeats answered from the record", tc.requests, len(tc.effects), tc.repeats)
}
