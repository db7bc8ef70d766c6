package config

import (
	"fmt"
	"strings"
)

// FieldError is one problem with one document, located as precisely as the
// input allows: the file, the document's position in it (from 1), the resource
// it declares and the field.
type FieldError struct {
	Source   string `json:"source,omitempty"`
	Document int    `json:"document,omitempty"`
	Resource string `json:"resource,omitempty"` // "Agent/impact", or "Agent" before the name is known
	Field    string `json:"field,omitempty"`    // "spec.limits.maxTurns"
	Message  string `json:"message"`
}

// Error renders the error in the shape users grep for:
// "agents.yaml: document 2 (Agent/impact): spec.limits.maxTurns: must be >= 1".
func (e FieldError) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source)
		b.WriteString(": ")
	}
	if e.Document > 0 {
		fmt.Fprintf(&b, "document %d", e.Document)
		if e.Resource != "" {
			fmt.Fprintf(&b, " (%s)", e.Resource)
		}
		b.WriteString(": ")
	} else if e.Resource != "" {
		b.WriteString(e.Resource)
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// Errors is every problem found in a set of documents; it is returned as an
// error only when it is not empty.
type Errors []FieldError

// Error lists one problem per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Truncate returns the first limit problems of es followed, if any were left
// out, by one more problem, "and N more problems", which has no source,
// document, resource or field: limit+1 entries in all. A list of at most limit
// problems is returned as it is. es itself is never modified. Truncate keeps a
// report readable, and its size bounded, however many problems the input has.
func (es Errors) Truncate(limit int) Errors {
	limit = max(limit, 0)
	if len(es) <= limit {
		return es
	}
	out := make(Errors, limit, limit+1)
	copy(out, es)
	more := len(es) - limit
	msg := fmt.Sprintf("and %d more problems", more)
	if more == 1 {
		msg = "and 1 more problem"
	}
	return append(out, FieldError{Message: msg})
}
