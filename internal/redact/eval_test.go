package redact

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The evaluation set: sentences generated with @faker-js/faker by
// testdata/evalgen/generate.mjs (one file per seed), with the spans of the
// personal data in them and of look-alikes that are not personal data.
// `make pii-eval` regenerates the files and prints the table.
const evalSets = "testdata/eval/*.jsonl"

var evalVerbose = flag.Bool("pii-eval-misses", false, "list every miss and false positive of the evaluation set")

type evalSpan struct {
	Type  Type   `json:"type"`
	Kind  string `json:"kind"`
	Form  string `json:"form"`
	Start int    `json:"start"`
	End   int    `json:"end"`
}

type evalCase struct {
	ID          string     `json:"id"`
	Locale      string     `json:"locale"`
	Text        string     `json:"text"`
	Spans       []evalSpan `json:"spans"`
	Distractors []evalSpan `json:"distractors"`
}

// evalAims are the bars of issue 12: recall per type, and precision for
// every type and on the distractors.
var evalAims = map[Type]float64{Card: 0.99, IBAN: 0.99, Email: 0.99, SSN: 0.99, IP: 0.99, Phone: 0.95}

const evalPrecisionAim = 0.95

// evalResult is what one set scored.
type evalResult struct {
	scores      map[Type]*score
	distractors int // look-alikes in the set
	touched     int // look-alikes a finding overlapped
	byForm      map[string]*score
	typed       map[Type]int // values found with their own type
	misses      []string
}

// TestEvaluation scores the detectors on every evaluation set and fails
// below the aims. What is measured is whether a value leaves: a labelled
// value counts as redacted when one finding covers it (trimmed of
// punctuation: a phone found without its '+' counts, one found without its
// last group does not), whatever the finding's type; a finding that touches
// no labelled value is a false positive of its type. Distractor precision
// is the share of look-alikes that no finding touches. The table also shows
// how many values were found with their own type: nine plain digits are
// both a valid SSN and a valid Spanish phone number, and SSN wins.
func TestEvaluation(t *testing.T) {
	files, err := filepath.Glob(evalSets)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no evaluation sets match %s: run make pii-eval", evalSets)
	}
	r, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			res := evaluate(t, r, file)
			t.Log(res.table())
			t.Logf("recall by form:\n%s", res.formTable())
			if *evalVerbose {
				t.Logf("misses:\n%s", strings.Join(res.misses, "\n"))
			}
			for _, typ := range evalTypes {
				s := res.scores[typ]
				if s.tp+s.fn == 0 {
					t.Errorf("%s: no labelled %s values", file, typ)
					continue
				}
				if s.recall() < evalAims[typ] {
					t.Errorf("%s recall = %.3f, want >= %.2f", typ, s.recall(), evalAims[typ])
				}
				if s.precision() < evalPrecisionAim {
					t.Errorf("%s precision = %.3f, want >= %.2f", typ, s.precision(), evalPrecisionAim)
				}
			}
			if p := res.distractorPrecision(); p < evalPrecisionAim {
				t.Errorf("distractor precision = %.3f, want >= %.2f", p, evalPrecisionAim)
			}
		})
	}
}

var evalTypes = []Type{Card, IBAN, Email, SSN, IP, Phone}

func evaluate(t testing.TB, r *Redactor, file string) *evalResult {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res := &evalResult{scores: map[Type]*score{}, byForm: map[string]*score{}, typed: map[Type]int{}}
	for _, typ := range evalTypes {
		res.scores[typ] = &score{}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		var c evalCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("%s:%d: %v", file, line, err)
		}
		res.add(c, r.Find(c.Text))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return res
}

// add scores one case.
func (res *evalResult) add(c evalCase, found []Finding) {
	for _, w := range c.Spans {
		core := trimSpan(c.Text, [2]int{w.Start, w.End})
		covers := func(fd Finding) bool { return fd.Start <= core[0] && core[1] <= fd.End }
		s, fs := res.scoreOf(w.Type), res.formScore(w)
		switch i := slices.IndexFunc(found, covers); {
		case i < 0:
			s.fn++
			fs.fn++
			res.misses = append(res.misses, fmt.Sprintf("%s fn %-5s %-22s %q in %q", c.ID, w.Type, w.Form, c.Text[w.Start:w.End], c.Text))
		default:
			s.tp++
			fs.tp++
			if found[i].Type == w.Type {
				res.typed[w.Type]++
			} else {
				res.misses = append(res.misses, fmt.Sprintf("%s typed %-5s as %-5s %-22s %q in %q", c.ID, w.Type, found[i].Type, w.Form, c.Text[w.Start:w.End], c.Text))
			}
		}
	}
	for _, fd := range found {
		if slices.ContainsFunc(c.Spans, func(w evalSpan) bool { return fd.Start < w.End && w.Start < fd.End }) {
			continue
		}
		res.scoreOf(fd.Type).fp++
		res.misses = append(res.misses, fmt.Sprintf("%s fp %-5s %q in %q", c.ID, fd.Type, c.Text[fd.Start:fd.End], c.Text))
	}
	for _, d := range c.Distractors {
		res.distractors++
		if slices.ContainsFunc(found, func(fd Finding) bool { return fd.Start < d.End && d.Start < fd.End }) {
			res.touched++
			res.misses = append(res.misses, fmt.Sprintf("%s distractor %s %q in %q", c.ID, d.Kind, c.Text[d.Start:d.End], c.Text))
		}
	}
}

func (res *evalResult) scoreOf(typ Type) *score {
	if res.scores[typ] == nil {
		res.scores[typ] = &score{}
	}
	return res.scores[typ]
}

// formScore is the score of a type's form ("PHONE bare", "IBAN lower"),
// without the network, country or locale the form starts with.
func (res *evalResult) formScore(w evalSpan) *score {
	form := w.Form
	if _, f, ok := strings.Cut(form, "/"); ok {
		form = f
	}
	key := string(w.Type) + " " + form
	if res.byForm[key] == nil {
		res.byForm[key] = &score{}
	}
	return res.byForm[key]
}

func (res *evalResult) distractorPrecision() float64 {
	if res.distractors == 0 {
		return 1
	}
	return 1 - float64(res.touched)/float64(res.distractors)
}

// table is the figures as a Markdown table, as docs/redaction.md shows them.
func (res *evalResult) table() string {
	var b strings.Builder
	b.WriteString("\n| type | values | redacted | false pos. | missed | precision | recall | recall, same type |\n|---|---|---|---|---|---|---|---|\n")
	for _, typ := range evalTypes {
		s := res.scores[typ]
		typed := 1.0
		if n := s.tp + s.fn; n > 0 {
			typed = float64(res.typed[typ]) / float64(n)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %.3f | %.3f | %.3f |\n", typ, s.tp+s.fn, s.tp, s.fp, s.fn, s.precision(), s.recall(), typed)
	}
	fmt.Fprintf(&b, "| distractors | %d | | %d touched | | %.3f | | |\n", res.distractors, res.touched, res.distractorPrecision())
	return b.String()
}

func (res *evalResult) formTable() string {
	var lines []string
	for form, s := range res.byForm {
		lines = append(lines, fmt.Sprintf("%-22s %4d of %4d  recall %.3f", form, s.tp, s.tp+s.fn, s.recall()))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
