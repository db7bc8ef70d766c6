package trigger

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/orchestrator"
)

func mac(secret string, parts ...string) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	for _, p := range parts {
		h.Write([]byte(p))
	}
	return h.Sum(nil)
}

func githubSig(secret, body string) string { return "sha256=" + hex.EncodeToString(mac(secret, body)) }

func stripeSig(secret, body string, at time.Time) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, ".", body))
}

type hookReply struct {
	status int
	body   map[string]any
}

func (e *env) post(name string, body []byte, header map[string]string) hookReply {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.hooks.URL+"/hooks/"+name, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return hookReply{resp.StatusCode, out}
}

func githubTrigger(agent string) config.TriggerSpec {
	return config.TriggerSpec{Start: config.TriggerStart{Agent: agent},
		Webhook: &config.WebhookSource{Secret: config.SecretValue{Env: "HOOK_SECRET"}, Signature: config.SignatureGitHub}}
}

func stripeTrigger(agent string) config.TriggerSpec {
	return config.TriggerSpec{Start: config.TriggerStart{Agent: agent},
		Webhook: &config.WebhookSource{Secret: config.SecretValue{Env: "HOOK_SECRET"}, Signature: config.SignatureStripe}}
}

// TestWebhookStartsOneTaskPerEvent: a signed request starts one task whose
// input is the CloudEvent; the same event sent again (GitHub's redelivery,
// Stripe's retry signed anew) answers with the same task.
func TestWebhookStartsOneTaskPerEvent(t *testing.T) {
	e := newEnv(t)
	secret := secrets["HOOK_SECRET"]
	e.apply("gh", githubTrigger("monitor"))
	e.apply("stripe", stripeTrigger("impact"))
	generic := config.TriggerSpec{Start: config.TriggerStart{Agent: "monitor"},
		Webhook: &config.WebhookSource{Secret: config.SecretValue{Env: "HOOK_SECRET"}, Signature: config.SignatureHMAC, Header: "X-Shipping-Signature", TimestampHeader: "X-Shipping-Timestamp", Type: "com.example.port.strike"}}
	e.apply("shipping", generic)

	push := `{"ref":"refs/heads/main","repository":{"full_name":"corral-dev/corral"},"head_commit":{"message":"Grüße aus Zürich 🚢"}}`
	first := e.post("gh", []byte(push), map[string]string{"X-Hub-Signature-256": githubSig(secret, push), "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"})
	if first.status != http.StatusAccepted || first.body["outcome"] != Started {
		t.Fatalf("first delivery: %d %v, want 202 started", first.status, first.body)
	}
	again := e.post("gh", []byte(push), map[string]string{"X-Hub-Signature-256": githubSig(secret, push), "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"})
	if again.status != http.StatusAccepted || again.body["outcome"] != Duplicate || again.body["task"] != first.body["task"] {
		t.Fatalf("redelivery: %d %v, want 202 duplicate of %v", again.status, again.body, first.body["task"])
	}
	// A captured request replayed under another delivery id is still the
	// same signed body: the same event.
	replay := e.post("gh", []byte(push), map[string]string{"X-Hub-Signature-256": githubSig(secret, push), "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-2"})
	if replay.body["outcome"] != Duplicate {
		t.Fatalf("replay with a new delivery id: %v, want duplicate", replay.body)
	}
	tasks := e.started("gh")
	if len(tasks) != 1 {
		t.Fatalf("gh started %d tasks, want 1", len(tasks))
	}
	task := tasks[first.body["task"].(string)]
	var ce map[string]any
	if err := json.Unmarshal(task.Input, &ce); err != nil {
		t.Fatal(err)
	}
	if ce["specversion"] != "1.0" || ce["type"] != "com.github.push" || ce["source"] != "/hooks/gh" || ce["id"] == "" || ce["time"] == nil {
		t.Errorf("task input = %s, want a CloudEvent of type com.github.push from /hooks/gh", task.Input)
	}
	if data, _ := json.Marshal(ce["data"]); !strings.Contains(string(data), "Grüße aus Zürich") {
		t.Errorf("task input data = %s, want the pushed body", data)
	}

	// Stripe retries an event signed anew, with a new t: the event id
	// (evt_...) is the same, so is the task.
	for i, at := range []time.Time{time.Now().Add(-time.Minute), time.Now()} {
		body := `{"id":"evt_1PQ","type":"invoice.paid","data":{"object":{"amount_paid":4200,"currency":"eur"}}}`
		got := e.post("stripe", []byte(body), map[string]string{"Stripe-Signature": stripeSig(secret, body, at)})
		want := []string{Started, Duplicate}[i]
		if got.status != http.StatusAccepted || got.body["outcome"] != want {
			t.Fatalf("stripe delivery %d: %d %v, want 202 %s", i, got.status, got.body, want)
		}
	}
	if tasks := e.started("stripe"); len(tasks) != 1 {
		t.Errorf("stripe started %d tasks, want 1", len(tasks))
	} else {
		for _, task := range tasks {
			if task.Agent != "impact" || !strings.Contains(string(task.Input), `"type":"com.stripe.invoice.paid"`) || !strings.Contains(string(task.Input), `"id":"evt_1PQ"`) {
				t.Errorf("stripe task = %s %s", task.Agent, task.Input)
			}
		}
	}

	// Generic HMAC over "<timestamp>.<body>", base64.
	for i := range 3 {
		body := fmt.Sprintf(`{"port":"Rotterdam","strike":true,"seq":%d}`, i)
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		got := e.post("shipping", []byte(body), map[string]string{
			"X-Shipping-Timestamp": ts, "X-Shipping-Signature": base64.StdEncoding.EncodeToString(mac(secret, ts, ".", body))})
		if got.status != http.StatusAccepted || got.body["outcome"] != Started {
			t.Fatalf("shipping %d: %d %v, want 202 started", i, got.status, got.body)
		}
	}
	if n := len(e.started("shipping")); n != 3 {
		t.Errorf("shipping started %d tasks, want 3", n)
	}
	if got, want := e.count("gh", Received), 3; got != want {
		t.Errorf("gh received = %d, want %d", got, want)
	}
	if got, want := e.count("gh", Duplicate), 2; got != want {
		t.Errorf("gh duplicate = %d, want %d", got, want)
	}
}

// TestWebhookAttacks: nothing that is not signed by the trigger's secret,
// fresh, small and JSON starts a task; each refusal is counted.
func TestWebhookAttacks(t *testing.T) {
	e := newEnv(t)
	secret := secrets["HOOK_SECRET"]
	e.apply("gh", githubTrigger("monitor"))
	e.apply("stripe", stripeTrigger("monitor"))
	small := githubTrigger("monitor")
	small.Webhook.MaxBodyBytes = 1024
	e.apply("small", small)

	body := `{"port":"Antwerp","status":"strike"}`
	now := time.Now()
	big := `{"pad":"` + strings.Repeat("x", 2048) + `"}`
	nonUTF8 := "{\"port\":\"\xff\xfe\"}"
	sig := githubSig(secret, body)
	tests := []struct {
		name        string
		trigger     string
		body        string
		header      map[string]string
		contentType string
		wantStatus  int
		wantCode    string
	}{
		{"unsigned", "gh", body, nil, "", 401, "signature_missing"},
		{"wrong secret", "gh", body, map[string]string{"X-Hub-Signature-256": githubSig("guess", body)}, "", 403, "signature_invalid"},
		{"truncated signature", "gh", body, map[string]string{"X-Hub-Signature-256": sig[:len(sig)-8]}, "", 403, "signature_invalid"},
		{"signature of another body", "gh", body, map[string]string{"X-Hub-Signature-256": githubSig(secret, `{"port":"Antwerp","status":"open"}`)}, "", 403, "signature_invalid"},
		{"sha1 scheme", "gh", body, map[string]string{"X-Hub-Signature-256": "sha1=" + hex.EncodeToString(mac(secret, body)[:20])}, "", 403, "signature_invalid"},
		{"signature in the wrong header", "gh", body, map[string]string{"X-Hub-Signature": sig}, "", 401, "signature_missing"},
		{"uppercase hex of another secret", "gh", body, map[string]string{"X-Hub-Signature-256": strings.ToUpper(githubSig("other", body))}, "", 403, "signature_invalid"},
		{"stripe replayed after the window", "stripe", body, map[string]string{"Stripe-Signature": stripeSig(secret, body, now.Add(-10*time.Minute))}, "", 403, "signature_expired"},
		{"stripe signed in the future", "stripe", body, map[string]string{"Stripe-Signature": stripeSig(secret, body, now.Add(time.Hour))}, "", 403, "signature_expired"},
		{"stripe timestamp swapped", "stripe", body, map[string]string{"Stripe-Signature": strings.Replace(stripeSig(secret, body, now.Add(-10*time.Minute)), "t="+strconv.FormatInt(now.Add(-10*time.Minute).Unix(), 10), "t="+strconv.FormatInt(now.Unix(), 10), 1)}, "", 403, "signature_invalid"},
		{"stripe without t", "stripe", body, map[string]string{"Stripe-Signature": "v1=" + hex.EncodeToString(mac(secret, body))}, "", 403, "signature_invalid"},
		{"stripe v0 only", "stripe", body, map[string]string{"Stripe-Signature": "t=" + strconv.FormatInt(now.Unix(), 10) + ",v0=" + hex.EncodeToString(mac(secret, body))}, "", 403, "signature_invalid"},
		{"huge body", "small", big, map[string]string{"X-Hub-Signature-256": githubSig(secret, big)}, "", 413, "request_too_large"},
		{"form-encoded", "gh", "payload=" + body, map[string]string{"X-Hub-Signature-256": githubSig(secret, "payload="+body)}, "application/x-www-form-urlencoded", 415, "unsupported_media_type"},
		{"no content type", "gh", body, map[string]string{"X-Hub-Signature-256": sig}, "-", 415, "unsupported_media_type"},
		{"signed but not UTF-8", "gh", nonUTF8, map[string]string{"X-Hub-Signature-256": githubSig(secret, nonUTF8)}, "", 400, "invalid_request"},
		{"signed but not JSON", "gh", "port=Antwerp", map[string]string{"X-Hub-Signature-256": githubSig(secret, "port=Antwerp")}, "", 400, "invalid_request"},
		{"no such trigger", "nope", body, map[string]string{"X-Hub-Signature-256": sig}, "", 404, "trigger_not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.hooks.URL+"/hooks/"+tt.trigger, strings.NewReader(tt.body))
			switch tt.contentType {
			case "":
				req.Header.Set("Content-Type", "application/json")
			case "-":
			default:
				req.Header.Set("Content-Type", tt.contentType)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p struct{ Code string }
			_ = json.NewDecoder(resp.Body).Decode(&p)
			if resp.StatusCode != tt.wantStatus || p.Code != tt.wantCode {
				t.Errorf("POST /hooks/%s = %d %s, want %d %s", tt.trigger, resp.StatusCode, p.Code, tt.wantStatus, tt.wantCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", ct)
			}
		})
	}
	tasks, _ := e.tasks.List(orchestrator.Filter{})
	if len(tasks) != 0 {
		t.Errorf("%d tasks started by refused requests, want none", len(tasks))
	}
	refused := e.count("gh", Refused) + e.count("stripe", Refused) + e.count("small", Refused)
	if want := len(tests) - 1; refused != want {
		t.Errorf("refused = %d, want %d (every refusal but the unknown trigger)", refused, want)
	}
}

// TestWebhookMaxConcurrent: over maxConcurrent live tasks, an event is
// answered 429 trigger_busy and starts nothing; once a task ends it starts.
func TestWebhookMaxConcurrent(t *testing.T) {
	e := newEnv(t)
	secret := secrets["HOOK_SECRET"]
	spec := githubTrigger("monitor")
	spec.MaxConcurrent = 2
	e.apply("gh", spec)
	send := func(i int) hookReply {
		body := fmt.Sprintf(`{"n":%d}`, i)
		return e.post("gh", []byte(body), map[string]string{"X-Hub-Signature-256": githubSig(secret, body)})
	}
	var first string
	for i := range 2 {
		got := send(i)
		if got.body["outcome"] != Started {
			t.Fatalf("event %d: %d %v, want started", i, got.status, got.body)
		}
		if i == 0 {
			first = got.body["task"].(string)
		}
	}
	busy := send(2)
	if busy.status != http.StatusTooManyRequests || busy.body["code"] != "trigger_busy" {
		t.Fatalf("third event: %d %v, want 429 trigger_busy", busy.status, busy.body)
	}
	// A duplicate of a started event is not held back by the cap.
	if dup := send(0); dup.body["outcome"] != Duplicate {
		t.Fatalf("duplicate at the cap: %v, want duplicate", dup.body)
	}
	if _, err := e.tasks.Cancel(t.Context(), first, "test", ""); err != nil {
		t.Fatal(err)
	}
	e.waitFor(patience, "a place under the cap", func() bool { return send(2).body["outcome"] == Started })
	if n := len(e.started("gh")); n != 3 {
		t.Errorf("started %d tasks, want 3", n)
	}
	if e.count("gh", Deferred) < 1 {
		t.Errorf("deferred = 0, want the busy event counted")
	}
}

// TestDeadLetters: an event whose task cannot be made (agent missing,
// chain too deep, a cycle) goes to the dead-letter queue, once, and the
// sender is told so; it is not retried forever.
func TestDeadLetters(t *testing.T) {
	e := newEnv(t)
	secret := secrets["HOOK_SECRET"]
	e.apply("ghost", githubTrigger("nobody"))
	e.apply("gh", githubTrigger("monitor"))
	wf := githubTrigger("")
	wf.Start = config.TriggerStart{Workflow: "port-strike"}
	e.apply("wf", wf)
	body := `{"port":"Felixstowe"}`
	h := map[string]string{"X-Hub-Signature-256": githubSig(secret, body)}
	if got := e.post("ghost", []byte(body), h); got.status != http.StatusAccepted || got.body["outcome"] != DeadLettered {
		t.Fatalf("missing agent: %d %v, want 202 dead_lettered", got.status, got.body)
	}
	if got := e.post("wf", []byte(body), h); got.body["outcome"] != DeadLettered {
		t.Fatalf("workflow without workflows: %v, want dead_lettered", got.body)
	}
	chain := func(agents string) map[string]string {
		return map[string]string{"X-Hub-Signature-256": githubSig(secret, body), "ce-corralchain": agents}
	}
	if got := e.post("gh", []byte(body), chain("a,b,c,d,e")); got.body["outcome"] != DeadLettered {
		t.Errorf("chain of 5: %v, want dead_lettered", got.body)
	}
	if got := e.post("gh", []byte(body), chain("planner,monitor")); got.body["outcome"] != DeadLettered {
		t.Errorf("cycle: %v, want dead_lettered", got.body)
	}
	if got := e.post("gh", []byte(body), chain("Not An Agent")); got.body["outcome"] != DeadLettered {
		t.Errorf("bad chain: %v, want dead_lettered", got.body)
	}
	got := e.post("gh", []byte(body), map[string]string{"X-Hub-Signature-256": githubSig(secret, body), "ce-corralchain": "planner,scout", "ce-corralparent": "task_0000000000000000000000000a"})
	if got.body["outcome"] != Started {
		t.Fatalf("chain of 2: %v, want started", got.body)
	}
	task, err := e.tasks.Get(t.Context(), got.body["task"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(task.Chain, ",") != "planner,scout" || task.Parent != "task_0000000000000000000000000a" {
		t.Errorf("task chain %v parent %q, want [planner scout] under task_0000000000000000000000000a", task.Chain, task.Parent)
	}
	if n := len(e.dead.list()); n != 5 {
		t.Errorf("dead letters = %v, want 5", e.dead.list())
	}
	if got := e.count("ghost", DeadLettered); got != 1 {
		t.Errorf("dead_lettered{ghost} = %d, want 1", got)
	}
}

// TestTriggersFollowTheRegistry: a trigger deleted stops taking requests.
func TestTriggersFollowTheRegistry(t *testing.T) {
	e := newEnv(t)
	e.apply("gh", githubTrigger("monitor"))
	e.res.del("Trigger", "gh")
	e.waitFor(patience, "trigger gone", func() bool { _, ok := e.m.Lookup("gh"); return !ok })
	body := `{}`
	if got := e.post("gh", []byte(body), map[string]string{"X-Hub-Signature-256": githubSig(secrets["HOOK_SECRET"], body)}); got.status != http.StatusNotFound {
		t.Errorf("after delete: %d, want 404", got.status)
	}
}
