package app_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
)

// TestPeopleInAdminGroupsAdminister: a corral human in an admin group
// administers with their own key, as the admin token does; a human in
// another group, a revoked admin human and an agent key do not.
func TestPeopleInAdminGroupsAdminister(t *testing.T) {
	srv := apptest.StartWith(t, app.Config{AdminGroups: []string{"corral-admins"}})
	human := func(name, group string) string {
		t.Helper()
		status, body := srv.Call(t, srv.Token, "POST", "/v1/humans", map[string]any{"name": name, "groups": []string{group}}, nil)
		var created struct{ Key string }
		if status != http.StatusCreated || json.Unmarshal(body, &created) != nil {
			t.Fatalf("POST /v1/humans: HTTP %d %s", status, body)
		}
		return created.Key
	}
	ops, sales := human("olga", "corral-admins"), human("sam", "sales")
	srv.Apply(t, "apiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: helper}\nspec: {}\n")
	if status, body := srv.Call(t, ops, "POST", "/v1/keys", map[string]any{"agent": "helper"}, nil); status != http.StatusCreated && status != http.StatusOK {
		t.Errorf("an admin human creates a key: HTTP %d %s", status, body)
	}
	if status, _ := srv.Call(t, ops, "GET", "/v1/resources/agents", nil, nil); status != http.StatusOK {
		t.Errorf("an admin human lists agents: HTTP %d", status)
	}
	agentKey := srv.Key(t, "helper")
	for name, cred := range map[string]string{"a human of another group": sales, "an agent key": agentKey, "a forged human key": "corral_hk_forged"} {
		if status, _ := srv.Call(t, cred, "GET", "/v1/resources/agents", nil, nil); status != http.StatusUnauthorized {
			t.Errorf("%s lists agents: HTTP %d, want 401", name, status)
		}
	}
	if status, body := srv.Call(t, srv.Token, "DELETE", "/v1/humans/olga", nil, nil); status != http.StatusOK {
		t.Fatalf("revoke: HTTP %d %s", status, body)
	}
	if status, _ := srv.Call(t, ops, "GET", "/v1/resources/agents", nil, nil); status != http.StatusUnauthorized {
		t.Errorf("a revoked admin human lists agents: HTTP %d, want 401", status)
	}
}
