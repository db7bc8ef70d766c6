package orchestrator

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/config"
)

var slipTests = []struct {
	name, output string
	next         []string
	has, bad     bool
}{
	{"no slip", `{"id": 4}`, nil, false, false},
	{"not an object", `[1,2]`, nil, false, false},
	{"a slip", `{"next": ["refund"], "why": "broken"}`, []string{"refund"}, true, false},
	{"two", `{"next": ["refund", "notify"]}`, []string{"refund", "notify"}, true, false},
	{"empty: nothing follows", `{"next": []}`, []string{}, true, false},
	{"an agent's text", `"{\"next\": [\"replace\"]}"`, []string{"replace"}, true, false},
	{"text that is no slip", `"next: refund"`, nil, false, false},
	{"not a list", `{"next": "refund"}`, nil, true, true},
	{"null", `{"next": null}`, nil, true, true},
	{"numbers", `{"next": [1, 2]}`, nil, true, true},
	{"too many", `{"next": [` + strings.TrimSuffix(strings.Repeat(`"a",`, MaxSlip+1), ",") + `]}`, nil, true, true},
}

func TestParseSlip(t *testing.T) {
	for _, tt := range slipTests {
		t.Run(tt.name, func(t *testing.T) {
			next, has, err := ParseSlip(json.RawMessage(tt.output))
			if has != tt.has || (err != nil) != tt.bad || (!tt.bad && !slices.Equal(next, tt.next)) {
				t.Errorf("ParseSlip(%s) = %q, %v, %v; want %q, %v, error %v", tt.output, next, has, err, tt.next, tt.has, tt.bad)
			}
		})
	}
}

// TestCheckSlip: a slip chooses among the steps that need its step; a name
// outside them fails with the choices named.
func TestCheckSlip(t *testing.T) {
	spec := &config.WorkflowSpec{Steps: []config.WorkflowStep{
		{Name: "triage"}, {Name: "refund", Needs: []string{"triage"}}, {Name: "replace", Needs: []string{"triage"}}, {Name: "audit"},
	}}
	if err := checkSlip(spec, "triage", []string{"replace", "refund"}); err != nil {
		t.Errorf("checkSlip(replace, refund) = %v", err)
	}
	for _, bad := range [][]string{{"teleport"}, {"audit"}, {"triage"}, {"refund", strings.Repeat("x", 500)}} {
		err := checkSlip(spec, "triage", bad)
		if err == nil || !strings.Contains(err.Error(), "refund, replace") {
			t.Errorf("checkSlip(%.40q) = %v, want a refusal naming refund, replace", bad, err)
		}
	}
}

// FuzzParseSlip: any output is read without a panic, and an accepted
// slip holds at most MaxSlip names.
func FuzzParseSlip(f *testing.F) {
	for _, tt := range slipTests {
		f.Add([]byte(tt.output))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		next, has, err := ParseSlip(data)
		if err == nil && len(next) > MaxSlip {
			t.Fatalf("ParseSlip accepted %d names", len(next))
		}
		if !has && next != nil {
			t.Fatalf("ParseSlip returned names %q without a slip", next)
		}
	})
}

// TestReplayRun: the fold of a run's journal says which steps are done
// (in order), which attempt is open, which step failed, and which
// compensations are begun or done; a retry gives the step its attempts anew.
func TestReplayRun(t *testing.T) {
	ev := func(typ string, se StepEvent, mod ...func(*Event)) Event {
		e := Event{Type: typ, Workflow: &se}
		for _, m := range mod {
			m(&e)
		}
		return e
	}
	exhausted := func(e *Event) { e.Reason = reasonExhausted; e.Code = "upstream_error" }
	journal := []Event{
		{Type: EvState, State: Submitted},
		{Type: EvStarted},
		ev(EvStepStart, StepEvent{Step: "a", Attempt: 1, Kind: "tool", Key: "k/a/1"}),
		ev(EvStepDone, StepEvent{Step: "a", Attempt: 1, Output: json.RawMessage(`{"id":1}`)}),
		ev(EvStepStart, StepEvent{Step: "b", Attempt: 1, Kind: "agent", Child: "task_x"}),
		ev(EvStepDone, StepEvent{Step: "b", Attempt: 1, Output: json.RawMessage(`"ok"`), Next: []string{"c"}}),
		ev(EvStepStart, StepEvent{Step: "c", Attempt: 1, Kind: "tool"}),
		ev(EvStepFailed, StepEvent{Step: "c", Attempt: 1}),
		ev(EvStepStart, StepEvent{Step: "c", Attempt: 2, Kind: "tool"}),
		ev(EvStepFailed, StepEvent{Step: "c", Attempt: 2}, exhausted),
		ev(EvDeadLettered, StepEvent{Step: "c", DeadLetter: "dlq_1"}),
	}
	r := replayRun(journal)
	if !slices.Equal(r.order, []string{"a", "b"}) || r.failed != "c" || r.deadLetter != "dlq_1" || r.usage.ToolCalls != 3 {
		t.Fatalf("replayRun = order %v failed %q dead letter %q tool calls %d", r.order, r.failed, r.deadLetter, r.usage.ToolCalls)
	}
	if b := r.steps["b"]; !b.slip || !slices.Equal(b.next, []string{"c"}) || b.status != stepDone {
		t.Errorf("step b = %+v, want done with its slip", b)
	}
	retried := replayRun(append(slices.Clone(journal), ev(EvStepRetry, StepEvent{Step: "c"}), ev(EvStepStart, StepEvent{Step: "c", Attempt: 3, Kind: "tool"})))
	if c := retried.steps["c"]; retried.failed != "" || c.budgetFrom != 3 || !c.open || c.attempt != 3 {
		t.Errorf("after a retry, step c = %+v failed %q; want attempt 3 open, its budget from 3", c, retried.failed)
	}
	comp := replayRun(append(slices.Clone(journal),
		ev(EvCompensateStart, StepEvent{Step: "b", Child: "task_y"}),
		ev(EvCompensateDone, StepEvent{Step: "b"}),
		ev(EvCompensateStart, StepEvent{Step: "a", Key: "k/a/compensate"})))
	if b, a := comp.steps["b"], comp.steps["a"]; !b.compDone || b.compOpen || !a.compOpen || a.compDone || a.compKey != "k/a/compensate" {
		t.Errorf("compensations: b %+v, a %+v; want b done, a begun with its key", b, a)
	}
}

// FuzzReplayRun: any journal folds without a panic.
func FuzzReplayRun(f *testing.F) {
	f.Add([]byte(`[{"type":"step.start","workflow":{"step":"a","attempt":1,"kind":"tool"}},{"type":"step.done","workflow":{"step":"a","output":{"next":["b"]},"next":["b"]}},{"type":"step.retry","workflow":{"step":"a"}}]`))
	f.Add([]byte(`[{"type":"compensate.done","workflow":{"step":""}},{"type":"state","state":"failed"}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var events []Event
		if json.Unmarshal(data, &events) != nil {
			return
		}
		r := replayRun(events)
		_ = r.stepsVar()
	})
}
