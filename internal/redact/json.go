package redact

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// ErrNotJSON is returned by RedactJSON and RestoreJSON for input that is not
// valid JSON.
var ErrNotJSON = errors.New("redact: not valid JSON")

// RedactJSON redacts every string in the JSON document raw (values and
// object keys), as Redact would, and returns a document that is still valid
// JSON. Strings are unescaped before detection and escaped again after;
// strings without personal data keep their bytes, and so do numbers,
// layout and key order.
func (s *Session) RedactJSON(raw []byte) ([]byte, error) {
	return rewriteJSONStrings(raw, s.Redact)
}

// RestoreJSON restores the placeholders in every string of the JSON
// document raw, including placeholders written with escapes.
func (s *Session) RestoreJSON(raw []byte) ([]byte, error) {
	return rewriteJSONStrings(raw, s.Restore)
}

// rewriteJSONStrings applies f to the content of every string literal in raw.
func rewriteJSONStrings(raw []byte, f func(string) string) ([]byte, error) {
	if !json.Valid(raw) {
		return nil, ErrNotJSON
	}
	var out []byte
	last := 0
	for i := 0; i < len(raw); i++ {
		if raw[i] != '"' {
			continue
		}
		// Outside strings in valid JSON a quote always opens one.
		end := stringEnd(raw, i)
		var str string
		if err := json.Unmarshal(raw[i:end], &str); err != nil {
			return nil, fmt.Errorf("redact: string at byte %d: %w", i, err)
		}
		if changed := f(str); changed != str {
			out = append(out, raw[last:i]...)
			out = appendJSONString(out, changed)
			last = end
		}
		i = end - 1
	}
	if out == nil {
		return raw, nil
	}
	return append(out, raw[last:]...), nil
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
