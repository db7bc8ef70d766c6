package oauth

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/corral-dev/corral/internal/identity"
)

// The error codes the token endpoint answers with: RFC 6749 5.2, RFC 8693
// 2.2.2 (invalid_target), and two for corral's own failures. invalid_grant
// is not among them: RFC 8693 2.2.2 answers a bad subject_token or
// actor_token with invalid_request, and corral has no other grant to refuse.
const (
	CodeInvalidRequest         = "invalid_request"
	CodeInvalidClient          = "invalid_client"
	CodeUnauthorizedClient     = "unauthorized_client"
	CodeUnsupportedGrantType   = "unsupported_grant_type"
	CodeInvalidScope           = "invalid_scope"
	CodeInvalidTarget          = "invalid_target"
	CodeServerError            = "server_error"
	CodeTemporarilyUnavailable = "temporarily_unavailable"
)

// failure is an OAuth error response (RFC 6749 5.2). Description is safe to
// show; Reason and Detail say, for the audit, why a token or key was
// refused; Err is the internal cause, for the log only.
type failure struct {
	Status      int
	Code        string
	Description string
	Reason      identity.Reason
	Detail      string
	Err         error
}

func (e *failure) Error() string {
	msg := "oauth: " + e.Code + ": " + e.Description
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *failure) Unwrap() error { return e.Err }

// auditReason is the record's reason: "<reason>: <detail>" for a refused
// token or key, else the description.
func (e *failure) auditReason() string {
	if e.Reason == "" {
		return e.Description
	}
	detail := e.Detail
	if detail == "" {
		detail = e.Description
	}
	return string(e.Reason) + ": " + detail
}

// failf returns a *failure whose description is built from format.
func failf(status int, code, format string, args ...any) *failure {
	return &failure{Status: status, Code: code, Description: fmt.Sprintf(format, args...)}
}

// badRequest returns a 400 invalid_request.
func badRequest(format string, args ...any) *failure {
	return failf(http.StatusBadRequest, CodeInvalidRequest, format, args...)
}

// invalidClient returns a 401 invalid_client.
func invalidClient(format string, args ...any) *failure {
	return failf(http.StatusUnauthorized, CodeInvalidClient, format, args...)
}

// mismatch is a credential of agent have presented for agent want: what
// names the credential to the client, which holds it; audited names it to
// the audit (by key ID, never by value).
func mismatch(what, audited, have, want string) *failure {
	return &failure{
		Status:      http.StatusUnauthorized,
		Code:        CodeInvalidClient,
		Description: fmt.Sprintf("%s belongs to another agent than client_id %q", what, want),
		Reason:      identity.ReasonAgentMismatch,
		Detail:      fmt.Sprintf("%s of agent %q presented with client_id %q", audited, have, want),
	}
}

// tokenRefused turns the refusal of the token in field into an OAuth error.
// RFC 8693 2.2.2 answers an invalid subject_token or actor_token with
// invalid_request, not invalid_grant, and corral follows it. An issuer that
// cannot be reached is not the client's fault: 503, to be retried.
func tokenRefused(field string, err error) *failure {
	var te *identity.TokenError
	if !errors.As(err, &te) {
		return &failure{Status: http.StatusServiceUnavailable, Code: CodeTemporarilyUnavailable,
			Description: field + " could not be verified now; try again", Err: err}
	}
	e := &failure{Status: http.StatusBadRequest, Code: CodeInvalidRequest,
		Description: fmt.Sprintf("%s refused (%s)", field, te.Reason),
		Reason:      te.Reason, Detail: te.Detail, Err: te.Err}
	if te.Detail != "" {
		e.Description += ": " + te.Detail
	}
	if te.Reason == identity.ReasonIssuerDown {
		e.Status, e.Code = http.StatusServiceUnavailable, CodeTemporarilyUnavailable
	}
	return e
}

// refuse is a refusal of the token in field for reason, found by this package.
func refuse(field string, reason identity.Reason, format string, args ...any) *failure {
	return tokenRefused(field, identity.Refused(reason, format, args...))
}

// internal is a failure inside corral; its cause is logged, not shown.
func internal(description string, err error) *failure {
	return &failure{Status: http.StatusInternalServerError, Code: CodeServerError, Description: description, Err: err}
}

// invalidScope returns a 400 invalid_scope.
func invalidScope(format string, args ...any) *failure {
	return failf(http.StatusBadRequest, CodeInvalidScope, format, args...)
}
