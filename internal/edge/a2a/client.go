package a2a

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/upstream"
)

// Auditor appends audit records (audit.Log).
type Auditor interface {
	Append(ctx context.Context, r *audit.Record) (string, error)
}

// SecretResolver opens a credential reference (secret.Resolver.Resolve).
type SecretResolver func(ctx context.Context, ref config.SecretValue) (string, error)

// Client is corral's A2A v1.0 client: it sends the tasks of remote A2A
// agents (Agents with spec.a2a) to them over the JSON-RPC binding and
// reads their tasks back, one upstream client (timeouts, breaker, size
// cap) per remote agent. Every message sent is audited.
type Client struct {
	logger  *slog.Logger
	resolve SecretResolver
	audit   Auditor

	mu      sync.Mutex
	clients map[string]*upstream.Client
}

var _ orchestrator.RemoteAgents = (*Client)(nil)

// NewClient returns a client; audit may be nil.
func NewClient(logger *slog.Logger, resolve SecretResolver, audit Auditor) *Client {
	return &Client{logger: logger, resolve: resolve, audit: audit, clients: map[string]*upstream.Client{}}
}

func (c *Client) upstream(agent, url string) *upstream.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := agent + " " + url
	if u, ok := c.clients[key]; ok {
		return u
	}
	u := upstream.New(upstream.Config{Name: "a2a:" + agent, Timeout: 30 * time.Second, MaxResponseBytes: 4 << 20})
	c.clients[key] = u
	return u
}

// Send sends a message to the remote agent, returning at once with its
// task (returnImmediately): the worker follows it with Get. The chain of
// the task rides in the message's metadata.
func (c *Client) Send(ctx context.Context, agent string, spec *config.A2ASpec, m orchestrator.RemoteMessage) (*orchestrator.RemoteTask, error) {
	msg := &Message{MessageID: m.ID, ContextID: m.ContextID, TaskID: m.RemoteTask, Role: RoleUser, Parts: []Part{valuePart(m.Input)}, Metadata: WithChain(nil, m.Chain)}
	params := SendMessageRequest{Message: msg, Configuration: &SendMessageConfiguration{ReturnImmediately: true, AcceptedOutputModes: []string{"text/plain", "application/json"}}}
	var res struct {
		Task    *Task    `json:"task"`
		Message *Message `json:"message"`
	}
	err := c.call(ctx, agent, spec, "SendMessage", params, &res, false)
	c.record(ctx, agent, spec, m, err)
	if err != nil {
		return nil, err
	}
	switch {
	case res.Task != nil:
		return remoteTask(res.Task)
	case res.Message != nil:
		// A direct answer, no task: the remote agent is done.
		return &orchestrator.RemoteTask{ContextID: res.Message.ContextID, State: orchestrator.Completed, Result: partsValue(res.Message.Parts)}, nil
	}
	return nil, &orchestrator.RemoteRefusal{Code: problem.UpstreamInvalid, Detail: "SendMessage answered neither a task nor a message"}
}

// Get reads the remote task.
func (c *Client) Get(ctx context.Context, agent string, spec *config.A2ASpec, id string) (*orchestrator.RemoteTask, error) {
	var t Task
	if err := c.call(ctx, agent, spec, "GetTask", GetTaskRequest{ID: id, HistoryLength: new(int)}, &t, true); err != nil {
		return nil, err
	}
	return remoteTask(&t)
}

// Cancel asks the remote agent to cancel its task.
func (c *Client) Cancel(ctx context.Context, agent string, spec *config.A2ASpec, id string) error {
	var t Task
	return c.call(ctx, agent, spec, "CancelTask", TaskIDRequest{ID: id}, &t, true)
}

// record audits a message sent to a remote agent.
func (c *Client) record(ctx context.Context, agent string, spec *config.A2ASpec, m orchestrator.RemoteMessage, err error) {
	if c.audit == nil {
		return
	}
	step := m.ID[strings.LastIndex(m.ID, "/")+1:]
	rec := &audit.Record{Time: time.Now().UTC(), Kind: "agent", Agent: agent, Task: m.Task, Step: step, Target: agent, Source: spec.URL, Edge: "a2a", Decision: "allowed"}
	var refusal *orchestrator.RemoteRefusal
	switch {
	case errors.As(err, &refusal):
		rec.Decision, rec.Code, rec.Reason = "denied", refusal.Code, refusal.Detail
	case err != nil:
		rec.Code, rec.Reason = problem.UpstreamUnavailable, err.Error()
	}
	if _, aerr := c.audit.Append(context.WithoutCancel(ctx), rec); aerr != nil {
		c.logger.WarnContext(ctx, "auditing a message to a remote agent", "agent", agent, "task", m.Task, "err", aerr)
	}
}

// call makes one JSON-RPC call. A JSON-RPC error is a RemoteRefusal,
// except the remote's internal and unavailable errors, which are tried
// again later (as is any failure to reach it).
func (c *Client) call(ctx context.Context, agent string, spec *config.A2ASpec, method string, params, out any, idempotent bool) error {
	body, err := json.Marshal(request{JSONRPC: "2.0", ID: json.RawMessage(`1`), Method: method, Params: mustJSON(params)})
	if err != nil {
		return err
	}
	h := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}, "A2A-Version": {Version}}
	if err := c.authenticate(ctx, spec.Auth, h); err != nil {
		return &orchestrator.RemoteRefusal{Code: problem.InvalidResource, Detail: "spec.a2a.auth: " + err.Error()}
	}
	resp, err := c.upstream(agent, spec.URL).Do(ctx, upstream.Request{Method: http.MethodPost, URL: spec.URL, Header: h, Body: body, Idempotent: idempotent})
	if err != nil {
		return fmt.Errorf("a2a: %s %s: %w", agent, method, err)
	}
	var r struct {
		JSONRPC string          `json:"jsonrpc"`
		Result  json.RawMessage `json:"result"`
		Error   *rpcError       `json:"error"`
	}
	if jerr := json.Unmarshal(resp.Body, &r); jerr != nil || r.JSONRPC != "2.0" {
		if resp.Status >= 500 {
			return fmt.Errorf("a2a: %s %s: HTTP %d", agent, method, resp.Status)
		}
		return &orchestrator.RemoteRefusal{Code: problem.UpstreamInvalid, Detail: fmt.Sprintf("%s answered HTTP %d without a JSON-RPC response", method, resp.Status)}
	}
	if e := r.Error; e != nil {
		code := e.ProblemCode()
		if code == "" {
			code = fmt.Sprintf("a2a_%d", e.Code)
		}
		if e.Code == codeInternal || e.Code == codeCorralBase-http.StatusServiceUnavailable || resp.Status >= 500 {
			return fmt.Errorf("a2a: %s %s: %d %s", agent, method, e.Code, e.Message)
		}
		return &orchestrator.RemoteRefusal{Code: code, Detail: truncate(e.Message, 1000)}
	}
	if err := json.Unmarshal(r.Result, out); err != nil {
		return &orchestrator.RemoteRefusal{Code: problem.UpstreamInvalid, Detail: method + "'s result: " + err.Error()}
	}
	return nil
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// authenticate sets the remote agent's credential.
func (c *Client) authenticate(ctx context.Context, auth *config.UpstreamAuth, h http.Header) error {
	if auth == nil {
		return nil
	}
	switch {
	case auth.Bearer != nil:
		v, err := c.resolve(ctx, *auth.Bearer)
		if err != nil {
			return err
		}
		h.Set("Authorization", "Bearer "+v)
	case auth.APIKey != nil:
		v, err := c.resolve(ctx, auth.APIKey.Value)
		if err != nil {
			return err
		}
		h.Set(auth.APIKey.Header, v)
	case auth.Basic != nil:
		v, err := c.resolve(ctx, auth.Basic.Password)
		if err != nil {
			return err
		}
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(auth.Basic.Username+":"+v)))
	}
	return nil
}

// remoteTask reads a remote A2A task in corral's terms.
func remoteTask(t *Task) (*orchestrator.RemoteTask, error) {
	rt := &orchestrator.RemoteTask{ID: t.ID, ContextID: t.ContextID}
	if t.ID == "" {
		return nil, &orchestrator.RemoteRefusal{Code: problem.UpstreamInvalid, Detail: "the remote task has no id"}
	}
	switch t.Status.State {
	case StateSubmitted:
		rt.State = orchestrator.Submitted
	case StateWorking:
		rt.State = orchestrator.Working
	case StateInputRequired:
		rt.State = orchestrator.InputRequired
	case StateAuthRequired:
		rt.State, rt.AuthRequired = orchestrator.InputRequired, true
	case StateCompleted:
		rt.State = orchestrator.Completed
	case StateFailed:
		rt.State = orchestrator.Failed
	case StateCanceled:
		rt.State = orchestrator.Canceled
	case StateRejected:
		rt.State = orchestrator.Rejected
	default:
		return nil, &orchestrator.RemoteRefusal{Code: problem.UpstreamInvalid, Detail: fmt.Sprintf("the remote task is in state %q", truncate(t.Status.State, 40))}
	}
	if m := t.Status.Message; m != nil {
		rt.Detail = truncate(partsText(m.Parts), 2000)
	}
	var parts []Part
	for _, a := range t.Artifacts {
		parts = append(parts, a.Parts...)
	}
	if len(parts) > 0 {
		rt.Result = partsValue(parts)
	}
	return rt, nil
}

// partsValue is parts as one JSON value: a lone data part is its value,
// anything else the text of all parts as a string.
func partsValue(parts []Part) json.RawMessage {
	if len(parts) == 1 && parts[0].Text == nil && len(parts[0].Data) > 0 {
		return compact(parts[0].Data)
	}
	b, _ := json.Marshal(partsText(parts))
	return b
}

func partsText(parts []Part) string {
	var b strings.Builder
	for _, p := range parts {
		switch {
		case p.Text != nil:
			b.WriteString(*p.Text)
		case len(p.Data) > 0:
			b.Write(compact(p.Data))
		case p.URL != "":
			b.WriteString(p.URL)
		}
	}
	return b.String()
}
