package app_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/approval"
)

// inbox records what Slack's incoming webhook (or a CloudEvents endpoint)
// receives.
type inbox struct {
	mu     sync.Mutex
	bodies []string
}

func (i *inbox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	i.mu.Lock()
	i.bodies = append(i.bodies, string(b))
	i.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

func (i *inbox) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(apptest.Patience)
	for {
		i.mu.Lock()
		got := append([]string(nil), i.bodies...)
		i.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d posts, want %d", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const signingSecret = "8f742231b10e8888abcd99yyyzzz85a5"

// slackPress is a button press as Slack sends it, signed at ts with secret.
func slackPress(t *testing.T, base, secret string, ts time.Time, user, action, id string) int {
	t.Helper()
	payload := `{"type":"block_actions","user":{"id":"` + user + `"},"actions":[{"block_id":"corral_approval","action_id":"` + action + `","value":"` + id + `"}]}`
	body := url.Values{"payload": {payload}}.Encode()
	stamp := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("v0:" + stamp + ":" + body))
	req, err := http.NewRequestWithContext(t.Context(), "POST", base+"/v1/slack/interactivity", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", stamp)
	req.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestSlackApproval(t *testing.T) {
	w := startApprovals(t, app.Config{}, "4h")
	slackHook, events := &inbox{}, &inbox{}
	sh, ev := httptest.NewServer(slackHook), httptest.NewServer(events)
	t.Cleanup(sh.Close)
	t.Cleanup(ev.Close)
	w.srv.Apply(t, `apiVersion: corral.dev/v1
kind: Secret
metadata: {name: slack-webhook}
spec: {value: "`+sh.URL+`/services/T0/B0/x"}
---
apiVersion: corral.dev/v1
kind: Secret
metadata: {name: slack-signing}
spec: {value: "`+signingSecret+`"}
---
apiVersion: corral.dev/v1
kind: Secret
metadata: {name: events-url}
spec: {value: "`+ev.URL+`"}
---
apiVersion: corral.dev/v1
kind: Notifier
metadata: {name: payments-slack}
spec:
  slack:
    webhookURL: {secretRef: slack-webhook}
    signingSecret: {secretRef: slack-signing}
---
apiVersion: corral.dev/v1
kind: Notifier
metadata: {name: pager}
spec:
  webhook:
    url: {secretRef: events-url}
`)
	status, body := w.srv.Call(t, w.srv.Token, "POST", "/v1/humans", map[string]any{"name": "bob", "groups": []string{"payments-oncall"}, "slack_user": "U0BOB"}, nil)
	if status != http.StatusCreated {
		t.Fatalf("create bob = %d %s", status, body)
	}
	p := w.send(t, "2500", nil)
	id := p.problem.ApprovalID
	posts := slackHook.wait(t, 1)
	if !strings.Contains(posts[0], `"value":"`+id+`"`) || !strings.Contains(posts[0], "corral_approve") || !strings.Contains(posts[0], "banking.send_money") {
		t.Errorf("the Slack post = %s, want the buttons for %s", posts[0], id)
	}
	var ce struct {
		SpecVersion, Type string
		Data              approval.Approval
	}
	if err := json.Unmarshal([]byte(events.wait(t, 1)[0]), &ce); err != nil || ce.SpecVersion != "1.0" || ce.Type != "dev.corral.approval.requested" || ce.Data.ID != id {
		t.Errorf("the CloudEvent = %+v, %v", ce, err)
	}

	state := func() approval.State {
		_, raw := w.srv.Call(t, w.srv.Token, "GET", "/v1/approvals/"+id, nil, nil)
		var a approval.Approval
		_ = json.Unmarshal(raw, &a)
		return a.State
	}
	now := time.Now()
	for name, tc := range map[string]struct {
		secret string
		ts     time.Time
		user   string
		want   int
	}{
		"bad signature":   {"not-the-secret", now, "U0BOB", http.StatusUnauthorized},
		"stale signature": {signingSecret, now.Add(-10 * time.Minute), "U0BOB", http.StatusUnauthorized},
		"future stamp":    {signingSecret, now.Add(10 * time.Minute), "U0BOB", http.StatusUnauthorized},
		"unmapped user":   {signingSecret, now, "U0EVE", http.StatusOK},
	} {
		if got := slackPress(t, w.srv.URL, tc.secret, tc.ts, tc.user, "corral_approve", id); got != tc.want {
			t.Errorf("%s: HTTP %d, want %d", name, got, tc.want)
		}
		if s := state(); s != approval.Pending {
			t.Fatalf("%s decided the approval: %s", name, s)
		}
	}
	if got := slackPress(t, w.srv.URL, signingSecret, now, "U0BOB", "corral_approve", id); got != http.StatusOK {
		t.Fatalf("a valid press = HTTP %d", got)
	}
	if s := state(); s != approval.Approved {
		t.Fatalf("after bob's press the approval is %s, want approved", s)
	}
	if run := w.send(t, "2500", nil); run.status != http.StatusOK {
		t.Errorf("the approved call = %d %+v", run.status, run.problem)
	}
	// Unsigned garbage and a huge body are refused before anything is read.
	req, _ := http.NewRequestWithContext(t.Context(), "POST", w.srv.URL+"/v1/slack/interactivity", strings.NewReader(strings.Repeat("a", 1<<20)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a huge body = %d, want 413", resp.StatusCode)
	}
}
