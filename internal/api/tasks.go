package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
)

// Tasks is the task service (orchestrator.Service).
type Tasks interface {
	Create(ctx context.Context, req orchestrator.Request) (*orchestrator.Task, bool, error)
	Get(ctx context.Context, id string) (*orchestrator.Task, error)
	List(f orchestrator.Filter) ([]*orchestrator.Task, bool)
	Cancel(ctx context.Context, id, by, detail string) (*orchestrator.Task, error)
	Message(ctx context.Context, id, text, key string) (*orchestrator.Task, error)
	Events(ctx context.Context, id string, after uint64, follow bool, fn func(orchestrator.Event) error) error
	Report(ctx context.Context, id, agent string, state orchestrator.State, result json.RawMessage, detail string) (*orchestrator.Task, error)
	Extend(ctx context.Context, id, by string, more orchestrator.Extension) (*orchestrator.Task, error)
	State(ctx context.Context, id string) (*orchestrator.SharedState, error)
	PatchState(ctx context.Context, id string, patch json.RawMessage, expect int64, by, key string) (*orchestrator.SharedState, error)
	Await(ctx context.Context, id, waiter string, d time.Duration) (*orchestrator.Task, error)
}

// AgentAuth verifies agent credentials and decides their calls of other
// agents (pipeline.Pipeline).
type AgentAuth interface {
	Authenticate(credential string) (pipeline.Caller, error)
	CallAgent(ctx context.Context, call pipeline.AgentCall) (*pipeline.AgentOutcome, error)
}

// WithTasks gives the API the task service and the agents' authentication,
// whose routes Register then adds: admins act on every task, an agent on
// its own.
func (a *API) WithTasks(t Tasks, auth AgentAuth) *API {
	a.tasks, a.agentAuth = t, auth
	return a
}

// Task list limits.
const (
	defaultTaskLimit = 50
	maxTaskLimit     = 1000
)

// TaskList is the answer of GET /v1/tasks: a page, newest first, and the
// after value of the next page when there is one.
type TaskList struct {
	Items []*orchestrator.Task `json:"items"`
	Next  string               `json:"next,omitempty"`
}

// TaskRequest is the body of POST /v1/tasks.
type TaskRequest struct {
	Agent string          `json:"agent,omitempty"`
	Input json.RawMessage `json:"input"`
	// Workflow, instead of agent, starts a run of that Workflow
	// (docs/workflows.md).
	Workflow string `json:"workflow,omitempty"`
}

// MessageRequest is the body of POST /v1/tasks/{id}/messages.
type MessageRequest struct {
	Message string `json:"message"`
}

// CancelRequest is the optional body of POST /v1/tasks/{id}/cancel.
type CancelRequest struct {
	Reason string `json:"reason,omitempty"`
}

// ResultRequest is the body of POST /v1/tasks/{id}/result, by which an
// external agent ends its task or asks for input.
type ResultRequest struct {
	State  string          `json:"state"`
	Result json.RawMessage `json:"result,omitempty"`
	Detail string          `json:"detail,omitempty"`
}

func (a *API) registerTasks(mux *http.ServeMux, open func(problem.HandlerFunc) http.Handler) {
	if a.tasks == nil {
		return
	}
	mux.Handle("POST /v1/tasks", open(a.createTask))
	mux.Handle("GET /v1/tasks", open(a.listTasks))
	mux.Handle("GET /v1/tasks/{id}", open(a.getTask))
	mux.Handle("GET /v1/tasks/{id}/events", open(a.taskEvents))
	mux.Handle("POST /v1/tasks/{id}/cancel", open(a.cancelTask))
	mux.Handle("POST /v1/tasks/{id}/messages", open(a.messageTask))
	mux.Handle("POST /v1/tasks/{id}/result", open(a.reportTask))
	mux.Handle("POST /v1/tasks/{id}/extend", open(a.extendTask))
	mux.Handle("GET /v1/tasks/{id}/state", open(a.getState))
	mux.Handle("PATCH /v1/tasks/{id}/state", open(a.patchState))
	for path, allowed := range map[string][]string{
		"/v1/tasks":               {"GET", "POST"},
		"/v1/tasks/{id}":          {"GET"},
		"/v1/tasks/{id}/events":   {"GET"},
		"/v1/tasks/{id}/cancel":   {"POST"},
		"/v1/tasks/{id}/messages": {"POST"},
		"/v1/tasks/{id}/result":   {"POST"},
		"/v1/tasks/{id}/extend":   {"POST"},
		"/v1/tasks/{id}/state":    {"GET", "PATCH"},
	} {
		mux.Handle(path, open(problem.NotAllowed(allowed...)))
	}
}

// actor is who calls the task API: the admin, or an agent (Caller set).
type actor struct {
	admin  bool
	caller pipeline.Caller
}

func (ac actor) by() string {
	if ac.admin {
		return "admin"
	}
	return "agent:" + ac.caller.Agent
}

// may reports whether the actor may see and act on t: its own tasks, and
// the tasks it started for other agents (docs/agents.md).
func (ac actor) may(t *orchestrator.Task) bool {
	return ac.admin || (t.Agent == ac.caller.Agent && (t.AgentUID == "" || ac.caller.AgentUID == "" || t.AgentUID == ac.caller.AgentUID)) ||
		(t.Parent != "" && t.CreatedBy == "agent:"+ac.caller.Agent)
}

func (a *API) actor(r *http.Request) (actor, error) {
	token := identity.BearerToken(r)
	if token == "" {
		return actor{}, problem.New(http.StatusUnauthorized, problem.Unauthenticated, "send the admin token, or an agent key or corral token, as Authorization: Bearer <credential>")
	}
	if a.creds.VerifyAdmin(token) {
		return actor{admin: true}, nil
	}
	c, err := a.agentAuth.Authenticate(token)
	if err != nil {
		return actor{}, err
	}
	if _, ok := a.store.Get("Agent", c.Agent); !ok {
		return actor{}, problem.New(http.StatusUnauthorized, problem.Unauthenticated, "the credential's agent "+c.Agent+" does not exist")
	}
	return actor{caller: c}, nil
}

// task reads {id} and checks the actor may see it; a task that is not the
// agent's is answered as missing.
func (a *API) task(r *http.Request, ac actor) (*orchestrator.Task, error) {
	t, err := a.tasks.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	if !ac.may(t) {
		return nil, problem.New(http.StatusNotFound, problem.TaskNotFound, "no task "+t.ID)
	}
	return t, nil
}

// ownTask authenticates the caller and reads {id}, a task it may act on:
// any for the admin, its own for an agent.
func (a *API) ownTask(r *http.Request) (actor, *orchestrator.Task, error) {
	ac, err := a.actor(r)
	if err != nil {
		return actor{}, nil, err
	}
	t, err := a.task(r, ac)
	return ac, t, err
}

// treeTask is ownTask for reads that the agents of a task's tree may make
// of each other's tasks (readableTask).
func (a *API) treeTask(r *http.Request) (actor, *orchestrator.Task, error) {
	ac, err := a.actor(r)
	if err != nil {
		return actor{}, nil, err
	}
	t, err := a.readableTask(r, ac)
	return ac, t, err
}

func decodeStrict(body []byte, v any, shape string) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return problem.Wrap(http.StatusBadRequest, problem.InvalidRequest, "the body must be JSON: "+shape+": "+err.Error(), err)
	}
	if dec.More() {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "the body must be one JSON object: "+shape)
	}
	return nil
}

func (a *API) createTask(w http.ResponseWriter, r *http.Request) error {
	ac, err := a.actor(r)
	if err != nil {
		return err
	}
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req TaskRequest
	if err := decodeStrict(body, &req, `{"agent": "NAME", "input": "text or any JSON"} or {"workflow": "NAME", "input": ...}`); err != nil {
		return err
	}
	if err := workflowRequest(&req); err != nil {
		return err
	}
	switch {
	case req.Agent == "" && !ac.admin:
		req.Agent = ac.caller.Agent
	case req.Agent == "" && req.Workflow != "":
		// the admin's run acts as the agent its workflow names
	case req.Agent == "":
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "agent: required: the agent to run the task")
	case !config.ValidName(req.Agent):
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("agent: %q is not a valid name (lowercase letters, digits and '-', at most 63)", truncate(req.Agent, 80)))
	case !ac.admin && req.Agent != ac.caller.Agent && (ac.caller.Token == nil || ac.caller.Token.Task == ""):
		return problem.New(http.StatusForbidden, problem.PolicyDenied, "agent: an agent starts tasks of other agents from a task of its own, with a token bound to it (docs/agents.md); "+ac.caller.Agent+" cannot start work for "+req.Agent+" with this credential")
	}
	if t := bytes.TrimSpace(req.Input); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, `input: required: the task's input, a string ("check order 42") or any JSON value`)
	}
	key := strings.Join(r.Header.Values("Idempotency-Key"), pipeline.MultipleKeys)
	if strings.Contains(key, pipeline.MultipleKeys) || len(key) > 255 || !printableASCII(key) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "Idempotency-Key: one header of at most 255 printable ASCII characters")
	}
	treq := orchestrator.Request{Agent: req.Agent, Workflow: req.Workflow, Input: compact(req.Input), IdempotencyKey: key, CreatedBy: ac.by(), Owner: "admin"}
	if !ac.admin {
		treq.Owner = pipeline.KeyOwner(ac.caller)
		if p := ac.caller.Principal; p != nil {
			treq.Principal = &orchestrator.Principal{Subject: p.Subject, Issuer: p.Issuer, Groups: p.Groups, Roles: p.Roles}
		}
	}
	var (
		t       *orchestrator.Task
		created bool
	)
	if !ac.admin && req.Agent != ac.caller.Agent {
		t, created, err = a.delegate(r, ac, treq, key)
	} else {
		t, created, err = a.tasks.Create(r.Context(), treq)
	}
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/tasks/"+t.ID)
	status := http.StatusCreated
	if !created {
		status = http.StatusOK
	}
	return problem.WriteJSON(w, status, t)
}

func compact(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

func printableASCII(s string) bool {
	for i := range len(s) {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func (a *API) listTasks(w http.ResponseWriter, r *http.Request) error {
	ac, err := a.actor(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := orchestrator.Filter{Agent: q.Get("agent"), After: q.Get("after"), Root: q.Get("root"), Limit: defaultTaskLimit}
	if f.Root != "" && !orchestrator.ValidID(f.Root) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "root: a task id (task_ and 26 letters and digits)")
	}
	if !ac.admin {
		if f.Agent != "" && f.Agent != ac.caller.Agent {
			return problem.New(http.StatusForbidden, problem.PolicyDenied, "agent: an agent lists its own tasks only")
		}
		f.Agent = ac.caller.Agent
	}
	if s := q.Get("state"); s != "" {
		if f.State, err = orchestrator.ParseState(s); err != nil {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, "state: "+err.Error())
		}
	}
	if s := q.Get("since"); s != "" {
		if f.Since, err = parseSince(s, time.Now()); err != nil {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, "since: "+err.Error())
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxTaskLimit {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("limit: a number from 1 to %d", maxTaskLimit))
		}
		f.Limit = n
	}
	items, more := a.tasks.List(f)
	if items == nil {
		items = []*orchestrator.Task{}
	}
	out := TaskList{Items: items}
	if more {
		out.Next = items[len(items)-1].ID
	}
	return problem.WriteJSON(w, http.StatusOK, out)
}

// parseSince reads an RFC 3339 time or a duration back from now (1h).
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, errors.New("a duration back from now must not be negative")
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-12-07T10:00:00Z) nor a duration (1h)", truncate(s, 60))
	}
	return t, nil
}

func (a *API) getTask(w http.ResponseWriter, r *http.Request) error {
	ac, t, err := a.treeTask(r)
	if err != nil {
		return err
	}
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > orchestrator.MaxAwait {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, "wait: a Go duration up to "+orchestrator.MaxAwait.String()+" (30s)")
		}
		waiter := ""
		if ac.caller.Token != nil {
			waiter = ac.caller.Token.Task
		}
		if t, err = a.tasks.Await(r.Context(), t.ID, waiter, d); err != nil {
			return err
		}
	}
	return problem.WriteJSON(w, http.StatusOK, t)
}

func (a *API) cancelTask(w http.ResponseWriter, r *http.Request) error {
	ac, t, err := a.ownTask(r)
	if err != nil {
		return err
	}
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req CancelRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeStrict(body, &req, `{"reason": "why"}`); err != nil {
			return err
		}
		if len(req.Reason) > maxReason {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("reason: at most %d characters", maxReason))
		}
	}
	detail := ""
	if req.Reason != "" {
		detail = "canceled by " + ac.by() + ": " + req.Reason
	}
	t, err = a.tasks.Cancel(r.Context(), t.ID, ac.by(), detail)
	if err != nil {
		return err
	}
	return problem.WriteJSON(w, http.StatusOK, t)
}

func (a *API) messageTask(w http.ResponseWriter, r *http.Request) error {
	_, t, err := a.ownTask(r)
	if err != nil {
		return err
	}
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req MessageRequest
	if err := decodeStrict(body, &req, `{"message": "your answer"}`); err != nil {
		return err
	}
	if strings.TrimSpace(req.Message) == "" {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "message: required: the answer to the task's question")
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 255 || !printableASCII(key) {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "Idempotency-Key: at most 255 printable ASCII characters")
	}
	t, err = a.tasks.Message(r.Context(), t.ID, req.Message, key)
	if err != nil {
		return err
	}
	return problem.WriteJSON(w, http.StatusOK, t)
}

func (a *API) reportTask(w http.ResponseWriter, r *http.Request) error {
	ac, t, err := a.ownTask(r)
	if err != nil {
		return err
	}
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req ResultRequest
	if err := decodeStrict(body, &req, `{"state": "completed", "result": any JSON}`); err != nil {
		return err
	}
	state, err := orchestrator.ParseState(req.State)
	if err != nil {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "state: "+err.Error())
	}
	if len(req.Detail) > maxReason {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, fmt.Sprintf("detail: at most %d characters", maxReason))
	}
	agent := ""
	if !ac.admin {
		agent = ac.caller.Agent
	}
	t, err = a.tasks.Report(r.Context(), t.ID, agent, state, compact(req.Result), req.Detail)
	if err != nil {
		return err
	}
	return problem.WriteJSON(w, http.StatusOK, t)
}

// ExtendRequest is the optional body of POST /v1/tasks/{id}/extend: the
// room to add; absent fields add as much again as the task had.
type ExtendRequest struct {
	Turns     int    `json:"turns,omitempty"`
	ToolCalls int    `json:"tool_calls,omitempty"`
	Deadline  string `json:"deadline,omitempty"`
}

// extendTask gives a task that escalated at a limit more room. Only the
// admin may: an agent cannot extend its own limits.
func (a *API) extendTask(w http.ResponseWriter, r *http.Request) error {
	rd, err := a.whom(r)
	if err != nil {
		return err
	}
	if rd.agent != "" {
		return problem.New(http.StatusForbidden, problem.PolicyDenied, "an agent cannot extend a task's limits; a person does (one in the agent's limits.escalateTo groups, or the admin)")
	}
	t, err := a.tasks.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	by := "admin"
	if p := rd.person; p != nil {
		if !a.mayEscalate(t.Agent, p.Groups) && !slices.ContainsFunc(p.Groups, func(g string) bool { return slices.Contains(a.adminGroups, g) }) {
			return problem.New(http.StatusForbidden, problem.PolicyDenied, "only people in agent "+t.Agent+"'s limits.escalateTo groups may extend its tasks")
		}
		by = p.ID
	}
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var req ExtendRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeStrict(body, &req, `{"turns": 5, "tool_calls": 20, "deadline": "10m"}`); err != nil {
			return err
		}
	}
	more := orchestrator.Extension{Turns: req.Turns, ToolCalls: req.ToolCalls}
	if req.Deadline != "" {
		if more.Deadline, err = time.ParseDuration(req.Deadline); err != nil || more.Deadline <= 0 {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, "deadline: a positive Go duration, as 10m")
		}
	}
	if req.Turns < 0 || req.Turns > 10000 || req.ToolCalls < 0 || req.ToolCalls > 100000 {
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "turns (0..10000) and tool_calls (0..100000): the room to add")
	}
	t, err = a.tasks.Extend(r.Context(), t.ID, by, more)
	if err != nil {
		return err
	}
	return problem.WriteJSON(w, http.StatusOK, t)
}

// mayEscalate reports whether a person in groups may extend agent's tasks.
func (a *API) mayEscalate(agent string, groups []string) bool {
	res, ok := a.store.Get("Agent", agent)
	if !ok {
		return false
	}
	var spec config.AgentSpec
	if json.Unmarshal(res.Spec, &spec) != nil || spec.Limits == nil {
		return false
	}
	for _, g := range groups {
		if slices.Contains(spec.Limits.EscalateTo, g) {
			return true
		}
	}
	return false
}

// sseKeepAlive is how often an idle event stream sends a comment, so that
// proxies keep it open.
const sseKeepAlive = 15 * time.Second

// taskEvents streams a task's events as server-sent events: id is the
// event's sequence, event its type, data its JSON. It ends after the
// task's final state, or with ?follow=false at the last event there is,
// which it marks with a last event of type "end" (data {"last": SEQ}), so a
// client tells a complete read from a connection cut short.
// Last-Event-ID (or ?after=) resumes after an event.
func (a *API) taskEvents(w http.ResponseWriter, r *http.Request) error {
	_, t, err := a.ownTask(r)
	if err != nil {
		return err
	}
	follow := true
	switch r.URL.Query().Get("follow") {
	case "", "true":
	case "false":
		follow = false
	default:
		return problem.New(http.StatusBadRequest, problem.InvalidRequest, "follow: true (the default: stream until the task ends) or false (the events there are now)")
	}
	var after uint64
	for _, v := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after")} {
		if v == "" {
			continue
		}
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			return problem.New(http.StatusBadRequest, problem.InvalidRequest, "Last-Event-ID (or after): an event id from this stream, a whole number")
		}
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	events := make(chan orchestrator.Event, 64)
	done := make(chan error, 1)
	go func() {
		defer close(events)
		done <- a.tasks.Events(ctx, t.ID, after, follow, func(ev orchestrator.Event) error {
			select {
			case events <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	keep := time.NewTicker(sseKeepAlive)
	defer keep.Stop()
	last := after
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				err := <-done
				switch {
				case err != nil && ctx.Err() == nil:
					a.logger.WarnContext(ctx, "task event stream ended early", "task", t.ID, "err", err)
					fmt.Fprintf(w, "event: error\ndata: %s\n\n", mustJSON(map[string]string{"code": problem.SubstrateUnavailable, "detail": "the event stream broke off; reconnect with Last-Event-ID"}))
					_ = rc.Flush()
				case err == nil && !follow:
					fmt.Fprintf(w, "event: end\ndata: %s\n\n", mustJSON(map[string]uint64{"last": last}))
					_ = rc.Flush()
				}
				return nil
			}
			last = ev.Seq
			data, err := json.Marshal(ev)
			if err != nil {
				return nil
			}
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Type, data); err != nil {
				return nil // the client went away
			}
			_ = rc.Flush()
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			_ = rc.Flush()
		case <-ctx.Done():
			return nil
		}
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
