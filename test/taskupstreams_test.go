package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// The upstreams of the task tests: an OpenAI-compatible model that answers
// by turn and a side-effecting tool, both honouring Idempotency-Key as a
// provider that dedupes retries would, and both counting what they got, so
// that "exactly once" is a count at the far side.

// turnKey names one model turn of one task; the task is its input.
type turnKey struct {
	task string
	turn int
}

// countingModel answers /v1/chat/completions by turn, the number of
// assistant messages in the conversation: a call to the first tool it is
// offered on turns 0..toolTurns-1, a final answer "done <task>" on turn
// toolTurns. A repeated Idempotency-Key gets the answer the key got first.
type countingModel struct {
	*httptest.Server
	toolTurns int
	// Each answer takes between delay and twice delay, so that calls
	// reach and leave the provider at scattered moments.
	delay time.Duration
	// hook, when set, runs once an answer is decided and before it is
	// written: a test kills corral there, so that a call has reached the
	// provider and its answer never reaches corral.
	hook func()

	mu      sync.Mutex
	raw     map[turnKey]int             // requests per (task, turn)
	keys    map[turnKey]map[string]bool // distinct Idempotency-Keys per (task, turn)
	answers map[string][]byte           // Idempotency-Key -> the answer it got
	resent  int                         // requests that repeated a key already answered
	noKey   int                         // requests without an Idempotency-Key
	total   int
}

func startCountingModel(t *testing.T, toolTurns int, delay time.Duration) *countingModel {
	t.Helper()
	m := &countingModel{toolTurns: toolTurns, delay: delay, raw: map[turnKey]int{},
		keys: map[turnKey]map[string]bool{}, answers: map[string][]byte{}}
	m.Server = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.Close)
	return m
}

// chatRequest is what the model reads of a request.
type chatRequest struct {
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Tools []struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	} `json:"tools"`
}

func (m *countingModel) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/chat/completions") {
		http.Error(w, `{"error": {"message": "no such route"}}`, http.StatusNotFound)
		return
	}
	var req chatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error": {"message": "bad JSON"}}`, http.StatusBadRequest)
		return
	}
	task, turn := "", 0
	for _, msg := range req.Messages {
		switch msg.Role {
		case "assistant":
			turn++
		case "user":
			if task == "" {
				_ = json.Unmarshal(msg.Content, &task)
			}
		}
	}
	tk := turnKey{task, turn}
	key := r.Header.Get("Idempotency-Key")

	m.mu.Lock()
	m.total++
	m.raw[tk]++
	if key == "" {
		m.noKey++
	} else if m.keys[tk] == nil {
		m.keys[tk] = map[string]bool{}
	}
	if key != "" {
		m.keys[tk][key] = true
	}
	answer, repeated := m.answers[key]
	if repeated {
		m.resent++
	} else {
		answer = m.answer(req, tk)
		if key != "" {
			m.answers[key] = answer
		}
	}
	hook := m.hook
	m.mu.Unlock()

	time.Sleep(m.delay + rand.N(m.delay+1)) // a model thinking, so that calls are in flight at a kill
	if hook != nil {
		hook()
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(answer)
}

// answer is the answer of turn tk: a tool call or the final answer.
func (m *countingModel) answer(req chatRequest, tk turnKey) []byte {
	msg := map[string]any{"role": "assistant", "content": fmt.Sprintf("done %s", tk.task)}
	finish := "stop"
	tool := ""
	for _, t := range req.Tools {
		if t.Function.Name != "request_input" {
			tool = t.Function.Name
			break
		}
	}
	if tk.turn < m.toolTurns && tool != "" {
		args, _ := json.Marshal(map[string]string{"text": fmt.Sprintf("%s turn %d", tk.task, tk.turn)})
		msg = map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{
			"id": fmt.Sprintf("call_%d", tk.turn), "type": "function",
			"function": map[string]any{"name": tool, "arguments": string(args)},
		}}}
		finish = "tool_calls"
	}
	out, _ := json.Marshal(map[string]any{
		"id": fmt.Sprintf("chatcmpl-%s-%d", strings.ReplaceAll(tk.task, " ", "-"), tk.turn), "object": "chat.completion",
		"created": time.Now().Unix(), "model": "counting",
		"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": finish}},
		"usage":   map[string]int{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
	})
	return out
}

// modelCounts is what the model saw, read under its lock.
type modelCounts struct {
	raw    map[turnKey]int
	keys   map[turnKey]int // distinct keys per (task, turn)
	resent int
	noKey  int
	total  int
}

func (m *countingModel) counts() modelCounts {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := modelCounts{raw: map[turnKey]int{}, keys: map[turnKey]int{}, resent: m.resent, noKey: m.noKey, total: m.total}
	for k, n := range m.raw {
		c.raw[k] = n
	}
	for k, set := range m.keys {
		c.keys[k] = len(set)
	}
	return c
}

func (m *countingModel) setHook(h func()) {
	m.mu.Lock()
	m.hook = h
	m.mu.Unlock()
}

// ledgerDoc is the OpenAPI document of the counting tool: one
// side-effecting operation, POST /entries.
const ledgerDoc = `openapi: 3.0.3
info: {title: ledger, version: "1"}
paths:
  /entries:
    post:
      operationId: record
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [text]
              properties: {text: {type: string}}
      responses:
        "200":
          description: the entry made
          content: {application/json: {schema: {type: object}}}
`

// countingTool is a side-effecting upstream: each new Idempotency-Key makes
// an entry (a side effect), a repeated key gets the recorded answer and
// makes none.
type countingTool struct {
	*httptest.Server
	delay time.Duration // each call takes between delay and twice delay
	hook  func()

	mu       sync.Mutex
	effects  map[string]int    // side effects per text ("<task> turn <n>")
	recorded map[string][]byte // Idempotency-Key -> its answer
	requests int
	repeats  int
	noKey    int
}

func startCountingTool(t *testing.T, delay time.Duration) *countingTool {
	t.Helper()
	u := &countingTool{delay: delay, effects: map[string]int{}, recorded: map[string][]byte{}}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *countingTool) serve(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Text string `json:"text"`
	}
	if r.Method != http.MethodPost || r.URL.Path != "/entries" || json.NewDecoder(r.Body).Decode(&body) != nil {
		http.Error(w, `{"error": "bad request"}`, http.StatusBadRequest)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	u.mu.Lock()
	u.requests++
	answer, repeated := u.recorded[key]
	switch {
	case key == "":
		u.noKey++
		u.effects[body.Text]++
		answer = fmt.Appendf(nil, `{"entry": %d, "text": %q}`, u.requests, body.Text)
	case repeated:
		u.repeats++
	default:
		u.effects[body.Text]++
		answer = fmt.Appendf(nil, `{"entry": %d, "text": %q}`, u.requests, body.Text)
		u.recorded[key] = answer
	}
	hook := u.hook
	u.mu.Unlock()

	time.Sleep(u.delay + rand.N(u.delay+1))
	if hook != nil {
		hook() // the side effect happened; corral may never hear of it
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(answer)
}

func (u *countingTool) setHook(h func()) {
	u.mu.Lock()
	u.hook = h
	u.mu.Unlock()
}

// toolCounts is what the tool saw, read under its lock.
type toolCounts struct {
	effects               map[string]int
	requests, repeats, nk int
}

func (u *countingTool) counts() toolCounts {
	u.mu.Lock()
	defer u.mu.Unlock()
	c := toolCounts{effects: map[string]int{}, requests: u.requests, repeats: u.repeats, nk: u.noKey}
	for k, n := range u.effects {
		c.effects[k] = n
	}
	return c
}

// toolSourceYAML is a ToolSource named name over the OpenAPI document doc
// at baseURL.
func toolSourceYAML(name, baseURL, doc string) string {
	return `apiVersion: corral.dev/v1
kind: ToolSource
metadata: {name: ` + name + `}
spec:
  openapi:
    baseURL: ` + baseURL + `
    document: |
      ` + strings.ReplaceAll(strings.TrimRight(doc, "\n"), "\n", "\n      ") + `
`
}

// apply stores the resources of yaml on p with `corral apply`.
func apply(t *testing.T, p *proc, yaml string) {
	t.Helper()
	file := writeFile(t, t.TempDir(), "resources.yaml", yaml)
	if stdout, stderr, exit := runCLI(t, p.env(), "apply", "-f", file); exit != 0 {
		t.Fatalf("apply: exit %d\n%s%s", exit, stdout, stderr)
	}
}

// taskJSON is what the tests read of a task.
type taskJSON struct {
	ID       string          `json:"id"`
	Agent    string          `json:"agent"`
	Input    json.RawMessage `json:"input"`
	State    string          `json:"state"`
	Reason   string          `json:"reason"`
	Detail   string          `json:"detail"`
	Result   json.RawMessage `json:"result"`
	Worker   string          `json:"worker"`
	Attempts int             `json:"attempts"`
	Usage    struct {
		ModelCalls   int `json:"model_calls"`
		ToolCalls    int `json:"tool_calls"`
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
	} `json:"usage"`
}

func (tk taskJSON) final() bool {
	switch tk.State {
	case "completed", "failed", "canceled", "rejected":
		return true
	}
	return false
}

// createTaskOn starts a task of agent with input on p.
func createTaskOn(t *testing.T, p *proc, agent, input string) taskJSON {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"agent": agent, "input": input})
	r := request(t, "POST", p.URL+"/v1/tasks", p.Token, string(body))
	var tk taskJSON
	if r.status != http.StatusCreated || json.Unmarshal(r.body, &tk) != nil {
		t.Fatalf("POST /v1/tasks: HTTP %d %s", r.status, r.body)
	}
	return tk
}

// postTask asks p for a task of agent with input and Idempotency-Key key;
// err is set when p did not answer at all.
func postTask(t *testing.T, p *proc, agent, input, key string) (int, taskJSON, error) {
	t.Helper()
	var tk taskJSON
	body, _ := json.Marshal(map[string]any{"agent": agent, "input": input})
	req, err := http.NewRequestWithContext(t.Context(), "POST", p.URL+"/v1/tasks", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, tk, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&tk); err != nil {
		return resp.StatusCode, tk, err
	}
	return resp.StatusCode, tk, nil
}

// getTaskOn reads a task from p; ok is false when p did not answer 200.
func getTaskOn(t *testing.T, p *proc, id string) (taskJSON, bool) {
	t.Helper()
	var tk taskJSON
	r := request(t, "GET", p.URL+"/v1/tasks/"+id, p.Token, "")
	return tk, r.status == http.StatusOK && json.Unmarshal(r.body, &tk) == nil
}

// listTasksOn reads every task of agent from p, page by page.
func listTasksOn(t *testing.T, p *proc, agent string) []taskJSON {
	t.Helper()
	var all []taskJSON
	after := ""
	for {
		r := request(t, "GET", p.URL+"/v1/tasks?limit=1000&agent="+agent+"&after="+after, p.Token, "")
		var page struct {
			Items []taskJSON `json:"items"`
			Next  string     `json:"next"`
		}
		if r.status != http.StatusOK || json.Unmarshal(r.body, &page) != nil {
			t.Fatalf("GET /v1/tasks: HTTP %d %s", r.status, r.body)
		}
		all = append(all, page.Items...)
		if page.Next == "" {
			return all
		}
		after = page.Next
	}
}

// taskEvent is what the tests read of an event.
type taskEvent struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	Step   int       `json:"step"`
	Worker string    `json:"worker"`
	State  string    `json:"state"`
	Reason string    `json:"reason"`
	Tool   string    `json:"tool"`
	// Content, IsError and Code are a tool result's.
	Content string `json:"content"`
	IsError bool   `json:"is_error"`
	Code    string `json:"code"`
	AuditID string `json:"audit_id"`
	Usage   *struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
	} `json:"usage"`
}

// followEvents reads the event stream of a task from p and calls fn with
// each event until fn returns false, the stream ends, or timeout passes.
// It returns an error when the stream could not be read.
func followEvents(ctx context.Context, p *proc, id string, timeout time.Duration, fn func(taskEvent) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", p.URL+"/v1/tasks/"+id+"/events", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+p.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET events: HTTP %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev taskEvent
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return fmt.Errorf("event %s: %w", data, err)
		}
		if !fn(ev) {
			return nil
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return sc.Err()
}

// taskEventsOn reads every event of an ended task from p.
func taskEventsOn(t *testing.T, p *proc, id string) []taskEvent {
	t.Helper()
	var out []taskEvent
	if err := followEvents(t.Context(), p, id, 30*time.Second, func(ev taskEvent) bool {
		out = append(out, ev)
		return true
	}); err != nil {
		t.Fatalf("events of %s: %v", id, err)
	}
	return out
}
