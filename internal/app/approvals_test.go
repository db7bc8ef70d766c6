package app_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/approval"
	"github.com/corral-dev/corral/internal/identity/oidctest"
	"github.com/corral-dev/corral/internal/problem"
)

// approvalWorld is corral with the banking API and a policy that parks
// payments over 1,000 EUR for payments-oncall (two of them over 5,000).
type approvalWorld struct {
	srv  *apptest.Server
	bank *bank
	key  string
}

const approvalPolicy = `
apiVersion: corral.dev/v1
kind: Policy
metadata: {name: payments-approval}
spec:
  rego: |
    package corral.authz
    large if {
      input.action.target == "banking.send_money"
      input.action.arguments.amount > 1000
    }
    require_approval contains "payments over 1,000 EUR need payments-oncall" if {
      allow
      large
    }
    obligations.approvers := ["payments-oncall"] if large
    obligations.quorum := 2 if {
      large
      input.action.arguments.amount > 5000
    }
    obligations.ttl := TTL if large
`

func startApprovals(t *testing.T, cfg app.Config, ttl string) *approvalWorld {
	t.Helper()
	up := &bank{}
	upstream := httptest.NewServer(up)
	t.Cleanup(upstream.Close)
	doc, err := os.ReadFile("../../examples/policies/payments/banking.openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := apptest.StartWith(t, cfg)
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: ToolSource
metadata: {name: banking}
spec:
  openapi:
    baseURL: `+upstream.URL+`
    document: |
      `+strings.ReplaceAll(string(doc), "\n", "\n      ")+`
---`+strings.ReplaceAll(approvalPolicy, "TTL", `"`+ttl+`"`)+`---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: treasurer}
spec:
  tools: [banking.*]
`)
	srv.WaitTool(t, "banking.send_money")
	// The policy loads in the background: a call before it would be let
	// through by the default bundle alone.
	input := map[string]any{
		"action": map[string]any{"kind": "tool", "target": "banking.send_money", "arguments": map[string]any{"amount": 2000}},
		"agent":  map[string]any{"name": "treasurer", "tools": []string{"banking.*"}},
		"tool":   map[string]any{"name": "banking.send_money", "source": "banking"},
	}
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, body := srv.Call(t, srv.Token, "POST", "/v1/policy/eval", input, nil)
		var d struct{ Effect string }
		if status == http.StatusOK && json.Unmarshal(body, &d) == nil && d.Effect == "approval" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the approval policy is not in force within %v: %d %s", apptest.Patience, status, body)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	return &approvalWorld{srv: srv, bank: up, key: srv.Key(t, "treasurer")}
}

type answer struct {
	status   int
	location string
	problem  problem.Details
}

func (w *approvalWorld) send(t *testing.T, amount string, header http.Header) answer {
	t.Helper()
	args := `{"to_iban": "DE89 3704 0044 0532 0130 00", "amount": ` + amount + `, "currency": "EUR", "reference": "invoice 7"}`
	req := w.srv.Request(t, "POST", "/v1/tools/banking.send_money/invoke", []byte(`{"arguments": `+args+`}`))
	req.Header.Set("Authorization", "Bearer "+w.key)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	a.status, a.location = resp.StatusCode, resp.Header.Get("Location")
	_ = json.NewDecoder(resp.Body).Decode(&a.problem)
	return a
}

func (w *approvalWorld) human(t *testing.T, name string, groups ...string) string {
	t.Helper()
	status, body := w.srv.Call(t, w.srv.Token, "POST", "/v1/humans", map[string]any{"name": name, "groups": groups}, nil)
	if status != http.StatusCreated {
		t.Fatalf("POST /v1/humans %s = %d %s", name, status, body)
	}
	var created struct{ Key string }
	_ = json.Unmarshal(body, &created)
	return created.Key
}

func (w *approvalWorld) decide(t *testing.T, token, id, verdict string, body any) (int, problem.Details, approval.Approval) {
	t.Helper()
	status, raw := w.srv.Call(t, token, "POST", "/v1/approvals/"+id+"/"+verdict, body, nil)
	var d problem.Details
	var a approval.Approval
	_ = json.Unmarshal(raw, &d)
	_ = json.Unmarshal(raw, &a)
	return status, d, a
}

func TestApprovalRunsTheExactCallOnce(t *testing.T) {
	w := startApprovals(t, app.Config{}, "4h")
	first := w.send(t, "2000", nil)
	if first.status != http.StatusAccepted || first.problem.Code != problem.ApprovalPending || first.problem.ApprovalID == "" ||
		first.location != "/v1/approvals/"+first.problem.ApprovalID {
		t.Fatalf("send 2000 = %d %+v Location %q; want 202 approval_pending with the id", first.status, first.problem, first.location)
	}
	id := first.problem.ApprovalID
	if again := w.send(t, "2000", nil); again.status != http.StatusAccepted || again.problem.ApprovalID != id {
		t.Fatalf("the same call again = %d %s, want 202 with %s", again.status, again.problem.ApprovalID, id)
	}
	if other := w.send(t, "2001", nil); other.status != http.StatusAccepted || other.problem.ApprovalID == id {
		t.Fatalf("another amount = %d %s, want 202 with a new approval", other.status, other.problem.ApprovalID)
	}
	if n := len(w.bank.received()); n != 0 {
		t.Fatalf("the bank received %d calls before any approval", n)
	}

	bob := w.human(t, "bob", "payments-oncall")
	dave := w.human(t, "dave", "marketing")
	// Attackers: nobody, the agent, the admin, someone outside the group.
	for name, token := range map[string]string{"no credential": "", "agent key": w.key, "admin token": w.srv.Token, "dave": dave, "forged human key": "corral_hk_forged"} {
		status, d, _ := w.decide(t, token, id, "approve", nil)
		if status < 400 || status == http.StatusInternalServerError {
			t.Errorf("%s approving = %d %s, want a refusal", name, status, d.Code)
		}
	}
	for _, bad := range []string{"..%2F..%2Fetc", "x%00y", strings.Repeat("a", 300), "nosuchapproval"} {
		if status, d, _ := w.decide(t, bob, bad, "approve", nil); status != http.StatusNotFound {
			t.Errorf("approving id %q = %d %s, want 404", bad, status, d.Code)
		}
	}
	if status, d, _ := w.decide(t, bob, id, "approve", map[string]string{"comment": strings.Repeat("x", 5000)}); status != http.StatusBadRequest {
		t.Errorf("a huge comment = %d %s, want 400", status, d.Code)
	}
	if status, _, _ := w.decide(t, bob, id, "approve", map[string]string{"comment": strings.Repeat("x", 1<<20)}); status != http.StatusRequestEntityTooLarge {
		t.Errorf("a huge body = %d, want 413", status)
	}
	if status, d, a := w.decide(t, bob, id, "approve", map[string]string{"comment": "ok, invoice checked"}); status != http.StatusOK || a.State != approval.Approved {
		t.Fatalf("bob approving = %d %s %s, want 200 approved", status, d.Code, a.State)
	}

	if run := w.send(t, "2000", nil); run.status != http.StatusOK {
		t.Fatalf("the approved call = %d %+v, want 200", run.status, run.problem)
	}
	if replay := w.send(t, "2000", nil); replay.status != http.StatusConflict || replay.problem.Code != problem.ApprovalUsed {
		t.Errorf("replaying the executed approval = %d %s, want 409 approval_used", replay.status, replay.problem.Code)
	}
	if got := w.bank.received(); len(got) != 1 || !strings.Contains(got[0], `"amount":2000`) {
		t.Errorf("the bank received %q, want the one approved transfer", got)
	}
	status, raw := w.srv.Call(t, bob, "GET", "/v1/approvals/"+id, nil, nil)
	var a approval.Approval
	_ = json.Unmarshal(raw, &a)
	if status != http.StatusOK || a.State != approval.Executed || a.Execution == nil || a.Execution.AuditID == "" || a.Execution.Status != "ok" || len(a.Execution.Result) == 0 {
		t.Errorf("GET the approval = %d %s", status, raw)
	}
	if a.Action.ArgsDigest == "" || !strings.Contains(string(a.Action.Arguments), "amount") {
		t.Errorf("the approval's action = %+v, want the digest and the arguments shown", a.Action)
	}
	// The agent sees its own approvals; an unauthenticated caller none.
	if status, _ := w.srv.Call(t, w.key, "GET", "/v1/approvals?state=executed", nil, nil); status != http.StatusOK {
		t.Errorf("the agent listing its approvals = %d", status)
	}
	if status, _ := w.srv.Call(t, "", "GET", "/v1/approvals", nil, nil); status != http.StatusUnauthorized {
		t.Errorf("listing without a credential = %d, want 401", status)
	}
	if status, _ := w.srv.Call(t, bob, "GET", "/v1/approvals?state=bogus", nil, nil); status != http.StatusBadRequest {
		t.Errorf("listing with a bogus state = %d, want 400", status)
	}
	if status, _ := w.srv.Call(t, bob, "POST", "/v1/humans", map[string]any{"name": "eve"}, nil); status != http.StatusUnauthorized {
		t.Errorf("a human creating humans = %d, want 401", status)
	}
}

func TestApprovalQuorumDenyAndWait(t *testing.T) {
	w := startApprovals(t, app.Config{}, "4h")
	bob, carol := w.human(t, "bob", "payments-oncall"), w.human(t, "carol", "payments-oncall")

	big := w.send(t, "6000", nil)
	id := big.problem.ApprovalID
	if status, _, a := w.decide(t, bob, id, "approve", nil); status != http.StatusOK || a.State != approval.Pending {
		t.Fatalf("first of two = %d %s, want still pending", status, a.State)
	}
	if status, d, _ := w.decide(t, bob, id, "approve", nil); status != http.StatusConflict {
		t.Errorf("bob twice = %d %s, want 409", status, d.Code)
	}
	if p := w.send(t, "6000", nil); p.status != http.StatusAccepted {
		t.Errorf("with one of two approvals = %d, want 202", p.status)
	}
	// The caller waits; carol approves meanwhile; the call runs.
	done := make(chan answer, 1)
	go func() { done <- w.send(t, "6000", http.Header{"Prefer": {"wait=30"}}) }()
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, _, a := w.decide(t, carol, id, "approve", nil)
		if status == http.StatusOK && a.State == approval.Approved {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("carol could not approve: %d", status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := <-done; got.status != http.StatusOK {
		t.Fatalf("the waiting call = %d %+v, want 200", got.status, got.problem)
	}
	if n := len(w.bank.received()); n != 1 {
		t.Errorf("the bank received %d transfers, want 1", n)
	}

	d := w.send(t, "3000", nil)
	if status, _, a := w.decide(t, carol, d.problem.ApprovalID, "deny", map[string]string{"comment": "unknown invoice"}); status != http.StatusOK || a.State != approval.Denied {
		t.Fatalf("deny = %d %s", status, a.State)
	}
	if got := w.send(t, "3000", nil); got.status != http.StatusForbidden || got.problem.Code != problem.ApprovalDenied || !strings.Contains(got.problem.Detail, "unknown invoice") {
		t.Errorf("the denied call = %d %+v, want 403 approval_denied with the comment", got.status, got.problem)
	}
}

func TestApprovalExpiresAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	w := startApprovals(t, app.Config{DataDir: dir}, "2s")
	p := w.send(t, "2000", nil)
	id := p.problem.ApprovalID
	if p.status != http.StatusAccepted || id == "" {
		t.Fatalf("send = %d %+v", p.status, p.problem)
	}
	if err := w.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // past the ttl while no replica runs
	srv := apptest.StartWith(t, app.Config{DataDir: dir})
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, raw := srv.Call(t, srv.Token, "GET", "/v1/approvals/"+id, nil, nil)
		var a approval.Approval
		_ = json.Unmarshal(raw, &a)
		if status == http.StatusOK && a.State == approval.Expired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the approval after the restart = %d %s, want expired by the sweep", status, raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.srv = srv
	if got := w.send(t, "2000", nil); got.status != http.StatusForbidden || got.problem.Code != problem.ApprovalExpired {
		t.Errorf("the expired call = %d %s, want 403 approval_expired", got.status, got.problem.Code)
	}
	if n := len(w.bank.received()); n != 0 {
		t.Errorf("the bank received %d transfers", n)
	}
}

// TestApprovalByIssuerUsersFourEyes: users of a trusted Issuer decide with
// their identity provider's token and groups claim; the user an agent acts
// for cannot approve that agent's call.
func TestApprovalByIssuerUsersFourEyes(t *testing.T) {
	idp := oidctest.Start(t)
	w := startApprovals(t, app.Config{}, "4h")
	w.srv.Apply(t, `apiVersion: corral.dev/v1
kind: Issuer
metadata: {name: corp}
spec: {issuer: "`+idp.URL()+`", audience: corral}
`)
	token := func(sub string, groups ...string) string {
		return idp.Token(t, map[string]any{"sub": sub, "aud": "corral", "groups": groups})
	}
	alice := token("alice", "payments-oncall")
	// The agent acts for alice: a delegated token from token exchange.
	form := url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {alice},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
		"client_id":          {"treasurer"},
		"client_secret":      {w.key},
	}
	deadline := time.Now().Add(apptest.Patience)
	var delegated string
	for delegated == "" {
		resp, err := http.PostForm(w.srv.URL+"/oauth2/token", form)
		if err != nil {
			t.Fatal(err)
		}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		delegated = tok.AccessToken
		if delegated == "" {
			if time.Now().After(deadline) {
				t.Fatalf("token exchange: HTTP %d", resp.StatusCode)
			}
			time.Sleep(20 * time.Millisecond) // the Issuer loads in the background
		}
	}
	w.key = delegated
	p := w.send(t, "2000", nil)
	if p.status != http.StatusAccepted {
		t.Fatalf("the delegated call = %d %+v", p.status, p.problem)
	}
	id := p.problem.ApprovalID
	if status, d, _ := w.decide(t, alice, id, "approve", nil); status != http.StatusForbidden || d.Code != problem.ApprovalForbidden {
		t.Errorf("alice approving the call made for her = %d %s, want 403 approval_forbidden", status, d.Code)
	}
	if status, d, _ := w.decide(t, token("mallory", "marketing"), id, "approve", nil); status != http.StatusForbidden {
		t.Errorf("a user outside payments-oncall approving = %d %s, want 403", status, d.Code)
	}
	if status, _, a := w.decide(t, token("oscar", "payments-oncall"), id, "approve", map[string]string{"comment": "fine"}); status != http.StatusOK || a.State != approval.Approved {
		t.Fatalf("oscar approving = %d %s, want approved", status, a.State)
	}
	if a, _ := w.srv.App.Approvals().Get(id); len(a.Decisions) != 1 || !strings.HasPrefix(a.Decisions[0].By, "user:") || a.Action.Principal != "alice" {
		t.Errorf("the approval = %+v, want oscar's decision as a user and alice as principal", a)
	}
	if run := w.send(t, "2000", nil); run.status != http.StatusOK {
		t.Errorf("the approved delegated call = %d %+v", run.status, run.problem)
	}
}

// TestApprovalEventsAndReads: the events stream shows new approvals and
// decisions; reads refuse strangers and malformed ids.
func TestApprovalEventsAndReads(t *testing.T) {
	w := startApprovals(t, app.Config{}, "4h")
	bob := w.human(t, "bob", "payments-oncall")
	req := w.srv.Request(t, "GET", "/v1/approvals/events", nil)
	req.Header.Set("Authorization", "Bearer "+bob)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		buf := make([]byte, 64<<10)
		var pending string
		for {
			n, err := resp.Body.Read(buf)
			pending += string(buf[:n])
			for {
				i := strings.Index(pending, "\n")
				if i < 0 {
					break
				}
				lines <- pending[:i]
				pending = pending[i+1:]
			}
			if err != nil {
				return
			}
		}
	}()
	next := func(want approval.State) approval.Approval {
		t.Helper()
		timeout := time.After(apptest.Patience)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("the stream ended")
				}
				data, found := strings.CutPrefix(l, "data: ")
				if !found {
					continue
				}
				var a approval.Approval
				if json.Unmarshal([]byte(data), &a) == nil && a.State == want {
					return a
				}
			case <-timeout:
				t.Fatalf("no %s approval on the stream", want)
			}
		}
	}
	p := w.send(t, "2000", nil)
	if a := next(approval.Pending); a.ID != p.problem.ApprovalID {
		t.Errorf("the stream's new approval = %s, want %s", a.ID, p.problem.ApprovalID)
	}
	w.decide(t, bob, p.problem.ApprovalID, "deny", nil)
	if a := next(approval.Denied); a.ID != p.problem.ApprovalID {
		t.Errorf("the stream's decision = %s", a.ID)
	}

	for _, tc := range []struct {
		token, path string
		want        int
	}{
		{"", "/v1/approvals/events", http.StatusUnauthorized},
		{"", "/v1/approvals/" + p.problem.ApprovalID, http.StatusUnauthorized},
		{"corral_hk_forged", "/v1/approvals", http.StatusUnauthorized},
		{"not-a-token", "/v1/approvals", http.StatusUnauthorized},
		{bob, "/v1/approvals/%2e%2e", http.StatusNotFound},
		{bob, "/v1/approvals/" + strings.Repeat("z", 500), http.StatusNotFound},
		{bob, "/v1/approvals?limit=0", http.StatusBadRequest},
		{bob, "/v1/approvals?limit=100000", http.StatusBadRequest},
		{bob, "/v1/approvals?after=../x", http.StatusBadRequest},
		{w.key, "/v1/humans", http.StatusUnauthorized},
	} {
		if status, body := w.srv.Call(t, tc.token, "GET", tc.path, nil, nil); status != tc.want {
			t.Errorf("GET %s with %.12q = %d %s, want %d", tc.path, tc.token, status, body, tc.want)
		}
	}
	if status, _ := w.srv.Call(t, bob, "DELETE", "/v1/approvals/"+p.problem.ApprovalID, nil, nil); status != http.StatusMethodNotAllowed {
		t.Errorf("DELETE an approval = %d, want 405", status)
	}
}
