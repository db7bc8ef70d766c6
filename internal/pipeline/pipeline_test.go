package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/killswitch"
	"github.com/corral-dev/corral/internal/policy"
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

// fakeAudit keeps intents apart from the records of what happened; fail,
// when set, says how Append fails for the records it matches.
type fakeAudit struct {
	records []*audit.Record
	intents []*audit.Record
	fail    func(r *audit.Record) error
}

func (f *fakeAudit) Append(_ context.Context, r *audit.Record) (string, error) {
	if f.fail != nil {
		if err := f.fail(r); err != nil {
			return "", err
		}
	}
	if r.Phase == audit.PhaseIntent {
		f.intents = append(f.intents, r)
		return r.ID, nil
	}
	f.records = append(f.records, r)
	return fmt.Sprintf("a%d", len(f.records)), nil
}

// fixedPolicy serves one engine.
type fixedPolicy struct{ e *policy.Engine }

func (f fixedPolicy) Engine() *policy.Engine { return f.e }

// compilePolicy builds the default bundle plus extra modules.
func compilePolicy(t testing.TB, extra ...string) fixedPolicy {
	t.Helper()
	b := policy.Bundle{Modules: policy.DefaultModules()}
	for i, src := range extra {
		b.Modules = append(b.Modules, policy.Module{Name: fmt.Sprintf("test/%d.rego", i), Source: src})
	}
	// A decision's time-out is generous: under the race detector on a
	// loaded CI machine one can outlast policy.DefaultTimeout, and these
	// tests check decisions, not time-outs.
	e, err := policy.Compile(t.Context(), b, policy.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return fixedPolicy{e}
}

// fakeTokens accepts tokens named in its map and mints readable identity tokens.
type fakeTokens map[string]*identity.Claims

func (f fakeTokens) Issuer() string { return "https://corral.test" }
func (f fakeTokens) Verify(token, _ string) (*identity.Claims, error) {
	if c, ok := f[token]; ok {
		return c, nil
	}
	return nil, identity.Refused(identity.ReasonExpired, "the token expired")
}
func (f fakeTokens) IdentityToken(aud string, c identity.Claims, _ time.Duration) (string, error) {
	act := ""
	if c.Act != nil {
		act = c.Act.Subject
	}
	return aud + "|" + c.Subject + "|" + act, nil
}

func newTestPipeline(t *testing.T, src *fakeSource) (*Pipeline, *fakeAudit) {
	t.Helper()
	v, err := tools.NewValidator(json.RawMessage(`{"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	entry := &tools.Entry{Tool: tools.Tool{Name: "erp.get", Source: "erp"}, Source: src, Spec: &config.ToolSourceSpec{}, Validator: v}
	other := &tools.Entry{Tool: tools.Tool{Name: "crm.get", Source: "crm"}, Source: src, Spec: &config.ToolSourceSpec{}, Validator: v}
	drop := &tools.Entry{Tool: tools.Tool{Name: "erp.drop", Source: "erp", Annotations: tools.Annotations{Destructive: true}}, Source: src, Spec: &config.ToolSourceSpec{}, Validator: v}
	aud := &fakeAudit{}
	p := New(slog.New(slog.DiscardHandler), Deps{
		Keys: fakeKeys{"corral_ak_impact": "impact", "corral_ak_ghost": "ghost", "corral_ak_stopped": "stopped", "corral_ak_keyless": "keyless"},
		Resources: fakeResources{
			"Agent/impact":  {Spec: json.RawMessage(`{"tools": ["erp.*"]}`)},
			"Agent/keyless": {Spec: json.RawMessage(`{"tools": ["erp.*"], "keys": "disabled"}`)},
			"Agent/stopped": {Spec: json.RawMessage(`{"tools": ["*"]}`)},
		},
		Tokens: fakeTokens{
			"t-scoped":    {ClientID: "impact", Subject: "impact", ID: "j1", Scope: "tool:erp.get"},
			"t-keyless":   {ClientID: "keyless", Subject: "keyless", ID: "j4", Scope: "tool:erp.get"},
			"t-handed-on": {ClientID: "impact", Subject: "alice", ID: "j3", Scope: "tool:erp.*", Act: &identity.Actor{Subject: "impact", Act: &identity.Actor{Subject: "stopped"}}},
			"t-delegated": {ClientID: "impact", Subject: "alice", ID: "j2", Scope: "tool:erp.*", Act: &identity.Actor{Subject: "impact"}, Principal: &identity.PrincipalClaims{Issuer: "https://idp.test"}},
		},
		Policy:  compilePolicy(t),
		Kill:    fakeKill{"stopped": {Reason: "looping"}},
		Catalog: fakeCatalog{"erp.get": entry, "crm.get": other, "erp.drop": drop},
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
		{"allowed", "corral_ak_impact", "erp.get", `{"id": 1}`, 200, ""},
		{"no credential", "", "erp.get", `{"id": 1}`, 401, problem.Unauthenticated},
		{"unknown key", "corral_ak_nope", "erp.get", `{"id": 1}`, 401, problem.Unauthenticated},
		{"agent deleted since its key was made", "corral_ak_ghost", "erp.get", `{"id": 1}`, 401, problem.Unauthenticated},
		{"killed", "corral_ak_stopped", "erp.get", `{"id": 1}`, 423, problem.Killed},
		{"unknown tool", "corral_ak_impact", "erp.nope", `{}`, 404, problem.ToolNotFound},
		{"not in the agent's tools", "corral_ak_impact", "crm.get", `{"id": 1}`, 403, problem.PolicyDenied},
		{"destructive: needs approval", "corral_ak_impact", "erp.drop", `{"id": 1}`, 403, problem.ApprovalRequired},
		{"invalid arguments", "corral_ak_impact", "erp.get", `{"id": "x"}`, 422, problem.InvalidArguments},
		{"arguments not JSON", "corral_ak_impact", "erp.get", `{"id": `, 422, problem.InvalidArguments},
		{"token within its scope", "t-scoped", "erp.get", `{"id": 1}`, 200, ""},
		{"token outside its scope", "t-scoped", "erp.drop", `{"id": 1}`, 403, problem.PolicyDenied},
		{"refused token", "t-expired", "erp.get", `{"id": 1}`, 401, problem.Unauthenticated},
		{"delegated token", "t-delegated", "erp.get", `{"id": 1}`, 200, ""},
		{"handed on by a stopped agent", "t-handed-on", "erp.get", `{"id": 1}`, 423, problem.Killed},
		{"key of an agent with keys disabled", "corral_ak_keyless", "erp.get", `{"id": 1}`, 401, problem.Unauthenticated},
		{"token of an agent with keys disabled", "t-keyless", "erp.get", `{"id": 1}`, 200, ""},
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
			wantCalls := map[bool]int{true: 1, false: 0}[tt.wantCode == ""]
			if src.calls != wantCalls {
				t.Errorf("upstream calls = %d, want %d", src.calls, wantCalls)
			}
			// A call that left has its intent, written first, which its
			// record names; a refusal before any effect has one record.
			if len(aud.intents) != wantCalls || wantCalls == 1 && (rec.Intent != aud.intents[0].ID || aud.intents[0].ArgsDigest != rec.ArgsDigest) {
				t.Errorf("intents = %+v, record's intent %q; want %d, linked", aud.intents, rec.Intent, wantCalls)
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
		if _, err := p.Invoke(t.Context(), Action{Credential: "corral_ak_impact", Target: "erp.get", Arguments: json.RawMessage(args)}); err != nil {
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
		_, err := p.Invoke(t.Context(), Action{Credential: "corral_ak_impact", Target: "erp.get", Arguments: json.RawMessage(`{"id": 1}`)})
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

// TestAuditLossNeverAnswersSuccess: a call whose intent cannot be stored
// does not leave; a call whose outcome cannot be stored is not answered as
// a success but as audit_unavailable carrying its stored intent's id; the
// next calls are refused before they act until a record can be written
// again; a full audit says audit_full. At d7dc022 the second case answered
// 200 with an empty audit id (issue 20.1).
func TestAuditLossNeverAnswersSuccess(t *testing.T) {
	down := errors.New("stream unavailable")
	tests := []struct {
		name      string
		fail      func(*audit.Record) error
		wantCalls int
		wantCode  string
		wantID    bool
	}{
		{"intent not stored", func(*audit.Record) error { return down }, 0, problem.AuditUnavailable, false},
		{"outcome not stored", func(r *audit.Record) error {
			if r.Phase == audit.PhaseIntent {
				return nil
			}
			return down
		}, 1, problem.AuditUnavailable, true},
		{"audit full", func(*audit.Record) error { return fmt.Errorf("append: %w", audit.ErrFull) }, 0, problem.AuditFull, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeSource{res: &tools.Result{Structured: json.RawMessage(`{}`)}}
			p, aud := newTestPipeline(t, src)
			aud.fail = tt.fail
			call := func() (*Outcome, error) {
				return p.Invoke(t.Context(), Action{Credential: "corral_ak_impact", Target: "erp.get", Arguments: json.RawMessage(`{"id": 1}`)})
			}
			out, err := call()
			var pe *problem.Error
			if out != nil || !errors.As(err, &pe) || pe.Code != tt.wantCode || src.calls != tt.wantCalls {
				t.Fatalf("call with the audit failing = %v, %v after %d upstream calls; want %s after %d", out, err, src.calls, tt.wantCode, tt.wantCalls)
			}
			if tt.wantID && (pe.AuditID == "" || len(aud.intents) != 1 || pe.AuditID != aud.intents[0].ID) {
				t.Errorf("audit id %q, want the stored intent's", pe.AuditID)
			}
			if _, err := call(); !errors.As(err, &pe) || pe.Code != tt.wantCode || src.calls != tt.wantCalls {
				t.Fatalf("next call: %v after %d upstream calls, want %s before acting", err, src.calls, tt.wantCode)
			}
			aud.fail = nil
			_, _ = call() // refused, but its record is written: the audit is back
			if out, err := call(); err != nil || out.AuditID == "" || src.calls != tt.wantCalls+1 {
				t.Errorf("call after the audit recovered: %v, %v (%d upstream calls), want it to act", out, err, src.calls)
			}
		})
	}
}

func TestAuditKeepsNoArgumentValues(t *testing.T) {
	p, aud := newTestPipeline(t, &fakeSource{})
	_, _ = p.Invoke(t.Context(), Action{Credential: "corral_ak_impact", Target: "erp.get", Arguments: json.RawMessage(`{"id": "4111-1111-1111-1111"}`)})
	if r := aud.records[0]; strings.Contains(r.Reason, "4111") || r.Code != problem.InvalidArguments {
		t.Errorf("audit reason %q quotes the argument's value", r.Reason)
	}
}

// TestPolicyInAudit: the record says what policy decided, why, and which
// revision of it; a refused token's reason is in the record.
func TestPolicyInAudit(t *testing.T) {
	p, aud := newTestPipeline(t, &fakeSource{res: &tools.Result{Status: 200}})
	_, _ = p.Invoke(t.Context(), Action{Credential: "corral_ak_impact", Target: "erp.drop", Arguments: json.RawMessage(`{"id": 1}`)})
	_, _ = p.Invoke(t.Context(), Action{Credential: "t-expired", Target: "erp.get", Arguments: json.RawMessage(`{"id": 1}`)})
	rec := aud.records[0]
	if rec.Policy == nil || rec.Policy.Effect != policy.Approval || len(rec.Policy.Reasons) == 0 || rec.Policy.Revision == "" {
		t.Errorf("audit policy = %+v, want approval with reasons and a revision", rec.Policy)
	}
	if rec.Credential != "key:id-corral_ak_impact" {
		t.Errorf("audit credential = %q, want the key's id", rec.Credential)
	}
	if r := aud.records[1].Reason; !strings.HasPrefix(r, "expired: ") {
		t.Errorf("refused token's audit reason = %q, want it to start with the reason", r)
	}
}

// TestPolicyFaultDenies: a policy whose evaluation fails denies with
// policy_error, whatever else it says.
func TestPolicyFaultDenies(t *testing.T) {
	src := &fakeSource{res: &tools.Result{Status: 200}}
	p, aud := newTestPipeline(t, src)
	p.Policy = compilePolicy(t, `package corral.authz
deny contains msg if { msg := sprintf("%d", [to_number(input.action.arguments.id) / 0]) }
`)
	_, err := p.Invoke(t.Context(), Action{Credential: "corral_ak_impact", Target: "erp.get", Arguments: json.RawMessage(`{"id": 1}`)})
	var pe *problem.Error
	if !errors.As(err, &pe) || pe.Code != problem.PolicyError || src.calls != 0 {
		t.Fatalf("Invoke with a failing policy = %v (%d upstream calls), want policy_error before acting", err, src.calls)
	}
	if rec := aud.records[0]; rec.Policy == nil || rec.Policy.Effect != "error" {
		t.Errorf("audit policy = %+v, want effect error", rec.Policy)
	}
}

// TestIdentityToken: the upstream gets a token naming the user and the
// agent for a delegated call, the agent alone otherwise; a source can turn
// it off.
func TestIdentityToken(t *testing.T) {
	var got []string
	src := &recordingSource{seen: &got}
	p, _ := newTestPipeline(t, nil)
	e, _ := p.Catalog.Lookup("erp.get")
	e.Source = src
	for _, cred := range []string{"corral_ak_impact", "t-delegated"} {
		if _, err := p.Invoke(t.Context(), Action{Credential: cred, Target: "erp.get", Arguments: json.RawMessage(`{"id": 1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	e.Spec = &config.ToolSourceSpec{Identity: &config.IdentityPropagation{Disabled: true}}
	if _, err := p.Invoke(t.Context(), Action{Credential: "corral_ak_impact", Target: "erp.get", Arguments: json.RawMessage(`{"id": 1}`)}); err != nil {
		t.Fatal(err)
	}
	want := []string{"erp|impact|", "erp|alice|impact", ""}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("identity tokens = %q, want %q", got, want)
	}
}

type recordingSource struct{ seen *[]string }

func (r *recordingSource) Tools() []tools.Tool { return nil }
func (r *recordingSource) Call(_ context.Context, c tools.Call) (*tools.Result, error) {
	*r.seen = append(*r.seen, c.Identity)
	return &tools.Result{Status: 200}, nil
}
func (r *recordingSource) Close() error { return nil }

// TestToolsHidesWhatPolicyNeverAllows: listings show what the agent could
// call and nothing else.
func TestToolsHidesWhatPolicyNeverAllows(t *testing.T) {
	p, _ := newTestPipeline(t, &fakeSource{})
	for _, tt := range []struct {
		cred string
		want string
	}{
		{"corral_ak_impact", "erp.drop,erp.get"},
		{"t-scoped", "erp.get"},
	} {
		c, err := p.Authenticate(tt.cred)
		if err != nil {
			t.Fatal(err)
		}
		entries, err := p.Tools(t.Context(), c)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Tool.Name)
		}
		slices.Sort(names)
		if got := strings.Join(names, ","); got != tt.want {
			t.Errorf("Tools(%s) = %s, want %s", tt.cred, got, tt.want)
		}
	}
}
