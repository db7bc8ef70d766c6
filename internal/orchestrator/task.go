package orchestrator

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"strings"
	"time"
)

// State is a task's state, in A2A's words.
type State string

// The states. Submitted, working and input-required are live; the others
// are final.
const (
	Submitted     State = "submitted"
	Working       State = "working"
	InputRequired State = "input-required"
	Completed     State = "completed"
	Failed        State = "failed"
	Canceled      State = "canceled"
	Rejected      State = "rejected"
)

// Final reports whether a task in state s has ended.
func (s State) Final() bool {
	switch s {
	case Completed, Failed, Canceled, Rejected:
		return true
	}
	return false
}

// States lists every state, for validating filters.
var States = []State{Submitted, Working, InputRequired, Completed, Failed, Canceled, Rejected}

// Reasons corral gives inside a state.
const (
	ReasonMaxTurns         = "max_turns"
	ReasonMaxToolCalls     = "max_tool_calls"
	ReasonDeadline         = "deadline"
	ReasonKilled           = "killed"
	ReasonCanceled         = "canceled"
	ReasonBudgetExceeded   = "budget_exceeded"
	ReasonLoopDetected     = "loop_detected"
	ReasonModelError       = "model_error"
	ReasonRefused          = "refused"
	ReasonAgentGone        = "agent_gone"
	ReasonNotHosted        = "not_hosted"
	ReasonAttempts         = "too_many_attempts"
	ReasonOutputInvalid    = "output_invalid"
	ReasonAskedForInput    = "asked_for_input"
	ReasonAwaitingApproval = "awaiting_approval"
	// ReasonAwaitingAgent: the task waits (input-required) for a task it
	// delegated to (WaitingOn); ReasonHandedOff: the task completed by
	// handing its work to another agent's task (its result names it);
	// ReasonDeadlock: the task was failed to break a cycle of waits.
	ReasonAwaitingAgent = "awaiting_agent"
	ReasonHandedOff     = "handed_off"
	ReasonDeadlock      = "deadlock"
	// The tree's limits (Limits.MaxTreeTurns, MaxTreeCost) were reached.
	ReasonMaxTreeTurns = "max_tree_turns"
	ReasonMaxTreeCost  = "max_tree_cost"
)

// Task is one piece of agent work.
type Task struct {
	ID    string `json:"id"`
	Agent string `json:"agent"`
	// Workflow, on a workflow run, names its Workflow; Agent is then the
	// workflow's spec.agent, the identity its steps act with.
	Workflow string `json:"workflow,omitempty"`
	// AgentUID is the incarnation of Agent the task was created for: an
	// agent deleted and created again does not inherit its tasks.
	AgentUID string `json:"agent_uid,omitempty"`
	// Input is what the task was asked: a JSON string or a JSON value.
	Input json.RawMessage `json:"input"`
	// Principal is the user the work is done for; nil when the agent acts
	// for itself.
	Principal *Principal `json:"principal,omitempty"`
	// Parent and Chain: the task that opened this one and the agents above
	// it (agents calling agents fill them).
	Parent string   `json:"parent,omitempty"`
	Chain  []string `json:"chain,omitempty"`
	// Root is the task at the top of the tree (the task itself when it has
	// no parent): the key of the tree's shared state.
	Root string `json:"root,omitempty"`
	// TraceID is the trace every step of the task's tree is traced in
	// (32 hex digits): `corral trace ID`, or the console's trace view.
	TraceID string `json:"trace_id,omitempty"`
	// Handoff: the task continues its parent's work, which the parent
	// handed off to it (docs/agents.md).
	Handoff bool `json:"handoff,omitempty"`
	// WaitingOn is the task this one waits for (a delegation's child).
	WaitingOn string `json:"waiting_on,omitempty"`
	// WakeAt, on a task parked in input-required, is when a worker wakes
	// it even if nothing else has (wakeDue): on a workflow run parked on
	// its steps' tasks, the first of its agent steps' timeouts and its own
	// deadline; on an agent's task waiting for someone else (an answer, an
	// approval, a task it delegated to), its deadline, which then ends it
	// as it ends a running task. Nil: nothing but that someone wakes it.
	WakeAt *time.Time `json:"wake_at,omitempty"`
	// Hosted: corral runs the agent's loop (for a remote A2A agent, a
	// worker sends the task there and mirrors it); otherwise the agent is
	// external and acts in the task with a token bound to it.
	Hosted    bool              `json:"hosted"`
	Placement map[string]string `json:"placement,omitempty"`
	State     State             `json:"state"`
	// Reason says why the task is in State: corral's word (max_turns,
	// killed, ...); Detail says it for people.
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Result is the final answer: a JSON string, or a JSON value when the
	// agent declares an output schema.
	Result json.RawMessage `json:"result,omitempty"`
	Usage  Usage           `json:"usage"`
	Limits Limits          `json:"limits"`
	// CreatedBy is "admin" or "agent:<name>".
	CreatedBy string     `json:"created_by"`
	Created   time.Time  `json:"created"`
	Updated   time.Time  `json:"updated"`
	Started   *time.Time `json:"started,omitempty"`
	Ended     *time.Time `json:"ended,omitempty"`
	// Deadline is when the task is ended with reason deadline.
	Deadline *time.Time `json:"deadline,omitempty"`
	// Worker runs the task now (or ran it last); Attempts counts the times
	// a worker started it.
	Worker   string `json:"worker,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	// Stop, when set, asks the worker running the task to end it so.
	Stop *Stop `json:"stop,omitempty"`
	// InputDigest identifies the request that created the task, so a
	// retried create with the same Idempotency-Key is recognised.
	InputDigest string `json:"input_digest,omitempty"`
}

// Principal is the user a task acts for.
type Principal struct {
	Subject string   `json:"sub"`
	Issuer  string   `json:"iss,omitempty"`
	Groups  []string `json:"groups,omitempty"`
	Roles   []string `json:"roles,omitempty"`
}

// Stop is a request to end a running task.
type Stop struct {
	State  State     `json:"state"`
	Reason string    `json:"reason"`
	Detail string    `json:"detail,omitempty"`
	By     string    `json:"by,omitempty"`
	Time   time.Time `json:"time"`
}

// Usage is what a task has used so far.
type Usage struct {
	Turns        int     `json:"turns"`
	ModelCalls   int     `json:"model_calls"`
	ToolCalls    int     `json:"tool_calls"`
	InputTokens  int     `json:"input_tokens"`
	OutputTokens int     `json:"output_tokens"`
	Cost         float64 `json:"cost"`
}

// Limits bound a task; they are fixed when it is created.
type Limits struct {
	MaxTurns      int    `json:"max_turns"`
	MaxToolCalls  int    `json:"max_tool_calls"`
	Deadline      string `json:"deadline"`
	RepeatedCalls int    `json:"repeated_calls"`
	// OnExceeded is "fail" or "escalate" (config.AgentLimits).
	OnExceeded string `json:"on_exceeded,omitempty"`
	// Extensions counts the times a person gave the task more room.
	Extensions int `json:"extensions,omitempty"`
	// MaxTreeTurns and MaxTreeCost bound the task's whole tree, as the
	// root's agent set them (config.AgentLimits); 0 is no bound.
	MaxTreeTurns int     `json:"max_tree_turns,omitempty"`
	MaxTreeCost  float64 `json:"max_tree_cost,omitempty"`
}

// escalates reports whether reaching a limit for reason parks the task for
// a person instead of failing it.
func (l Limits) escalates(reason string) bool {
	if l.OnExceeded != "escalate" {
		return false
	}
	switch reason {
	case ReasonMaxTurns, ReasonMaxToolCalls, ReasonDeadline, ReasonLoopDetected, ReasonBudgetExceeded:
		return true
	}
	return false
}

// escalated reports whether a task in input-required for reason waits for
// a person to extend its limits.
func escalated(reason string) bool {
	return Limits{OnExceeded: "escalate"}.escalates(reason)
}

// newID returns a task id: "task_" and 26 characters of Crockford base32
// over 48 bits of milliseconds and 80 random bits, so ids sort by creation.
func newID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	_, _ = rand.Read(b[6:])
	return "task_" + base32(b)
}

// idFor derives the id of a task created with an Idempotency-Key: the same
// owner and key always name the same task, so a retried create finds it.
func idFor(owner, key string) string {
	sum := sha256.Sum256([]byte("corral task\x00" + owner + "\x00" + key))
	return "task_" + base32([16]byte(sum[:16]))
}

// IdempotentID is the id of the task that a create with this owner and
// Idempotency-Key makes (or made): a trigger looks an event's task up by
// it before deciding whether the event is new.
func IdempotentID(owner, key string) string { return idFor(owner, key) }

const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

func base32(b [16]byte) string {
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// ValidID reports whether s has the shape of a task id; anything else is
// refused before it reaches a subject or a bucket key.
func ValidID(s string) bool {
	rest, ok := strings.CutPrefix(s, "task_")
	if !ok || len(rest) != 26 {
		return false
	}
	for i := range len(rest) {
		if !strings.ContainsRune(crockford, rune(rest[i])) {
			return false
		}
	}
	return true
}
