package redact

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrNotJSON is returned by RedactJSON and RestoreJSON for input that is not
// valid JSON.
var ErrNotJSON = errors.New("redact: not valid JSON")

// RedactJSON redacts every string in the JSON document raw (values and
// object keys), as Redact would, and every integer written without a
// fraction or exponent (a card number or an SSN sent as a number in
// tool-call arguments, an enum, metadata): a number with personal data in
// it becomes a string with its placeholder, "<CARD_1>", so the document
// stays valid JSON, and RestoreJSON makes it a number again. Strings are
// unescaped before detection and escaped again after; values without
// personal data keep their bytes, and so do layout and key order.
func (s *Session) RedactJSON(raw []byte) ([]byte, error) {
	return rewriteJSON(raw, func(lit string, number bool) (string, bool) {
		red := s.Redact(lit)
		if red == lit {
			return "", false
		}
		if number {
			s.noteNumber(red)
		}
		return string(appendJSONString(nil, red)), true
	})
}

// RestoreJSON restores the placeholders in every string of the JSON
// document raw, including placeholders written with escapes; a string that
// is exactly the placeholder of a number becomes that number again.
func (s *Session) RestoreJSON(raw []byte) ([]byte, error) {
	return rewriteJSON(raw, func(lit string, number bool) (string, bool) {
		if number {
			return "", false
		}
		if n, ok := s.number(lit); ok {
			return n, true
		}
		restored := s.Restore(lit)
		if restored == lit {
			return "", false
		}
		return string(appendJSONString(nil, restored)), true
	})
}

// rewriteJSON calls f with the content of every string literal in raw and
// the text of every integer literal; where f reports a change, the literal
// is replaced by the JSON text f returns.
func rewriteJSON(raw []byte, f func(lit string, number bool) (string, bool)) ([]byte, error) {
	if !json.Valid(raw) {
		return nil, ErrNotJSON
	}
	var out []byte
	last := 0
	replace := func(start, end int, with string) {
		out = append(out, raw[last:start]...)
		out = append(out, with...)
		last = end
	}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '-' || isDigit(c) {
			// Outside strings in valid JSON a digit or '-' starts a
			// number.
			end := jsonNumberEnd(raw, i)
			if lit := string(raw[i:end]); isInteger(lit) {
				if with, ok := f(lit, true); ok {
					replace(i, end, with)
				}
			}
			i = end - 1
			continue
		}
		if c != '"' {
			continue
		}
		// Outside strings in valid JSON a quote always opens one.
		end := stringEnd(raw, i)
		var str string
		if err := json.Unmarshal(raw[i:end], &str); err != nil {
			return nil, fmt.Errorf("redact: string at byte %d: %w", i, err)
		}
		if with, ok := f(str, false); ok {
			replace(i, end, with)
		}
		i = end - 1
	}
	if out == nil {
		return raw, nil
	}
	return append(out, raw[last:]...), nil
}

// jsonNumberEnd returns the index just past the number literal that starts at
// raw[i], which must be valid.
func jsonNumberEnd(raw []byte, i int) int {
	for i < len(raw) && (isDigit(raw[i]) || strings.IndexByte("+-.eE", raw[i]) >= 0) {
		i++
	}
	return i
}

// isInteger reports whether the number literal lit has no fraction or
// exponent: "1.5e3" or "4111111111111111.0" are measurements, not ids.
func isInteger(lit string) bool { return !strings.ContainsAny(lit, ".eE") }

// stringEnd returns the index just past the string literal that opens at
// raw[i], which must be valid.
func stringEnd(raw []byte, i int) int {
	for j := i + 1; j < len(raw); j++ {
		switch raw[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(raw)
}

// appendJSONString appends s as a JSON string literal, leaving < > & as they
// are so placeholders stay readable to the model.
func appendJSONString(dst []byte, s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(dst, bytes.TrimSuffix(b.Bytes(), []byte("\n"))...)
}

// jsonStringContent returns s escaped for the inside of a JSON string,
// without the quotes.
func jsonStringContent(s string) string {
	lit := appendJSONString(nil, s)
	return string(lit[1 : len(lit)-1])
}
