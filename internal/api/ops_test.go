package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/audit/audittest"
	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/killswitch"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/registry"
	"github.com/corral-dev/corral/internal/telemetry"
)

// opsServer is the API with kill switches and audit over an embedded bus,
// served by httptest: these routes are tested without the rest of corral.
type opsServer struct {
	url, token string
	bus        *bus.Bus
	reg        *registry.Registry
	kills      *killswitch.Switches
	log        *audit.Log
}

func startOps(t *testing.T) *opsServer {
	t.Helper()
	return startOpsWith(t, nil)
}

// startOpsWith is startOps with the audit the API reads replaced by what
// wrap makes of the real one, when wrap is not nil.
func startOpsWith(t *testing.T, wrap func(*audit.Log) api.AuditReader) *opsServer {
	t.Helper()
	ctx := t.Context()
	logger := slog.New(slog.DiscardHandler)
	b := bustest.Open(t)
	reg, err := registry.Open(ctx, logger, b)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := identity.Open(ctx, logger, b)
	if err != nil {
		t.Fatal(err)
	}
	path, _, err := creds.Ensure(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	token, err := identity.ReadToken(path)
	if err != nil {
		t.Fatal(err)
	}
	kills, err := killswitch.Open(ctx, logger, b)
	if err != nil {
		t.Fatal(err)
	}
	log, err := audit.Open(ctx, logger, b, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	runs := []func(context.Context) error{reg.Run, creds.Run, kills.Run}
	done := make(chan error, len(runs))
	for _, run := range runs {
		go func() { done <- run(runCtx) }()
	}
	t.Cleanup(func() {
		stop()
		for range runs {
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	})
	for _, wait := range []func(context.Context) error{reg.WaitLoaded, creds.WaitLoaded, kills.WaitLoaded} {
		if err := wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var reader api.AuditReader = log
	if wrap != nil {
		reader = wrap(log)
	}
	mux := http.NewServeMux()
	api.New(logger, reg, creds).WithOps(kills.WithAudit(log), reader).Register(mux)
	srv := httptest.NewServer(telemetry.NewHTTPMetrics(prometheus.NewRegistry()).Middleware(logger, mux))
	t.Cleanup(srv.Close)
	return &opsServer{url: srv.URL, token: token, bus: b, reg: reg, kills: kills, log: log}
}

type opsAnswer struct {
	status  int
	body    []byte
	problem problem.Details
}

// call sends a request with the admin token (unless token is "") and checks
// that an error comes back as a well-formed problem.
func (s *opsServer) call(t *testing.T, method, path, body string) opsAnswer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.url+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := opsAnswer{status: resp.StatusCode, body: data}
	if resp.StatusCode >= 400 {
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
			t.Fatalf("%s %s = %d with Content-Type %q, want a problem", method, path, resp.StatusCode, ct)
		}
		if err := json.Unmarshal(data, &a.problem); err != nil {
			t.Fatalf("problem body %s: %v", data, err)
		}
		if a.problem.RequestID == "" || a.problem.Status != resp.StatusCode {
			t.Errorf("problem %s: want request_id and status %d", data, resp.StatusCode)
		}
	}
	return a
}

func decode[T any](t *testing.T, a opsAnswer) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("decode %s: %v", a.body, err)
	}
	return v
}

func TestKillSwitchAPI(t *testing.T) {
	s := startOps(t)
	if _, err := s.reg.Apply(t.Context(), []config.Resource{{APIVersion: config.APIVersion, Kind: "Agent", Metadata: config.Metadata{Name: "impact"}, Spec: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}

	if a := s.call(t, "GET", "/v1/killswitches", ""); a.status != 200 || !bytes.Contains(a.body, []byte(`"items": []`)) {
		t.Fatalf("GET with none on = %d %s, want 200 and empty items", a.status, a.body)
	}

	a := s.call(t, "POST", "/v1/killswitches", `{"agent": "impact", "reason": "looping"}`)
	got := decode[api.KillResponse](t, a)
	if a.status != 200 || got.Agent != "impact" || got.Reason != "looping" || !strings.HasPrefix(got.By, "admin-token:") || got.At.IsZero() || got.Warning != "" {
		t.Errorf("POST agent = %d %s, want the switch and no warning", a.status, a.body)
	}
	if sw, ok := s.kills.Killed("impact"); !ok || sw.Reason != "looping" {
		t.Errorf("Killed(impact) after POST = %+v, %v; want on", sw, ok)
	}

	a = s.call(t, "POST", "/v1/killswitches", `{"agent": "ghost"}`)
	if got := decode[api.KillResponse](t, a); a.status != 200 || !strings.Contains(got.Warning, "Agent/ghost does not exist") {
		t.Errorf("POST unknown agent = %d %s, want 200 with a warning", a.status, a.body)
	}
	if a = s.call(t, "POST", "/v1/killswitches", `{"all": true, "reason": "incident"}`); a.status != 200 {
		t.Errorf("POST all = %d %s", a.status, a.body)
	}

	list := decode[api.KillSwitchList](t, s.call(t, "GET", "/v1/killswitches", ""))
	var names []string
	for _, sw := range list.Items {
		names = append(names, sw.Target.String())
	}
	if diff := cmp.Diff([]string{"all agents", "Agent/ghost", "Agent/impact"}, names); diff != "" {
		t.Errorf("GET list (-want +got):\n%s", diff)
	}

	for _, path := range []string{"/v1/killswitches/all", "/v1/killswitches/agent/ghost"} {
		if a := s.call(t, "DELETE", path, ""); a.status != 200 || !bytes.Contains(a.body, []byte(`"result": "unkilled"`)) {
			t.Errorf("DELETE %s = %d %s, want 200 unkilled", path, a.status, a.body)
		}
		if a := s.call(t, "DELETE", path, ""); a.status != 404 || a.problem.Code != problem.NotKilled {
			t.Errorf("DELETE %s again = %d %s, want 404 not_killed", path, a.status, a.body)
		}
	}
	if sw, ok := s.kills.Killed("impact"); !ok || sw.All {
		t.Errorf("Killed(impact) after unkilling all = %+v, %v; want its own switch", sw, ok)
	}
}

// TestKillSwitchesAudited: every kill and unkill is an audit record saying
// who (the admin token's id and name), which switch and why, the unkill's
// optional reason included; an unkill that found nothing on leaves none;
// the records are in the chain, which verifies.
func TestKillSwitchesAudited(t *testing.T) {
	s := startOps(t)
	steps := []struct{ method, path, body string }{
		{"POST", "/v1/killswitches", `{"agent": "impact", "reason": "looping on refunds"}`},
		{"POST", "/v1/killswitches", `{"all": true, "reason": "incident 42"}`},
		{"DELETE", "/v1/killswitches/all", `{"reason": "incident 42 over"}`},
		{"DELETE", "/v1/killswitches/all", ``}, // not on: 404, no record
		{"DELETE", "/v1/killswitches/agent/impact", ``},
	}
	for _, st := range steps {
		s.call(t, st.method, st.path, st.body)
	}
	list := decode[api.AuditList](t, s.call(t, "GET", "/v1/audit?since=1h", ""))
	type seen struct{ Event, Agent, Target, Reason, Scope, Was string }
	var got []seen
	for _, r := range list.Records {
		var d struct {
			Scope, By string
			Was       *struct{ Reason string }
		}
		if err := json.Unmarshal(r.Detail, &d); err != nil {
			t.Fatalf("record %s: detail %s: %v", r.ID, r.Detail, err)
		}
		if r.Kind != "killswitch" || r.Status != "ok" || r.Edge != "api" {
			t.Errorf("record %s = kind %q status %q edge %q, want killswitch ok api", r.ID, r.Kind, r.Status, r.Edge)
		}
		by, ok := strings.CutPrefix(d.By, "admin-token:")
		if !ok || !strings.HasSuffix(by, " (admin.token)") {
			t.Errorf("record %s: by %q, want the admin token's id and name", r.ID, d.By)
		}
		was := ""
		if d.Was != nil {
			was = d.Was.Reason
		}
		got = append(got, seen{r.Event, r.Agent, r.Target, r.Reason, d.Scope, was})
	}
	want := []seen{
		{"killswitch.kill", "impact", "Agent/impact", "looping on refunds", "agent", ""},
		{"killswitch.kill", "", "all agents", "incident 42", "all", ""},
		{"killswitch.unkill", "", "all agents", "incident 42 over", "all", "incident 42"},
		{"killswitch.unkill", "impact", "Agent/impact", "", "agent", "looping on refunds"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit records of the kill switches (-want +got):\n%s", diff)
	}
	mine := decode[api.AuditList](t, s.call(t, "GET", "/v1/audit?agent=impact", ""))
	if len(mine.Records) != 2 {
		t.Errorf("GET /v1/audit?agent=impact = %d records, want the kill and the unkill of impact", len(mine.Records))
	}
	if rep := decode[audit.Report](t, s.call(t, "GET", "/v1/audit/verify", "")); !rep.OK || rep.Records != 4 {
		t.Errorf("GET verify = %+v, want ok over the 4 records", rep)
	}
}

func TestOpsErrors(t *testing.T) {
	s := startOps(t)
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
		detail                   string
	}{
		{"kill neither", "POST", "/v1/killswitches", `{"reason": "x"}`, 400, problem.InvalidRequest, `exactly one of "all": true or "agent"`},
		{"kill both", "POST", "/v1/killswitches", `{"all": true, "agent": "impact"}`, 400, problem.InvalidRequest, "exactly one"},
		{"kill bad name", "POST", "/v1/killswitches", `{"agent": "Not.Valid"}`, 400, problem.InvalidRequest, "agent:"},
		{"kill unknown field", "POST", "/v1/killswitches", `{"agnet": "impact"}`, 400, problem.InvalidRequest, "agnet"},
		{"kill not JSON", "POST", "/v1/killswitches", `agent: impact`, 400, problem.InvalidRequest, "must be JSON"},
		{"kill long reason", "POST", "/v1/killswitches", `{"all": true, "reason": "` + strings.Repeat("x", 1001) + `"}`, 400, problem.InvalidRequest, "reason:"},
		{"unkill bad name", "DELETE", "/v1/killswitches/agent/Bad_Name", "", 400, problem.InvalidRequest, "not a valid agent name"},
		{"unkill not killed", "DELETE", "/v1/killswitches/agent/impact", "", 404, problem.NotKilled, "Agent/impact"},
		{"unkill body not JSON", "DELETE", "/v1/killswitches/all", `reason: over`, 400, problem.InvalidRequest, "must be JSON"},
		{"unkill unknown field", "DELETE", "/v1/killswitches/all", `{"reasn": "over"}`, 400, problem.InvalidRequest, "reasn"},
		{"unkill long reason", "DELETE", "/v1/killswitches/all", `{"reason": "` + strings.Repeat("x", 1001) + `"}`, 400, problem.InvalidRequest, "reason:"},
		{"killswitches wrong method", "PUT", "/v1/killswitches", "", 405, problem.MethodNotAllowed, "GET, POST"},
		{"unkill all wrong method", "POST", "/v1/killswitches/all", "", 405, problem.MethodNotAllowed, "DELETE"},
		{"audit wrong method", "POST", "/v1/audit", "", 405, problem.MethodNotAllowed, "GET"},
		{"audit bad since", "GET", "/v1/audit?since=yesterday", "", 400, problem.InvalidRequest, `since: "yesterday"`},
		{"audit negative since", "GET", "/v1/audit?since=-1h", "", 400, problem.InvalidRequest, "since:"},
		{"audit bad limit", "GET", "/v1/audit?limit=lots", "", 400, problem.InvalidRequest, "limit:"},
		{"audit limit too large", "GET", "/v1/audit?limit=10001", "", 400, problem.InvalidRequest, "limit:"},
		{"audit limit zero", "GET", "/v1/audit?limit=0", "", 400, problem.InvalidRequest, "limit:"},
		{"audit bad agent", "GET", "/v1/audit?agent=a.b", "", 400, problem.InvalidRequest, "agent:"},
		{"audit unknown parameter", "GET", "/v1/audit?agnet=impact", "", 400, problem.InvalidRequest, `"agnet"`},
		{"verify unknown parameter", "GET", "/v1/audit/verify?from=1", "", 400, problem.InvalidRequest, `unknown parameter "from"; the parameters are since`},
		{"verify bad since", "GET", "/v1/audit/verify?since=yesterday", "", 400, problem.InvalidRequest, `since: "yesterday"`},
		{"verify wrong method", "POST", "/v1/audit/verify", "", 405, problem.MethodNotAllowed, "GET"},
		{"export unknown parameter", "GET", "/v1/audit/export?format=csv", "", 400, problem.InvalidRequest, `unknown parameter "format"; the parameters are since, until`},
		{"export bad until", "GET", "/v1/audit/export?until=later", "", 400, problem.InvalidRequest, `until: "later"`},
		{"export until before since", "GET", "/v1/audit/export?since=2026-02-01&until=2026-01-01", "", 400, problem.InvalidRequest, "until: before since"},
		{"export wrong method", "DELETE", "/v1/audit/export", "", 405, problem.MethodNotAllowed, "GET"},
		{"checkpoints bad since", "GET", "/v1/audit/checkpoints?since=-1h", "", 400, problem.InvalidRequest, "since:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := s.call(t, tt.method, tt.path, tt.body)
			if a.status != tt.status || a.problem.Code != tt.code || !strings.Contains(a.problem.Detail, tt.detail) {
				t.Errorf("%s %s = %d %s, want %d %s mentioning %q", tt.method, tt.path, a.status, a.body, tt.status, tt.code, tt.detail)
			}
		})
	}
	t.Run("admin token required", func(t *testing.T) {
		anon := *s
		anon.token = ""
		for _, path := range []string{"/v1/killswitches", "/v1/audit", "/v1/audit/verify", "/v1/audit/export", "/v1/audit/checkpoints"} {
			if a := anon.call(t, "GET", path, ""); a.status != 401 || a.problem.Code != problem.Unauthenticated {
				t.Errorf("GET %s without a token = %d %s, want 401", path, a.status, a.body)
			}
		}
	})
}

func TestAuditAPI(t *testing.T) {
	s := startOps(t)
	if a := s.call(t, "GET", "/v1/audit", ""); a.status != 200 || !bytes.Contains(a.body, []byte(`"records": []`)) {
		t.Fatalf("GET empty audit = %d %s, want 200 and no records", a.status, a.body)
	}
	var ids []string
	for _, r := range []audit.Record{
		{Kind: "tool", Agent: "impact", Target: "crm.get_order", Edge: "rest", Decision: "allowed", Status: "ok"},
		{Kind: "tool", Agent: "mailer", Target: "mail.send", Edge: "mcp", Decision: "denied", Code: "killed", Status: "refused"},
		{Kind: "tool", Agent: "impact", Target: "crm.delete_order", Edge: "rest", Decision: "denied", Code: "policy_denied", Status: "refused"},
	} {
		id, err := s.log.Append(t.Context(), &r)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	tests := []struct {
		query string
		want  []string // ids by index
	}{
		{"", []string{ids[0], ids[1], ids[2]}},
		{"?agent=impact", []string{ids[0], ids[2]}},
		{"?tool=crm.*", []string{ids[0], ids[2]}},
		{"?tool=mail.send&agent=mailer", []string{ids[1]}},
		{"?limit=1", []string{ids[2]}},
		{"?since=1h", []string{ids[0], ids[1], ids[2]}},
		{"?since=7d", []string{ids[0], ids[1], ids[2]}},
		{"?since=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339), []string{}},
	}
	for _, tt := range tests {
		a := s.call(t, "GET", "/v1/audit"+tt.query, "")
		var got []string
		for _, r := range decode[api.AuditList](t, a).Records {
			got = append(got, r.ID)
		}
		if got == nil {
			got = []string{}
		}
		if diff := cmp.Diff(tt.want, got); a.status != 200 || diff != "" {
			t.Errorf("GET /v1/audit%s = %d, ids (-want +got):\n%s", tt.query, a.status, diff)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"1h", now.Add(-time.Hour), true},
		{"90m", now.Add(-90 * time.Minute), true},
		{"1h30m", now.Add(-90 * time.Minute), true},
		{"7d", now.Add(-7 * 24 * time.Hour), true},
		{"2026-03-01T00:00:00Z", time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), true},
		{"2026-03-01T00:00:00+02:00", time.Date(2026, 2, 28, 22, 0, 0, 0, time.UTC), true},
		{"2026-03-01", time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), true},
		{"0s", time.Time{}, false},
		{"-1h", time.Time{}, false},
		{"1.5d", time.Time{}, false},
		{"d", time.Time{}, false},
		{"yesterday", time.Time{}, false},
		{"2026-13-01", time.Time{}, false},
		{"2026-03-01T00:00", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := api.ParseSince(tt.in, now)
		if (err == nil) != tt.ok || !got.Equal(tt.want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// appendAudit appends n tool call records and returns them as stored.
func (s *opsServer) appendAudit(t *testing.T, n int) []audit.Record {
	t.Helper()
	var out []audit.Record
	for i := range n {
		r := audit.Record{Kind: "tool", Agent: "impact", Target: fmt.Sprintf("crm.op%d", i), Edge: "rest", Decision: "allowed", Status: "ok"}
		if _, err := s.log.Append(t.Context(), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestAuditVerifyAPI(t *testing.T) {
	s := startOps(t)
	if rep := decode[audit.Report](t, s.call(t, "GET", "/v1/audit/verify", "")); !rep.OK || rep.Records != 0 {
		t.Errorf("GET verify of an empty audit = %+v, want ok", rep)
	}
	records := s.appendAudit(t, 5)
	a := s.call(t, "GET", "/v1/audit/verify", "")
	if rep := decode[audit.Report](t, a); a.status != 200 || !rep.OK || rep.Records != 5 || rep.LastSeq != 5 {
		t.Errorf("GET verify = %d %s, want ok over 5 records", a.status, a.body)
	}
	if rep := decode[audit.Report](t, s.call(t, "GET", "/v1/audit/verify?since=2026-01-01", "")); !rep.OK || rep.Records != 5 {
		t.Errorf("GET verify?since = %+v, want ok over 5 records", rep)
	}

	audittest.Rewrite(t, s.bus.JetStream(), func(seq uint64, data []byte) []byte {
		if seq == 2 {
			return bytes.Replace(data, []byte(`"decision":"allowed"`), []byte(`"decision":"refused"`), 1)
		}
		return data
	})
	a = s.call(t, "GET", "/v1/audit/verify", "")
	rep := decode[audit.Report](t, a)
	if a.status != 200 || rep.OK || len(rep.Problems) != 1 {
		t.Fatalf("GET verify after tampering = %d %s, want 200 with ok false and one problem", a.status, a.body)
	}
	if p := rep.Problems[0]; p.Seq != 2 || p.ID != records[1].ID || p.Agent != "impact" || p.Target != "crm.op1" || !strings.HasPrefix(p.What, "changed after it was written") {
		t.Errorf("problem = %+v, want seq 2 (%s) named as changed", p, records[1].ID)
	}
	if !bytes.Contains(a.body, []byte(`"ok": false`)) {
		t.Errorf("GET verify body %s lacks \"ok\": false", a.body)
	}
}

func TestAuditExportAPI(t *testing.T) {
	s := startOps(t)
	a := s.call(t, "GET", "/v1/audit/export", "")
	if a.status != 200 || len(a.body) != 0 {
		t.Errorf("GET export of an empty audit = %d %q, want 200 and nothing", a.status, a.body)
	}
	// More records than one flush holds.
	const n = 2500
	s.appendAudit(t, n)
	resp := s.get(t, "/v1/audit/export?since=1h")
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "application/x-ndjson" {
		t.Fatalf("GET export = %d %s, want 200 application/x-ndjson", resp.StatusCode, ct)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read export: %v", err)
	}
	lines := bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n"))
	if len(lines) != n {
		t.Fatalf("GET export = %d lines, want %d", len(lines), n)
	}
	// Each line is the record exactly as stored: the archive verifies.
	var first audit.Record
	if err := json.Unmarshal(lines[0], &first); err != nil || first.Seq != 1 || first.Target != "crm.op0" {
		t.Errorf("first line = %s (%v), want record seq 1", lines[0], err)
	}
	rep, err := audit.VerifyArchive(bytes.NewReader(body), nil, nil)
	if err != nil || !rep.OK || rep.Records != n {
		t.Errorf("VerifyArchive(export) = %+v, %v; want ok over %d", rep, err, n)
	}
	for _, query := range []string{"?since=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "?until=2026-01-01"} {
		if a := s.call(t, "GET", "/v1/audit/export"+query, ""); a.status != 200 || len(a.body) != 0 {
			t.Errorf("GET export%s = %d, %d bytes; want nothing", query, a.status, len(a.body))
		}
	}
}

func TestAuditCheckpointsAPI(t *testing.T) {
	s := startOps(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.log.Run(ctx) }()
	s.appendAudit(t, 3)
	cancel() // Run checkpoints what it has not covered as it stops
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	a := s.call(t, "GET", "/v1/audit/checkpoints?since=1h", "")
	cps, err := audit.ReadCheckpoints(bytes.NewReader(a.body))
	if a.status != 200 || err != nil || len(cps) != 1 || cps[0].Seq != 3 {
		t.Fatalf("GET checkpoints = %d %s (%v), want the checkpoint of seq 3", a.status, a.body, err)
	}
	archive := s.call(t, "GET", "/v1/audit/export", "")
	if rep, err := audit.VerifyArchive(bytes.NewReader(archive.body), cps, nil); err != nil || !rep.OK || rep.Checkpoints != 1 {
		t.Errorf("VerifyArchive(export, checkpoints) = %+v, %v; want ok with the checkpoint matched", rep, err)
	}
}

// failingExport is the audit with an Export that fails after its first
// record, as a substrate that goes away mid-export.
type failingExport struct {
	*audit.Log
}

func (f failingExport) Export(ctx context.Context, rg audit.Range, fn func(uint64, []byte) error) error {
	if err := fn(1, []byte(`{"id":"a"}`)); err != nil {
		return err
	}
	return errors.New("substrate gone")
}

func (f failingExport) ExportCheckpoints(context.Context, audit.Range, func(uint64, []byte) error) error {
	return errors.New("substrate gone")
}

func TestAuditExportCutShort(t *testing.T) {
	s := startOpsWith(t, func(l *audit.Log) api.AuditReader { return failingExport{l} })
	resp := s.get(t, "/v1/audit/export")
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || err == nil {
		t.Errorf("GET export failing midway = %d, %q, read error %v; want 200 and a transfer cut short", resp.StatusCode, body, err)
	}
	// Failing before the first line is a problem answer.
	if a := s.call(t, "GET", "/v1/audit/checkpoints", ""); a.status != 500 || a.problem.Code != problem.Internal {
		t.Errorf("GET checkpoints failing at once = %d %s, want 500 internal", a.status, a.body)
	}
}

// get sends an admin GET and returns the response, its body unread.
func (s *opsServer) get(t *testing.T, path string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
