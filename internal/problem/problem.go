// Package problem turns errors into RFC 9457 problem details
// (application/problem+json) with a stable code, a detail that is safe to
// show, and the request id. It is the one place HTTP errors are rendered.
package problem

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/telemetry"
)

// The stable codes, documented in docs/api.md ("Errors"). Clients branch on these,
// never on detail text.
const (
	Unauthenticated  = "unauthenticated"
	NotFound         = "not_found"
	MethodNotAllowed = "method_not_allowed"
	UnknownKind      = "unknown_kind"
	ResourceNotFound = "resource_not_found"
	KeyNotFound      = "key_not_found"
	NotKilled        = "not_killed"
	InvalidResource  = "invalid_resource"
	InvalidRequest   = "invalid_request"
	Conflict         = "conflict"
	RequestTooLarge  = "request_too_large"
	UnsupportedMedia = "unsupported_media_type"
	Internal         = "internal"
	// NotReady: the replica is starting and serves no call yet (503,
	// Retry-After); SubstrateUnavailable: NATS JetStream did not answer in
	// time, as during a leader election (503, Retry-After). Both say "try
	// again", unlike internal.
	NotReady             = "not_ready"
	SubstrateUnavailable = "substrate_unavailable"

	// The pipeline's codes (ARCHITECTURE.md, "The Action and the pipeline").
	ToolNotFound        = "tool_not_found"
	PolicyDenied        = "policy_denied"
	ApprovalRequired    = "approval_required"
	PolicyError         = "policy_error"
	InvalidArguments    = "invalid_arguments"
	Killed              = "killed"
	IdempotencyConflict = "idempotency_conflict"
	UpstreamUnavailable = "upstream_unavailable"
	UpstreamTimeout     = "upstream_timeout"
	UpstreamInvalid     = "upstream_invalid"
	UpstreamError       = "upstream_error"
	AuditUnavailable    = "audit_unavailable"
	AuditFull           = "audit_full"
	ModelNotFound       = "model_not_found"
	BudgetExceeded      = "budget_exceeded"
	// RateLimited: a RateLimit covering the call is at its rate or its
	// cap (docs/limits.md); UpstreamThrottled: the tool's upstream or the
	// model's provider answered 429 and asked corral to wait.
	RateLimited       = "rate_limited"
	UpstreamThrottled = "upstream_throttled"

	// Durable tasks (docs/tasks.md): no such task (or not the caller's);
	// the task has ended; the task is at one of its limits.
	TaskNotFound = "task_not_found"
	TaskEnded    = "task_ended"
	TaskLimit    = "task_limit"

	// Human approvals (docs/approvals.md): the call is parked until people
	// decide (202, with approval_id and Location); the approval was denied
	// or expired (403); it was executed already (409); no such approval;
	// the caller may not decide it (403); it is no longer pending (409).
	ApprovalPending   = "approval_pending"
	ApprovalDenied    = "approval_denied"
	ApprovalExpired   = "approval_expired"
	ApprovalUsed      = "approval_used"
	ApprovalNotFound  = "approval_not_found"
	ApprovalForbidden = "approval_forbidden"
	ApprovalClosed    = "approval_closed"

	// Agents calling agents (docs/agents.md), also across A2A
	// (docs/a2a.md): the callee is already in the caller's chain (409); the chain would be deeper than maxDepth
	// (409); a task failed to break a wait-for cycle; the shared state's
	// version is not the one given (412), or none was given (428).
	AgentCycle           = "agent_cycle"
	AgentDepth           = "agent_depth"
	AgentNotFound        = "agent_not_found"
	StateVersionMismatch = "state_version_mismatch"
	StateVersionRequired = "state_version_required"
	StateTooLarge        = "state_too_large"

	// The model gateway's limits (docs/models.md, "Limits").
	OutputLimitTooHigh = "output_limit_too_high"
	Overloaded         = "overloaded"
	ClientClosed       = "client_closed"

	// Workflows and dead letters (docs/workflows.md): no such dead letter;
	// a step's routing slip names a step the workflow does not let it choose.
	DeadLetterNotFound = "dead_letter_not_found"
	RoutingSlipInvalid = "routing_slip_invalid"

	// Triggers (docs/triggers.md): a webhook request without the
	// signature its trigger requires (401), with a signature that does not
	// verify (403), or signed too long ago, a replay (403); no such
	// trigger (404); the trigger is at its maxConcurrent (429, Retry-After).
	SignatureMissing = "signature_missing"
	SignatureInvalid = "signature_invalid"
	SignatureExpired = "signature_expired"
	TriggerNotFound  = "trigger_not_found"
	TriggerBusy      = "trigger_busy"
	// The web console (docs/console.md): a change without the session's
	// CSRF token or from another origin; a call the signed-in role may not
	// make.
	CSRFFailed = "csrf_failed"
	Forbidden  = "forbidden"
)

// Error is an error with the HTTP status and stable code it should be
// rendered with. Detail is shown to the client; Err, the internal cause, only
// goes to the log.
type Error struct {
	Status int
	Code   string
	Detail string
	// Errors, when set, is rendered as the "errors" member: the list of
	// individual problems (for example one per invalid field).
	Errors any
	// AuditID, when set, names the audit record of the refused action.
	AuditID string
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter time.Duration
	// ApprovalID, when set, names the approval a parked call awaits (or
	// was refused by): rendered as approval_id and, for a pending one, as
	// Location: /v1/approvals/{id}.
	ApprovalID string
	Err        error
}

// New returns a problem with no internal cause.
func New(status int, code, detail string) *Error {
	return &Error{Status: status, Code: code, Detail: detail}
}

// Wrap returns a problem whose internal cause is err.
func Wrap(status int, code, detail string, err error) *Error {
	return &Error{Status: status, Code: code, Detail: detail, Err: err}
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Detail, e.Err)
	}
	return e.Code + ": " + e.Detail
}

func (e *Error) Unwrap() error { return e.Err }

// Details is the wire form of a problem.
type Details struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Instance  string `json:"instance,omitempty"`
	Code      string `json:"code"`
	RequestID string `json:"request_id,omitempty"`
	Errors    any    `json:"errors,omitempty"`
	AuditID   string `json:"audit_id,omitempty"`
	// ApprovalID names the approval of a parked call.
	ApprovalID string `json:"approval_id,omitempty"`
	// Error is a protocol's own error member, set by an edge through
	// HandleWith: OpenAI's SDKs read the message from "error".
	Error any `json:"error,omitempty"`
}

// TypeURI is the problem type URI of a code; docs/api.md describes each.
func TypeURI(code string) string { return "https://corral.dev/problems/" + code }

// Write renders err. A *Error (anywhere in the chain) is shown as it says;
// anything else is an internal error whose text stays in the log.
func Write(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	write(w, r, logger, err, nil)
}

// write renders err, letting decorate add to the details first.
func write(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error, decorate func(*Details)) {
	var p *Error
	if !errors.As(err, &p) {
		p = Wrap(http.StatusInternalServerError, Internal, "internal error; the server log has the details under this request_id", err)
	}
	ctx := r.Context()
	switch {
	case p.Code == Internal:
		logger.ErrorContext(ctx, "request failed", "code", p.Code, "err", err)
	case p.Err != nil:
		// Refusals and upstreams' failures are the caller's to handle; the
		// audit and the metrics count them, so the log does not shout.
		logger.DebugContext(ctx, "request refused", "code", p.Code, "err", p.Err)
	}
	d := Details{
		Type:      TypeURI(p.Code),
		Title:     http.StatusText(p.Status),
		Status:    p.Status,
		Detail:    p.Detail,
		Instance:  r.URL.Path,
		Code:      p.Code,
		RequestID: telemetry.RequestID(ctx),
		Errors:    p.Errors,
		AuditID:   p.AuditID,
	}
	d.ApprovalID = p.ApprovalID
	if p.ApprovalID != "" {
		w.Header().Set("Location", "/v1/approvals/"+p.ApprovalID)
	}
	if decorate != nil {
		decorate(&d)
	}
	if p.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(p.RetryAfter.Seconds()))))
	}
	if p.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="corral"`)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(d)
}

// HandlerFunc is an HTTP handler that returns its error instead of writing it.
type HandlerFunc func(http.ResponseWriter, *http.Request) error

// Handle adapts h to http.Handler, rendering the error h returns with Write.
func Handle(logger *slog.Logger, h HandlerFunc) http.Handler {
	return HandleWith(logger, nil, h)
}

// HandleWith is Handle for an edge whose clients expect more in an error
// body: decorate adds it to the details before they are written.
func HandleWith(logger *slog.Logger, decorate func(*Details), h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			write(w, r, logger, err, decorate)
		}
	})
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) error {
	return writeJSON(w, status, v, "  ")
}

// WriteCompactJSON writes v as unindented JSON: for the gateway's answers,
// which programs read and which may be large.
func WriteCompactJSON(w http.ResponseWriter, status int, v any) error {
	return writeJSON(w, status, v, "")
}

func writeJSON(w http.ResponseWriter, status int, v any, indent string) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	return enc.Encode(v)
}

// NotAllowed returns a handler for a path's other methods: 405 with the
// Allow header listing the ones it takes.
func NotAllowed(allowed ...string) HandlerFunc {
	allow := strings.Join(allowed, ", ")
	return func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Allow", allow)
		return New(http.StatusMethodNotAllowed, MethodNotAllowed, fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, allow))
	}
}
