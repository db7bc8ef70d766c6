package cli

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/trigger"
)

func TestTriggersCommand(t *testing.T) {
	t.Chdir(t.TempDir())
	next := time.Date(2026, 12, 8, 7, 30, 0, 0, time.UTC)
	items := []trigger.Status{
		{Name: "morning-check", Source: "schedule", Start: "agent:monitor", State: "running", Next: &next, Events: map[string]int64{"received": 4, "started": 2, "duplicate": 2}},
		{Name: "port-events", Source: "webhook", Start: "agent:monitor", State: "running", Path: "/hooks/port-events", MaxConcurrent: 20, Live: 3,
			Events: map[string]int64{"received": 41, "started": 38, "duplicate": 2, "refused": 1}},
	}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/triggers", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = problem.WriteJSON(w, 200, api.TriggerList{Items: items})
	}))
	mux.Handle("GET /v1/triggers/{name}", problem.Handle(slog.New(slog.DiscardHandler), func(w http.ResponseWriter, r *http.Request) error {
		for _, st := range items {
			if st.Name == r.PathValue("name") {
				return problem.WriteJSON(w, 200, st)
			}
		}
		return problem.New(404, problem.TriggerNotFound, "no trigger "+r.PathValue("name"))
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	out, errOut, code := run(t, "", "triggers", "list", "--server", srv.URL, "--token", "t")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[2], "3/20") || !strings.Contains(lines[2], "webhook") {
		t.Errorf("triggers list = %d\n%s\n%s", code, out, errOut)
	}
	out, _, code = run(t, "", "triggers", "list", "-o", "json", "--server", srv.URL, "--token", "t")
	var list api.TriggerList
	if err := json.Unmarshal([]byte(out), &list); err != nil || code != 0 || len(list.Items) != 2 || list.Items[1].Events["started"] != 38 {
		t.Errorf("triggers list -o json = %d %s (%v)", code, out, err)
	}
	out, _, code = run(t, "", "triggers", "get", "morning-check", "--server", srv.URL, "--token", "t")
	if code != 0 || !strings.Contains(out, "next tick:") || !strings.Contains(out, "2026-12-08T07:30:00Z") || !strings.Contains(out, "duplicate 2") {
		t.Errorf("triggers get = %d\n%s", code, out)
	}
	if _, errOut, code = run(t, "", "triggers", "get", "nope", "--server", srv.URL, "--token", "t"); code != 1 || !strings.Contains(errOut, "trigger_not_found") {
		t.Errorf("triggers get nope = %d %q, want trigger_not_found", code, errOut)
	}
	if _, errOut, code = run(t, "", "triggers", "get"); code != 1 || !strings.Contains(errOut, "accepts 1 arg") {
		t.Errorf("triggers get without a name = %d %q", code, errOut)
	}
}
