package pipeline

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/audit"
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
