// Package a2a_test checks corral's A2A v1.0 edge against the official
// JavaScript SDK, @a2a-js/sdk: its client drives hosted agents of corral's
// (client.mjs); its server is a remote agent corral calls (server.mjs).
package a2a_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/test/nodetest"
)

// clientTimeout catches a hang on a shared two-core machine, not a slow run.
const clientTimeout = 2 * time.Minute

const answer = "Rotterdam: 3 orders this week, 2 of them late."

const agents = `apiVersion: corral.dev/v1
kind: Model
metadata: {name: quick}
spec:
  provider: scripted
  script:
    - content: "` + answer + `"
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
spec: {description: "Finds the orders a port closure hits.", model: quick, models: [quick]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: refunds}
spec: {description: "Refunds orders, after asking.", model: careful, models: [careful]}
`

// TestJSClientDrivesHostedAgents: the SDK's client reads a hosted agent's
// card, sends (blocking), streams, gets, lists, answers an input-required
// task and cancels one, all over corral's JSON-RPC binding.
func TestJSClientDrivesHostedAgents(t *testing.T) {
	node := nodetest.Program(t, "node")
	nodetest.Install(t, "@a2a-js/sdk")
	srv := apptest.Start(t)
	srv.Apply(t, agents)
	out := runNode(t, node, "client.mjs",
		"CORRAL_URL="+srv.URL, "CORRAL_KEY="+srv.Key(t, "impact"), "CORRAL_AGENT=impact", "CORRAL_ANSWER="+answer,
		"CORRAL_ASKER=refunds", "CORRAL_ASKER_KEY="+srv.Key(t, "refunds"))
	if !bytes.Contains(out, []byte("all checks passed")) {
		t.Fatalf("client.mjs did not finish:\n%s", out)
	}
}

func runNode(t *testing.T, node, script string, env ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
	return out
}

// jsServer runs server.mjs, the SDK's server, and returns its URL and the
// lines it prints (read them after the test's calls: they are complete
// once the process has printed them).
func jsServer(t *testing.T, node string, env ...string) (string, *lines) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node, "server.mjs")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &lines{}
	port := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			l.add(line)
			if p, ok := strings.CutPrefix(line, "listening "); ok {
				port <- p
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		<-done
		t.Logf("server.mjs printed:\n%s", strings.Join(l.all(), "\n"))
	})
	select {
	case p := <-port:
		return "http://127.0.0.1:" + p, l
	case <-time.After(30 * time.Second):
		t.Fatal("server.mjs did not listen within 30s")
	}
	return "", nil
}

// lines collects a process's output lines.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) add(s string) { l.mu.Lock(); l.l = append(l.l, s); l.mu.Unlock() }
func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.l)
}

func (l *lines) find(prefix string) []string {
	var out []string
	for _, s := range l.all() {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// TestCorralCallsJSServerAndRefusesTheCycle: an Agent with spec.a2a
// pointing at the SDK's server is a remote agent: its task is sent there
// (with the credential from a Secret and the chain in the message's
// metadata) and completes with the remote's answer. Then the cycle: a
// task of the remote agent on behalf of agent a (chain [a]) makes the JS
// server call corral's /a2a/a back with the chain it received, [a,
// oracle]; corral refuses it (agent_cycle, "a → oracle → a"), the JS
// agent fails its task saying so, and corral's task fails with that.
func TestCorralCallsJSServerAndRefusesTheCycle(t *testing.T) {
	node := nodetest.Program(t, "node")
	nodetest.Install(t, "@a2a-js/sdk")
	srv := apptest.Start(t)
	srv.Apply(t, agents)
	url, printed := jsServer(t, node, "REMOTE_TOKEN=remote-secret-7", "CORRAL_URL="+srv.URL, "CORRAL_KEY="+srv.Key(t, "impact"))
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Secret
metadata: {name: oracle-token}
spec: {value: remote-secret-7}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: oracle}
spec:
  description: "The shipping oracle, an A2A agent outside corral."
  a2a: {url: "`+url+`/a2a", auth: {bearer: {secretRef: oracle-token}}}
`)

	task := createTask(t, srv, "oracle", "Is Rotterdam open?")
	done := waitTask(t, srv, task.ID)
	if done.State != "completed" || string(done.Result) != `"remote says: IS ROTTERDAM OPEN?"` {
		t.Fatalf("task = %+v", done)
	}
	got := printed.find("received ")
	if len(got) != 1 || !strings.Contains(got[0], `"chain":["oracle"]`) || !strings.Contains(got[0], task.ID+"/step/1") {
		t.Errorf("the JS server received %q, want one message with chain [oracle] and id %s/step/1", got, task.ID)
	}

	// The cycle, as a delegation from impact would make it: a message to
	// oracle whose chain already holds impact.
	status, body := srv.Call(t, srv.Token, "POST", "/a2a/oracle", map[string]any{
		"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
		"params": map[string]any{"message": map[string]any{
			"messageId": "cycle-1", "role": "ROLE_USER", "parts": []any{map[string]any{"text": "call back impact: which orders ship through Rotterdam?"}},
			"metadata": map[string]any{"corral.dev/chain": []string{"impact"}},
		}},
	}, http.Header{"A2A-Version": {"1.0"}})
	var r struct {
		Result struct {
			Task struct {
				ID     string
				Status struct {
					State   string
					Message struct{ Parts []struct{ Text string } }
				}
			}
		}
	}
	if err := json.Unmarshal(body, &r); status != http.StatusOK || err != nil {
		t.Fatalf("SendMessage to oracle: HTTP %d %s", status, body)
	}
	st := r.Result.Task.Status
	if st.State != "TASK_STATE_FAILED" || len(st.Message.Parts) == 0 || !strings.Contains(st.Message.Parts[0].Text, "agent_cycle") || !strings.Contains(st.Message.Parts[0].Text, "impact → oracle → impact") {
		t.Fatalf("the cycle's task: %s", body)
	}
	if refused := printed.find("call back refused: agent_cycle"); len(refused) != 1 {
		t.Errorf("the JS server saw %q, want one agent_cycle refusal", printed.all())
	}
	_, body = srv.Call(t, srv.Token, "GET", "/v1/tasks?agent=impact", nil, nil)
	if strings.Contains(string(body), `"id"`) {
		t.Errorf("the refused call back made a task of impact: %s", body)
	}

	// The same cycle made by a hosted agent: impact delegates to oracle (an
	// Action of kind agent), corral sends the chain [impact, oracle] with
	// the message, and oracle's call back into impact is refused. impact
	// gets oracle's failure as its tool's answer and finishes.
	srv.Apply(t, `apiVersion: corral.dev/v1
kind: Model
metadata: {name: delegator}
spec:
  provider: scripted
  script:
    - toolCalls: [{name: delegate_to_oracle, arguments: {input: "call back impact: which orders ship through Rotterdam?"}}]
    - content: "The oracle could not answer."
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec: {description: "Finds the orders a port closure hits.", model: delegator, models: [delegator], agents: [oracle]}
`)
	parent := createTask(t, srv, "impact", "Which orders does the Rotterdam strike hit?")
	if done := waitTask(t, srv, parent.ID); done.State != "completed" || string(done.Result) != `"The oracle could not answer."` {
		t.Fatalf("impact's task = %+v, want completed after the oracle's failure", done)
	}
	if refused := printed.find("call back refused: agent_cycle"); len(refused) != 2 {
		t.Errorf("the JS server saw %q, want a second agent_cycle refusal", printed.all())
	}
	var children struct{ Items []taskView }
	_, body = srv.Call(t, srv.Token, "GET", "/v1/tasks?root="+parent.ID, nil, nil)
	if err := json.Unmarshal(body, &children); err != nil {
		t.Fatal(err)
	}
	var oracle *taskView
	for i, c := range children.Items {
		if c.ID != parent.ID {
			oracle = &children.Items[i]
		}
	}
	if len(children.Items) != 2 || oracle == nil || oracle.State != "failed" || !strings.Contains(oracle.Detail, "agent_cycle") {
		t.Errorf("the tree of impact's task: %s, want impact's and a failed oracle task naming agent_cycle", body)
	}
}

type taskView struct {
	ID, State, Reason, Detail string
	Result                    json.RawMessage
}

func createTask(t *testing.T, srv *apptest.Server, agent, input string) taskView {
	t.Helper()
	status, body := srv.Call(t, srv.Token, "POST", "/v1/tasks", map[string]any{"agent": agent, "input": input}, nil)
	var v taskView
	if status != http.StatusCreated || json.Unmarshal(body, &v) != nil {
		t.Fatalf("POST /v1/tasks: HTTP %d %s", status, body)
	}
	return v
}

func waitTask(t *testing.T, srv *apptest.Server, id string) taskView {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, body := srv.Call(t, srv.Token, "GET", "/v1/tasks/"+id, nil, nil)
		var v taskView
		_ = json.Unmarshal(body, &v)
		if v.State == "completed" || v.State == "failed" || v.State == "canceled" || v.State == "rejected" {
			v.Result = compactJSON(v.Result)
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s still %s after 30s", id, v.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func compactJSON(b json.RawMessage) json.RawMessage {
	var out bytes.Buffer
	if json.Compact(&out, b) != nil {
		return b
	}
	return out.Bytes()
}
