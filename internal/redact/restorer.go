package redact

import (
	"maps"
	"slices"
	"strings"
)

// Restorer restores placeholders in a stream of text pieces (the deltas of
// a streamed answer), where a placeholder may be split across pieces. It
// holds back only a tail that may still become one of the session's
// placeholders ("<EMA" when "<EMAIL_1>" exists), never more, so the stream
// is delayed by at most a placeholder's length. A Restorer serves one stream
// and is not safe for concurrent use.
type Restorer struct {
	spend   func(int) bool // the session's restore budget
	values  map[string]string
	keys    []string // the placeholders, sorted, for prefix lookups
	pending string
}

// NewRestorer starts restoring one stream of plain text with the
// placeholders the session has made so far (redact the whole request first).
func (s *Session) NewRestorer() *Restorer {
	s.mu.Lock()
	defer s.mu.Unlock()
	values := maps.Clone(s.values)
	return &Restorer{spend: s.spend, values: values, keys: slices.Sorted(maps.Keys(values))}
}

// NewJSONRestorer is NewRestorer for the inside of a JSON document streamed
// in pieces, such as tool-call arguments: each value is escaped as JSON
// string content, so a restored value cannot break the document. A
// placeholder the model wrote with escapes ("\u003cEMAIL_1\u003e") is not
// restored here; RestoreJSON restores it in the whole document.
func (s *Session) NewJSONRestorer() *Restorer {
	r := s.NewRestorer()
	for k, v := range r.values {
		r.values[k] = jsonStringContent(v)
	}
	return r
}

// Write takes the next piece of the stream and returns the text that can be
// emitted now, restored.
func (r *Restorer) Write(piece string) string {
	if len(r.values) == 0 {
		return piece
	}
	text := r.pending + piece
	var b strings.Builder
	held := restore(&b, text, r.values, r.isPrefix, r.spend)
	r.pending = text[len(text)-held:]
	return b.String()
}

// Flush returns what is held back at the end of the stream: a tail that
// never became a placeholder.
func (r *Restorer) Flush() string {
	p := r.pending
	r.pending = ""
	return p
}

// isPrefix reports whether t is the start of one of the placeholders.
func (r *Restorer) isPrefix(t string) bool {
	i, _ := slices.BinarySearch(r.keys, t)
	return i < len(r.keys) && strings.HasPrefix(r.keys[i], t)
}
