package redact

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/config"
)

// fuzzPatterns gives the fuzzed Redactor a custom pattern too.
var fuzzPatterns = []config.RedactPattern{{Name: "emp", Regex: `EMP-\d{4}`}}

// seedTexts are the detector tables' texts and some placeholder look-alikes.
func seedTexts() []string {
	var out []string
	for _, cases := range findCases {
		for _, c := range cases {
			out = append(out, c.text)
		}
	}
	out = append(out, evalSeeds()...)
	return append(out, restorerText, "<EMAIL_1> bob@example.com <EMAIL_2>", "<EMP_1>EMP-0001", "<<EMAIL_1>>", "a<b>c")
}

// evalSeeds are the first sentences of the evaluation set: realistic text
// with every careless form in it.
func evalSeeds() []string {
	b, err := os.ReadFile("testdata/eval/seed1.jsonl")
	if err != nil {
		return nil
	}
	var out []string
	for line := range bytes.Lines(b) {
		var c evalCase
		if json.Unmarshal(line, &c) == nil {
			out = append(out, c.Text)
		}
		if len(out) == 100 {
			break
		}
	}
	return out
}

// FuzzFind: Find never panics and returns sorted, disjoint findings inside
// the text, each of a known type.
func FuzzFind(f *testing.F) {
	for _, s := range seedTexts() {
		f.Add(s)
	}
	r := newTestRedactor(f, fuzzPatterns...)
	known := map[Type]bool{Email: true, Phone: true, Card: true, IBAN: true, SSN: true, IP: true, "EMP": true}
	f.Fuzz(func(t *testing.T, s string) {
		prev := 0
		for _, fd := range r.Find(s) {
			if fd.Start < prev || fd.End <= fd.Start || fd.End > len(s) {
				t.Fatalf("Find(%q): finding %+v out of order or range (previous end %d)", s, fd, prev)
			}
			if !known[fd.Type] {
				t.Fatalf("Find(%q): unknown type %q", s, fd.Type)
			}
			prev = fd.End
		}
	})
}

// FuzzRoundTrip: in reversible mode Restore(Redact(x)) == x for any x, over
// two messages of one session, whatever placeholder look-alikes they hold.
func FuzzRoundTrip(f *testing.F) {
	texts := seedTexts()
	for i, s := range texts {
		f.Add(s, texts[(i+1)%len(texts)])
	}
	r := newTestRedactor(f, fuzzPatterns...)
	f.Fuzz(func(t *testing.T, a, b string) {
		s := r.NewSession(Reversible)
		ra, rb := s.Redact(a), s.Redact(b)
		if got := s.Restore(ra); got != a {
			t.Fatalf("Restore(Redact(%q)) = %q (redacted %q)", a, got, ra)
		}
		if got := s.Restore(rb); got != b {
			t.Fatalf("Restore(Redact(%q)) = %q (redacted %q)", b, got, rb)
		}
	})
}

// FuzzRestorer: restoring a stream cut anywhere gives what restoring the
// whole text gives.
func FuzzRestorer(f *testing.F) {
	for _, s := range seedTexts() {
		f.Add(s, []byte{3, 1, 7})
	}
	s := restorerSession(f)
	f.Fuzz(func(t *testing.T, text string, cuts []byte) {
		var pieces []string
		rest := text
		for _, c := range cuts {
			n := min(int(c)%16, len(rest))
			pieces, rest = append(pieces, rest[:n]), rest[n:]
		}
		pieces = append(pieces, rest)
		r := s.NewRestorer()
		var b strings.Builder
		for _, p := range pieces {
			b.WriteString(r.Write(p))
			if len(r.pending) > maxPlaceholderSz {
				t.Fatalf("Restorer holds %q, longer than a placeholder", r.pending)
			}
		}
		b.WriteString(r.Flush())
		if want := s.Restore(text); b.String() != want {
			t.Fatalf("streamed %q = %q, want %q", pieces, b.String(), want)
		}
	})
}

// FuzzRedactJSON: for any valid JSON, RedactJSON gives valid JSON and
// RestoreJSON gives back the same value.
func FuzzRedactJSON(f *testing.F) {
	f.Add(`{"to": "bob@example.com", "cc": ["<EMAIL_1>", "4111 1111 1111 1111"], "n": 1.5e3}`)
	f.Add(`"\u003cEMAIL_1\u003e bob@example.com \"quoted\" \\ \ud83d\ude00"`)
	f.Add(`[null, true, {"bob@example.com": "10.0.0.1"}]`)
	f.Add(`{"card": 4111111111111111, "ssn": -123456789, "enum": [078051123, 1e5], "s": "4111111111111111"}`)
	f.Add(`[4111111111111111, "<CARD_1>"]`)
	f.Add(`[4111111111111111.0, 4.111111111111111e15, 12345678900e-2, 1e999999999, 0e-5, 0.0]`)
	f.Add(`{`)
	r := newTestRedactor(f, fuzzPatterns...)
	f.Fuzz(func(t *testing.T, doc string) {
		s := r.NewSession(Reversible)
		red, err := s.RedactJSON([]byte(doc))
		if !json.Valid([]byte(doc)) {
			if err == nil {
				t.Fatalf("RedactJSON(%q) accepted invalid JSON", doc)
			}
			return
		}
		if err != nil {
			t.Fatalf("RedactJSON(%q): %v", doc, err)
		}
		if !json.Valid(red) {
			t.Fatalf("RedactJSON(%q) = %q, invalid JSON", doc, red)
		}
		back, err := s.RestoreJSON(red)
		if err != nil {
			t.Fatalf("RestoreJSON(%q): %v", red, err)
		}
		want, err1 := decodeJSON([]byte(doc))
		got, err2 := decodeJSON(back)
		if err1 != nil || err2 != nil {
			t.Fatalf("cannot decode %q (%v) or %q (%v)", doc, err1, back, err2)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("RestoreJSON(RedactJSON(%q)) differs (-want +got):\n%s", doc, diff)
		}
	})
}

// decodeJSON decodes a document keeping numbers as written, so that any
// valid number compares.
func decodeJSON(doc []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}
