package redact

import (
	"encoding/base64"
	"unicode/utf8"
)

// Personal data inside base64: the payload of a JWT in a log line
// ("eyJzdWIiOi..."), a basic-auth header, a data blob. A run of at least
// minEncoded base64 or base64url characters that decodes to mostly
// printable text is scanned by the built-in detectors; if they find
// something, the whole run is a finding of the first found value's type.
// Runs of plain words decode to binary and are dropped by the printable
// check before any detector runs, so the cost stays one decode per run.

const (
	minEncoded = 16
	// maxEncoded bounds one run (and so one decode); a longer run is
	// scanned in pieces of this size, each aligned to four characters.
	maxEncoded = 64 << 10
)

// findEncoded appends the base64 runs in s that carry personal data.
func (r *Redactor) findEncoded(s string, out []Finding, b *budget) []Finding {
	var buf, dec []byte
	for i := 0; i < len(s); {
		if !isBase64(s[i]) {
			i++
			continue
		}
		start := i
		for i < len(s) && isBase64(s[i]) && i-start < maxEncoded {
			i++
		}
		end := i
		for end < len(s) && s[end] == '=' && end-i < 2 {
			end++
		}
		if i-start < minEncoded {
			continue
		}
		buf, dec = decodeBase64(s[start:i], buf, dec)
		if dec == nil || !printable(dec) {
			continue
		}
		if typ, ok := r.firstBuiltIn(string(dec), b); ok {
			out = append(out, Finding{Type: typ, Start: start, End: end})
			i = end
		}
	}
	return out
}

func isBase64(c byte) bool { return isAlnum(c) || c == '+' || c == '/' || c == '-' || c == '_' }

// decodeBase64 decodes run, in either alphabet and without padding, into
// dec (reusing buf and dec); dec is nil if run is not base64.
func decodeBase64(run string, buf, dec []byte) ([]byte, []byte) {
	buf = buf[:0]
	for i := 0; i < len(run); i++ {
		switch c := run[i]; c {
		case '-':
			buf = append(buf, '+')
		case '_':
			buf = append(buf, '/')
		default:
			buf = append(buf, c)
		}
	}
	if len(buf)%4 == 1 {
		buf = buf[:len(buf)-1] // a run cut at maxEncoded, or a stray character
	}
	dec = dec[:0]
	dec = append(dec, make([]byte, base64.RawStdEncoding.DecodedLen(len(buf)))...)
	n, err := base64.RawStdEncoding.Decode(dec, buf)
	if err != nil {
		return buf, nil
	}
	return buf, dec[:n]
}

// printable reports whether b is valid UTF-8 with at most one byte in
// sixteen a control character other than tab and newlines.
func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	bad := 0
	for _, c := range b {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' || c == 0x7f {
			bad++
		}
	}
	return bad*16 <= len(b)
}

// firstBuiltIn returns the type of the first value the built-in detectors
// find in s (decoded text: it is not decoded again).
func (r *Redactor) firstBuiltIn(s string, b *budget) (Type, bool) {
	var buf []Finding
	for _, d := range r.builtIn {
		if buf = d.find(s, buf[:0], b); len(buf) > 0 {
			return buf[0].Type, true
		}
	}
	return "", false
}
