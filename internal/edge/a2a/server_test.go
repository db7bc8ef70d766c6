package a2a_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
)

// agents are a hosted agent that answers at once and one that asks first.
const agents = `apiVersion: corral.dev/v1
kind: Model
metadata: {name: quick}
spec:
  provider: scripted
  script:
    - content: "Rotterdam: 3 orders this week."
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: careful}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: request_input, arguments: {question: "Refund 400 EUR to Ada?"}}]
    - content: "Refunded, as you confirmed."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec: {description: "Finds the orders a port closure hits.", model: quick, models: [quick], tools: ["erp.*"], instructions: "You are the SECRET impact analyst prompt."}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: refunds}
spec: {description: "Refunds orders.", model: careful, models: [careful]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: outsider}
spec: {description: "An external agent."}
`

type rpcResult struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    []struct {
			Reason, Domain string
		} `json:"data"`
	} `json:"error"`
}

func (r rpcResult) problem() string {
	if r.Error == nil || len(r.Error.Data) == 0 {
		return ""
	}
	return r.Error.Data[0].Reason
}

type task struct {
	ID        string `json:"id"`
	ContextID string `json:"contextId"`
	Status    struct {
		State   string `json:"state"`
		Message *struct {
			Parts []struct{ Text string } `json:"parts"`
		} `json:"message"`
	} `json:"status"`
	Artifacts []struct {
		Parts []struct {
			Text string          `json:"text"`
			Data json.RawMessage `json:"data"`
		} `json:"parts"`
	} `json:"artifacts"`
	History []struct {
		Role  string                  `json:"role"`
		Parts []struct{ Text string } `json:"parts"`
	} `json:"history"`
	Metadata map[string]any `json:"metadata"`
}

// rpc calls a JSON-RPC method of an agent, with A2A-Version 1.0 unless
// header says otherwise.
func rpc(t *testing.T, srv *apptest.Server, token, agent, method string, params any, header http.Header) (int, rpcResult) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
	h := http.Header{"A2A-Version": {"1.0"}, "Content-Type": {"application/json"}}
	for k, v := range header {
		h[k] = v
	}
	req := srv.Request(t, "POST", "/a2a/"+agent, body)
	req.Header = h
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out rpcResult
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s: HTTP %d: not JSON-RPC: %v", method, resp.StatusCode, err)
	}
	if out.JSONRPC != "2.0" || string(out.ID) != "7" {
		t.Fatalf("%s: envelope %+v", method, out)
	}
	return resp.StatusCode, out
}

func message(text string, extra map[string]any) map[string]any {
	m := map[string]any{"messageId": fmt.Sprintf("msg-%s-%d", strings.ReplaceAll(text, " ", "-"), len(text)), "role": "ROLE_USER", "parts": []any{map[string]any{"text": text}}}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func sendTask(t *testing.T, srv *apptest.Server, token, agent string, params map[string]any) task {
	t.Helper()
	_, r := rpc(t, srv, token, agent, "SendMessage", params, nil)
	if r.Error != nil {
		t.Fatalf("SendMessage: %d %s (%s)", r.Error.Code, r.Error.Message, r.problem())
	}
	var res struct{ Task *task }
	if err := json.Unmarshal(r.Result, &res); err != nil || res.Task == nil {
		t.Fatalf("SendMessage result %s: want a task", r.Result)
	}
	return *res.Task
}

// TestSendMessageIsACorralTask: a message to a hosted agent is a corral
// task; by default the call waits for it; the task reads back with
// GetTask, ListTasks and the task API; a retried message is the same task.
func TestSendMessageIsACorralTask(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, agents)
	key := srv.Key(t, "impact")

	params := map[string]any{"message": message("Which orders ship through Rotterdam?", map[string]any{"contextId": "ctx-ops-1"})}
	got := sendTask(t, srv, key, "impact", params)
	if got.Status.State != "TASK_STATE_COMPLETED" || len(got.Artifacts) != 1 || got.Artifacts[0].Parts[0].Text != "Rotterdam: 3 orders this week." {
		t.Fatalf("task = %+v", got)
	}
	if got.ContextID != "ctx-ops-1" || len(got.History) < 2 || got.History[0].Role != "ROLE_USER" || got.History[0].Parts[0].Text != "Which orders ship through Rotterdam?" {
		t.Errorf("context %q history %+v", got.ContextID, got.History)
	}
	again := sendTask(t, srv, key, "impact", params)
	if again.ID != got.ID {
		t.Errorf("the same message sent again made task %s, want %s", again.ID, got.ID)
	}
	status, body := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+got.ID, nil, nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"state": "completed"`) {
		t.Errorf("GET /v1/tasks/%s: HTTP %d %s", got.ID, status, body)
	}
	_, r := rpc(t, srv, key, "impact", "GetTask", map[string]any{"id": got.ID, "historyLength": 0}, nil)
	var one task
	if r.Error != nil || json.Unmarshal(r.Result, &one) != nil || one.ID != got.ID || one.History != nil || one.Status.State != "TASK_STATE_COMPLETED" {
		t.Errorf("GetTask = %s %+v", r.Result, r.Error)
	}
	// A corral token (client_credentials) is as good as the key.
	resp, err := http.PostForm(srv.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"impact"}, "client_secret": {key}})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if _, r := rpc(t, srv, tok.AccessToken, "impact", "GetTask", map[string]any{"id": got.ID}, nil); tok.AccessToken == "" || r.Error != nil {
		t.Errorf("GetTask with a corral token: %+v (token %q)", r.Error, tok.AccessToken)
	}
	_, r = rpc(t, srv, key, "impact", "ListTasks", map[string]any{"contextId": "ctx-ops-1", "includeArtifacts": true}, nil)
	var list struct {
		Tasks         []task
		NextPageToken *string
		TotalSize     int
	}
	if r.Error != nil || json.Unmarshal(r.Result, &list) != nil || len(list.Tasks) != 1 || list.NextPageToken == nil || len(list.Tasks[0].Artifacts) != 1 {
		t.Errorf("ListTasks = %s %+v", r.Result, r.Error)
	}
}

// TestA2ARefusesWhatItShould: no version, no credential, another agent's
// task, another agent's endpoint, an external agent, a bad method, bad
// params: each a JSON-RPC error with A2A's code and corral's problem code.
func TestA2ARefusesWhatItShould(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, agents)
	impact, refunds := srv.Key(t, "impact"), srv.Key(t, "refunds")
	mine := sendTask(t, srv, impact, "impact", map[string]any{"message": message("mine", nil)})

	cases := []struct {
		name, token, agent, method string
		params                     any
		header                     http.Header
		status, code               int
		problem                    string
	}{
		{"no version header", impact, "impact", "GetTask", map[string]any{"id": mine.ID}, http.Header{"A2A-Version": nil}, 200, -32009, "invalid_request"},
		{"version 0.3", impact, "impact", "GetTask", map[string]any{"id": mine.ID}, http.Header{"A2A-Version": {"0.3"}}, 200, -32009, "invalid_request"},
		{"no credential", "", "impact", "GetTask", map[string]any{"id": mine.ID}, nil, 401, -31401, "unauthenticated"},
		{"forged key", "ck_forged", "impact", "GetTask", map[string]any{"id": mine.ID}, nil, 401, -31401, "unauthenticated"},
		{"another agent's task", refunds, "impact", "GetTask", map[string]any{"id": mine.ID}, nil, 200, -32001, "task_not_found"},
		{"its task at another endpoint", impact, "refunds", "GetTask", map[string]any{"id": mine.ID}, nil, 200, -32001, "task_not_found"},
		{"another agent's cancel", refunds, "impact", "CancelTask", map[string]any{"id": mine.ID}, nil, 200, -32001, "task_not_found"},
		{"work for another agent", refunds, "impact", "SendMessage", map[string]any{"message": message("do my work", nil)}, nil, 200, -31403, "policy_denied"},
		{"an external agent", srv.Token, "outsider", "GetTask", map[string]any{"id": mine.ID}, nil, 200, -32601, "resource_not_found"},
		{"an agent that does not exist", srv.Token, "nobody", "GetTask", map[string]any{"id": mine.ID}, nil, 200, -32601, "resource_not_found"},
		{"v0.3 method", impact, "impact", "message/send", map[string]any{}, nil, 200, -32601, "invalid_request"},
		{"no such task", impact, "impact", "GetTask", map[string]any{"id": "task_01jd8x0000000000000000000"}, nil, 200, -32001, "task_not_found"},
		{"wrongly typed id", impact, "impact", "GetTask", map[string]any{"id": 42}, nil, 200, -32602, "invalid_request"},
		{"no message", impact, "impact", "SendMessage", map[string]any{}, nil, 200, -32602, "invalid_request"},
		{"agent role", impact, "impact", "SendMessage", map[string]any{"message": message("hi", map[string]any{"role": "ROLE_AGENT"})}, nil, 200, -32602, "invalid_request"},
		{"a file", impact, "impact", "SendMessage", map[string]any{"message": message("hi", map[string]any{"parts": []any{map[string]any{"url": "file:///etc/passwd"}}})}, nil, 200, -32005, "unsupported_media_type"},
		{"two contents in a part", impact, "impact", "SendMessage", map[string]any{"message": message("hi", map[string]any{"parts": []any{map[string]any{"text": "a", "data": 1}}})}, nil, 200, -32602, "invalid_request"},
		{"a message to a task that ended", impact, "impact", "SendMessage", map[string]any{"message": message("more", map[string]any{"taskId": mine.ID})}, nil, 200, -32004, "task_ended"},
		{"cancel a task that ended", impact, "impact", "CancelTask", map[string]any{"id": mine.ID}, nil, 200, -32002, "task_ended"},
		{"subscribe to a task that ended", impact, "impact", "SubscribeToTask", map[string]any{"id": mine.ID}, nil, 200, -32004, "task_ended"},
		{"bad page size", impact, "impact", "ListTasks", map[string]any{"pageSize": 0}, nil, 200, -32602, "invalid_request"},
		{"bad status", impact, "impact", "ListTasks", map[string]any{"status": "done"}, nil, 200, -32602, "invalid_request"},
		{"a chain that is not a list", impact, "impact", "SendMessage", map[string]any{"message": message("hi", map[string]any{"metadata": map[string]any{"corral.dev/chain": "impact"}})}, nil, 200, -32602, "invalid_request"},
		{"a chain with a bad name", impact, "impact", "SendMessage", map[string]any{"message": message("hi", map[string]any{"metadata": map[string]any{"corral.dev/chain": []any{"../x"}}})}, nil, 200, -32602, "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, r := rpc(t, srv, c.token, c.agent, c.method, c.params, c.header)
			if status != c.status || r.Error == nil || r.Error.Code != c.code || r.problem() != c.problem {
				t.Errorf("HTTP %d %+v, want HTTP %d code %d problem %s", status, r.Error, c.status, c.code, c.problem)
			}
		})
	}
	huge := `{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"` + strings.Repeat("x", 2<<20) + `"}]}}}`
	deep := `{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}}`
	for _, body := range []string{huge, deep, `{"jsonrpc":"2.0","id":1,"method":`, `[{"jsonrpc":"2.0","id":1,"method":"GetTask"}]`, `{"jsonrpc":"1.0","id":1,"method":"GetTask"}`, `{"jsonrpc":"2.0","id":{"x":1},"method":"GetTask"}`, `{"jsonrpc":"2.0","id":1,"method":"GetTask","params":[1]}`} {
		req := srv.Request(t, "POST", "/a2a/impact", []byte(body))
		req.Header.Set("Authorization", "Bearer "+impact)
		req.Header.Set("A2A-Version", "1.0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var r rpcResult
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if err != nil || r.Error == nil || r.Error.Code > -32600 || r.Error.Code < -32700 {
			t.Errorf("%s: HTTP %d %+v, want a JSON-RPC parse or request error", truncate(body, 100), resp.StatusCode, r.Error)
		}
	}
}

// TestInputRequiredAndCancel: a task that asks is INPUT_REQUIRED with the
// question; the answer is a message with its taskId; a task waiting can
// be canceled.
func TestInputRequiredAndCancel(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, agents)
	key := srv.Key(t, "refunds")
	asked := sendTask(t, srv, key, "refunds", map[string]any{"message": message("refund order 42", nil)})
	if asked.Status.State != "TASK_STATE_INPUT_REQUIRED" || asked.Status.Message == nil || asked.Status.Message.Parts[0].Text != "Refund 400 EUR to Ada?" {
		t.Fatalf("task = %+v", asked)
	}
	done := sendTask(t, srv, key, "refunds", map[string]any{"message": message("yes, refund it", map[string]any{"taskId": asked.ID})})
	if done.ID != asked.ID || done.Status.State != "TASK_STATE_COMPLETED" || done.Artifacts[0].Parts[0].Text != "Refunded, as you confirmed." {
		t.Fatalf("answered task = %+v", done)
	}
	var texts []string
	for _, h := range done.History {
		texts = append(texts, h.Role+":"+h.Parts[0].Text)
	}
	if want := "ROLE_USER:refund order 42|ROLE_AGENT:Refund 400 EUR to Ada?|ROLE_USER:yes, refund it|ROLE_AGENT:Refunded, as you confirmed."; strings.Join(texts, "|") != want {
		t.Errorf("history = %q, want %q", strings.Join(texts, "|"), want)
	}

	waiting := sendTask(t, srv, key, "refunds", map[string]any{"message": message("refund order 43", nil)})
	_, r := rpc(t, srv, key, "refunds", "CancelTask", map[string]any{"id": waiting.ID}, nil)
	var canceled task
	if r.Error != nil || json.Unmarshal(r.Result, &canceled) != nil || canceled.Status.State != "TASK_STATE_CANCELED" {
		t.Errorf("CancelTask = %s %+v", r.Result, r.Error)
	}
}

// TestChainExtension: a message whose chain already holds the agent is
// refused (agent_cycle, naming the chain); a chain five deep too
// (agent_depth); a shorter one makes a task that carries it.
func TestChainExtension(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, agents)
	chain := func(names ...string) map[string]any {
		return map[string]any{"corral.dev/chain": names}
	}
	_, r := rpc(t, srv, srv.Token, "impact", "SendMessage", map[string]any{"message": message("loop", map[string]any{"metadata": chain("impact", "planner")})}, nil)
	if r.problem() != "agent_cycle" || r.Error.Code != -31409 || !strings.Contains(r.Error.Message, "impact → planner → impact") {
		t.Errorf("cycle: %+v", r.Error)
	}
	_, r = rpc(t, srv, srv.Token, "impact", "SendMessage", map[string]any{"message": message("deep", map[string]any{"metadata": chain("a", "b", "c", "d", "e")})}, nil)
	if r.problem() != "agent_depth" {
		t.Errorf("depth: %+v", r.Error)
	}
	ok := sendTask(t, srv, srv.Token, "impact", map[string]any{"message": message("fine", map[string]any{"metadata": chain("a", "b", "c", "d")})})
	if got := fmt.Sprint(ok.Metadata["corral.dev/chain"]); got != "[a b c d]" {
		t.Errorf("task chain = %s, want [a b c d]", got)
	}
	// A chain that ends with the agent it is sent to, as corral writes it,
	// counts without that last entry.
	named := sendTask(t, srv, srv.Token, "impact", map[string]any{"message": message("named", map[string]any{"metadata": chain("planner", "impact")})})
	if got := fmt.Sprint(named.Metadata["corral.dev/chain"]); got != "[planner]" {
		t.Errorf("task chain = %s, want [planner]", got)
	}
	_, r = rpc(t, srv, srv.Token, "impact", "SendMessage", map[string]any{"message": message("self", map[string]any{"metadata": chain("impact", "impact")})}, nil)
	if r.problem() != "agent_cycle" {
		t.Errorf("impact calling itself: %+v", r.Error)
	}
}

// TestCardsAndStreaming: the public card names the agent and its JSON-RPC
// interface and keeps its instructions private; the extended card (with a
// credential) has them; the directory lists hosted agents only; a stream
// starts with the task and ends with its completion.
func TestCardsAndStreaming(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, agents)
	key := srv.Key(t, "impact")
	status, body := srv.Call(t, "", "GET", "/a2a/impact/.well-known/agent-card.json", nil, nil)
	if status != http.StatusOK || strings.Contains(string(body), "SECRET") || !strings.Contains(string(body), `"url": "`+srv.URL+`/a2a/impact"`) && !strings.Contains(string(body), `"url":"`+srv.URL+`/a2a/impact"`) {
		t.Errorf("public card: HTTP %d %s", status, body)
	}
	status, body = srv.Call(t, key, "GET", "/a2a/impact/.well-known/agent-card.json", nil, nil)
	if status != http.StatusOK || !strings.Contains(string(body), "SECRET") || !strings.Contains(string(body), "erp.*") {
		t.Errorf("extended card: HTTP %d %s", status, body)
	}
	status, _ = srv.Call(t, "ck_forged", "GET", "/a2a/impact/.well-known/agent-card.json", nil, nil)
	if status != http.StatusUnauthorized {
		t.Errorf("card with a forged key: HTTP %d, want 401", status)
	}
	status, body = srv.Call(t, "", "GET", "/a2a/", nil, nil)
	var dir struct{ Agents []struct{ Name string } }
	if err := json.Unmarshal(body, &dir); status != http.StatusOK || err != nil || len(dir.Agents) != 2 || dir.Agents[0].Name != "impact" || dir.Agents[1].Name != "refunds" {
		t.Errorf("directory: HTTP %d %s", status, body)
	}

	raw, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": "s1", "method": "SendStreamingMessage", "params": map[string]any{"message": message("stream it", nil)}})
	req := srv.Request(t, "POST", "/a2a/impact", raw)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("A2A-Version", "1.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	var kinds []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok {
			continue
		}
		var ev struct {
			ID     string
			Result map[string]json.RawMessage
		}
		if err := json.Unmarshal(data, &ev); err != nil || ev.ID != "s1" {
			t.Fatalf("event %s: %v", data, err)
		}
		for k := range ev.Result {
			kinds = append(kinds, k)
		}
		if st, ok := ev.Result["statusUpdate"]; ok && strings.Contains(string(st), "TASK_STATE_COMPLETED") {
			kinds = append(kinds, "completed")
		}
	}
	got := strings.Join(kinds, " ")
	if !strings.HasPrefix(got, "task ") || !strings.HasSuffix(got, "artifactUpdate statusUpdate completed") {
		t.Errorf("stream = %s, want task ... artifactUpdate statusUpdate(completed)", got)
	}
}

// TestPushNotifications: a webhook given with the message receives the
// task's updates, ending with the completed task, with its credentials;
// configs read back without them and can be deleted. A loopback webhook
// is refused unless the admin allows private targets.
func TestPushNotifications(t *testing.T) {
	type hit struct {
		auth, token string
		body        map[string]json.RawMessage
	}
	hits := make(chan hit, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]json.RawMessage
		_ = json.NewDecoder(r.Body).Decode(&body)
		hits <- hit{r.Header.Get("Authorization"), r.Header.Get("X-A2A-Notification-Token"), body}
	}))
	t.Cleanup(hook.Close)

	strict := apptest.Start(t)
	strict.Apply(t, agents)
	_, r := rpc(t, strict, strict.Token, "impact", "SendMessage", map[string]any{
		"message":       message("push it", nil),
		"configuration": map[string]any{"taskPushNotificationConfig": map[string]any{"url": hook.URL}},
	}, nil)
	if r.problem() != "invalid_request" || !strings.Contains(r.Error.Message, "not a public address") {
		t.Errorf("a loopback webhook by default: %+v", r.Error)
	}

	srv := apptest.StartWith(t, app.Config{A2APushAllowPrivate: true})
	srv.Apply(t, agents)
	key := srv.Key(t, "refunds")
	asked := sendTask(t, srv, key, "refunds", map[string]any{
		"message": message("refund order 7", nil),
		"configuration": map[string]any{"taskPushNotificationConfig": map[string]any{
			"id": "ops", "url": hook.URL + "/a2a", "token": "tok-7", "authentication": map[string]any{"scheme": "Bearer", "credentials": "hook-secret"},
		}},
	})
	_, r = rpc(t, srv, key, "refunds", "ListTaskPushNotificationConfigs", map[string]any{"taskId": asked.ID}, nil)
	if r.Error != nil || !strings.Contains(string(r.Result), `"id":"ops"`) || strings.Contains(string(r.Result), "hook-secret") || strings.Contains(string(r.Result), "tok-7") {
		t.Errorf("List = %s %+v", r.Result, r.Error)
	}
	sendTask(t, srv, key, "refunds", map[string]any{"message": message("yes", map[string]any{"taskId": asked.ID})})
	var states []string
	for done := false; !done; {
		select {
		case h := <-hits:
			if h.auth != "Bearer hook-secret" || h.token != "tok-7" {
				t.Errorf("webhook credentials %q %q", h.auth, h.token)
			}
			for k, v := range h.body {
				var x struct {
					Status struct{ State string }
				}
				_ = json.Unmarshal(v, &x)
				states = append(states, k+":"+x.Status.State)
				done = k == "task" && x.Status.State == "TASK_STATE_COMPLETED"
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("webhook got %v, and no completed task in 20s", states)
		}
	}
	if !slices.Contains(states, "statusUpdate:TASK_STATE_INPUT_REQUIRED") {
		t.Errorf("webhook got %v, want the input-required update too", states)
	}
	_, r = rpc(t, srv, key, "refunds", "DeleteTaskPushNotificationConfig", map[string]any{"taskId": asked.ID, "id": "ops"}, nil)
	if r.Error != nil {
		t.Errorf("Delete: %+v", r.Error)
	}
	_, r = rpc(t, srv, key, "refunds", "GetTaskPushNotificationConfig", map[string]any{"taskId": asked.ID, "id": "ops"}, nil)
	if r.Error == nil {
		t.Errorf("Get after Delete = %s", r.Result)
	}
	_, r = rpc(t, srv, srv.Key(t, "impact"), "refunds", "ListTaskPushNotificationConfigs", map[string]any{"taskId": asked.ID}, nil)
	if r.problem() != "task_not_found" {
		t.Errorf("another agent lists the configs: %s %+v", r.Result, r.Error)
	}
}

// TestSubscribeToTask: a subscription to a task waiting for input starts
// with the task as it is, and follows it through the answer to its end.
func TestSubscribeToTask(t *testing.T) {
	srv := apptest.Start(t)
	srv.Apply(t, agents)
	key := srv.Key(t, "refunds")
	asked := sendTask(t, srv, key, "refunds", map[string]any{"message": message("refund order 9", nil)})

	raw, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 3, "method": "SubscribeToTask", "params": map[string]any{"id": asked.ID}})
	req := srv.Request(t, "POST", "/a2a/refunds", raw)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("A2A-Version", "1.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var states []string
	answered := false
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok {
			continue
		}
		var ev struct {
			Result struct {
				Task         *task
				StatusUpdate *struct{ Status struct{ State string } }
			}
		}
		if err := json.Unmarshal(data, &ev); err != nil {
			t.Fatalf("event %s: %v", data, err)
		}
		switch {
		case ev.Result.Task != nil:
			states = append(states, "task:"+ev.Result.Task.Status.State)
		case ev.Result.StatusUpdate != nil:
			states = append(states, ev.Result.StatusUpdate.Status.State)
		}
		if !answered {
			answered = true
			sendTask(t, srv, key, "refunds", map[string]any{"message": message("yes", map[string]any{"taskId": asked.ID}), "configuration": map[string]any{"returnImmediately": true}})
		}
	}
	got := strings.Join(states, " ")
	if !strings.HasPrefix(got, "task:TASK_STATE_INPUT_REQUIRED") || !strings.HasSuffix(got, "TASK_STATE_COMPLETED") {
		t.Errorf("subscription = %s, want the waiting task first and completed last", got)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// BenchmarkSendMessage: a blocking SendMessage to a hosted agent (scripted
// model), from the message to the completed task with its artifact.
func BenchmarkSendMessage(b *testing.B) {
	srv := apptest.Start(b)
	srv.Apply(b, agents)
	key := srv.Key(b, "impact")
	b.ResetTimer()
	for i := range b.N {
		body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 7, "method": "SendMessage", "params": map[string]any{
			"message": map[string]any{"messageId": fmt.Sprintf("bench-%d", i), "role": "ROLE_USER", "parts": []any{map[string]any{"text": "Rotterdam?"}}},
		}})
		req := srv.Request(b, "POST", "/a2a/impact", body)
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("A2A-Version", "1.0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var r struct {
			Result struct {
				Task struct{ Status struct{ State string } }
			}
		}
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if err != nil || r.Result.Task.Status.State != "TASK_STATE_COMPLETED" {
			b.Fatalf("task %+v %v", r, err)
		}
	}
}
