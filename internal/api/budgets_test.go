package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/budget"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/registry"
)

// budgetServer serves the API with budgets over an embedded bus; reader,
// when set, stands in for the budgets.
func budgetServer(t *testing.T, reader api.BudgetReader) (url, token string, b *budget.Budgets) {
	t.Helper()
	ctx := t.Context()
	logger := slog.New(slog.DiscardHandler)
	bb := bustest.Open(t)
	reg, err := registry.Open(ctx, logger, bb)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := identity.Open(ctx, logger, bb)
	if err != nil {
		t.Fatal(err)
	}
	path, _, err := creds.Ensure(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if token, err = identity.ReadToken(path); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	runs := []func(context.Context) error{reg.Run, creds.Run}
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
	for _, wait := range []func(context.Context) error{reg.WaitLoaded, creds.WaitLoaded} {
		if err := wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	clock := time.Date(2026, 11, 21, 14, 0, 0, 0, time.UTC)
	if _, err := reg.Apply(ctx, []config.Resource{{APIVersion: config.APIVersion, Kind: "Budget", Metadata: config.Metadata{Name: "impact-daily"},
		Spec: json.RawMessage(`{"scope":{"agent":"impact"},"window":"day","limit":{"tokens":200000,"calls":1000}}`)}}); err != nil {
		t.Fatal(err)
	}
	if b, err = budget.Open(ctx, logger, bb, reg, func() time.Time { return clock }); err != nil {
		t.Fatal(err)
	}
	if reader == nil {
		reader = b
	}
	mux := http.NewServeMux()
	api.New(logger, reg, creds).WithBudgets(reader).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, token, b
}

func getBudgets(t *testing.T, method, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url+"/v1/budgets", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode >= 400 && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		t.Errorf("%s /v1/budgets = %d with Content-Type %q, want a problem", method, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, body
}

func TestBudgetsAPI(t *testing.T) {
	url, token, b := budgetServer(t, nil)
	r, err := b.Reserve(t.Context(), budget.Subject{Kind: budget.KindModel, Agent: "impact", Models: []string{"gpt-eu"}}, budget.Usage{Tokens: 4096})
	if err != nil || r == nil {
		t.Fatalf("Reserve = %v, %v", r, err)
	}
	if err := r.Settle(t.Context(), budget.Usage{Tokens: 1234}); err != nil {
		t.Fatal(err)
	}

	status, body := getBudgets(t, "GET", url, token)
	if status != http.StatusOK {
		t.Fatalf("GET /v1/budgets = %d %s", status, body)
	}
	var got api.BudgetList
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	tokens, calls := int64(200000), int64(1000)
	want := api.BudgetList{Items: []budget.Status{{
		Budget: "impact-daily", Scope: config.BudgetScope{Agent: "impact"}, Window: "day",
		Limit: config.BudgetLimit{Tokens: &tokens, Calls: &calls},
		Key:   "2026-11-21", Used: &budget.Usage{Tokens: 1234, Calls: 1}, ResetsAt: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC),
	}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /v1/budgets (-want +got):\n%s", diff)
	}
}

func TestBudgetsAPIErrors(t *testing.T) {
	url, token, _ := budgetServer(t, nil)
	var p problem.Details
	status, body := getBudgets(t, "GET", url, "")
	if err := json.Unmarshal(body, &p); err != nil || status != http.StatusUnauthorized || p.Code != problem.Unauthenticated {
		t.Errorf("GET without a token = %d %s, want 401 unauthenticated", status, body)
	}
	status, body = getBudgets(t, "POST", url, token)
	if err := json.Unmarshal(body, &p); err != nil || status != http.StatusMethodNotAllowed || p.Code != problem.MethodNotAllowed {
		t.Errorf("POST = %d %s, want 405 method_not_allowed", status, body)
	}

	failing := failingBudgets{errors.New("nats: timeout reading corral_budgets")}
	url, token, _ = budgetServer(t, failing)
	status, body = getBudgets(t, "GET", url, token)
	if err := json.Unmarshal(body, &p); err != nil || status != http.StatusInternalServerError || p.Code != problem.Internal {
		t.Errorf("GET when the counters cannot be read = %d %s, want 500 internal", status, body)
	}
	if strings.Contains(string(body), "nats") {
		t.Errorf("the problem %s leaks the internal error", body)
	}
}

func TestBudgetsAPIEmpty(t *testing.T) {
	url, token, _ := budgetServer(t, failingBudgets{})
	status, body := getBudgets(t, "GET", url, token)
	if status != http.StatusOK || !strings.Contains(string(body), `"items": []`) {
		t.Errorf("GET with no budgets = %d %q, want 200 and empty items", status, body)
	}
}

// failingBudgets answers Status with err, or no budgets when err is nil.
type failingBudgets struct{ err error }

func (f failingBudgets) Status(context.Context) ([]budget.Status, error) { return nil, f.err }
