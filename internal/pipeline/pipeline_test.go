package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/killswitch"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/tools"
	"github.com/corral-dev/corral/internal/upstream"
)

type fakeKeys map[string]string // key -> agent

func (f fakeKeys) VerifyKey(secret string) (identity.Key, bool) {
	agent, ok := f[secret]
	return identity.Key{ID: "id-" + secret, Agent: agent}, ok
}

type fakeResources map[string]config.Resource

func (f fakeResources) Get(kind, name string) (config.Resource, bool) {
	r, ok := f[kind+"/"+name]
	return r, ok
}

type fakeKill map[string]killswitch.Switch

func (f fakeKill) Killed(agent string) (killswitch.Switch, bool) {
	if s, ok := f["*"]; ok {
		return s, true
	}
	s, ok := f[agent]
	return s, ok
}

type fakeCatalog map[string]*tools.Entry

func (f fakeCatalog) Lookup(name string) (*tools.Entry, bool) { e, ok := f[name]; return e, ok }
func (f fakeCatalog) List() []*tools.Entry {
	var out []*tools.Entry
	for _, e := range f {
		out = append(out, e)
	}
	return out
}

type fakeSource struct {
	calls int
	err   error
	res   *tools.Result
}

func (f *fakeSource) Tools() []tools.Tool { return nil }
func (f *fakeSource) Call(context.Context, tools.Call) (*tools.Result, error) {
	f.calls++
	return f.res, f.err
}
func (f *fakeSource) Close() error { return nil }

type fakeAudit struct{ records []*audit.Record }

func (f *fakeAudit) Append(_ context.Context, r *audit.Record) (string, error) {
	f.records = append(f.records, r)
	return fmt.Sprintf("a%d", len(f.records)), nil
}

func newTestPipeline(t *testing.T, src *fakeSource) (*Pipeline, *fakeAudit) {
	t.Helper()
	v, err := tools.NewValidator(json.RawMessage(`{"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	entry := &tools.Entry{Tool: tools.Tool{Name: "erp.get", Source: "erp"}, Source: src, Spec: &config.ToolSourceSpec{}, Validator: v}
	other := &tools.Entry{Tool: tools.Tool{Name: "crm.get", Source: "crm"}, Source: src, Spec: &config.ToolSourceSpec{}, Validator: v}
	aud := &fakeAudit{}
	p := New(slog.New(slog.DiscardHandler), Deps{
		Keys: fakeKeys{"k-impact": "impact", "k-ghost": "ghost", "k-stopped": "stopped"},
		Resources: fakeResources{
			"Agent/impact":  {Spec: json.RawMessage(`{"tools": ["erp.*"]}`)},
			"Agent/stopped": {Spec: json.RawMessage(`{"tools": ["*"]}`)},
		},
		Kill:    fakeKill{"stopped": {Reason: "looping"}},
		Catalog: fakeCatalog{"erp.get": entry, "crm.get": other},
		Audit:   aud,
	})
	return p, aud
}

func TestStages(t *testing.T) {
	tests := []struct {
		name, key, tool, args string
		wantStatus            int
		wantCode              string
	}{
		{"allowed", "k-impact", "erp.get", `{"id": 1}`, 200, ""},
		{"no credential", "", "erp.get", `{"id": 1}`, 401, problem.Unauthenticated},
		{"unknown key", "k-nope", "erp.get", `{"id": 1}`, 401, problem.Unauthenticated},
		{"agent deleted since its key was made", "k-ghost", "erp.get", `{"id": 1}`, 401, problem.Unauthenticated},
		{"killed", "k-stopped", "erp.get", `{"id": 1}`, 423, problem.Killed},
		{"unknown tool", "k-impact", "erp.nope", `{}`, 404, problem.ToolNotFound},
		{"not in the agent's tools", "k-impact", "crm.get", `{"id": 1}`, 403, problem.PolicyDenied},
		{"invalid arguments", "k-impact", "erp.get", `{"id": "x"}`, 422, problem.InvalidArguments},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeSource{res: &tools.Result{Structured: json.RawMessage(`{}`), Status: 200}}
			p, aud := newTestPipeline(t, src)
			out, err := p.Invoke(t.Context(), Action{Credential: tt.key, Kind: "tool", Target: tt.tool, Arguments: json.RawMessage(tt.args), Edge: "rest"})
			status, code := 200, ""
			var pe *problem.Error
			if errors.As(err, &pe) {
				status, code = pe.Status, pe.Code
			} else if err != nil {
				t.Fatalf("Invoke: %v, want a *problem.Error", err)
			}
			if status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("Invoke(%s, %s) = %d %s, want %d %s", tt.tool, tt.args, status, code, tt.wantStatus, tt.wantCode)
			}
			if len(aud.records) != 1 {
				t.Fatalf("audit records: %d, want 1", len(aud.records))
			}
			rec := aud.records[0]
			if rec.Code != tt.wantCode || (tt.wantCode == "") != (rec.Decision == "allowed") {
				t.Errorf("audit record = %+v, want code %q", rec, tt.wantCode)
			}
			if wantCalls := map[bool]int{true: 1, false: 0}[tt.wantCode == ""]; src.calls != wantCalls {
				t.Errorf("upstream calls = %d, want %d", src.calls, wantCalls)
			}
			if out != nil && out.AuditID != "a1" || pe != nil && pe.AuditID != "a1" {
				t.Errorf("audit id not returned to the caller")
			}
		})
	}
}

func TestSameArgumentsSameDigest(t *testing.T) {
	src := &fakeSource{res: &tools.Result{Structured: json.RawMessage(`{}`)}}
	p, aud := newTestPipeline(t, src)
	for _, args := range []string{`{"id": 1, "x": [1, {"b": 1, "a": 2}]}`, `{"x":[1,{"a":2,"b":1}],"id":1}`} {
		if _, err := p.Invoke(t.Context(), Action{Credential: "k-impact", Target: "erp.get", Arguments: json.RawMessage(args)}); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := aud.records[0].ArgsDigest, aud.records[1].ArgsDigest; a != b || a == "" {
		t.Errorf("digests %q and %q of the same arguments written differently, want equal", a, b)
	}
}

func TestUpstreamFailures(t *testing.T) {
	tests := []struct {
		err        error
		res        *tools.Result
		wantStatus int
		wantCode   string
	}{
		{fmt.Errorf("x: %w", upstream.ErrUnavailable), nil, 503, problem.UpstreamUnavailable},
		{fmt.Errorf("x: %w", upstream.ErrTimeout), nil, 504, problem.UpstreamTimeout},
		{fmt.Errorf("x: %w", upstream.ErrTooLarge), nil, 502, problem.UpstreamInvalid},
		{fmt.Errorf("x: %w", tools.ErrInvalidAnswer), nil, 502, problem.UpstreamInvalid},
		{errors.New("boom"), nil, 502, problem.UpstreamError},
		{nil, &tools.Result{Status: 503, IsError: true}, 502, problem.UpstreamError},
	}
	for _, tt := range tests {
		src := &fakeSource{err: tt.err, res: tt.res}
		p, aud := newTestPipeline(t, src)
		_, err := p.Invoke(t.Context(), Action{Credential: "k-impact", Target: "erp.get", Arguments: json.RawMessage(`{"id": 1}`)})
		var pe *problem.Error
		if !errors.As(err, &pe) || pe.Status != tt.wantStatus || pe.Code != tt.wantCode {
			t.Errorf("source error %v / result %+v: Invoke err = %v, want %d %s", tt.err, tt.res, err, tt.wantStatus, tt.wantCode)
			continue
		}
		if rec := aud.records[0]; rec.Decision != "allowed" || rec.Status != "error" || rec.Code != tt.wantCode {
			t.Errorf("audit record %+v, want allowed, error, %s", rec, tt.wantCode)
		}
	}
}

type failingAudit struct{ fail bool }

func (f *failingAudit) Append(context.Context, *audit.Record) (string, error) {
	if f.fail {
		return "", errors.New("stream unavailable")
	}
	return "a", nil
}

// TestAuditDownRefusesUntilItRecovers: an action whose record is lost is
// answered (it happened), but the next ones are refused before they act
// until a record can be written again.
func TestAuditDownRefusesUntilItRecovers(t *testing.T) {
	src := &fakeSource{res: &tools.Result{Structured: json.RawMessage(`{}`)}}
	p, _ := newTestPipeline(t, src)
	aud := &failingAudit{fail: true}
	p.Audit = aud
	call := func() error {
		_, err := p.Invoke(t.Context(), Action{Credential: "k-impact", Target: "erp.get", Arguments: json.RawMessage(`{"id": 1}`)})
		return err
	}
	if err := call(); err != nil {
		t.Fatalf("first call with the audit down: %v, want its answer", err)
	}
	var pe *problem.Error
	if err := call(); !errors.As(err, &pe) || pe.Code != problem.AuditUnavailable || src.calls != 1 {
		t.Fatalf("second call: %v after %d upstream calls, want 503 audit_unavailable before acting", err, src.calls)
	}
	aud.fail = false
	_ = call() // refused, but its record is written: the audit is back
	if err := call(); err != nil || src.calls != 2 {
		t.Errorf("call after the audit recovered: %v (%d upstream calls), want it to act", err, src.calls)
	}
}

func TestAuditKeepsNoArgumentValues(t *testing.T) {
	p, aud := newTestPipeline(t, &fakeSource{})
	_, _ = p.Invoke(t.Context(), Action{Credential: "k-impact", Target: "erp.get", Arguments: json.RawMessage(`{"id": "4111-1111-1111-1111"}`)})
	if r := aud.records[0]; strings.Contains(r.Reason, "4111") || r.Code != problem.InvalidArguments {
		t.Errorf("audit reason %q quotes the argument's value", r.Reason)
	}
}
