package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/tools"
)

// realAudit puts a real audit log on embedded JetStream under p.
func realAudit(t *testing.T, p *Pipeline) *audit.Log {
	t.Helper()
	l, err := audit.Open(t.Context(), slog.New(slog.DiscardHandler), bustest.Open(t), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.Audit = l
	return l
}

// TestHostileCallsLeaveRecordsAndGatewayUp sends issue 12's attacks through
// the pipeline onto a real audit stream: a 1 MiB Idempotency-Key with a bad
// bearer, a 2 MB tool name, 4 MB of arguments to a tool that audits its
// arguments. Each leaves a record, and a valid call afterwards is served.
// At d7dc022 the first record failed to append ("maximum payload exceeded"),
// which set auditDown and refused every agent's next call with 503.
func TestHostileCallsLeaveRecordsAndGatewayUp(t *testing.T) {
	src := &fakeSource{res: &tools.Result{Structured: json.RawMessage(`{}`), Status: 200}}
	p, _ := newTestPipeline(t, src)
	p.Catalog.(fakeCatalog)["erp.get"].Spec.AuditArguments = true
	l := realAudit(t, p)

	blob, _ := json.Marshal(map[string]any{"id": 1, "blob": strings.Repeat("a", 4<<20) + " 4111 1111 1111 1111"})
	card, _ := json.Marshal(map[string]any{"id": 1, "note": "card 4111 1111 1111 1111 " + strings.Repeat("b", 40<<10)})
	attacks := []struct {
		name     string
		a        Action
		wantCode string
	}{
		{"1 MiB Idempotency-Key, bad bearer", Action{Credential: "corral_ak_nope", Target: "erp.get", IdempotencyKey: strings.Repeat("k", 1<<20), Arguments: json.RawMessage(`{"id":1}`)}, problem.Unauthenticated},
		{"2 MB tool name", Action{Credential: "corral_ak_impact", Target: strings.Repeat("t", 2<<20)}, problem.ToolNotFound},
		{"4 MB arguments, audited", Action{Credential: "corral_ak_impact", Target: "erp.get", Arguments: blob}, ""},
		{"large arguments with a card in the prefix", Action{Credential: "corral_ak_impact", Target: "erp.get", Arguments: card}, ""},
	}
	for _, tt := range attacks {
		t.Run(tt.name, func(t *testing.T) {
			tt.a.Kind, tt.a.Edge = "tool", "rest"
			out, err := p.Invoke(t.Context(), tt.a)
			var pe *problem.Error
			code, id := "", ""
			switch {
			case errors.As(err, &pe):
				code, id = pe.Code, pe.AuditID
			case err != nil:
				t.Fatalf("Invoke: %v", err)
			default:
				id = out.AuditID
			}
			if code != tt.wantCode || id == "" {
				t.Fatalf("Invoke = code %q, audit id %q; want %q and an id", code, id, tt.wantCode)
			}
			recs, err := l.Query(t.Context(), audit.Filter{Limit: 1})
			if err != nil || len(recs) != 1 || recs[0].ID != id {
				t.Fatalf("Query = %+v, %v; want the record %s", recs, err, id)
			}
			r := recs[0]
			if len(r.IdempotencyKey) > audit.MaxName || len(r.Target) > audit.MaxName || len(r.Reason) > audit.MaxReason || len(r.Arguments) > audit.MaxArguments {
				t.Errorf("record fields of %d, %d, %d, %d bytes: not bounded", len(r.IdempotencyKey), len(r.Target), len(r.Reason), len(r.Arguments))
			}
			if len(tt.a.Arguments) > audit.MaxArguments {
				if r.ArgsDigest == "" || r.ArgumentsPrefix == "" || !slices.Contains(r.Truncated, "arguments") {
					t.Errorf("record of large arguments: digest %q, prefix %d bytes, truncated %v; want digest, prefix, truncated", r.ArgsDigest, len(r.ArgumentsPrefix), r.Truncated)
				}
				if strings.Contains(r.ArgumentsPrefix, "4111 1111") {
					t.Errorf("ArgumentsPrefix keeps a card number: %.80q", r.ArgumentsPrefix)
				}
			}
		})
	}
	// A 2 MB model name: "no model named <name>" is the reason.
	p.Models = noModels{}
	_, err := p.Chat(t.Context(), Action{Credential: "corral_ak_impact", Edge: "openai"}, &llm.ChatRequest{Model: strings.Repeat("m", 2<<20)})
	var pe *problem.Error
	if !errors.As(err, &pe) || pe.Code != problem.ModelNotFound || pe.AuditID == "" {
		t.Errorf("Chat with a 2 MB model name = %v, want model_not_found with an audit id", err)
	}
	out, err := p.Invoke(t.Context(), Action{Credential: "corral_ak_impact", Kind: "tool", Target: "erp.get", Arguments: json.RawMessage(`{"id":1}`), Edge: "rest"})
	if err != nil || out.AuditID == "" {
		t.Fatalf("a valid call after the attacks = %v, %v; want served with an audit id", out, err)
	}
	if rep, err := l.Verify(t.Context(), time.Time{}, nil); err != nil || !rep.OK {
		t.Errorf("Verify = %+v, %v; want OK", rep, err)
	}
}

// noModels is a model catalogue with no models.
type noModels struct{}

func (noModels) Lookup(string) (*llm.Model, bool)                 { return nil, false }
func (noModels) List() []*llm.Model                               { return nil }
func (noModels) Plan(*llm.Model, func(int) int) (llm.Plan, error) { return llm.Plan{}, nil }
func (noModels) Candidates(*llm.Model) []*llm.Model               { return nil }

// deadlineAudit fails every append and notes the deadline it was given.
type deadlineAudit struct{ left []time.Duration }

func (d *deadlineAudit) Append(ctx context.Context, _ *audit.Record) (string, error) {
	left := time.Duration(-1) // no deadline
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	d.left = append(d.left, left)
	return "", audit.ErrUnavailable
}

// TestRefusalsProbeTheAuditBriefly: while the audit is down, refusals still
// try to append (the first that succeeds clears it), each bounded by
// auditProbeTimeout rather than the append's 10 s, so that an outage does
// not hold every answer for the whole deadline (issue 20.2).
func TestRefusalsProbeTheAuditBriefly(t *testing.T) {
	p, _ := newTestPipeline(t, &fakeSource{res: &tools.Result{Structured: json.RawMessage(`{}`)}})
	d := &deadlineAudit{}
	p.Audit = d
	for range 3 {
		_, _ = p.Invoke(t.Context(), Action{Credential: "corral_ak_impact", Target: "erp.get", Arguments: json.RawMessage(`{"id": 1}`)})
	}
	// The first call's intent fails, then its refusal and the next two
	// calls' refusals probe.
	if len(d.left) != 4 {
		t.Fatalf("%d appends, want 4", len(d.left))
	}
	for i, left := range d.left[1:] {
		if left < 0 || left > auditProbeTimeout {
			t.Errorf("append %d with the audit down had %v left, want at most %v", i+2, left, auditProbeTimeout)
		}
	}
}
