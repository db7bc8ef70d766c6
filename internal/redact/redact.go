// Package redact finds personal data in text bound for third-party model
// providers and replaces it with type tags or with reversible placeholders
// that are restored in the answer.
//
// The built-in detectors are hand-written scanners, not regular expressions:
// each looks for a cheap trigger (an '@', a digit, a ':', two letters and
// two digits) and then checks the candidate strictly (checksums, ranges,
// boundaries; libphonenumber's metadata for phone numbers, within a budget
// per request), so a 2 KB prompt costs tens of microseconds and false
// positives stay rare. Base64 runs are decoded and scanned by the same
// detectors.
package redact

import (
	"cmp"
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/corral-dev/corral/internal/config"
)

// Type is the kind of a finding: one of the built-in types below, or a custom
// pattern's name, upper-cased.
type Type string

// The built-in types.
const (
	Email Type = "EMAIL"
	Phone Type = "PHONE"
	Card  Type = "CARD"
	IBAN  Type = "IBAN"
	SSN   Type = "SSN"
	IP    Type = "IP"
)

// Finding is one detected value: text[Start:End] (byte offsets) is of Type.
type Finding struct {
	Type       Type
	Start, End int
}

// Limits on custom patterns. RE2 runs in time linear in the input, but the
// constant is the size of the compiled program, so that is bounded too.
const (
	maxPatterns      = 64
	maxPatternName   = 32
	maxPatternLen    = 512
	maxPatternInsts  = 2000
	maxPlaceholderSz = maxPatternName + 24 // "<" NAME "_" number ">"
)

// detector appends the findings of one kind in s to out. Findings of one
// detector never overlap each other.
type detector struct {
	typ  Type
	find func(s string, out []Finding, b *budget) []Finding
}

// budget is what the texts of one request may still spend on the costlier
// checks: libphonenumber's look at a phone candidate. It is shared by a
// session's texts, so a request's cost is bounded whatever it is split
// into.
type budget struct{ phoneChecks atomic.Int64 }

func newBudget() *budget {
	b := &budget{}
	b.phoneChecks.Store(maxPhoneChecks)
	return b
}

// takePhoneCheck reports whether a phone check is left, and spends it.
func (b *budget) takePhoneCheck() bool { return b.phoneChecks.Add(-1) >= 0 }

// Redactor finds personal data. It is immutable once built and safe for
// concurrent use; build one per model configuration and share it.
type Redactor struct {
	// detectors in priority order: when two findings of equal length
	// overlap, the earlier detector wins.
	detectors []detector
	// builtIn are the built-in detectors of plain text, which also scan
	// decoded base64.
	builtIn []detector
}

// New builds a Redactor with the built-in detectors and the custom patterns.
// A custom pattern's Name becomes its Type, upper-cased; it must be a letter
// followed by letters, digits or underscores (so placeholders stay plain
// ASCII), and its Regex is RE2 syntax as in Go's regexp package. A pattern
// named like a built-in type adds values to that type.
func New(patterns []config.RedactPattern) (*Redactor, error) {
	if len(patterns) > maxPatterns {
		return nil, fmt.Errorf("redact: %d custom patterns, at most %d", len(patterns), maxPatterns)
	}
	r := &Redactor{builtIn: []detector{
		{Card, ignoreBudget(findCards)},
		{IBAN, ignoreBudget(findIBANs)},
		{SSN, ignoreBudget(findSSNs)},
		{Email, ignoreBudget(findEmails)},
		{IP, ignoreBudget(findIPs)},
		{Phone, findPhones},
	}}
	r.detectors = append(slices.Clip(r.builtIn), detector{"", r.findEncoded})
	for _, p := range patterns {
		d, err := compilePattern(p)
		if err != nil {
			return nil, err
		}
		r.detectors = append(r.detectors, d)
	}
	return r, nil
}

// ignoreBudget adapts a detector that has no costly checks.
func ignoreBudget(find func(string, []Finding) []Finding) func(string, []Finding, *budget) []Finding {
	return func(s string, out []Finding, _ *budget) []Finding { return find(s, out) }
}

// compilePattern turns a configured pattern into a detector, refusing names
// that cannot form a placeholder and regular expressions that are invalid,
// too large or match the empty string.
func compilePattern(p config.RedactPattern) (detector, error) {
	name := strings.ToUpper(p.Name)
	if !validTypeName(name) {
		return detector{}, fmt.Errorf("redact: pattern %q: name must be a letter followed by up to %d letters, digits or underscores", p.Name, maxPatternName-1)
	}
	if len(p.Regex) == 0 {
		return detector{}, fmt.Errorf("redact: pattern %q: empty regex", p.Name)
	}
	if len(p.Regex) > maxPatternLen {
		return detector{}, fmt.Errorf("redact: pattern %q: regex is %d bytes, at most %d", p.Name, len(p.Regex), maxPatternLen)
	}
	parsed, err := syntax.Parse(p.Regex, syntax.Perl)
	if err != nil {
		return detector{}, fmt.Errorf("redact: pattern %q: %w", p.Name, err)
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		return detector{}, fmt.Errorf("redact: pattern %q: %w", p.Name, err)
	}
	if len(prog.Inst) > maxPatternInsts {
		return detector{}, fmt.Errorf("redact: pattern %q: regex too complex (%d instructions, at most %d)", p.Name, len(prog.Inst), maxPatternInsts)
	}
	re, err := regexp.Compile(p.Regex)
	if err != nil {
		return detector{}, fmt.Errorf("redact: pattern %q: %w", p.Name, err)
	}
	if re.MatchString("") {
		return detector{}, fmt.Errorf("redact: pattern %q: regex matches the empty string", p.Name)
	}
	typ := Type(name)
	return detector{typ: typ, find: func(s string, out []Finding, _ *budget) []Finding {
		for _, m := range re.FindAllStringIndex(s, -1) {
			if m[1] > m[0] {
				out = append(out, Finding{Type: typ, Start: m[0], End: m[1]})
			}
		}
		return out
	}}, nil
}

// validTypeName reports whether name (already upper-cased) can be a Type:
// [A-Z][A-Z0-9_]*, at most maxPatternName bytes.
func validTypeName(name string) bool {
	if name == "" || len(name) > maxPatternName || !isUpper(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isUpper(c) && !isDigit(c) && c != '_' {
			return false
		}
	}
	return true
}

// Find returns the personal data in s, sorted by Start and never
// overlapping. Where findings overlap, the longest wins, then the one of
// higher priority: CARD, IBAN, SSN, EMAIL, IP, PHONE, a base64 run holding
// one of them, then custom patterns in configuration order.
func (r *Redactor) Find(s string) []Finding { return r.find(s, newBudget()) }

// find is Find spending from b.
func (r *Redactor) find(s string, b *budget) []Finding {
	type ranked struct {
		Finding
		prio int
	}
	var all []ranked
	var buf []Finding
	for prio, d := range r.detectors {
		buf = d.find(s, buf[:0], b)
		for _, f := range buf {
			all = append(all, ranked{f, prio})
		}
	}
	if len(all) == 0 {
		return nil
	}
	slices.SortFunc(all, func(a, b ranked) int {
		if c := cmp.Compare(b.End-b.Start, a.End-a.Start); c != 0 {
			return c
		}
		if c := cmp.Compare(a.prio, b.prio); c != 0 {
			return c
		}
		return cmp.Compare(a.Start, b.Start)
	})
	// covered marks the bytes already taken: each detector's findings are
	// disjoint, so checking a candidate's bytes costs, in all, a few passes
	// over s whatever the number of findings.
	covered := make([]bool, len(s))
	kept := make([]Finding, 0, len(all))
	for _, c := range all {
		if slices.Contains(covered[c.Start:c.End], true) {
			continue
		}
		for i := c.Start; i < c.End; i++ {
			covered[i] = true
		}
		kept = append(kept, c.Finding)
	}
	slices.SortFunc(kept, func(a, b Finding) int { return cmp.Compare(a.Start, b.Start) })
	return kept
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isAlpha(c byte) bool { return isUpper(c) || isLower(c) }
func isAlnum(c byte) bool { return isAlpha(c) || isDigit(c) }
func isHex(c byte) bool {
	return isDigit(c) || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// isWord reports whether c continues a word: an ASCII letter or digit. A
// value glued to a word ("IP192.168.1.1", "is415-555-0132") is not taken;
// one glued to an underscore is ("card_4111111111111111", "ssn_078051123"):
// identifiers and log keys are written that way.
func isWord(c byte) bool { return isAlnum(c) }

// wordBefore reports whether the byte before i continues a word.
func wordBefore(s string, i int) bool { return i > 0 && isWord(s[i-1]) }

// wordAfter reports whether the byte at i continues a word.
func wordAfter(s string, i int) bool { return i < len(s) && isWord(s[i]) }

// decimalBefore reports whether s[:i] ends in a digit and a dot, so a number
// starting at i would be the tail of a longer dotted number.
func decimalBefore(s string, i int) bool {
	return i >= 2 && s[i-1] == '.' && isDigit(s[i-2])
}

// decimalAfter reports whether s[i:] starts with a dot and a digit, so a
// number ending at i would be the head of a longer dotted number.
func decimalAfter(s string, i int) bool {
	return i+1 < len(s) && s[i] == '.' && isDigit(s[i+1])
}
