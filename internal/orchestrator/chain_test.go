package orchestrator

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/problem"
)

func TestCheckChain(t *testing.T) {
	tests := []struct {
		name     string
		chain    []string
		callee   string
		maxDepth int
		code     string
		detail   string
	}{
		{"root calls", []string{"impact"}, "negotiator", 0, "", ""},
		{"self", []string{"impact"}, "impact", 0, problem.AgentCycle, "impact → impact"},
		{"back to the root", []string{"impact", "negotiator", "executor"}, "impact", 0, problem.AgentCycle, "impact → negotiator → executor → impact"},
		{"back to the middle", []string{"monitor", "impact", "negotiator"}, "impact", 0, problem.AgentCycle, "monitor → impact → negotiator → impact"},
		{"at the default depth", []string{"a", "b", "c", "d"}, "e", 0, "", ""},
		{"past the default depth", []string{"a", "b", "c", "d", "e"}, "f", 0, problem.AgentDepth, "6 agents deep, over the limit of 5"},
		{"past a set depth", []string{"a", "b"}, "c", 2, problem.AgentDepth, "a → b → c"},
		{"a cycle is named before depth", []string{"a", "b", "c"}, "a", 1, problem.AgentCycle, "a → b → c → a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain := slices.Clone(tt.chain)
			err := CheckChain(chain, tt.callee, tt.maxDepth)
			if !slices.Equal(chain, tt.chain) {
				t.Errorf("CheckChain changed its chain to %v", chain)
			}
			if tt.code == "" {
				if err != nil {
					t.Fatalf("CheckChain(%v, %s) = %v, want nil", tt.chain, tt.callee, err)
				}
				return
			}
			var pe *problem.Error
			if !errors.As(err, &pe) || pe.Code != tt.code || pe.Status != 409 || !strings.Contains(pe.Detail, tt.detail) {
				t.Fatalf("CheckChain(%v, %s) = %v, want %s naming %q", tt.chain, tt.callee, err, tt.code, tt.detail)
			}
		})
	}
}

func TestParseChain(t *testing.T) {
	for in, want := range map[string][]string{
		"":                             nil,
		"impact":                       {"impact"},
		"impact → negotiator → impact": {"impact", "negotiator", "impact"},
		"impact->negotiator":           {"impact", "negotiator"},
		" a , b ":                      {"a", "b"},
	} {
		got, err := ParseChain(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseChain(%q) = %v, %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"Impact", "a,,b", "a → ", strings.Repeat("a,", 200) + "a", "a;b", "ä"} {
		if got, err := ParseChain(bad); err == nil {
			t.Errorf("ParseChain(%q) = %v, want an error", bad, got)
		}
	}
}

// FuzzParseChain: any text is read or refused, never a panic; what is read
// is written back the same.
func FuzzParseChain(f *testing.F) {
	for _, s := range []string{"", "impact → negotiator", "a->b,c", "→→", "a,,", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		chain, err := ParseChain(s)
		if err != nil {
			return
		}
		again, err := ParseChain(FormatChain(chain))
		if err != nil || !slices.Equal(chain, again) {
			t.Fatalf("ParseChain(FormatChain(%v)) = %v, %v", chain, again, err)
		}
		_ = CheckChain(chain, "x", 0)
	})
}

func TestWaitCycles(t *testing.T) {
	at := func(i int) time.Time { return time.Date(2026, 12, 7, 10, 0, i, 0, time.UTC) }
	task := func(id, waits string, i int) *Task {
		return &Task{ID: id, WaitingOn: waits, Created: at(i), Agent: "agent-" + id}
	}
	tests := []struct {
		name    string
		tasks   []*Task
		victims []string
	}{
		{"none", []*Task{task("a", "b", 1), task("b", "", 2)}, nil},
		{"two", []*Task{task("a", "b", 1), task("b", "a", 2)}, []string{"b"}},
		{"three, with a tail", []*Task{task("x", "a", 9), task("a", "b", 1), task("b", "c", 3), task("c", "a", 2)}, []string{"b"}},
		{"self", []*Task{task("a", "a", 1)}, []string{"a"}},
		{"two cycles", []*Task{task("a", "b", 1), task("b", "a", 2), task("c", "d", 3), task("d", "c", 4)}, []string{"b", "d"}},
		{"waits on an ended task", []*Task{task("a", "gone", 1)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var victims []string
			for _, c := range waitCycles(tt.tasks) {
				victims = append(victims, youngest(c).ID)
			}
			slices.Sort(victims)
			if !slices.Equal(victims, tt.victims) {
				t.Errorf("victims = %v, want %v", victims, tt.victims)
			}
		})
	}
}
