package pipeline

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/tools"
)

// TestUnauthenticatedFloodIsBounded sends 10,000 refusals in 10 s from one
// address with a 1 MiB Idempotency-Key each, as issue 12.1's attacker did:
// the audit takes at most the burst, the rate and one sampled record a
// second, and the sampled records account for every refusal. Another
// address and an authenticated agent are not held back by the flood.
// At d7dc022 every refusal was stored in full.
func TestUnauthenticatedFloodIsBounded(t *testing.T) {
	src := &fakeSource{res: &tools.Result{Structured: json.RawMessage(`{}`), Status: 200}}
	p, aud := newTestPipeline(t, src)
	clock := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	p.now = func() time.Time { return clock }
	key := string(make([]byte, 1<<20))
	const flood = 10000
	for i := range flood {
		clock = clock.Add(time.Millisecond)
		_, err := p.Invoke(t.Context(), Action{Credential: "corral_ak_nope", Kind: "tool", Target: "erp.get", IdempotencyKey: key, Edge: "rest", RemoteAddr: "192.0.2.7:40000"})
		if err == nil {
			t.Fatalf("refusal %d: Invoke succeeded", i)
		}
	}
	stored, counted := len(aud.records), 0
	for _, r := range aud.records {
		counted += max(r.Sampled, 1)
	}
	if limit := int(audit.RefusalBurst + 10*audit.RefusalRate + 10/audit.RefusalSample.Seconds() + 1); stored > limit {
		t.Errorf("flood of %d refusals stored %d records, want at most %d", flood, stored, limit)
	}
	// The refusals still held back are stood for by the next record.
	clock = clock.Add(time.Minute)
	if _, err := p.Invoke(t.Context(), Action{Credential: "corral_ak_nope", Kind: "tool", Target: "erp.get", Edge: "rest", RemoteAddr: "192.0.2.7:40001"}); err == nil {
		t.Fatal("Invoke succeeded")
	}
	last := aud.records[len(aud.records)-1]
	if counted+last.Sampled != flood+1 {
		t.Errorf("records stand for %d refusals, want %d", counted+last.Sampled, flood+1)
	}
	for i, who := range []Action{
		{Credential: "corral_ak_nope", RemoteAddr: "198.51.100.1:1"},
		{Credential: "corral_ak_impact", RemoteAddr: "192.0.2.7:40000", Arguments: json.RawMessage(`{"id":1}`)},
	} {
		n := len(aud.records)
		who.Kind, who.Target, who.Edge = "tool", "erp.get", "rest"
		_, _ = p.Invoke(t.Context(), who)
		if len(aud.records) != n+1 {
			t.Errorf("call %d from %s left %d records, want 1", i, who.RemoteAddr, len(aud.records)-n)
		}
	}
}

// TestGoneAgentCredentialIsBounded: a credential that verifies but whose
// agent is gone (a compromised agent deleted while its token lives) is
// refused under the same per-address bound as an unknown one, and its
// records name the agent only as claimed_agent, not as the acting agent. At
// d7dc022 (finding 11) every such refusal was stored, under the agent's
// name.
func TestGoneAgentCredentialIsBounded(t *testing.T) {
	p, aud := newTestPipeline(t, &fakeSource{})
	clock := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	p.now = func() time.Time { return clock }
	const flood = 300
	for i := range flood {
		clock = clock.Add(time.Millisecond)
		if _, err := p.Invoke(t.Context(), Action{Credential: "corral_ak_ghost", Kind: "tool", Target: "erp.get", Edge: "rest", RemoteAddr: "192.0.2.9:1"}); err == nil {
			t.Fatalf("call %d of a deleted agent's key succeeded", i)
		}
	}
	if limit := int(audit.RefusalBurst + 1 + 1); len(aud.records) > limit {
		t.Errorf("%d refusals of a deleted agent's key stored %d records, want at most %d", flood, len(aud.records), limit)
	}
	for _, r := range aud.records {
		if r.Agent != "" || r.ClaimedAgent != "ghost" || r.Code != problem.Unauthenticated {
			t.Fatalf("record agent %q, claimed_agent %q, code %s; want no agent, claimed_agent ghost, unauthenticated", r.Agent, r.ClaimedAgent, r.Code)
		}
	}
}
