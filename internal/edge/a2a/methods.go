package a2a

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
)

// Paging of ListTasks.
const (
	defaultPageSize = 50
	maxPageSize     = 100
	// maxScan bounds the tasks ListTasks looks at to filter by context.
	maxScan = 1000
)

// cancelWait bounds how long CancelTask waits for a running task's worker
// to end it (it does within about 100 ms).
const cancelWait = 5 * time.Second

func substrate(err error) error {
	return problem.Wrap(http.StatusServiceUnavailable, problem.SubstrateUnavailable, "the task store did not answer; retry", err)
}

func taskNotFound(id string) error {
	return rpcErr(codeTaskNotFound, problem.TaskNotFound, "task not found: "+truncate(id, 80))
}

// task returns a task the caller may see at this agent's endpoint; any
// other is not found, as one that does not exist.
func (s *Server) task(ctx context.Context, c *call, id string) (*orchestrator.Task, error) {
	if id == "" {
		return nil, invalidParams("params.id: required: the task's id")
	}
	t, err := s.tasks.Get(ctx, id)
	if err != nil {
		var pe *problem.Error
		if errors.As(err, &pe) && pe.Code == problem.TaskNotFound {
			return nil, taskNotFound(id)
		}
		return nil, err
	}
	if t.Agent != c.agent || !c.actor.may(t) {
		return nil, taskNotFound(id)
	}
	return t, nil
}

// mayStart: the admin starts tasks for any agent, an agent for itself
// (as POST /v1/tasks).
func mayStart(c *call) error {
	if c.actor.admin || c.actor.caller.Agent == c.agent {
		return nil
	}
	return problem.New(http.StatusForbidden, problem.PolicyDenied, "an agent starts tasks of its own only; "+c.actor.caller.Agent+" cannot start work for "+c.agent)
}

// sent is what SendMessage did: the task, the last journal entry before
// the message (a wait starts after it), whether to wait.
type sent struct {
	task  *orchestrator.Task
	after uint64
	wait  bool
	hist  int
}

// send makes a message into a task, new or continued.
func (s *Server) send(ctx context.Context, c *call, params json.RawMessage) (*sent, error) {
	var p SendMessageRequest
	if e := decodeParams(params, &p); e != nil {
		return nil, e
	}
	m := p.Message
	switch {
	case m == nil:
		return nil, invalidParams("params.message: required")
	case m.MessageID == "" || len(m.MessageID) > 200:
		return nil, invalidParams("params.message.messageId: required, at most 200 characters")
	case m.Role != RoleUser:
		return nil, invalidParams("params.message.role: %q; a client's message is ROLE_USER", truncate(m.Role, 40))
	}
	in, err := input(m.Parts)
	if err != nil {
		return nil, err
	}
	if len(in) > orchestrator.MaxInput {
		return nil, rpcErr(codeInvalidParams, problem.RequestTooLarge, fmt.Sprintf("params.message: %d bytes, over the limit of %d", len(in), orchestrator.MaxInput))
	}
	out := &sent{hist: -1}
	if cfg := p.Configuration; cfg != nil {
		out.wait = !cfg.ReturnImmediately
		if cfg.HistoryLength != nil {
			out.hist = max(*cfg.HistoryLength, 0)
		}
	} else {
		out.wait = true
	}
	if m.TaskID != "" {
		if out.task, out.after, err = s.answer(ctx, c, m, in); err != nil {
			return nil, err
		}
	} else {
		if out.task, err = s.start(ctx, c, m, p.Metadata, in); err != nil {
			return nil, err
		}
	}
	if cfg := p.Configuration; cfg != nil && cfg.TaskPushNotificationConfig != nil {
		pc := *cfg.TaskPushNotificationConfig
		pc.TaskID = out.task.ID
		if _, err := s.addPush(ctx, c, pc); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// start makes a new task of the agent for a message, refusing one whose
// chain would loop or go too deep. The message id is the task's
// idempotency key: the same message sent again names the same task.
func (s *Server) start(ctx context.Context, c *call, m *Message, reqMeta json.RawMessage, in json.RawMessage) (*orchestrator.Task, error) {
	if err := mayStart(c); err != nil {
		return nil, err
	}
	chain, err := ParseChain(m.Metadata)
	if err == nil && chain == nil {
		chain, err = ParseChain(reqMeta)
	}
	if err != nil {
		return nil, invalidParams("params.message.%v", err)
	}
	chain = Above(chain, c.agent)
	if err := CheckChain(chain, c.agent); err != nil {
		return nil, err
	}
	req := orchestrator.Request{Agent: c.agent, Input: in, IdempotencyKey: "a2a/" + m.MessageID, Owner: "admin", CreatedBy: c.actor.by(), Chain: chain}
	if !c.actor.admin {
		req.Owner = pipeline.KeyOwner(c.actor.caller)
		if p := c.actor.caller.Principal; p != nil {
			req.Principal = &orchestrator.Principal{Subject: p.Subject, Issuer: p.Issuer, Groups: p.Groups, Roles: p.Roles}
		}
	}
	t, _, err := s.tasks.Create(ctx, req)
	if err != nil {
		return nil, err
	}
	if m.ContextID != "" && m.ContextID != t.ID {
		if len(m.ContextID) > 200 {
			return nil, invalidParams("params.message.contextId: at most 200 characters")
		}
		if _, err := s.store.update(ctx, t.ID, func(r *record) error {
			if r.ContextID == "" {
				r.ContextID = m.ContextID
			}
			return nil
		}); err != nil {
			return nil, substrate(err)
		}
	}
	return t, nil
}

// answer gives a message to a task waiting for input.
func (s *Server) answer(ctx context.Context, c *call, m *Message, in json.RawMessage) (*orchestrator.Task, uint64, error) {
	t, err := s.task(ctx, c, m.TaskID)
	if err != nil {
		return nil, 0, err
	}
	if m.ContextID != "" {
		ctxID, err := s.contextOf(ctx, t.ID)
		if err != nil {
			return nil, 0, err
		}
		if ctxID != m.ContextID {
			return nil, 0, invalidParams("params.message.contextId: %q is not the context of task %s", truncate(m.ContextID, 80), t.ID)
		}
	}
	switch {
	case t.State.Final():
		return nil, 0, rpcErr(codeUnsupported, problem.TaskEnded, fmt.Sprintf("task %s is %s: it takes no more messages", t.ID, t.State))
	case t.State == orchestrator.InputRequired && t.Reason == orchestrator.ReasonAwaitingApproval:
		id := approvalID(t.Detail)
		return nil, 0, rpcErr(codeUnsupported, problem.ApprovalPending, fmt.Sprintf("task %s waits for people to decide approval %s (/v1/approvals/%s), not for a message", t.ID, id, id))
	case t.State != orchestrator.InputRequired:
		return nil, 0, rpcErr(codeUnsupported, problem.Conflict, fmt.Sprintf("task %s is %s: it takes messages only while input-required", t.ID, t.State))
	}
	after, err := s.lastSeq(ctx, t.ID)
	if err != nil {
		return nil, 0, err
	}
	t, err = s.tasks.Message(ctx, t.ID, text(in), "a2a/"+m.MessageID)
	if err != nil {
		return nil, 0, err
	}
	return t, after, nil
}

// lastSeq is the sequence of a task's last journal entry.
func (s *Server) lastSeq(ctx context.Context, id string) (uint64, error) {
	var last uint64
	err := s.tasks.Events(ctx, id, 0, false, func(ev orchestrator.Event) error {
		last = ev.Seq
		return nil
	})
	return last, err
}

var errSettled = errors.New("settled")

// settle waits until a task ends or waits for its client, after the
// journal entry after, or until ctx ends. It returns the task as that
// state event says (the journal is the truth; the record may lag it by a
// moment).
func (s *Server) settle(ctx context.Context, id string, after uint64) (*orchestrator.Task, error) {
	var last orchestrator.Event
	err := s.tasks.Events(ctx, id, after, true, func(ev orchestrator.Event) error {
		if ev.Type == orchestrator.EvState && (ev.State.Final() || ev.State == orchestrator.InputRequired) {
			last = ev
			return errSettled
		}
		return nil
	})
	if err != nil && !errors.Is(err, errSettled) {
		return nil, err
	}
	t, err := s.tasks.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if last.Type != "" {
		t = atEvent(t, last)
	}
	return t, nil
}

// atEvent is a task as a state event of its journal left it.
func atEvent(t *orchestrator.Task, ev orchestrator.Event) *orchestrator.Task {
	at := *t
	if at.State == ev.State && at.Reason == ev.Reason {
		return &at
	}
	at.State, at.Reason, at.Detail, at.Updated = ev.State, ev.Reason, ev.Detail, ev.Time
	if len(ev.Result) > 0 {
		at.Result = ev.Result
	}
	return &at
}

// SendMessage: a new task (or the answer to one waiting for input); by
// default the call returns once the task has ended or waits for its
// client, with returnImmediately at once.
func (s *Server) sendMessage(ctx context.Context, c *call, params json.RawMessage) (any, error) {
	out, err := s.send(ctx, c, params)
	if err != nil {
		return nil, err
	}
	t := out.task
	if out.wait {
		if t, err = s.settle(ctx, t.ID, out.after); err != nil {
			return nil, err
		}
	}
	v, err := s.view(ctx, t, out.hist, true)
	if err != nil {
		return nil, err
	}
	return SendMessageResponse{Task: &v}, nil
}

func (s *Server) getTask(ctx context.Context, c *call, params json.RawMessage) (any, error) {
	var p GetTaskRequest
	if e := decodeParams(params, &p); e != nil {
		return nil, e
	}
	t, err := s.task(ctx, c, p.ID)
	if err != nil {
		return nil, err
	}
	hist := -1
	if p.HistoryLength != nil {
		hist = max(*p.HistoryLength, 0)
	}
	return s.view(ctx, t, hist, true)
}

// ListTasks: the agent's tasks the caller may see, newest first; the page
// token is the last id of the previous page.
func (s *Server) listTasks(ctx context.Context, c *call, params json.RawMessage) (any, error) {
	var p ListTasksRequest
	if e := decodeParams(params, &p); e != nil {
		return nil, e
	}
	if !c.actor.admin && c.actor.caller.Agent != c.agent {
		return ListTasksResponse{Tasks: []Task{}, PageSize: 0}, nil
	}
	size := defaultPageSize
	if p.PageSize != nil {
		if *p.PageSize < 1 || *p.PageSize > maxPageSize {
			return nil, invalidParams("params.pageSize: a number from 1 to %d", maxPageSize)
		}
		size = *p.PageSize
	}
	f := orchestrator.Filter{Agent: c.agent, After: p.PageToken}
	wantAuth := false
	// @a2a-js/sdk 1.x sends "UNRECOGNIZED" for a status its caller left
	// out (ts-proto's toJSON of an undefined enum): no filter, as unset.
	if p.Status != "" && p.Status != "TASK_STATE_UNSPECIFIED" && p.Status != "UNRECOGNIZED" {
		st, auth, err := corralState(p.Status)
		if err != nil {
			return nil, invalidParams("params.status: %v", err)
		}
		f.State, wantAuth = st, auth
	}
	var after time.Time
	if p.StatusTimestampAfter != "" {
		var err error
		if after, err = time.Parse(time.RFC3339Nano, p.StatusTimestampAfter); err != nil {
			return nil, invalidParams("params.statusTimestampAfter: an ISO 8601 time in UTC, as 2026-12-07T10:30:00.000Z")
		}
	}
	if p.PageToken != "" && !orchestrator.ValidID(p.PageToken) {
		return nil, invalidParams("params.pageToken: not a page token of this list")
	}
	hist := 0
	if p.HistoryLength != nil {
		hist = max(*p.HistoryLength, 0)
	}
	f.Limit = maxScan
	all, _ := s.tasks.List(f)
	var match []*orchestrator.Task
	for _, t := range all {
		if !c.actor.may(t) || t.Updated.Before(after) {
			continue
		}
		if f.State == orchestrator.InputRequired && wantAuth != (t.Reason == orchestrator.ReasonAwaitingApproval) {
			continue
		}
		if p.ContextID != "" {
			ctxID, err := s.contextOf(ctx, t.ID)
			if err != nil {
				return nil, err
			}
			if ctxID != p.ContextID {
				continue
			}
		}
		match = append(match, t)
	}
	out := ListTasksResponse{Tasks: []Task{}, TotalSize: len(match)}
	page := match
	if len(page) > size {
		page = page[:size]
		out.NextPageToken = page[len(page)-1].ID
	}
	for _, t := range page {
		v, err := s.view(ctx, t, hist, p.IncludeArtifacts)
		if err != nil {
			return nil, err
		}
		out.Tasks = append(out.Tasks, v)
	}
	out.PageSize = len(out.Tasks)
	return out, nil
}

// CancelTask cancels a task that has not ended, waiting (briefly) for its
// worker to end it, and returns it.
func (s *Server) cancelTask(ctx context.Context, c *call, params json.RawMessage) (any, error) {
	var p TaskIDRequest
	if e := decodeParams(params, &p); e != nil {
		return nil, e
	}
	t, err := s.task(ctx, c, p.ID)
	if err != nil {
		return nil, err
	}
	if t.State.Final() {
		return nil, rpcErr(codeTaskNotCancelable, problem.TaskEnded, fmt.Sprintf("task %s is %s already", t.ID, t.State))
	}
	if t, err = s.tasks.Cancel(ctx, t.ID, c.actor.by(), "canceled by "+c.actor.by()+" (A2A CancelTask)"); err != nil {
		return nil, err
	}
	if !t.State.Final() {
		wctx, cancel := context.WithTimeout(ctx, cancelWait)
		var end orchestrator.Event
		err := s.tasks.Events(wctx, t.ID, 0, true, func(ev orchestrator.Event) error {
			if ev.Type == orchestrator.EvState && ev.State.Final() {
				end = ev
			}
			return nil
		})
		cancel()
		if err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if t, err = s.tasks.Get(ctx, t.ID); err != nil {
			return nil, err
		}
		if end.Type != "" {
			t = atEvent(t, end)
		}
	}
	return s.view(ctx, t, 0, true)
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
