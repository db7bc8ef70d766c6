package policy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var decodeInputTests = []struct {
	name string
	doc  string
	want *Input
	err  string
}{
	{"json", `{"action": {"kind": "tool", "target": "crm.find", "arguments": {"limit": 10, "q": "x"}},
		"agent": {"name": "impact", "tools": ["crm.*"]}, "time": "2026-03-02T10:00:00Z"}`,
		&Input{Action: Action{Kind: KindTool, Target: "crm.find", Arguments: map[string]any{"limit": json.Number("10"), "q": "x"}},
			Agent: Agent{Name: "impact", Tools: []string{"crm.*"}}, Time: "2026-03-02T10:00:00Z"}, ""},
	{"yaml", "action: {kind: model, target: gpt-4o}\nagent: {name: impact, models: [gpt-*]}\nmodel: {name: gpt-4o, provider: openai}\nprincipal: {sub: alice, claims: {level: 3}}\ntask: {id: t1, depth: 1, turns: 2}\n",
		&Input{Action: Action{Kind: KindModel, Target: "gpt-4o"}, Agent: Agent{Name: "impact", Models: []string{"gpt-*"}},
			Model: &Model{Name: "gpt-4o", Provider: "openai"}, Principal: &Principal{Sub: "alice", Claims: map[string]any{"level": json.Number("3")}},
			Task: &Task{ID: "t1", Depth: 1, Turns: 2}}, ""},
	{"unknown top-level field", `{"action": {"kind": "tool"}, "agnet": {}}`, nil, `unknown field "agnet"`},
	{"unknown nested field", `{"action": {"kind": "tool", "tagret": "x"}}`, nil, `unknown field "tagret"`},
	{"bad kind", `{"action": {"kind": "file", "target": "x"}}`, nil, `action.kind is "file", want "tool", "model" or "agent"`},
	{"missing kind", `{"agent": {"name": "x"}}`, nil, `action.kind is ""`},
	{"wrong type", `{"action": {"kind": "tool"}, "task": {"id": "t", "depth": "deep"}}`, nil, "depth"},
	{"not an object", `[1, 2]`, nil, "must be an object"},
	{"empty", ``, nil, "empty document"},
	{"two documents", "action: {kind: tool}\n---\naction: {kind: tool}\n", nil, "want one document"},
	{"malformed", `{"action": `, nil, "policy: input:"},
	{"duplicate key", "action: {kind: tool}\naction: {kind: model}\n", nil, "action"},
}

func TestDecodeInput(t *testing.T) {
	for _, tt := range decodeInputTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeInput([]byte(tt.doc))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("DecodeInput() = %+v, %v; want an error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeInput() error %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DecodeInput() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
