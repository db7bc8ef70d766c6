package a2a

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/corral-dev/corral/internal/orchestrator"
)

// Metadata keys corral sets on the tasks it shows.
const (
	metaReason   = "corral.dev/reason"
	metaApproval = "corral.dev/approvalId"
	metaAgent    = "corral.dev/agent"
)

// state maps a corral task's state to A2A's. A task parked while people
// decide on one of its steps (awaiting_approval) is AUTH_REQUIRED: the
// client cannot answer it with a message; the approval's decision
// (docs/approvals.md) wakes it.
func state(t *orchestrator.Task) string {
	switch t.State {
	case orchestrator.Submitted:
		return StateSubmitted
	case orchestrator.Working:
		return StateWorking
	case orchestrator.InputRequired:
		if t.Reason == orchestrator.ReasonAwaitingApproval {
			return StateAuthRequired
		}
		return StateInputRequired
	case orchestrator.Completed:
		return StateCompleted
	case orchestrator.Failed:
		return StateFailed
	case orchestrator.Canceled:
		return StateCanceled
	case orchestrator.Rejected:
		return StateRejected
	}
	return "TASK_STATE_UNSPECIFIED"
}

// corralState maps an A2A state filter to corral's; auth says the
// awaiting_approval reason is wanted (or, for input-required, not).
func corralState(s string) (orchestrator.State, bool, error) {
	switch s {
	case StateSubmitted:
		return orchestrator.Submitted, false, nil
	case StateWorking:
		return orchestrator.Working, false, nil
	case StateInputRequired:
		return orchestrator.InputRequired, false, nil
	case StateAuthRequired:
		return orchestrator.InputRequired, true, nil
	case StateCompleted:
		return orchestrator.Completed, false, nil
	case StateFailed:
		return orchestrator.Failed, false, nil
	case StateCanceled:
		return orchestrator.Canceled, false, nil
	case StateRejected:
		return orchestrator.Rejected, false, nil
	}
	return "", false, fmt.Errorf("%q is not a task state (TASK_STATE_SUBMITTED, TASK_STATE_WORKING, TASK_STATE_INPUT_REQUIRED, TASK_STATE_AUTH_REQUIRED, TASK_STATE_COMPLETED, TASK_STATE_FAILED, TASK_STATE_CANCELED, TASK_STATE_REJECTED)", truncate(s, 60))
}

// approvalID reads the approval a parked task waits for from its detail
// ("approval ap_...: ...").
func approvalID(detail string) string {
	rest, ok := strings.CutPrefix(detail, "approval ")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, ":")
	id, _, _ = strings.Cut(id, " ")
	return id
}

// status is a task's A2A status: its state, and for a state that says
// something (a question, a failure, an approval awaited) a message from
// the agent with corral's detail.
func status(t *orchestrator.Task, contextID string) TaskStatus {
	st := TaskStatus{State: state(t), Timestamp: timestamp(t.Updated)}
	if t.State != orchestrator.Submitted && t.State != orchestrator.Working && t.State != orchestrator.Completed && t.Detail != "" {
		md, _ := json.Marshal(taskMetadata(t))
		st.Message = &Message{
			MessageID: t.ID + "/status/" + string(t.State) + "/" + fmt.Sprint(t.Updated.UnixNano()),
			ContextID: contextID, TaskID: t.ID, Role: RoleAgent,
			Parts: []Part{TextPart(t.Detail)}, Metadata: md,
		}
	}
	return st
}

func taskMetadata(t *orchestrator.Task) map[string]any {
	md := map[string]any{metaAgent: t.Agent}
	if t.Reason != "" {
		md[metaReason] = t.Reason
	}
	if t.Reason == orchestrator.ReasonAwaitingApproval {
		if id := approvalID(t.Detail); id != "" {
			md[metaApproval] = id
		}
	}
	if len(t.Chain) > 0 {
		md[ChainKey] = t.Chain
	}
	return md
}

// resultArtifact is a completed task's result as an artifact: a text part
// for a string, a data part for any other JSON.
func resultArtifact(t *orchestrator.Task) []Artifact {
	if len(t.Result) == 0 {
		return nil
	}
	return []Artifact{{ArtifactID: t.ID + "/result", Name: "result", Parts: []Part{valuePart(t.Result)}}}
}

func valuePart(v json.RawMessage) Part {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return TextPart(s)
	}
	return Part{Data: v, MediaType: "application/json"}
}

// view is the A2A task of a corral task. history < 0 is the whole
// history; 0 none.
func (s *Server) view(ctx context.Context, t *orchestrator.Task, history int, artifacts bool) (Task, error) {
	ctxID, err := s.contextOf(ctx, t.ID)
	if err != nil {
		return Task{}, err
	}
	out := Task{ID: t.ID, ContextID: ctxID, Status: status(t, ctxID), Metadata: taskMetadata(t)}
	if artifacts {
		out.Artifacts = resultArtifact(t)
	}
	if history != 0 {
		h, err := s.history(ctx, t, ctxID)
		if err != nil {
			return Task{}, err
		}
		if history > 0 && len(h) > history {
			h = h[len(h)-history:]
		}
		out.History = h
	}
	return out, nil
}

// contextOf is the task's A2A context: the one its first message named,
// or the task's id.
func (s *Server) contextOf(ctx context.Context, id string) (string, error) {
	r, _, err := s.store.get(ctx, id)
	if err != nil {
		return "", substrate(err)
	}
	if r.ContextID != "" {
		return r.ContextID, nil
	}
	return id, nil
}

// history rebuilds the messages of a task from its journal: the input,
// the agent's questions and the answers it was given.
func (s *Server) history(ctx context.Context, t *orchestrator.Task, ctxID string) ([]Message, error) {
	msgs := []Message{{MessageID: t.ID + "/input", ContextID: ctxID, TaskID: t.ID, Role: RoleUser, Parts: []Part{valuePart(t.Input)}}}
	err := s.tasks.Events(ctx, t.ID, 0, false, func(ev orchestrator.Event) error {
		switch {
		case ev.Type == orchestrator.EvState && ev.State == orchestrator.InputRequired && ev.Reason == orchestrator.ReasonAskedForInput && ev.Detail != "":
			msgs = append(msgs, Message{MessageID: fmt.Sprintf("%s/event/%d", t.ID, ev.Seq), ContextID: ctxID, TaskID: t.ID, Role: RoleAgent, Parts: []Part{TextPart(ev.Detail)}})
		case ev.Type == orchestrator.EvMessage:
			var m struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			}
			if json.Unmarshal(ev.Message, &m) == nil && m.Role == "user" && m.Content != "" {
				msgs = append(msgs, Message{MessageID: fmt.Sprintf("%s/event/%d", t.ID, ev.Seq), ContextID: ctxID, TaskID: t.ID, Role: RoleUser, Parts: []Part{TextPart(m.Content)}})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(t.Result) > 0 && t.State == orchestrator.Completed {
		msgs = append(msgs, Message{MessageID: t.ID + "/answer", ContextID: ctxID, TaskID: t.ID, Role: RoleAgent, Parts: []Part{valuePart(t.Result)}})
	}
	return msgs, nil
}

// input turns a message's parts into a task's input: the text of its text
// parts (one string); a message of one data part is that JSON value; text
// and data together are the text with each data part's JSON on its own
// line. Files (raw bytes, URLs) are refused: corral's agents take text and
// JSON.
func input(parts []Part) (json.RawMessage, error) {
	if len(parts) == 0 {
		return nil, invalidParams("params.message.parts: at least one part is required")
	}
	if len(parts) == 1 && parts[0].Text == nil && len(parts[0].Data) > 0 && len(parts[0].Raw) == 0 && parts[0].URL == "" {
		return compact(parts[0].Data), nil
	}
	var b strings.Builder
	for i, p := range parts {
		set := 0
		for _, ok := range []bool{p.Text != nil, len(p.Raw) > 0, p.URL != "", len(p.Data) > 0} {
			if ok {
				set++
			}
		}
		if set != 1 {
			return nil, invalidParams("params.message.parts[%d]: set exactly one of text, raw, url or data", i)
		}
		if len(p.Raw) > 0 || p.URL != "" {
			return nil, rpcErr(codeContentType, "unsupported_media_type", fmt.Sprintf("params.message.parts[%d]: files (raw, url) are not supported: corral's agents take text and data parts", i))
		}
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		if p.Text != nil {
			b.WriteString(*p.Text)
		} else {
			b.Write(compact(p.Data))
		}
	}
	if strings.TrimSpace(b.String()) == "" {
		return nil, invalidParams("params.message.parts: the message says nothing (all text parts are empty)")
	}
	raw, _ := json.Marshal(b.String())
	return raw, nil
}

func compact(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// text is a task input as the text of a message to the task.
func text(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}
