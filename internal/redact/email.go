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

// findEmails appends the email addresses in s to out.
func findEmails(s string, out []Finding) []Finding {
	for at := strings.IndexByte(s, '@'); at >= 0; {
		start := at
		for start > 0 && isLocalByte(s[start-1]) {
			start--
		}
		for start < at && s[start] == '.' {
			start++ // a sentence's full stop before the address
		}
		end := at + 1
		for end < len(s) && (isAlnum(s[end]) || s[end] == '.' || s[end] == '-') {
			end++
		}
		for end > at+1 && (s[end-1] == '.' || s[end-1] == '-') {
			end-- // a full stop after the address
		}
		if validLocal(s[start:at]) && validDomain(s[at+1:end]) {
			out = append(out, Finding{Type: Email, Start: start, End: end})
		}
		next := strings.IndexByte(s[at+1:], '@')
		if next < 0 {
			break
		}
		at += 1 + next
	}
	return out
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
