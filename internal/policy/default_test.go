package policy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultBundle(t *testing.T) {
	e, err := Compile(t.Context(), Bundle{Modules: DefaultModules()}, slowMachine)
	if err != nil {
		t.Fatal(err)
	}
	agent := Agent{Name: "impact", Tools: []string{"crm.*", "erp.get_order", "mail.send_?"}, Models: []string{"gpt-4o*", "local.llama"}}
	tool := func(name string, destructive bool) *Input {
		return &Input{Action: Action{Kind: KindTool, Target: name, Arguments: map[string]any{"secret": "hunter2"}}, Agent: agent,
			Tool: &Tool{Name: name, Annotations: Annotations{Destructive: destructive}}}
	}
	// claimed is a tool read-only (so not destructive) on the word of from.
	claimed := func(name, from string) *Input {
		in := tool(name, false)
		in.Tool.Annotations.ReadOnly = true
		in.Tool.AnnotationsSource = AnnotationsSource{ReadOnly: from, Destructive: from, Idempotent: from}
		return in
	}
	model := func(name string) *Input {
		return &Input{Action: Action{Kind: KindModel, Target: name}, Agent: agent, Model: &Model{Name: name}}
	}
	tests := []struct {
		name string
		in   *Input
		want Decision
	}{
		{"tool by glob", tool("crm.find_customer", false), Decision{Effect: Allow, Reasons: []string{}}},
		{"glob crosses dots", tool("crm.v2.find", false), Decision{Effect: Allow, Reasons: []string{}}},
		{"tool by name", tool("erp.get_order", false), Decision{Effect: Allow, Reasons: []string{}}},
		{"? matches one", tool("mail.send_x", false), Decision{Effect: Allow, Reasons: []string{}}},
		{"? matches only one", tool("mail.send_xy", false), Decision{Effect: Deny, Reasons: []string{NotAllowed}}},
		{"unlisted tool", tool("erp.delete_order", false), Decision{Effect: Deny, Reasons: []string{NotAllowed}}},
		{"destructive tool", tool("crm.delete_customer", true),
			Decision{Effect: Approval, Reasons: []string{"crm.delete_customer is destructive: a human must approve it"}}},
		{"destructive and unlisted", tool("erp.delete_order", true), Decision{Effect: Deny, Reasons: []string{NotAllowed}}},
		{"read-only by an upstream's live claim", claimed("crm.delete_everything", "upstream"),
			Decision{Effect: Approval, Reasons: []string{"crm.delete_everything is not destructive only by its upstream's live claim: a human must approve it"}}},
		{"read-only by a pinned claim", claimed("crm.delete_everything", "pinned"), Decision{Effect: Allow, Reasons: []string{}}},
		{"read-only by override", claimed("crm.delete_everything", "override"), Decision{Effect: Allow, Reasons: []string{}}},
		{"model by glob", model("gpt-4o-mini"), Decision{Effect: Allow, Reasons: []string{}}},
		{"model by name", model("local.llama"), Decision{Effect: Allow, Reasons: []string{}}},
		{"unlisted model", model("claude"), Decision{Effect: Deny, Reasons: []string{NotAllowed}}},
		{"a tool name is not a model", &Input{Action: Action{Kind: KindModel, Target: "crm.find"}, Agent: agent},
			Decision{Effect: Deny, Reasons: []string{NotAllowed}}},
		{"agent not listed", &Input{Action: Action{Kind: KindAgent, Target: "mailer"}, Agent: Agent{Name: "x", Tools: []string{"*"}, Models: []string{"*"}}},
			Decision{Effect: Deny, Reasons: []string{NotAllowed}}},
		{"agent by glob", &Input{Action: Action{Kind: KindAgent, Target: "risk-eu"}, Agent: Agent{Name: "x", Agents: []string{"risk-*"}}},
			Decision{Effect: Allow, Reasons: []string{}}},
		{"a tool glob is not an agent", &Input{Action: Action{Kind: KindAgent, Target: "mailer"}, Agent: Agent{Name: "x", Tools: []string{"mailer"}}},
			Decision{Effect: Deny, Reasons: []string{NotAllowed}}},
		{"unknown kind", &Input{Action: Action{Kind: "file", Target: "crm.find"}, Agent: agent},
			Decision{Effect: Deny, Reasons: []string{NotAllowed}}},
		{"no tools listed", &Input{Action: Action{Kind: KindTool, Target: "crm.find"}, Agent: Agent{Name: "x"}},
			Decision{Effect: Deny, Reasons: []string{NotAllowed}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.Decide(t.Context(), tt.in)
			if err != nil {
				t.Fatalf("Decide() error %v", err)
			}
			tt.want.Revision = e.Revision()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decide(%s) mismatch (-want +got):\n%s", tt.in.Action.Target, diff)
			}
			for _, r := range got.Reasons {
				if strings.Contains(r, "hunter2") {
					t.Errorf("Decide() reason %q quotes an argument", r)
				}
			}
		})
	}
}

// TestPoliciesAddToDefault: a user's deny or require_approval applies on
// top of the default rules, and a user's allow widens them.
func TestPoliciesAddToDefault(t *testing.T) {
	e, err := Compile(t.Context(), Bundle{Modules: append(DefaultModules(), modules(`package corral.authz
deny contains "no mail on weekends" if {
	input.action.target == "mail.send"
	time.weekday(time.parse_rfc3339_ns(input.time)) in {"Saturday", "Sunday"}
}
require_approval contains "bulk export" if input.action.arguments.limit > 1000
allow if {
	input.action.target == "docs.search"
	input.principal.sub != ""
}`)...)}, slowMachine)
	if err != nil {
		t.Fatal(err)
	}
	agent := Agent{Name: "impact", Tools: []string{"mail.*", "crm.*"}}
	tests := []struct {
		in   *Input
		want string
	}{
		{&Input{Action: Action{Kind: KindTool, Target: "mail.send"}, Agent: agent, Time: "2026-03-07T10:00:00Z"}, Deny},
		{&Input{Action: Action{Kind: KindTool, Target: "mail.send"}, Agent: agent, Time: "2026-03-09T10:00:00Z"}, Allow},
		{&Input{Action: Action{Kind: KindTool, Target: "crm.export", Arguments: map[string]any{"limit": 5000}}, Agent: agent}, Approval},
		{&Input{Action: Action{Kind: KindTool, Target: "crm.export", Arguments: map[string]any{"limit": 50}}, Agent: agent}, Allow},
		{&Input{Action: Action{Kind: KindTool, Target: "docs.search"}, Agent: agent, Principal: &Principal{Sub: "alice"}}, Allow},
		{&Input{Action: Action{Kind: KindTool, Target: "docs.search"}, Agent: agent}, Deny},
	}
	for _, tt := range tests {
		got, err := e.Decide(t.Context(), tt.in)
		if err != nil || got.Effect != tt.want {
			t.Errorf("Decide(%s %v at %s) = %v %v, %v; want %s", tt.in.Action.Target, tt.in.Action.Arguments, tt.in.Time, got.Effect, got.Reasons, err, tt.want)
		}
	}
}
