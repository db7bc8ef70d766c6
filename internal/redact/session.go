package redact

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Mode is what a Session does with the personal data it finds.
type Mode string

// The modes, as configured on a model (config.ModelSpec.Redact).
const (
	// Off sends text as it is.
	Off Mode = "off"
	// Mask replaces each value with its type tag, "<EMAIL>"; answers are
	// left as they come.
	Mask Mode = "mask"
	// Reversible replaces each value with a numbered placeholder,
	// "<EMAIL_1>", the same for the same value throughout the session, and
	// restores the placeholders in answers.
	Reversible Mode = "reversible"
)

// ParseMode checks a configured mode.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Off, Mask, Reversible:
		return m, nil
	}
	return "", fmt.Errorf("redact: unknown mode %q (want off, mask or reversible)", s)
}

// Session redacts the texts of one model request (every message, tool-call
// arguments) and restores its answer. Within a session the same value always
// gets the same placeholder, a placeholder never equals text that was already
// in the input (so restoring cannot invent values), and Restore maps
// placeholders back. A Session is safe for concurrent use.
//
// Only exact placeholders are restored: a model that writes "<email_1>" or
// "<EMAIL 1>" gets that text back, not the value.
type Session struct {
	r      *Redactor
	mode   Mode
	budget *budget

	mu sync.Mutex
	// byValue maps a redacted value to its placeholder (its tag, in mask
	// mode).
	byValue map[typedValue]string
	// values maps each placeholder to the text it replaced.
	values map[string]string
	// last is the last number used for a type's placeholders.
	last map[Type]int
	// reserved holds placeholder-shaped text seen in the input; no
	// placeholder is ever made equal to it.
	reserved map[string]bool
	counts   map[Type]int
	// restoreLeft is how many bytes of values restoration may still write
	// (MaxRestoreBytes at the start), shared by Restore, RestoreJSON and
	// the session's Restorers.
	restoreLeft atomic.Int64
	capped      atomic.Bool
}

// MaxRestoreBytes bounds the bytes of values a session writes back into
// an answer. Past it, placeholders are left as the model wrote them: an
// answer of 3.6 MB of "<EMAIL_1>" would otherwise grow thirtyfold, and no
// honest answer repeats a prompt's personal data a megabyte's worth.
const MaxRestoreBytes = 1 << 20

// spendRestore reports whether n more bytes of values may be restored, and
// spends them.
func (s *Session) spendRestore(n int) bool {
	if s.restoreLeft.Add(-int64(n)) >= 0 {
		return true
	}
	s.restoreLeft.Add(int64(n))
	return false
}

// RestoreCapped reports whether restoration reached MaxRestoreBytes and
// left placeholders in the answer.
func (s *Session) RestoreCapped() bool { return s.capped.Load() }

type typedValue struct {
	typ   Type
	value string
	// literal marks placeholder-shaped input text that had to be replaced
	// because the session had already given that placeholder to a value.
	literal bool
	// number marks a value that was a whole JSON number: it gets a
	// placeholder of its own, which RestoreJSON turns back into a number.
	number bool
}

// NewSession starts a session in mode; a mode other than Off or Mask acts
// as Reversible, the default, so a typo never sends data in the clear.
func (r *Redactor) NewSession(mode Mode) *Session {
	if mode != Off && mode != Mask {
		mode = Reversible
	}
	s := &Session{
		r:        r,
		mode:     mode,
		budget:   newBudget(),
		byValue:  map[typedValue]string{},
		values:   map[string]string{},
		last:     map[Type]int{},
		reserved: map[string]bool{},
		counts:   map[Type]int{},
	}
	s.restoreLeft.Store(MaxRestoreBytes)
	return s
}

// Mode is the session's mode.
func (s *Session) Mode() Mode { return s.mode }

// Redact returns text with the personal data in it replaced: by "<EMAIL>"
// in mask mode, by "<EMAIL_1>" in reversible mode. In off mode it returns
// text as it is.
func (s *Session) Redact(text string) string {
	if s.mode == Off {
		return text
	}
	findings := s.r.find(text, s.budget)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mode == Mask {
		return s.mask(text, findings)
	}
	// Placeholder-shaped text already in the input is reserved before any
	// value gets a placeholder, so none is made equal to it; if one already
	// was (by an earlier text), the input's copy is replaced too, by a
	// placeholder that restores to it.
	var literals []Finding
	for _, t := range placeholderTokens(text) {
		if overlapsAny(findings, t) {
			continue
		}
		if _, taken := s.values[text[t.Start:t.End]]; taken {
			literals = append(literals, t)
			continue
		}
		s.reserved[text[t.Start:t.End]] = true
	}
	if len(findings) == 0 && len(literals) == 0 {
		return text
	}
	all := mergeSorted(findings, literals)
	var b strings.Builder
	b.Grow(len(text))
	last := 0
	for _, f := range all {
		b.WriteString(text[last:f.Start])
		b.WriteString(s.placeholder(typedValue{typ: f.Type, value: text[f.Start:f.End], literal: f.Type == ""}))
		last = f.End
	}
	b.WriteString(text[last:])
	return b.String()
}

// mask replaces findings with type tags and counts the distinct values.
func (s *Session) mask(text string, findings []Finding) string {
	if len(findings) == 0 {
		return text
	}
	var b strings.Builder
	last := 0
	for _, f := range findings {
		tag := "<" + string(f.Type) + ">"
		k := typedValue{typ: f.Type, value: text[f.Start:f.End]}
		if _, seen := s.byValue[k]; !seen {
			s.byValue[k] = tag
			s.counts[f.Type]++
		}
		b.WriteString(text[last:f.Start])
		b.WriteString(tag)
		last = f.End
	}
	b.WriteString(text[last:])
	return b.String()
}

// placeholder returns the placeholder of k, making a new one the first
// time.
func (s *Session) placeholder(k typedValue) string {
	if p, ok := s.byValue[k]; ok {
		return p
	}
	value, typ := k.value, k.typ
	if k.literal {
		typ = Type(value[1:strings.LastIndexByte(value, '_')])
	}
	var p string
	for {
		s.last[typ]++
		p = "<" + string(typ) + "_" + strconv.Itoa(s.last[typ]) + ">"
		_, taken := s.values[p]
		if !taken && !s.reserved[p] {
			break
		}
	}
	s.byValue[k] = p
	s.values[p] = value
	other := k
	other.number = !k.number
	if _, counted := s.byValue[other]; !k.literal && !counted {
		s.counts[typ]++
	}
	return p
}

// Restore returns text with this session's placeholders replaced by the
// values they stand for. Text in mask or off mode is returned as it is.
func (s *Session) Restore(text string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.values) == 0 {
		return text
	}
	var b strings.Builder
	restore(&b, text, s.values, nil, s.spend)
	return b.String()
}

// spend is spendRestore, noting when the cap is reached.
func (s *Session) spend(n int) bool {
	if s.spendRestore(n) {
		return true
	}
	s.capped.Store(true)
	return false
}

// redactNumber redacts the text of a JSON number that is an integer. A number that is
// personal data as a whole gets a placeholder of its own in reversible mode
// (not the one the same digits get as a string), which number maps back.
//
// The detectors read the number's integer value, whatever its form
// ("4.111111111111111e15" is read as 4111111111111111); the placeholder
// restores the literal as it was written.
func (s *Session) redactNumber(lit string) string {
	digits := integral(lit)
	if digits == "" {
		return lit
	}
	if s.mode != Reversible {
		return s.redactDigits(lit, digits)
	}
	fs := s.r.find(digits, s.budget)
	if len(fs) != 1 || fs[0].Start != 0 || fs[0].End != len(digits) {
		return s.redactDigits(lit, digits)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.placeholder(typedValue{typ: fs[0].Type, value: lit, number: true})
}

// redactDigits redacts the digits of the number literal lit, and returns
// lit itself where they hold nothing.
func (s *Session) redactDigits(lit, digits string) string {
	if out := s.Redact(digits); out != digits {
		return out
	}
	return lit
}

// number returns the JSON number the placeholder p replaced, if it did.
func (s *Session) number(p string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.values[p]
	if !ok || s.byValue[typedValue{typ: placeholderType(p), value: v, number: true}] != p {
		return "", false
	}
	return v, true
}

// placeholderType is the type named in the placeholder p, "<CARD_2>".
func placeholderType(p string) Type {
	return Type(p[1:strings.LastIndexByte(p, '_')])
}

// Counts returns how many distinct values of each type the session has
// redacted, for the audit record and the trace.
func (s *Session) Counts() map[Type]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.counts)
}

// placeholderTokens returns the spans of text shaped like a placeholder,
// "<" [A-Z][A-Z0-9_]* "_" [0-9]+ ">", whatever session made them.
func placeholderTokens(text string) []Finding {
	var out []Finding
	for i := 0; ; {
		j := strings.IndexByte(text[i:], '<')
		if j < 0 {
			return out
		}
		j += i
		k := j + 1
		for k < len(text) && k-j < maxPlaceholderSz && text[k] != '<' && text[k] != '>' {
			k++
		}
		if k < len(text) && text[k] == '>' && isPlaceholder(text[j:k+1]) {
			out = append(out, Finding{Start: j, End: k + 1})
			i = k + 1
			continue
		}
		i = j + 1
	}
}

// isPlaceholder reports whether t is shaped like a placeholder.
func isPlaceholder(t string) bool {
	name := t[1 : len(t)-1]
	u := strings.LastIndexByte(name, '_')
	if u < 1 || u == len(name)-1 || !validTypeName(name[:u]) {
		return false
	}
	for i := u + 1; i < len(name); i++ {
		if !isDigit(name[i]) {
			return false
		}
	}
	return true
}

// overlapsAny reports whether t overlaps one of the sorted, disjoint fs.
func overlapsAny(fs []Finding, t Finding) bool {
	i, _ := slices.BinarySearchFunc(fs, t.End, func(f Finding, end int) int {
		if f.Start < end {
			return -1
		}
		return 1
	})
	// fs[:i] start before t ends; the last of them is the only one that can
	// reach into t.
	return i > 0 && fs[i-1].End > t.Start
}

// mergeSorted merges two sorted, mutually disjoint lists of findings.
func mergeSorted(a, b []Finding) []Finding {
	if len(b) == 0 {
		return a
	}
	out := make([]Finding, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].Start < b[0].Start {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	out = append(out, a...)
	return append(out, b...)
}

// restore writes text to b with the placeholders in values replaced, as
// long as spend allows each value's bytes; a placeholder it refuses is
// written as it is. If isPrefix is set and text ends in an unclosed '<' run
// that isPrefix says may still become a placeholder, that tail is not
// written and its length is returned.
func restore(b *strings.Builder, text string, values map[string]string, isPrefix func(string) bool, spend func(int) bool) (held int) {
	last := 0
	for i := 0; ; {
		j := strings.IndexByte(text[i:], '<')
		if j < 0 {
			break
		}
		j += i
		k := j + 1
		for k < len(text) && k-j < maxPlaceholderSz && text[k] != '<' && text[k] != '>' {
			k++
		}
		if k < len(text) && text[k] == '>' {
			if v, ok := values[text[j:k+1]]; ok && spend(len(v)) {
				b.WriteString(text[last:j])
				b.WriteString(v)
				last = k + 1
				i = k + 1
				continue
			}
		} else if k == len(text) && isPrefix != nil && isPrefix(text[j:]) {
			b.WriteString(text[last:j])
			return len(text) - j
		}
		i = j + 1
	}
	b.WriteString(text[last:])
	return 0
}
