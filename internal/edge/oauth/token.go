package oauth

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/telemetry"
)

// maxTask bounds the task parameter, in characters.
const maxTask = 128

// issued is what a grant hands out.
type issued struct {
	token     string
	ttl       time.Duration
	scope     []string
	exchanged bool
}

// tokenResponse is a successful answer (RFC 6749 5.1, RFC 8693 2.2.1).
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
}

// errorResponse is a refusal (RFC 6749 5.2). It is not problem+json:
// OAuth clients parse this shape.
type errorResponse struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// token serves POST /oauth2/token. Every request, issued or refused, is
// audited; a token whose record cannot be written is not issued.
func (h *Handler) token(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	start := h.now()
	rec := &audit.Record{Time: start.UTC(), Kind: "token", Edge: "oauth", RequestID: requestID(r), Remote: r.RemoteAddr}
	out, fail := h.grant(ctx, w, r, rec)
	rec.DurationMS = float64(h.now().Sub(start).Microseconds()) / 1000
	if fail == nil {
		rec.Decision, rec.Status = "allowed", "ok"
		if _, err := h.deps.Audit.Append(context.WithoutCancel(ctx), rec); err != nil {
			h.logger.ErrorContext(ctx, "audit append failed; token not issued", "agent", rec.Agent, "grant", rec.Target, "err", err)
			writeError(w, &failure{Status: http.StatusServiceUnavailable, Code: CodeTemporarilyUnavailable,
				Description: "the audit log cannot be written; corral issues no token it cannot record"})
			return
		}
		writeToken(w, out)
		return
	}
	rec.Decision, rec.Status, rec.Code, rec.Reason = "denied", "refused", fail.Code, fail.auditReason()
	if fail.Status >= 500 {
		rec.Status = "error"
		h.logger.ErrorContext(ctx, "token request failed", "agent", rec.Agent, "grant", rec.Target, "code", fail.Code, "err", fail)
	} else {
		h.logger.DebugContext(ctx, "token request refused", "agent", rec.Agent, "grant", rec.Target, "code", fail.Code, "reason", rec.Reason)
	}
	if h.store(rec, r.RemoteAddr) {
		if _, err := h.deps.Audit.Append(context.WithoutCancel(ctx), rec); err != nil {
			h.logger.ErrorContext(ctx, "audit record lost", "agent", rec.Agent, "grant", rec.Target, "decision", rec.Decision, "err", err)
		}
	}
	writeError(w, fail)
}

// store reports whether a refusal's record is stored: a client that did not
// authenticate is bounded per source address (audit.Refusals).
func (h *Handler) store(rec *audit.Record, remote string) bool {
	if rec.Agent != "" || h.deps.Refusals == nil {
		return true
	}
	store, n := h.deps.Refusals.Admit(remote, h.now())
	if n > 1 {
		rec.Sampled = n
	}
	return store
}

// grant reads the request, authenticates the client and runs its grant.
func (h *Handler) grant(ctx context.Context, w http.ResponseWriter, r *http.Request, rec *audit.Record) (*issued, *failure) {
	f, fail := readForm(w, r)
	if fail != nil {
		return nil, fail
	}
	gt := f.get("grant_type")
	rec.Target = target(gt)
	switch gt {
	case "":
		return nil, badRequest("grant_type is missing")
	case GrantClientCredentials, GrantTokenExchange:
	default:
		return nil, failf(http.StatusBadRequest, CodeUnsupportedGrantType,
			"grant_type %q is not supported; use client_credentials or %s", clip(gt, 64), GrantTokenExchange)
	}
	creds, fail := clientCredentials(r, f)
	if fail != nil {
		return nil, fail
	}
	cl, fail := h.identify(ctx, r, f, gt, creds, rec)
	if fail != nil {
		return nil, fail
	}
	if gt == GrantClientCredentials {
		return h.clientCredentials(ctx, f, cl)
	}
	if cl.self {
		// The subject token was the agent's own workload token: what it
		// gets in exchange is its own access token.
		out, fail := h.clientCredentials(ctx, f, cl)
		if out != nil {
			out.exchanged = true
		}
		return out, fail
	}
	return h.exchange(ctx, f, cl, rec)
}

// target is the audit target of a grant type: a short name for the two
// corral knows, else the raw value, cut to 64 bytes.
func target(grantType string) string {
	switch grantType {
	case GrantClientCredentials:
		return "client_credentials"
	case GrantTokenExchange:
		return "token_exchange"
	}
	s := strings.ToValidUTF8(grantType, "\uFFFD")
	if len(s) > 64 {
		n := 64
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	return s
}

// taskParam reads the optional task parameter: printable, at most maxTask
// characters.
// checkTask refuses a task the agent may not act in, when corral holds
// tasks: a token bound to a task counts on that task's limits and budgets,
// so it must be a real task of the agent's.
func (h *Handler) checkTask(ctx context.Context, task, agent, agentUID string) *failure {
	if task == "" || h.deps.Tasks == nil {
		return nil
	}
	if err := h.deps.Tasks.CanAct(ctx, task, agent, agentUID); err != nil {
		return badRequest("task: %s", err.Error())
	}
	return nil
}

func taskParam(f form) (string, *failure) {
	task := f.get("task")
	if !utf8.ValidString(task) || utf8.RuneCountInString(task) > maxTask ||
		strings.ContainsFunc(task, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return "", badRequest("task must be printable text of at most %d characters", maxTask)
	}
	return task, nil
}

// requestID is the request's id: the one the server's middleware checked
// and put in the context, else the caller's X-Request-Id if it is sane.
func requestID(r *http.Request) string {
	if id := telemetry.RequestID(r.Context()); id != "" {
		return id
	}
	id := r.Header.Get(telemetry.RequestIDHeader)
	if len(id) > 128 {
		return ""
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:-", c) >= 0) {
			return ""
		}
	}
	return id
}

func writeToken(w http.ResponseWriter, out *issued) {
	resp := tokenResponse{
		AccessToken: out.token,
		TokenType:   "Bearer",
		ExpiresIn:   int64(out.ttl / time.Second),
		Scope:       strings.Join(out.scope, " "),
	}
	if out.exchanged {
		resp.IssuedTokenType = TokenTypeAccessToken
	}
	writeJSON(w, http.StatusOK, resp)
}

// writeError answers a refusal. Every 401 challenges for Basic: RFC 6749
// 5.2 requires it when the client used Basic, and RFC 9110 15.5.2 requires
// some challenge on any 401.
func writeError(w http.ResponseWriter, f *failure) {
	if f.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="corral"`)
	}
	writeJSON(w, f.Status, errorResponse{Error: f.Code, Description: f.Description})
}

// writeJSON writes a token endpoint answer, which no cache may keep
// (RFC 6749 5.1).
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client may have gone; nothing to do about it
}

// notAllowed answers the token path's other methods.
func (h *Handler) notAllowed(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", http.MethodPost)
	writeError(w, failf(http.StatusMethodNotAllowed, CodeInvalidRequest, "the token endpoint takes POST, not %s", r.Method))
}
