package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/problem"
)

// bank is the banking upstream: it records the bodies it receives.
type bank struct {
	mu     sync.Mutex
	bodies []string
}

func (b *bank) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	b.mu.Lock()
	b.bodies = append(b.bodies, string(body))
	b.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, `{"id": "t-1", "status": "sent"}`)
}

func (b *bank) received() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.bodies...)
}

// TestPolicyReadsFlatBodyArguments: a rule written as docs/policy.md teaches,
// on input.action.arguments.amount, fires on an OpenAPI tool whose amount is
// a field of the JSON body. At d7dc022 the importer put the body under
// arguments.body, and a 5,000 EUR send_money reached the bank.
func TestPolicyReadsFlatBodyArguments(t *testing.T) {
	up := &bank{}
	upstream := httptest.NewServer(up)
	t.Cleanup(upstream.Close)
	doc, err := os.ReadFile("../../examples/policies/payments/banking.openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := apptest.Start(t)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: ToolSource
metadata: {name: banking}
spec:
  openapi:
    baseURL: `+upstream.URL+`
    document: |
      `+strings.ReplaceAll(string(doc), "\n", "\n      ")+`
---
apiVersion: corral.dev/v1
kind: Policy
metadata: {name: limits}
spec:
  rego: |
    package corral.authz
    deny contains "transfers over 1000 are refused" if {
      input.action.target == "banking.send_money"
      input.action.arguments.amount > 1000
    }
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: treasurer}
spec:
  tools: [banking.*]
`)
	srv.WaitTool(t, "banking.send_money")
	key := srv.Key(t, "treasurer")
	send := func(amount string) (int, problem.Details) {
		t.Helper()
		args := `{"to_iban": "DE89 3704 0044 0532 0130 00", "amount": ` + amount + `, "currency": "EUR", "reference": "invoice 7"}`
		status, body := srv.Call(t, key, "POST", "/v1/tools/banking.send_money/invoke", json.RawMessage(`{"arguments": `+args+`}`), nil)
		var d problem.Details
		_ = json.Unmarshal(body, &d)
		return status, d
	}

	if status, d := send("5000"); status != http.StatusForbidden || d.Code != problem.PolicyDenied {
		t.Errorf("send_money 5000 EUR = HTTP %d %q, want 403 %s", status, d.Code, problem.PolicyDenied)
	}
	if got := up.received(); len(got) != 0 {
		t.Fatalf("the bank received %q after a refused transfer", got)
	}
	if status, d := send("500"); status != http.StatusOK {
		t.Fatalf("send_money 500 EUR = HTTP %d %+v, want 200", status, d)
	}
	got := up.received()
	want := `{"amount":500,"currency":"EUR","reference":"invoice 7","to_iban":"DE89 3704 0044 0532 0130 00"}`
	if len(got) != 1 || got[0] != want {
		t.Errorf("the bank received %q, want one body %s", got, want)
	}
}
