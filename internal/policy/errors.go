package policy

import (
	"errors"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// ErrEvaluation wraps every failure to reach a decision: an evaluation
// error, a rule that breaks the decision contract, a time-out. Callers deny
// the action (code policy_error); no failure ever reads as allow.
var ErrEvaluation = errors.New("policy evaluation failed")

// CompileError lists why a set of modules does not compile, one problem a
// line, each naming the module and line where it can
// ("payments/0.rego:12: rego_parse_error: unexpected } token").
type CompileError struct {
	Errors []string
}

func (e *CompileError) Error() string {
	if len(e.Errors) == 1 {
		return "policy: " + e.Errors[0]
	}
	return "policy: " + strings.Join(e.Errors, "\n")
}

// compileError turns OPA's errors into a CompileError.
func compileError(err error) *CompileError {
	var astErrs ast.Errors
	if errors.As(err, &astErrs) {
		ce := &CompileError{}
		for _, e := range astErrs {
			ce.Errors = append(ce.Errors, e.Error())
		}
		return ce
	}
	var astErr *ast.Error
	if errors.As(err, &astErr) {
		return &CompileError{Errors: []string{astErr.Error()}}
	}
	return &CompileError{Errors: []string{err.Error()}}
}
