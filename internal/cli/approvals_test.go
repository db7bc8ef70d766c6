package cli

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/approval"
)

func TestHumansAndApprovalsCommands(t *testing.T) {
	s := apptest.Start(t)
	admin := []string{"--server", s.URL, "--token", s.Token}
	out, errOut, code := run(t, "", append([]string{"humans", "create", "bob", "--groups", "payments-oncall,ops", "--slack-user", "U0BOB", "-o", "json"}, admin...)...)
	var created struct{ Key, Name string }
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil || !strings.HasPrefix(created.Key, "corral_hk_") || created.Name != "bob" {
		t.Fatalf("humans create -o json = %d %q %q", code, out, errOut)
	}
	if _, errOut, code := run(t, "", append([]string{"humans", "create", "Bad Name"}, admin...)...); code != 1 || !strings.Contains(errOut, "name") {
		t.Errorf("humans create with a bad name = %d %q", code, errOut)
	}
	if out, _, code := run(t, "", append([]string{"humans", "list"}, admin...)...); code != 0 || !strings.Contains(out, "payments-oncall") || strings.Contains(out, created.Key) {
		t.Errorf("humans list = %d %q", code, out)
	}

	a, err := s.App.Approvals().Gate(t.Context(), approval.Request{
		Action:    approval.Action{Agent: "payer", Kind: "tool", Target: "banking.send_money", ArgsDigest: "sha256:00", Arguments: json.RawMessage(`{"amount":2000}`)},
		Requester: "agent:payer", Reasons: []string{"large"}, Rules: approval.Rules{Approvers: []string{"payments-oncall"}, Quorum: 1, TTL: time.Hour},
	})
	if !errors.Is(err, approval.ErrPending) {
		t.Fatal(err)
	}
	if out, _, code := run(t, "", append([]string{"approvals", "list", "--state", "pending"}, admin...)...); code != 0 || !strings.Contains(out, a.ID) {
		t.Errorf("approvals list = %d %q", code, out)
	}
	if out, _, code := run(t, "", append([]string{"approvals", "show", a.ID}, admin...)...); code != 0 || !strings.Contains(out, `{"amount":2000}`) {
		t.Errorf("approvals show = %d %q", code, out)
	}
	if _, errOut, code := run(t, "", append([]string{"approvals", "approve", a.ID}, admin...)...); code != 1 || !strings.Contains(errOut, "approval_forbidden") {
		t.Errorf("the admin approving = %d %q, want approval_forbidden", code, errOut)
	}
	bob := []string{"--server", s.URL, "--token", created.Key}
	if _, errOut, code := run(t, "", append([]string{"approvals", "approve", a.ID, "--comment", "ok"}, bob...)...); code != 0 || !strings.Contains(errOut, "approved") {
		t.Errorf("bob approving = %d %q", code, errOut)
	}
	if _, errOut, code := run(t, "", append([]string{"approvals", "deny", a.ID}, bob...)...); code != 1 || !strings.Contains(errOut, "approval_") {
		t.Errorf("deciding twice = %d %q, want a refusal", code, errOut)
	}
	if _, _, code := run(t, "", append([]string{"humans", "revoke", "bob"}, admin...)...); code != 0 {
		t.Errorf("humans revoke = %d", code)
	}
}
