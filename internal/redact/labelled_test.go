package redact

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
)

// labelledCases is Presidio's recognizer test tables as data, kept outside
// the repository by the project (see its README).
const labelledCases = "../../../shared/testdata/pii/presidio_recognizer_cases.jsonl"

// recognizerTypes maps the data's recognizers to our types; the others in
// the file (crypto, mac, url) are not detected by this package.
var recognizerTypes = map[string]Type{
	"credit_card": Card,
	"email":       Email,
	"iban":        IBAN,
	"ip":          IP,
	"phone":       Phone,
	"us_ssn":      SSN,
}

// labelledCase is one line of the file. The tables differ in field names:
// IBAN cases keep their text in "iban", and some tables say
// "expected_positions" for "expected_res".
type labelledCase struct {
	Text       string   `json:"text"`
	IBANText   string   `json:"iban"`
	Res        [][2]int `json:"expected_res"`
	Positions  [][2]int `json:"expected_positions"`
	Len        int      `json:"expected_len"`
	Recognizer string   `json:"recognizer"`
	Test       string   `json:"test"`
}

// disputed lists the labelled cases this package decides otherwise on
// purpose, and why. They are scored and shown in the table, but the bar is
// applied to the figures without them. Add a case here only with a rule
// that explains it, never to pass the bar.
var disputed = map[string]string{}

type score struct{ tp, fp, fn int }

func (s *score) add(o score) { s.tp, s.fp, s.fn = s.tp+o.tp, s.fp+o.fp, s.fn+o.fn }

func (s score) precision() float64 {
	if s.tp+s.fp == 0 {
		return 1
	}
	return float64(s.tp) / float64(s.tp+s.fp)
}

func (s score) recall() float64 {
	if s.tp+s.fn == 0 {
		return 1
	}
	return float64(s.tp) / float64(s.tp+s.fn)
}

// TestLabelledCases measures precision and recall per type on the labelled
// cases and holds CARD, IBAN, EMAIL, SSN and IP to the bar of issue 5
// (recall >= 0.99, precision >= 0.95); phones are reported only.
//
// Matching: in each case only findings of the case's type count. A found
// span is a true positive when it equals a not yet matched expected span
// once leading and trailing whitespace and punctuation are trimmed from both
// (trivial differences such as a quote or a full stop); other found spans
// are false positives, expected spans left unmatched are false negatives.
// Three IP cases give expected_len 1 but no positions: there the counts are
// compared (min(found, expected) true positives).
func TestLabelledCases(t *testing.T) {
	f, err := os.Open(labelledCases)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("labelled cases not found at %s (they live outside the repository, in /work/shared/testdata/pii); the measurement needs them", labelledCases)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	scores := map[Type]*score{}     // every case
	undisputed := map[Type]*score{} // without the disputed cases
	var misses []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		var c labelledCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("line %d: %v", line, err)
		}
		typ, ok := recognizerTypes[c.Recognizer]
		if !ok {
			continue
		}
		text := c.Text
		if c.Recognizer == "iban" {
			text = c.IBANText
		}
		want := c.Res
		if want == nil {
			want = c.Positions
		}
		var got [][2]int
		for _, fd := range r.Find(text) {
			if fd.Type == typ {
				got = append(got, [2]int{fd.Start, fd.End})
			}
		}
		var m score
		m.tp, m.fp, m.fn = matchSpans(text, got, want, c.Len)
		for _, into := range []map[Type]*score{scores, undisputed} {
			if into[typ] == nil {
				into[typ] = &score{}
			}
		}
		scores[typ].add(m)
		why, isDisputed := disputed[text]
		if !isDisputed {
			undisputed[typ].add(m)
		}
		if m.fp > 0 || m.fn > 0 {
			note := ""
			if isDisputed {
				note = " (disputed: " + why + ")"
			}
			misses = append(misses, fmt.Sprintf("%-5s line %3d fp=%d fn=%d %q: got %s, want %s%s",
				typ, line, m.fp, m.fn, text, spans(text, got), spans(text, want), note))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}

	var table strings.Builder
	fmt.Fprintf(&table, "\n%-6s %5s %4s %4s %9s %7s   %s\n", "type", "tp", "fp", "fn", "precision", "recall", "without disputed: precision recall")
	types := []Type{Card, IBAN, Email, SSN, IP, Phone}
	for _, typ := range types {
		s, u := scores[typ], undisputed[typ]
		if s == nil {
			t.Errorf("no labelled cases for %s", typ)
			continue
		}
		fmt.Fprintf(&table, "%-6s %5d %4d %4d %9.3f %7.3f   %9.3f %6.3f\n", typ, s.tp, s.fp, s.fn, s.precision(), s.recall(), u.precision(), u.recall())
	}
	t.Log(table.String())
	t.Logf("misses:\n%s", strings.Join(misses, "\n"))

	for _, typ := range types[:5] {
		s := undisputed[typ]
		if s == nil {
			continue
		}
		if s.recall() < 0.99 {
			t.Errorf("%s recall = %.3f, want >= 0.99", typ, s.recall())
		}
		if s.precision() < 0.95 {
			t.Errorf("%s precision = %.3f, want >= 0.95", typ, s.precision())
		}
	}
}

// matchSpans scores one case's found spans against the expected ones.
func matchSpans(text string, got, want [][2]int, wantLen int) (tp, fp, fn int) {
	if len(want) == 0 && wantLen > 0 {
		tp = min(len(got), wantLen)
		return tp, len(got) - tp, wantLen - tp
	}
	used := make([]bool, len(want))
	for _, g := range got {
		i := slices.IndexFunc(want, func(w [2]int) bool { return trimSpan(text, w) == trimSpan(text, g) })
		for i >= 0 && used[i] { // the same span expected twice
			next := slices.IndexFunc(want[i+1:], func(w [2]int) bool { return trimSpan(text, w) == trimSpan(text, g) })
			if next < 0 {
				i = -1
				break
			}
			i += 1 + next
		}
		if i < 0 {
			fp++
			continue
		}
		used[i] = true
		tp++
	}
	for _, u := range used {
		if !u {
			fn++
		}
	}
	return tp, fp, fn
}

// trimSpan narrows a span past leading and trailing whitespace and
// punctuation.
func trimSpan(text string, sp [2]int) [2]int {
	const trivial = " \t\r\n.,;:!?\"'()[]{}<>"
	start, end := max(sp[0], 0), min(sp[1], len(text))
	for start < end && strings.IndexByte(trivial, text[start]) >= 0 {
		start++
	}
	for end > start && strings.IndexByte(trivial, text[end-1]) >= 0 {
		end--
	}
	return [2]int{start, end}
}

func spans(text string, sps [][2]int) string {
	var parts []string
	for _, sp := range sps {
		parts = append(parts, fmt.Sprintf("%q", text[max(sp[0], 0):min(sp[1], len(text))]))
	}
	return "[" + strings.Join(parts, " ") + "]"
}
