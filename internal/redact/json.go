package redact

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrNotJSON is returned by RedactJSON and RestoreJSON for input that is not
// valid JSON.
var ErrNotJSON = errors.New("redact: not valid JSON")

// RedactJSON redacts every string in the JSON document raw (values and
// object keys), as Redact would, and every integer written without a
// fraction or exponent (a card number or an SSN sent as a number in
// tool-call arguments, an enum, metadata) and every number that is such an
// integer written otherwise ("4111111111111111.0", "4.111111111111111e15"),
// checked by its integer value: a number with personal data in
// it becomes a string with its placeholder, "<CARD_1>", so the document
// stays valid JSON, and RestoreJSON makes it a number again. Strings are
// unescaped before detection and escaped again after; values without
// personal data keep their bytes, and so do layout and key order. The
// values of JSON Schema's numeric bounds ("maximum": 2147483647) are left.
func (s *Session) RedactJSON(raw []byte) ([]byte, error) {
	return rewriteJSON(raw, func(lit string, number bool) (string, bool) {
		red := s.Redact
		if number {
			red = s.redactNumber
		}
		out := red(lit)
		if out == lit {
			return "", false
		}
		return string(appendJSONString(nil, out)), true
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
	key := "" // the last object key read
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '-' || isDigit(c) {
			// Outside strings in valid JSON a digit or '-' starts a
			// number.
			end := jsonNumberEnd(raw, i)
			bound := schemaBounds[key] && afterColon(raw, i)
			if lit := string(raw[i:end]); !bound && integral(lit) != "" {
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
		if colonNext(raw, end) {
			key = str
		}
		i = end - 1
	}
	if out == nil {
		return raw, nil
	}
	return append(out, raw[last:]...), nil
}

// schemaBounds are the JSON Schema keywords whose value is a number that
// bounds another (tool parameters, response_format): never personal data,
// and a schema with "maximum": "<PHONE_1>" (2147483647 is a valid US
// number) would be refused by the provider.
var schemaBounds = map[string]bool{
	"minimum": true, "maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true, "multipleOf": true,
	"minLength": true, "maxLength": true, "minItems": true, "maxItems": true,
	"minProperties": true, "maxProperties": true, "minContains": true, "maxContains": true,
}

// afterColon reports whether raw[:i] ends in a colon and whitespace: the
// value at i belongs to the last key read.
func afterColon(raw []byte, i int) bool {
	for i > 0 && isJSONSpace(raw[i-1]) {
		i--
	}
	return i > 0 && raw[i-1] == ':'
}

// colonNext reports whether raw[i:] starts with whitespace and a colon: the
// string that ended at i is an object key.
func colonNext(raw []byte, i int) bool {
	for i < len(raw) && isJSONSpace(raw[i]) {
		i++
	}
	return i < len(raw) && raw[i] == ':'
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// jsonNumberEnd returns the index just past the number literal that starts at
// raw[i], which must be valid.
func jsonNumberEnd(raw []byte, i int) int {
	for i < len(raw) && (isDigit(raw[i]) || strings.IndexByte("+-.eE", raw[i]) >= 0) {
		i++
	}
	return i
}

// maxIntegralDigits bounds the integer an exponent may write out: no
// detector looks for a value that long, and 1e999999 must not become a
// megabyte of zeros.
const maxIntegralDigits = 40

// integral returns the decimal digits of the number literal lit when it is
// a non-negative integer however it is written ("4111111111111111",
// "4111111111111111.0", "4111111111111111e0", "4.111111111111111e15" all
// give "4111111111111111": a provider parses each to the card number), and
// "" when it is negative (a quantity, not an id), has a fractional part, or
// would be longer than maxIntegralDigits. lit must be a valid JSON number.
func integral(lit string) string {
	if strings.HasPrefix(lit, "-") {
		return ""
	}
	mant, exp := lit, 0
	if k := strings.IndexAny(lit, "eE"); k >= 0 {
		mant = lit[:k]
		e, err := strconv.Atoi(lit[k+1:])
		if err != nil || e > maxIntegralDigits || e < -maxIntegralDigits-len(mant) {
			return "" // far out of range: no id
		}
		exp = e
	}
	digits := mant
	if k := strings.IndexByte(mant, '.'); k >= 0 {
		digits = mant[:k] + mant[k+1:]
		exp -= len(mant) - k - 1
	}
	if exp < 0 {
		cut := len(digits) + exp
		if cut < 0 || strings.Trim(digits[max(cut, 0):], "0") != "" {
			return "" // a fractional part
		}
		digits = digits[:cut]
	}
	if exp > 0 {
		if len(digits)+exp > maxIntegralDigits {
			return ""
		}
		digits += strings.Repeat("0", exp)
	}
	if d := strings.TrimLeft(digits, "0"); d != "" {
		digits = d
	} else {
		digits = "0"
	}
	if len(digits) > maxIntegralDigits && lit != digits {
		return ""
	}
	return digits
}

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
