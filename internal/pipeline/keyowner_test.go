package pipeline

import "testing"

// TestKeyOwner: an Idempotency-Key belongs to the agent's incarnation and to
// the user it acts for (finding 12, and finding 2's note on delegation):
// each of them gives another record key and another upstream key.
func TestKeyOwner(t *testing.T) {
	alice := &Principal{Issuer: "https://idp.test", Subject: "alice"}
	bob := &Principal{Issuer: "https://idp.test", Subject: "bob"}
	callers := []Caller{
		{Agent: "impact"},
		{Agent: "impact", AgentUID: "u1"},
		{Agent: "impact", AgentUID: "u2"},
		{Agent: "impact", AgentUID: "u1", Principal: alice},
		{Agent: "impact", AgentUID: "u1", Principal: bob},
		{Agent: "impact", AgentUID: "u1", Principal: &Principal{Issuer: "https://other.test", Subject: "alice"}},
	}
	seen := map[string]int{}
	for i, c := range callers {
		k := UpstreamKey(KeyOwner(c), "erp.get", "order-42")
		if j, dup := seen[k]; dup {
			t.Errorf("callers %d and %d share the upstream key %s", j, i, k)
		}
		seen[k] = i
	}
	if got := KeyOwner(Caller{Agent: "impact"}); got != "impact" {
		t.Errorf("KeyOwner of an agent without uid or user = %q, want its name", got)
	}
}
