package api_test

import (
	"bytes"
	"context"
	"encoding/json"
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
	reg        *registry.Registry
	kills      *killswitch.Switches
	log        *audit.Log
}

func startOps(t *testing.T) *opsServer {
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
	mux := http.NewServeMux()
	api.New(logger, reg, creds).WithOps(kills, log).Register(mux)
	srv := httptest.NewServer(telemetry.NewHTTPMetrics(prometheus.NewRegistry()).Middleware(logger, mux))
	t.Cleanup(srv.Close)
	return &opsServer{url: srv.URL, token: token, reg: reg, kills: kills, log: log}
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
	if a.status != 200 || got.Agent != "impact" || got.Reason != "looping" || got.By != "admin" || got.At.IsZero() || got.Warning != "" {
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
		for _, path := range []string{"/v1/killswitches", "/v1/audit"} {
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
		{"0s", time.Time{}, false},
		{"-1h", time.Time{}, false},
		{"1.5d", time.Time{}, false},
		{"d", time.Time{}, false},
		{"yesterday", time.Time{}, false},
		{"2026-03-01", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := api.ParseSince(tt.in, now)
		if (err == nil) != tt.ok || !got.Equal(tt.want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
