package cli

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/budget"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/problem"
)

func ptrTo[T any](v T) *T { return &v }

var budgetItems = []budget.Status{
	{Budget: "broken", Window: "week", Limit: config.BudgetLimit{Calls: ptrTo[int64](1)}, Error: `not enforced: unknown window "week"`},
	{Budget: "impact-daily", Scope: config.BudgetScope{Agent: "impact"}, Window: "day",
		Limit: config.BudgetLimit{Tokens: ptrTo[int64](200000), Cost: ptrTo(5.0), Calls: ptrTo[int64](1000)},
		Key:   "2026-11-21", Used: &budget.Usage{Tokens: 201234, Cost: 0.31250001, Calls: 17}, ResetsAt: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)},
	{Budget: "lifetime", Window: "total", Limit: config.BudgetLimit{Cost: ptrTo(100.0)}, Key: "total", Used: &budget.Usage{Cost: 12.5}},
	{Budget: "per-task", Scope: config.BudgetScope{Model: "gpt-*", Task: "*"}, Window: "task", Limit: config.BudgetLimit{Calls: ptrTo[int64](50)},
		Tasks: []budget.TaskUsage{{Task: "t-2", Used: budget.Usage{Calls: 3}}, {Task: "t-1", Used: budget.Usage{Calls: 50}}}, TaskCount: 7},
	{Budget: "unused-task", Window: "task", Limit: config.BudgetLimit{Tokens: ptrTo[int64](10)}},
}

func TestWriteBudgetTable(t *testing.T) {
	now := time.Date(2026, 11, 21, 14, 30, 0, 0, time.UTC)
	var buf bytes.Buffer
	if err := writeBudgetTable(&buf, now, budgetItems); err != nil {
		t.Fatal(err)
	}
	want := `BUDGET        SCOPE               WINDOW    LIMIT          USED    LEFT    RESETS
broken        all                 week      -              -       -       not enforced
impact-daily  agent=impact        day       tokens 200000  201234  0       in 9h30m
impact-daily  agent=impact        day       cost 5         0.3125  4.6875  in 9h30m
impact-daily  agent=impact        day       calls 1000     17      983     in 9h30m
lifetime      all                 total     cost 100       12.5    87.5    never
per-task      model=gpt-*,task=*  task t-2  calls 50       3       47      -
per-task      model=gpt-*,task=*  task t-1  calls 50       50      0       -
unused-task   all                 task      tokens 10      -       -       -
`
	if buf.String() != want {
		t.Errorf("writeBudgetTable =\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestResetsIn(t *testing.T) {
	now := time.Date(2026, 11, 21, 14, 30, 0, 0, time.UTC)
	tests := []struct {
		at   time.Time
		want string
	}{
		{time.Time{}, "never"},
		{now.Add(-time.Second), "now"},
		{now.Add(30 * time.Second), "in <1m"},
		{now.Add(59 * time.Minute), "in 59m"},
		{now.Add(time.Hour + 5*time.Minute), "in 1h05m"},
		{now.Add(10 * 24 * time.Hour), "in 10d"},
	}
	for _, tt := range tests {
		if got := resetsIn(now, tt.at); got != tt.want {
			t.Errorf("resetsIn(%v) = %q, want %q", tt.at, got, tt.want)
		}
	}
}

// budgetsServer answers GET /v1/budgets with items, or with a problem when
// fail is set, for the admin token "t".
func budgetsServer(t *testing.T, items []budget.Status, fail bool) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "GET" || r.URL.Path != "/v1/budgets" || r.Header.Get("Authorization") != "Bearer t" {
			t.Errorf("request %s %s with %q, want GET /v1/budgets with the token", r.Method, r.URL.Path, r.Header.Get("Authorization"))
		}
		if fail {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(problem.Details{Status: 500, Code: problem.Internal, Detail: "internal error", RequestID: "r1"})
			return
		}
		_ = json.NewEncoder(w).Encode(api.BudgetList{Items: items})
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestBudgetsCommand(t *testing.T) {
	t.Chdir(t.TempDir())
	url := budgetsServer(t, budgetItems, false)

	out, errOut, code := run(t, "", "budgets", "--server", url, "--token", "t")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 9 || !strings.HasPrefix(lines[0], "BUDGET") || !strings.HasPrefix(lines[2], "impact-daily") {
		t.Errorf("budgets = %d\n%s\n%s", code, out, errOut)
	}
	wantErr := "warning: Budget/broken not enforced: unknown window \"week\"\nBudget/per-task: showing the 2 most recent of 7 tasks\n"
	if errOut != wantErr {
		t.Errorf("budgets stderr = %q, want %q", errOut, wantErr)
	}

	out, _, code = run(t, "", "budgets", "-o", "json", "--server", url, "--token", "t")
	var list api.BudgetList
	if err := json.Unmarshal([]byte(out), &list); err != nil || code != 0 || len(list.Items) != len(budgetItems) || list.Items[1].Used.Tokens != 201234 {
		t.Errorf("budgets -o json = %d %s (%v), want the server's items", code, out, err)
	}

	empty := budgetsServer(t, nil, false)
	if out, errOut, code = run(t, "", "budgets", "--server", empty, "--token", "t"); code != 0 || out != "" || !strings.HasPrefix(errOut, "no budgets") {
		t.Errorf("budgets with none = %d %q %q", code, out, errOut)
	}

	failing := budgetsServer(t, nil, true)
	if _, errOut, code = run(t, "", "budgets", "--server", failing, "--token", "t"); code != 1 || !strings.Contains(errOut, "code internal, request r1") {
		t.Errorf("budgets when the server fails = %d %q, want the problem's code", code, errOut)
	}
	if _, errOut, code = run(t, "", "budgets", "extra"); code != 1 || !strings.Contains(errOut, `unknown command "extra" for "corral budgets"`) {
		t.Errorf("budgets extra = %d %q", code, errOut)
	}
}
