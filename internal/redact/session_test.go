package redact

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/config"
)

func TestSessionReversible(t *testing.T) {
	s := newTestRedactor(t).NewSession(Reversible)
	msgs := []string{
		"Hi, I'm bob@example.com, card 4111 1111 1111 1111.",
		"Write to alice@example.org and cc bob@example.com; call +1 415 555 0132.",
	}
	want := []string{
		"Hi, I'm <EMAIL_1>, card <CARD_1>.",
		"Write to <EMAIL_2> and cc <EMAIL_1>; call <PHONE_1>.",
	}
	for i, m := range msgs {
		if got := s.Redact(m); got != want[i] {
			t.Errorf("Redact(%q) = %q, want %q", m, got, want[i])
		}
	}
	answer := "Sure: I'll email <EMAIL_2> and charge <CARD_1>; <EMAIL_9> is unknown, <email_1> is altered."
	wantAnswer := "Sure: I'll email alice@example.org and charge 4111 1111 1111 1111; <EMAIL_9> is unknown, <email_1> is altered."
	if got := s.Restore(answer); got != wantAnswer {
		t.Errorf("Restore(%q) = %q, want %q", answer, got, wantAnswer)
	}
	wantCounts := map[Type]int{Email: 2, Card: 1, Phone: 1}
	if diff := cmp.Diff(wantCounts, s.Counts()); diff != "" {
		t.Errorf("Counts() (-want +got):\n%s", diff)
	}
	for i, m := range msgs {
		if got := s.Restore(s.Redact(m)); got != m {
			t.Errorf("Restore(Redact(%q)) = %q", m, got)
		}
		if got := s.Redact(m); got != want[i] {
			t.Errorf("second Redact(%q) = %q, want %q (stable)", m, got, want[i])
		}
	}
}

func TestSessionMask(t *testing.T) {
	s := newTestRedactor(t).NewSession(Mask)
	in := "bob@example.com, bob@example.com and 192.168.0.1"
	want := "<EMAIL>, <EMAIL> and <IP>"
	if got := s.Redact(in); got != want {
		t.Errorf("Redact(%q) = %q, want %q", in, got, want)
	}
	if got := s.Restore(want); got != want {
		t.Errorf("Restore(%q) = %q, want it unchanged", want, got)
	}
	if diff := cmp.Diff(map[Type]int{Email: 1, IP: 1}, s.Counts()); diff != "" {
		t.Errorf("Counts() (-want +got):\n%s", diff)
	}
}

func TestSessionOff(t *testing.T) {
	s := newTestRedactor(t).NewSession(Off)
	in := "bob@example.com"
	if got := s.Redact(in); got != in {
		t.Errorf("Redact(%q) = %q, want it unchanged", in, got)
	}
	if got := len(s.Counts()); got != 0 {
		t.Errorf("len(Counts()) = %d, want 0", got)
	}
}

func TestSessionUnknownModeRedacts(t *testing.T) {
	s := newTestRedactor(t).NewSession("reversable")
	if s.Mode() != Reversible {
		t.Errorf("Mode() = %q, want %q", s.Mode(), Reversible)
	}
	if got := s.Redact("bob@example.com"); got != "<EMAIL_1>" {
		t.Errorf("Redact = %q, want <EMAIL_1>", got)
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range []string{"off", "mask", "reversible"} {
		if got, err := ParseMode(m); err != nil || string(got) != m {
			t.Errorf("ParseMode(%q) = %q, %v", m, got, err)
		}
	}
	if _, err := ParseMode("on"); err == nil {
		t.Error("ParseMode(on) succeeded, want error")
	}
}

// TestPlaceholderCollisions: placeholders never equal text already in the
// prompt, whether it came before or after the value.
func TestPlaceholderCollisions(t *testing.T) {
	s := newTestRedactor(t).NewSession(Reversible)
	steps := []struct{ in, want string }{
		// <EMAIL_1> is in the input: the email gets the next number.
		{"template <EMAIL_1> for bob@example.com", "template <EMAIL_1> for <EMAIL_2>"},
		// <EMAIL_3> arrives only now, after... nothing took it: reserved.
		{"see <EMAIL_3>, alice@example.org", "see <EMAIL_3>, <EMAIL_4>"},
		// <EMAIL_2> is already bob's: the literal is replaced too.
		{"the doc says <EMAIL_2> and bob@example.com", "the doc says <EMAIL_5> and <EMAIL_2>"},
	}
	for _, st := range steps {
		got := s.Redact(st.in)
		if got != st.want {
			t.Errorf("Redact(%q) = %q, want %q", st.in, got, st.want)
		}
		if back := s.Restore(got); back != st.in {
			t.Errorf("Restore(%q) = %q, want %q", got, back, st.in)
		}
	}
	if diff := cmp.Diff(map[Type]int{Email: 2}, s.Counts()); diff != "" {
		t.Errorf("Counts() counts literals (-want +got):\n%s", diff)
	}
}

func TestRestoreExactOnly(t *testing.T) {
	s := newTestRedactor(t).NewSession(Reversible)
	s.Redact("bob@example.com")
	for _, text := range []string{"<email_1>", "<EMAIL 1>", "< EMAIL_1>", "<EMAIL_1 >", "EMAIL_1", "<EMAIL_01>", "<<EMAIL_1"} {
		if got := s.Restore(text); got != text {
			t.Errorf("Restore(%q) = %q, want it unchanged", text, got)
		}
	}
	if got := s.Restore("<<EMAIL_1>>"); got != "<bob@example.com>" {
		t.Errorf("Restore(<<EMAIL_1>>) = %q, want <bob@example.com>", got)
	}
}

// restorerText is an answer with several placeholders, some adjacent, one
// unknown, and angle brackets that are not placeholders.
const restorerText = "Dear <EMAIL_1>,<EMAIL_2><CARD_1> a<b and c>d <EMAIL_9> <EMAIL_ <<PHONE_1>> end<EMAIL_1>"

func restorerSession(t testing.TB) *Session {
	t.Helper()
	s := newTestRedactor(t).NewSession(Reversible)
	s.Redact("bob@example.com alice@example.org 4111 1111 1111 1111 +1 415 555 0132")
	return s
}

func streamed(r *Restorer, pieces []string) string {
	var b strings.Builder
	for _, p := range pieces {
		b.WriteString(r.Write(p))
	}
	b.WriteString(r.Flush())
	return b.String()
}

// TestRestorerSplits streams restorerText cut at every point, at every pair
// of points, and byte by byte, and compares with Restore of the whole.
func TestRestorerSplits(t *testing.T) {
	s := restorerSession(t)
	text := restorerText
	whole := s.Restore(text)
	if !strings.Contains(whole, "bob@example.com") || strings.Contains(whole, "<CARD_1>") {
		t.Fatalf("Restore(%q) = %q: test session lacks placeholders", text, whole)
	}
	for i := 0; i <= len(text); i++ {
		for j := i; j <= len(text); j++ {
			pieces := []string{text[:i], text[i:j], text[j:]}
			if got := streamed(s.NewRestorer(), pieces); got != whole {
				t.Fatalf("streamed %q = %q, want %q", pieces, got, whole)
			}
		}
	}
	bytes := strings.Split(text, "")
	if got := streamed(s.NewRestorer(), bytes); got != whole {
		t.Errorf("streamed byte by byte = %q, want %q", got, whole)
	}
}

// TestRestorerHoldsOnlyPrefixes: nothing but a possible placeholder prefix is
// held back.
func TestRestorerHoldsOnlyPrefixes(t *testing.T) {
	s := restorerSession(t)
	tests := []struct{ piece, emitted string }{
		{"Hello <EMA", "Hello "},
		{"IL_1> and <EMX", "bob@example.com and <EMX"},
		{" <CARD_1", " "},
		{"0> x", "<CARD_10> x"},
		{"<", ""},
		{"<", "<"},
	}
	r := s.NewRestorer()
	for _, tt := range tests {
		if got := r.Write(tt.piece); got != tt.emitted {
			t.Errorf("Write(%q) = %q, want %q", tt.piece, got, tt.emitted)
		}
	}
	if got := r.Flush(); got != "<" {
		t.Errorf("Flush() = %q, want %q", got, "<")
	}
	if got := r.Flush(); got != "" {
		t.Errorf("second Flush() = %q, want empty", got)
	}
}

func TestRestorerNoPlaceholders(t *testing.T) {
	r := newTestRedactor(t).NewSession(Mask).NewRestorer()
	if got := r.Write("<EMA"); got != "<EMA" {
		t.Errorf("Write(<EMA) = %q, want it passed through", got)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	s := newTestRedactor(t).NewSession(Reversible)
	in := `{"to": "bob@example.com", "cc": ["alice@example.org", "bob@example.com"], "amount": 1.50,` +
		` "note": "call +1 415 555 0132 \"now\"", "bob@example.com": true, "esc": "\u0063arol@example.net", "n": null}`
	red, err := s.RedactJSON([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"to": "<EMAIL_1>", "cc": ["<EMAIL_2>", "<EMAIL_1>"], "amount": 1.50,` +
		` "note": "call <PHONE_1> \"now\"", "<EMAIL_1>": true, "esc": "<EMAIL_3>", "n": null}`
	if string(red) != want {
		t.Errorf("RedactJSON(%s) =\n%s\nwant\n%s", in, red, want)
	}
	back, err := s.RestoreJSON(red)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if err := json.Unmarshal([]byte(in), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(back, &b); err != nil {
		t.Fatalf("RestoreJSON gave invalid JSON %s: %v", back, err)
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("RestoreJSON(RedactJSON(x)) differs from x (-want +got):\n%s", diff)
	}

	// A model may escape the brackets; the whole-document restore still
	// finds the placeholder.
	out, err := s.RestoreJSON([]byte(`{"email":"\u003cEMAIL_2\u003e"}`))
	if err != nil || string(out) != `{"email":"alice@example.org"}` {
		t.Errorf("RestoreJSON(escaped placeholder) = %s, %v", out, err)
	}

	unchanged := []byte(`{"a": "no data here", "b": [1, 2e3]}`)
	if out, err := s.RedactJSON(unchanged); err != nil || string(out) != string(unchanged) {
		t.Errorf("RedactJSON(%s) = %s, %v, want it unchanged", unchanged, out, err)
	}
	if _, err := s.RedactJSON([]byte(`{"a": `)); !errors.Is(err, ErrNotJSON) {
		t.Errorf("RedactJSON(truncated) error = %v, want ErrNotJSON", err)
	}
}

func TestJSONRestorer(t *testing.T) {
	r := newTestRedactor(t, config.RedactPattern{Name: "quoted", Regex: `name="[^"]+"`})
	s := r.NewSession(Reversible)
	if got := s.Redact(`set name="Bob \ Smith"`); got != "set <QUOTED_1>" {
		t.Fatalf("Redact = %q", got)
	}
	doc := `{"cmd": "set <QUOTED_1>"}`
	jr := s.NewJSONRestorer()
	got := streamed(jr, []string{doc[:15], doc[15:22], doc[22:]})
	var v map[string]string
	if err := json.Unmarshal([]byte(got), &v); err != nil {
		t.Fatalf("streamed JSON %s is invalid: %v", got, err)
	}
	if want := `set name="Bob \ Smith"`; v["cmd"] != want {
		t.Errorf("cmd = %q, want %q", v["cmd"], want)
	}
}

// TestConcurrentUse shares one Redactor across goroutines, each with its own
// session, and one session across goroutines; run with -race.
func TestConcurrentUse(t *testing.T) {
	r := newTestRedactor(t, config.RedactPattern{Name: "emp", Regex: `EMP-\d{4}`})
	shared := r.NewSession(Reversible)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			own := r.NewSession(Reversible)
			for i := range 50 {
				text := fmt.Sprintf("user%d@example.com EMP-%04d 10.0.%d.%d", g, i, g, i)
				for _, s := range []*Session{own, shared} {
					red := s.Redact(text)
					if strings.Contains(red, "@example.com") {
						t.Errorf("Redact(%q) = %q leaks the email", text, red)
					}
					if back := s.Restore(red); back != text {
						t.Errorf("Restore(Redact(%q)) = %q", text, back)
					}
				}
				_ = streamed(own.NewRestorer(), []string{"<EMA", "IL_1>"})
				_ = shared.Counts()
			}
		})
	}
	wg.Wait()
	if got := shared.Counts()[Email]; got != 8 {
		t.Errorf("shared Counts()[EMAIL] = %d, want 8", got)
	}
}

// TestRoundTripRandom redacts and restores random mixtures of personal data,
// placeholder look-alikes and filler.
func TestRoundTripRandom(t *testing.T) {
	r := newTestRedactor(t)
	parts := []string{"bob@example.com", "<EMAIL_1>", "<EMAIL_2>", "<IP_1>", "4111 1111 1111 1111", "10.0.0.1",
		" ", "<", ">", "_1>", "<EMAIL", "DE89 3704 0044 0532 0130 00", "078-05-1123", "text", "+1 415 555 0132"}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		s := r.NewSession(Reversible)
		var msgs []string
		for range 3 {
			var b strings.Builder
			for range 1 + rng.IntN(8) {
				b.WriteString(parts[rng.IntN(len(parts))])
			}
			msgs = append(msgs, b.String())
		}
		for _, m := range msgs {
			red := s.Redact(m)
			if back := s.Restore(red); back != m {
				t.Fatalf("Restore(Redact(%q)) = %q (redacted %q)", m, back, red)
			}
		}
	}
}

// TestJSONNumbers: a card or an SSN sent as a JSON number is redacted (it
// becomes a string with its placeholder) and restored as the number it was;
// other numbers keep their bytes.
func TestJSONNumbers(t *testing.T) {
	tests := []struct {
		name, doc, wantRedacted string
	}{
		{"card argument", `{"card":4111111111111111,"qty":2}`, `{"card":"<CARD_1>","qty":2}`},
		{"ssn in an enum", `{"enum":[123456789,7],"price":12.5}`, `{"enum":["<SSN_1>",7],"price":12.5}`},
		{"metadata", `{"metadata":{"customer":4012888888881881}}`, `{"metadata":{"customer":"<CARD_1>"}}`},
		{"sign and fractional parts are not ids", `[-100010001, 4111111111111111.5, 4.1111111111111115e15, 1e-7, 0.0, 12.50, 2e3]`, `[-100010001, 4111111111111111.5, 4.1111111111111115e15, 1e-7, 0.0, 12.50, 2e3]`},
		// A provider parses these to the card number: they are read by
		// their integer value and restored as written.
		{"a card as a float", `{"c":4111111111111111.0}`, `{"c":"<CARD_1>"}`},
		{"a card with an exponent", `[4111111111111111e0]`, `["<CARD_1>"]`},
		{"a card in scientific form", `[4.111111111111111E+15]`, `["<CARD_1>"]`},
		{"an ssn with trailing zeros", `[12345678900e-2]`, `["<SSN_1>"]`},
		{"huge exponents", `[1e999999999, 1e-999999999, 4111111111111111e30]`, `[1e999999999, 1e-999999999, 4111111111111111e30]`},
		{"small numbers", `{"n":-1,"m":0,"k":1234}`, `{"n":-1,"m":0,"k":1234}`},
		{"the same digits as a number and as a string", `{"a":4111111111111111,"b":"4111111111111111"}`, `{"a":"<CARD_1>","b":"<CARD_2>"}`},
		{"schema bounds", `{"type":"integer","maximum" : 2147483647,"enum":[2147483647]}`, `{"type":"integer","maximum" : 2147483647,"enum":["<PHONE_1>"]}`},
	}
	r := newTestRedactor(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := r.NewSession(Reversible)
			red, err := s.RedactJSON([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			if string(red) != tt.wantRedacted {
				t.Errorf("RedactJSON(%s) = %s, want %s", tt.doc, red, tt.wantRedacted)
			}
			back, err := s.RestoreJSON(red)
			if err != nil {
				t.Fatal(err)
			}
			if string(back) != tt.doc {
				t.Errorf("RestoreJSON(%s) = %s, want %s", red, back, tt.doc)
			}
			for typ, n := range s.Counts() {
				if n != 1 {
					t.Errorf("Counts()[%s] = %d, want 1 (one value)", typ, n)
				}
			}
		})
	}
}

// TestRestoreCap: restoration writes at most MaxRestoreBytes of values per
// session, across Restore, RestoreJSON and streaming restorers; past it
// the placeholders stay, so a 3.6 MB answer of "<EMAIL_1>" stays about
// 3.6 MB instead of growing thirtyfold.
func TestRestoreCap(t *testing.T) {
	r := newTestRedactor(t)
	const email = "jane.doe.with.a.long.address@subdomain.example.com"
	answer := strings.Repeat("<EMAIL_1>", 400_000) // 3.6 MB
	limit := len(answer) + MaxRestoreBytes

	t.Run("Restore", func(t *testing.T) {
		s := r.NewSession(Reversible)
		s.Redact("mail " + email)
		out := s.Restore(answer)
		if len(out) > limit {
			t.Errorf("Restore(3.6 MB of placeholders) = %d bytes, want at most %d", len(out), limit)
		}
		if !strings.HasPrefix(out, email) || !s.RestoreCapped() {
			t.Errorf("Restore restored nothing or did not report the cap (capped %v)", s.RestoreCapped())
		}
	})
	t.Run("streamed", func(t *testing.T) {
		s := r.NewSession(Reversible)
		s.Redact("mail " + email)
		rs := s.NewRestorer()
		n := 0
		for _, piece := range strings.SplitAfter(answer, ">") {
			n += len(rs.Write(piece))
		}
		n += len(rs.Flush())
		if n > limit {
			t.Errorf("streamed restore = %d bytes, want at most %d", n, limit)
		}
	})
	t.Run("shared by the session", func(t *testing.T) {
		s := r.NewSession(Reversible)
		s.Redact("mail " + email)
		s.Restore(answer) // spends the budget
		if got := s.Restore("<EMAIL_1>"); got != "<EMAIL_1>" {
			t.Errorf("Restore after the cap = %q, want the placeholder left", got)
		}
	})
	t.Run("an honest answer", func(t *testing.T) {
		s := r.NewSession(Reversible)
		s.Redact("mail " + email)
		if got := s.Restore("Write to <EMAIL_1>."); got != "Write to "+email+"." || s.RestoreCapped() {
			t.Errorf("Restore = %q (capped %v), want the address back", got, s.RestoreCapped())
		}
	})
}
