package app_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/bus/bustest"
)

// TestTriggersOnTwoReplicas runs two corral replicas on one NATS: a
// schedule ticking every second fires on both and makes one task per
// tick; a signed webhook sent to one replica and again to the other makes
// one task; both list the triggers and count their events.
func TestTriggersOnTwoReplicas(t *testing.T) {
	natsURL := bustest.ExternalServer(t)
	dirA := t.TempDir()
	a := apptest.StartWith(t, app.Config{NATSURL: natsURL, DataDir: dirA, WorkerID: "a"})
	c := apptest.StartWith(t, app.Config{NATSURL: natsURL, WorkerID: "c", SecretsKey: filepath.Join(dirA, "secrets.key")})
	a.Apply(t, `apiVersion: corral.dev/v1
kind: Secret
metadata: {name: shipping-hook}
spec: {value: "port authority secret"}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: monitor}
spec: {description: watches the ports}
---
apiVersion: corral.dev/v1
kind: Trigger
metadata: {name: port-hook}
spec:
  start: {agent: monitor}
  webhook: {secret: {secretRef: shipping-hook}, signature: github}
---
apiVersion: corral.dev/v1
kind: Trigger
metadata: {name: port-check}
spec:
  start: {agent: monitor}
  schedule: {cron: "@every 1s", timeZone: Europe/Amsterdam, data: {check: berths}}
`)
	events := func(s *apptest.Server, trigger, outcome string) int {
		status, body := s.Call(t, s.Token, "GET", "/metrics", nil, nil)
		if status != http.StatusOK {
			t.Fatalf("GET /metrics: %d", status)
		}
		re := regexp.MustCompile(`corral_trigger_events_total\{outcome="` + outcome + `",trigger="` + trigger + `"\} (\d+)`)
		m := re.FindSubmatch(body)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	deadline := time.Now().Add(apptest.Patience)
	for events(a, "port-check", "received") < 4 || events(c, "port-check", "received") < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("the schedule did not tick 4 times on both replicas within %v", apptest.Patience)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The webhook, on one replica then the other.
	body := `{"port":"Hamburg","status":"strike","since":"2026-12-07"}`
	mac := hmac.New(sha256.New, []byte("port authority secret"))
	mac.Write([]byte(body))
	hdr := http.Header{"Content-Type": {"application/json"}, "X-Hub-Signature-256": {"sha256=" + hex.EncodeToString(mac.Sum(nil))}}
	var answers []map[string]string
	for _, s := range []*apptest.Server{c, a} {
		status, raw := s.Call(t, "", "POST", "/hooks/port-hook", json.RawMessage(body), hdr)
		var got map[string]string
		_ = json.Unmarshal(raw, &got)
		if status != http.StatusAccepted {
			t.Fatalf("POST /hooks/port-hook: %d %s", status, raw)
		}
		answers = append(answers, got)
	}
	if answers[0]["outcome"] != "started" || answers[1]["outcome"] != "duplicate" || answers[0]["task"] != answers[1]["task"] {
		t.Errorf("webhook answers %v, want started then duplicate of one task", answers)
	}
	if status, raw := a.Call(t, "", "POST", "/hooks/port-hook", json.RawMessage(body), http.Header{"Content-Type": {"application/json"}}); status != http.StatusUnauthorized || !strings.Contains(string(raw), "signature_missing") {
		t.Errorf("unsigned webhook: %d %s, want 401 signature_missing", status, raw)
	}

	// Stop the schedule on both, then count its tasks.
	if status, raw := a.Call(t, a.Token, "DELETE", "/v1/resources/triggers/port-check", nil, nil); status >= 300 {
		t.Fatalf("delete: %d %s", status, raw)
	}
	for _, s := range []*apptest.Server{a, c} {
		deadline := time.Now().Add(apptest.Patience)
		for {
			status, _ := s.Call(t, s.Token, "GET", "/v1/triggers/port-check", nil, nil)
			if status == http.StatusNotFound {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("port-check still runs %v after its delete", apptest.Patience)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	status, raw := a.Call(t, a.Token, "GET", "/v1/tasks?agent=monitor&limit=1000", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("GET /v1/tasks: %d %s", status, raw)
	}
	var list struct {
		Items []struct {
			ID        string          `json:"id"`
			Input     json.RawMessage `json:"input"`
			CreatedBy string          `json:"created_by"`
		} `json:"items"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatal(err)
	}
	ticks := map[string]bool{}
	for _, tk := range list.Items {
		if tk.CreatedBy != "trigger:port-check" {
			continue
		}
		var ce struct{ ID string }
		_ = json.Unmarshal(tk.Input, &ce)
		if ticks[ce.ID] {
			t.Errorf("tick %s made two tasks", ce.ID)
		}
		ticks[ce.ID] = true
	}
	started := events(a, "port-check", "started") + events(c, "port-check", "started")
	dups := events(a, "port-check", "duplicate") + events(c, "port-check", "duplicate")
	if len(ticks) != started || len(ticks) < 4 {
		t.Errorf("%d tick tasks, replicas counted %d started; want equal and at least 4", len(ticks), started)
	}
	if dups < 3 {
		t.Errorf("duplicates = %d: the replicas did not fire the same ticks", dups)
	}
	status, raw = c.Call(t, c.Token, "GET", "/v1/triggers", nil, nil)
	if status != http.StatusOK || !strings.Contains(string(raw), `"port-hook"`) || !strings.Contains(string(raw), `"/hooks/port-hook"`) {
		t.Errorf("GET /v1/triggers on c: %d %s", status, raw)
	}
	t.Logf("%d ticks, %d duplicates across the replicas", len(ticks), dups)
}

// TestTriggersAPIRefusesCarelessCallers: /v1/triggers is the admin's; an
// agent, no credential, a wrong method or a name that is no trigger gets a
// problem with its code, never a 500, and a huge name is not echoed whole.
func TestTriggersAPIRefusesCarelessCallers(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: monitor}
spec: {}
`)
	agent := srv.Key(t, "monitor")
	long := strings.Repeat("z", 5000)
	for _, tt := range []struct {
		name, token, method, path string
		status                    int
		code                      string
	}{
		{"no credential", "", "GET", "/v1/triggers", http.StatusUnauthorized, "unauthenticated"},
		{"an agent's key", agent, "GET", "/v1/triggers", http.StatusUnauthorized, "unauthenticated"},
		{"an agent reads one", agent, "GET", "/v1/triggers/port-events", http.StatusUnauthorized, "unauthenticated"},
		{"wrong method", srv.Token, "DELETE", "/v1/triggers", http.StatusMethodNotAllowed, "method_not_allowed"},
		{"no such trigger", srv.Token, "GET", "/v1/triggers/port-events", http.StatusNotFound, "trigger_not_found"},
		{"a name no resource may have", srv.Token, "GET", "/v1/triggers/Ünïcødé%20name", http.StatusNotFound, "trigger_not_found"},
		{"a path out of the route", srv.Token, "GET", "/v1/triggers/..%2F..%2Fresources", http.StatusNotFound, "trigger_not_found"},
		{"a huge name", srv.Token, "GET", "/v1/triggers/" + long, http.StatusNotFound, "trigger_not_found"},
	} {
		status, body := srv.Call(t, tt.token, tt.method, tt.path, nil, nil)
		var d struct{ Code, Detail string }
		_ = json.Unmarshal(body, &d)
		if status != tt.status || d.Code != tt.code {
			t.Errorf("%s: HTTP %d %q, want %d %s", tt.name, status, d.Code, tt.status, tt.code)
		}
		if len(d.Detail) > 300 {
			t.Errorf("%s: a detail of %d bytes echoes the request", tt.name, len(d.Detail))
		}
	}
}
