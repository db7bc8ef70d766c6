package app_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/console"
)

// browser is a console session as a browser holds it: the cookie and the
// CSRF token.
type browser struct{ cookie, csrf string }

// consoleCall sends a console request to srv as b, and returns the status,
// the body and the session cookie set, if any.
func consoleCall(t *testing.T, srv *apptest.Server, b browser, method, path string, body any) (int, []byte, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if b.cookie != "" {
		req.Header.Set("Cookie", console.CookieName+"="+b.cookie)
	}
	if b.csrf != "" {
		req.Header.Set(console.CSRFHeader, b.csrf)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	var cookie string
	for _, c := range resp.Cookies() {
		if c.Name == console.CookieName {
			cookie = c.Value
		}
	}
	return resp.StatusCode, out, cookie
}

// signInConsole signs in on srv with credential.
func signInConsole(t *testing.T, srv *apptest.Server, credential string) browser {
	t.Helper()
	status, body, cookie := consoleCall(t, srv, browser{}, "POST", "/ui/api/session", map[string]string{"credential": credential})
	var info console.SessionInfo
	if status != http.StatusOK || json.Unmarshal(body, &info) != nil || cookie == "" {
		t.Fatalf("console sign-in: HTTP %d %s", status, body)
	}
	return browser{cookie: cookie, csrf: info.CSRF}
}

// TestConsoleSessionsAcrossReplicas: two replicas on one NATS, as behind a
// load balancer without sticky sessions. A session made on A works on B
// (reads and the CSRF-guarded sign-out); a sign-out on B ends it on A; a
// session outlives the restart of the replica that made it; a human
// revoked through B loses the session made on A; failed sign-ins counted
// on A hold back sign-ins on B, and are in the audit.
func TestConsoleSessionsAcrossReplicas(t *testing.T) {
	natsURL := bustest.ExternalServer(t)
	dirA := t.TempDir()
	a := apptest.StartWith(t, app.Config{NATSURL: natsURL, DataDir: dirA, WorkerID: "a", NoWorker: true})
	b := apptest.StartWith(t, app.Config{NATSURL: natsURL, WorkerID: "b", NoWorker: true, SecretsKey: filepath.Join(dirA, "secrets.key")})
	status, body := a.Call(t, a.Token, "POST", "/v1/humans", map[string]any{"name": "hana", "groups": []string{"payments-oncall"}}, nil)
	var human struct{ Key string }
	if status != http.StatusCreated || json.Unmarshal(body, &human) != nil {
		t.Fatalf("POST /v1/humans: HTTP %d %s", status, body)
	}

	s := signInConsole(t, a, human.Key)
	if status, body, _ := consoleCall(t, b, s, "GET", "/ui/api/session", nil); status != http.StatusOK || !strings.Contains(string(body), `"name": "hana"`) {
		t.Fatalf("A's session on B: HTTP %d %s", status, body)
	}
	if status, body, _ := consoleCall(t, b, s, "GET", "/ui/api/v1/tasks", nil); status != http.StatusOK {
		t.Fatalf("A's session reads tasks through B: HTTP %d %s", status, body)
	}
	if status, body, _ := consoleCall(t, b, s, "DELETE", "/ui/api/session", nil); status != http.StatusNoContent {
		t.Fatalf("sign-out on B: HTTP %d %s", status, body)
	}
	for name, srv := range map[string]*apptest.Server{"A": a, "B": b} {
		if status, _, _ := consoleCall(t, srv, s, "GET", "/ui/api/v1/tasks", nil); status != http.StatusUnauthorized {
			t.Errorf("after sign-out on B, the cookie on %s: HTTP %d, want 401", name, status)
		}
	}

	// A restart of the replica that made the session signs nobody out.
	s = signInConsole(t, a, a.Token)
	if err := a.Stop(); err != nil {
		t.Fatalf("stop A: %v", err)
	}
	if status, body, _ := consoleCall(t, b, s, "GET", "/ui/api/session", nil); status != http.StatusOK {
		t.Errorf("with A stopped, A's session on B: HTTP %d %s", status, body)
	}
	a = apptest.StartWith(t, app.Config{NATSURL: natsURL, DataDir: dirA, WorkerID: "a", NoWorker: true})
	if status, body, _ := consoleCall(t, a, s, "GET", "/ui/api/session", nil); status != http.StatusOK {
		t.Errorf("the session on A after its restart: HTTP %d %s", status, body)
	}

	// Revoking hana through B ends her session made on A, as soon as A's
	// mirror of the keys hears of it.
	s = signInConsole(t, a, human.Key)
	if status, body := b.Call(t, b.Token, "DELETE", "/v1/humans/hana", nil, nil); status != http.StatusOK {
		t.Fatalf("revoke hana on B: HTTP %d %s", status, body)
	}
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, _, _ := consoleCall(t, a, s, "GET", "/ui/api/session", nil)
		if status == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v after hana was revoked on B, her session on A answers HTTP %d", apptest.Patience, status)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Failed sign-ins on A count on B: from this address, the next one is
	// refused there before its credential is checked.
	for i := range 10 {
		if status, body, _ := consoleCall(t, a, browser{}, "POST", "/ui/api/session", map[string]string{"credential": "corral_hk_guess"}); status != http.StatusUnauthorized {
			t.Fatalf("failed sign-in %d on A: HTTP %d %s", i+1, status, body)
		}
	}
	status, body, _ = consoleCall(t, b, browser{}, "POST", "/ui/api/session", map[string]string{"credential": b.Token})
	if status != http.StatusTooManyRequests || !strings.Contains(string(body), `"code":"rate_limited"`) {
		t.Errorf("a sign-in on B after 10 failures on A: HTTP %d %s, want 429 rate_limited", status, body)
	}
	status, body = b.Call(t, b.Token, "GET", "/v1/audit?tool=sign-in&limit=100", nil, nil)
	var records struct{ Records []audit.Record }
	if status != http.StatusOK || json.Unmarshal(body, &records) != nil {
		t.Fatalf("GET /v1/audit: HTTP %d %s", status, body)
	}
	codes := map[string]int{}
	for _, r := range records.Records {
		if r.Kind == "console" && r.Decision == "denied" {
			codes[r.Code]++
		}
	}
	if codes["unauthenticated"] != 10 || codes["rate_limited"] != 1 {
		t.Errorf("the audit holds console sign-in refusals %v, want 10 unauthenticated and 1 rate_limited", codes)
	}
}
