package redact

import "strings"

// Email addresses, the practical subset of RFC 5322 that people write: a
// local part of letters, digits and . _ % + - (not starting or ending with a
// dot, no two dots in a row, at most 64 bytes), an '@', and a domain of at
// least two labels (letters, digits, inner hyphens, at most 63 bytes each)
// ending in a top-level domain of at least two letters or an IDNA "xn--"
// label. Quoted local parts, address literals and non-ASCII addresses are
// not detected.

const (
	maxLocalPart = 64
	maxDomain    = 253
	maxLabel     = 63
)

// findEmails appends the email addresses in s to out. The '@' may be
// URL-encoded ("jane.doe%40example.com", from a query string or a log).
func findEmails(s string, out []Finding) []Finding {
	for from := 0; from < len(s); {
		at, width := nextAt(s, from)
		if at < 0 {
			break
		}
		if f, ok := emailAt(s, at, width); ok {
			out = append(out, f)
		}
		from = at + width
	}
	return out
}

// nextAt finds the next '@' or "%40" in s from i on, and its width.
func nextAt(s string, i int) (at, width int) {
	for ; i < len(s); i++ {
		switch {
		case s[i] == '@':
			return i, 1
		case s[i] == '%' && i+2 < len(s) && s[i+1] == '4' && s[i+2] == '0':
			return i, 3
		}
	}
	return -1, 0
}

// emailAt checks the address around the '@' at s[at:at+width].
func emailAt(s string, at, width int) (Finding, bool) {
	// Both scans stop a byte past the longest valid part, so that many
	// '@' or "%40" in a row ("%40%40%40...": '%', '4' and '0' are local
	// part bytes) cost linear time.
	start, floor := at, max(at-maxLocalPart-1, 0)
	for start > floor && isLocalByte(s[start-1]) {
		start--
	}
	for start < at && s[start] == '.' {
		start++ // a sentence's full stop before the address
	}
	end, ceil := at+width, min(at+width+maxDomain+1, len(s))
	for end < ceil && (isAlnum(s[end]) || s[end] == '.' || s[end] == '-') {
		end++
	}
	for end > at+width && (s[end-1] == '.' || s[end-1] == '-') {
		end-- // a full stop after the address
	}
	if validLocal(s[start:at]) && validDomain(s[at+width:end]) {
		return Finding{Type: Email, Start: start, End: end}, true
	}
	return Finding{}, false
}

func isLocalByte(c byte) bool {
	return isAlnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'
}

func validLocal(l string) bool {
	return l != "" && len(l) <= maxLocalPart && l[len(l)-1] != '.' && !strings.Contains(l, "..")
}

// validDomain checks a domain name: at least two labels, each of letters,
// digits and inner hyphens, and a top-level domain of letters only (or an
// IDNA label).
func validDomain(d string) bool {
	if len(d) > maxDomain {
		return false
	}
	labels := 0
	for rest := d; ; {
		label, tail, more := strings.Cut(rest, ".")
		if label == "" || len(label) > maxLabel || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		labels++
		if !more {
			return labels >= 2 && validTLD(label)
		}
		rest = tail
	}
}

func validTLD(t string) bool {
	if len(t) > 4 && strings.EqualFold(t[:4], "xn--") {
		return true // labels were already checked for letters, digits, hyphens
	}
	if len(t) < 2 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if !isAlpha(t[i]) {
			return false
		}
	}
	return true
}
