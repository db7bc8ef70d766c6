package openapi

import (
	"errors"
	"fmt"
	"strings"
)

// Errors that callers may branch on with errors.Is.
var (
	// ErrUnsupportedVersion: the document is not OpenAPI 3.0 or 3.1 (Swagger
	// 2.0 included).
	ErrUnsupportedVersion = errors.New("unsupported OpenAPI version")
	// ErrBadRef: a $ref that is not a local JSON pointer, points nowhere, or
	// loops through reference objects.
	ErrBadRef = errors.New("bad $ref")
	// ErrTooLarge: the document, or what its $refs expand to, exceeds the
	// limits that keep an import cheap.
	ErrTooLarge = errors.New("too large")
	// ErrInvalid: the document is not a well-formed OpenAPI document.
	ErrInvalid = errors.New("invalid OpenAPI document")
)

// Error is a problem with one document, and where possible one operation and
// the node at fault.
type Error struct {
	// Document names the document, as Options.Document.
	Document string
	// Operation is where the problem was met, such as "paths./pet/{petId}.get";
	// empty for a problem with the document as a whole.
	Operation string
	// Pointer is the JSON pointer (RFC 6901) of the node at fault, such as
	// "/components/schemas/Pet/properties/tags"; empty if unknown.
	Pointer string
	// Err is the problem.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Document != "" {
		b.WriteString(e.Document)
		b.WriteString(": ")
	}
	if e.Operation != "" {
		b.WriteString(e.Operation)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	if e.Pointer != "" {
		b.WriteString(" (at #")
		b.WriteString(e.Pointer)
		b.WriteString(")")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// pointerError carries the JSON pointer of the node at fault up to the code
// that knows the operation and builds an *Error.
type pointerError struct {
	pointer string
	err     error
}

func (e *pointerError) Error() string { return e.err.Error() }
func (e *pointerError) Unwrap() error { return e.err }

// errAt is a problem at the node with JSON pointer at. Its message should say
// what is wrong in words; the pointer is shown apart.
func errAt(at string, format string, args ...any) error {
	return &pointerError{pointer: at, err: fmt.Errorf(format, args...)}
}

// maxErrors caps the problems one import reports: past that, the list helps
// nobody.
const maxErrors = 20

// joinErrors joins at most maxErrors problems, then says how many more there
// were.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	if len(errs) > maxErrors {
		more := len(errs) - maxErrors
		errs = append(errs[:maxErrors:maxErrors], fmt.Errorf("and %d more problems", more))
	}
	return errors.Join(errs...)
}
