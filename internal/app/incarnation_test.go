package app_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/app/apptest"
)

// TestDeletedAgentsCredentialsStayDead: an agent's key and token serve that
// agent only, not one created later under the same name. Deleting the agent
// revokes its keys; a key or token that survived (kept by a client, or a
// revocation that failed) is refused for the new agent, at the gateway and
// at /oauth2/token (issue 12.7).
func TestDeletedAgentsCredentialsStayDead(t *testing.T) {
	s := apptest.Start(t)
	const agent = `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec: {}
`
	s.Apply(t, agent)
	key := s.Key(t, "impact")
	token := clientToken(t, s, key)
	for name, cred := range map[string]string{"key": key, "token": token} {
		if status, body := s.Call(t, cred, "GET", "/v1/tools", nil, nil); status != http.StatusOK {
			t.Fatalf("GET /v1/tools with the agent's %s = %d %s, want 200", name, status, body)
		}
	}

	if status, body := s.Call(t, s.Token, "DELETE", "/v1/resources/agents/impact", nil, nil); status != http.StatusOK {
		t.Fatalf("DELETE agent = %d %s", status, body)
	}
	s.Apply(t, agent) // the same name, a new agent

	for name, cred := range map[string]string{"key": key, "token": token} {
		status, body := s.Call(t, cred, "GET", "/v1/tools", nil, nil)
		if status != http.StatusUnauthorized {
			t.Errorf("GET /v1/tools with the deleted agent's %s = %d %s, want 401", name, status, body)
		}
	}
	if status, body := tokenRequest(t, s, key); status != http.StatusUnauthorized {
		t.Errorf("/oauth2/token with the deleted agent's key = %d %s, want 401", status, body)
	}
	if status, body := s.Call(t, s.Token, "GET", "/v1/keys?agent=impact", nil, nil); status != http.StatusOK || strings.Contains(string(body), `"agent"`) {
		t.Errorf("GET /v1/keys?agent=impact after the delete = %d %s, want no keys (revoked with the agent)", status, body)
	}

	// The new agent's own credentials work.
	fresh := s.Key(t, "impact")
	if status, body := s.Call(t, clientToken(t, s, fresh), "GET", "/v1/tools", nil, nil); status != http.StatusOK {
		t.Errorf("GET /v1/tools with the new agent's token = %d %s, want 200", status, body)
	}
}

// tokenRequest asks /oauth2/token for a client_credentials token for agent
// impact with key as its secret.
func tokenRequest(t *testing.T, s *apptest.Server, key string) (int, []byte) {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"impact"}, "client_secret": {key}}
	req, err := http.NewRequestWithContext(t.Context(), "POST", s.URL+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func clientToken(t *testing.T, s *apptest.Server, key string) string {
	t.Helper()
	status, body := tokenRequest(t, s, key)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &tok) != nil || tok.AccessToken == "" {
		t.Fatalf("/oauth2/token = %d %s, want a token", status, body)
	}
	return tok.AccessToken
}
