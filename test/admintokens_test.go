package test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestIdentityAdminTokens: admin credentials stop being immortal. A person's
// token is made with an expiry, listed, used and revoked with the CLI; the
// file token is revoked too and a restart does not bring it back.
func TestIdentityAdminTokens(t *testing.T) {
	p := startCorral(t)
	out, stderr, exit := runCLI(t, p.env(), "admin-tokens", "create", "--name", "alice", "--ttl", "8h", "-o", "json")
	var created struct {
		Token, ID, Name string
		Expires         *string
	}
	if exit != 0 || json.Unmarshal([]byte(out), &created) != nil || created.Expires == nil || !strings.HasPrefix(created.Token, "corral_admin_") {
		t.Fatalf("admin-tokens create: exit %d %s %s", exit, out, stderr)
	}
	alice := []string{"CORRAL_SERVER=" + p.URL, "CORRAL_TOKEN=" + created.Token}
	out, stderr, exit = runCLI(t, alice, "admin-tokens", "list")
	if exit != 0 || !strings.Contains(out, created.ID) || !strings.Contains(out, "admin.token") {
		t.Fatalf("admin-tokens list with alice's token: exit %d\n%s%s", exit, out, stderr)
	}
	if strings.Contains(out, created.Token) || strings.Contains(out, p.Token) {
		t.Errorf("admin-tokens list shows a token:\n%s", out)
	}

	// Alice revokes the file's token; it stops working, hers goes on.
	var list struct{ Items []struct{ ID, Name string } }
	out, _, _ = runCLI(t, alice, "admin-tokens", "list", "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	fileID := ""
	for _, it := range list.Items {
		if it.Name == "admin.token" {
			fileID = it.ID
		}
	}
	if out, stderr, exit := runCLI(t, alice, "admin-tokens", "revoke", fileID); exit != 0 {
		t.Fatalf("revoke the file token: exit %d\n%s%s", exit, out, stderr)
	}
	if r := request(t, "GET", p.URL+"/v1/admin-tokens", p.Token, ""); r.status != http.StatusUnauthorized {
		t.Errorf("the revoked file token: HTTP %d, want 401", r.status)
	}
	// A restart does not register the revoked file token again.
	p.stop(t, sigterm)
	p2 := startCorral(t, "--data", p.Data)
	if r := request(t, "GET", p2.URL+"/v1/admin-tokens", p2.Token, ""); r.status != http.StatusUnauthorized {
		t.Errorf("the revoked file token after a restart: HTTP %d, want 401", r.status)
	}
	alice = []string{"CORRAL_SERVER=" + p2.URL, "CORRAL_TOKEN=" + created.Token}
	if out, stderr, exit := runCLI(t, alice, "admin-tokens", "revoke", created.ID); exit != 0 {
		t.Fatalf("alice revokes her own token: exit %d\n%s%s", exit, out, stderr)
	}
	if r := request(t, "GET", p2.URL+"/v1/admin-tokens", created.Token, ""); r.status != http.StatusUnauthorized {
		t.Errorf("alice's revoked token: HTTP %d, want 401", r.status)
	}
}
