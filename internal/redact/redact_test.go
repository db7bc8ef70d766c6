package redact

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/config"
)

// findCase is a text and what Find should report in it, as "TYPE value".
type findCase struct {
	name string
	text string
	want []string
}

// findCases are the detector tables; FuzzFind is seeded with them.
var findCases = map[Type][]findCase{
	Email: {
		{"plain", "write to bob@example.com today", []string{"EMAIL bob@example.com"}},
		{"plus tag and subdomains", "bob.smith+tag@mail.example.co.uk", []string{"EMAIL bob.smith+tag@mail.example.co.uk"}},
		{"in angle brackets", "Bob <bob_s@example.io>", []string{"EMAIL bob_s@example.io"}},
		{"full stop after", "mail x-y@sub.example.com.", []string{"EMAIL x-y@sub.example.com"}},
		{"full stop before", "done.bob@example.com", []string{"EMAIL done.bob@example.com"}},
		{"punycode", "user@xn--80ak6aa92e.com and a@xn--d1acufc.xn--p1ai", []string{"EMAIL user@xn--80ak6aa92e.com", "EMAIL a@xn--d1acufc.xn--p1ai"}},
		{"two", "a@b.io, c@d.org", []string{"EMAIL a@b.io", "EMAIL c@d.org"}},
		{"no domain dot", "a@localhost", nil},
		{"one-letter tld", "a@b.c", nil},
		{"numeric tld", "a@b.123", nil},
		{"nothing before", "@example.com", nil},
		{"double dot", "a..b@example.com", []string{}},
		{"dot before at", "foo.@example.com", nil},
		{"hyphen label", "user@-example.com", nil},
		{"trailing dot only", "my email is info@presidio.", nil},
		{"handle", "ping @bob on slack", nil},
		{"no at", "this is not an email: hello-world here", nil},
		{"URL-encoded at", "?email=jane.doe%40example.com&x=1", []string{"EMAIL jane.doe%40example.com"}},
		{"in a JWT payload", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJlbWFpbCI6ImphbmVAZXhhbXBsZS5jb20ifQ.c2lnbmF0dXJl", []string{"EMAIL eyJlbWFpbCI6ImphbmVAZXhhbXBsZS5jb20ifQ"}},
		{"base64 without data", "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ", nil},
	},
	Phone: {
		{"E.164 spaced", "call +1 415 555 0132 now", []string{"PHONE +1 415 555 0132"}},
		{"E.164 compact", "+4930123456", []string{"PHONE +4930123456"}},
		{"E.164 parenthesised area", "+44 (20) 7123 4567", []string{"PHONE +44 (20) 7123 4567"}},
		{"E.164 dashes", "+1-415-555-0132.", []string{"PHONE +1-415-555-0132"}},
		// A parenthesised country code and the "(0)" of e-mail signatures
		// (finding 17).
		{"country code in parentheses", "call (+44) 7911123456 now", []string{"PHONE (+44) 7911123456"}},
		{"country code in parentheses, groups", "call (+1) 415 555 0132 now", []string{"PHONE (+1) 415 555 0132"}},
		{"trunk 0 in parentheses, glued", "Tel +44(0)7911 123456", []string{"PHONE +44(0)7911 123456"}},
		{"trunk 0 in parentheses", "Tel +44 (0)7911 123456", []string{"PHONE +44 (0)7911 123456"}},
		{"DE trunk 0 in parentheses", "Tel +49 (0)151 12345678", []string{"PHONE +49 (0)151 12345678"}},
		{"US parentheses", "(555) 123-4567", []string{"PHONE (555) 123-4567"}},
		{"US dashes", "tel: 555-123-4567", []string{"PHONE 555-123-4567"}},
		{"US dots", "415.555.0132", []string{"PHONE 415.555.0132"}},
		{"US with 1", "1-800-555-0132", []string{"PHONE 1-800-555-0132"}},
		{"UK", "020 7123 4567", []string{"PHONE 020 7123 4567"}},
		{"UK mobile", "07700 900123", []string{"PHONE 07700 900123"}},
		{"DE", "030 1234567", []string{"PHONE 030 1234567"}},
		{"FR", "01 42 68 53 00", []string{"PHONE 01 42 68 53 00"}},
		{"JP", "090-1234-5678", []string{"PHONE 090-1234-5678"}},
		{"date", "on 2024-01-15", nil},
		{"dotted date", "on 15.01.2024", nil},
		{"order number", "order 2024-556677", nil},
		{"bare digits after order", "order 4155550132", nil},
		{"bare digits", "call 4155550132", []string{"PHONE 4155550132"}},
		{"DE mobile", "Handy 0151 23456789", []string{"PHONE 0151 23456789"}},
		{"00 prefix", "ring 0044 20 7123 4567 now", []string{"PHONE 0044 20 7123 4567"}},
		{"no-break spaces", "tel 020\u00a07123\u00a04567", []string{"PHONE 020\u00a07123\u00a04567"}},
		{"glued to underscore", "tel_+14155550132", []string{"PHONE +14155550132"}},
		{"ES grouped", "llámame al 918 93 68 80", []string{"PHONE 918 93 68 80"}},
		{"BR area code", "(11) 98765-4321", []string{"PHONE (11) 98765-4321"}},
		{"extension", "(555) 123-4567 x204", []string{"PHONE (555) 123-4567"}},
		{"version", "version 10.6.20487.5203", nil},
		{"after a number sign", "ticket #4155550132", nil},
		{"tracking number", "tracking number 0313 5822 5307", nil},
		{"amount", "EUR 1.234.567,89", nil},
		{"unix time", "ts=1778133506", nil},
		{"CSV fields", "jane,4155550132,+44 20 7123 4567,x", []string{"PHONE 4155550132", "PHONE +44 20 7123 4567"}},
		{"thousands", "EUR 8,600,419.55 and 1.234.567,89", nil},
		{"area code 1", "123-456-7890", nil},
		{"too short", "+49 301", nil},
		{"version", "1.2.3", nil},
		{"time", "at 10:30", nil},
		{"glued", "is415-555-0132", nil},
		{"zero-padded blocks: possible in Germany", "0440 1162 44", []string{"PHONE 0440 1162 44"}},
		{"MAC", "01-23-45-67-89-AB", nil},
	},
	Card: {
		{"visa grouped", "card 4111 1111 1111 1111 exp 12/29", []string{"CARD 4111 1111 1111 1111"}},
		{"visa dashes", "4111-1111-1111-1111", []string{"CARD 4111-1111-1111-1111"}},
		{"visa plain", "4012888888881881", []string{"CARD 4012888888881881"}},
		{"amex", "378282246310005", []string{"CARD 378282246310005"}},
		{"amex grouped", "3782 822463 10005", []string{"CARD 3782 822463 10005"}},
		{"mastercard", "5105105105105100", []string{"CARD 5105105105105100"}},
		{"mastercard 2-series", "2223003122003222", []string{"CARD 2223003122003222"}},
		{"discover", "6011111111111117", []string{"CARD 6011111111111117"}},
		{"jcb", "3530111333300000", []string{"CARD 3530111333300000"}},
		{"diners", "30569309025904", []string{"CARD 30569309025904"}},
		{"unionpay", "6200000000000005", []string{"CARD 6200000000000005"}},
		{"after a number", "ref 12 4111 1111 1111 1111", []string{"CARD 4111 1111 1111 1111"}},
		{"three cards", "4012888888881881 4012-8888-8888-1881 4012 8888 8888 1881", []string{"CARD 4012888888881881", "CARD 4012-8888-8888-1881", "CARD 4012 8888 8888 1881"}},
		{"invalid Luhn", "4111 1111 1111 1112", nil},
		{"unknown issuer", "1234567812345670", nil},
		{"wrong length for issuer", "4111111111111111111", nil},
		{"mixed separators", "4111-1111 1111-1111", []string{"CARD 4111-1111 1111-1111"}},
		{"no-break spaces", "card 4111\u00a01111\u00a01111\u00a01111.", []string{"CARD 4111\u00a01111\u00a01111\u00a01111"}},
		{"narrow no-break spaces", "4111\u202f1111\u202f1111\u202f1111", []string{"CARD 4111\u202f1111\u202f1111\u202f1111"}},
		{"double spaces", "4111  1111  1111  1111", []string{"CARD 4111  1111  1111  1111"}},
		{"glued to underscore", "card_4111111111111111", []string{"CARD 4111111111111111"}},
		{"maestro 12 digits", "maestro 5018 0000 0009", []string{"CARD 5018 0000 0009"}},
		{"jcb 19 digits", "3528000000000000007", []string{"CARD 3528000000000000007"}},
		{"order number groups", "order 637-9872353-4719787", nil},
		{"inside a tracking number", "9400 1800 5057 8889 1784 23", nil},
		{"longer number", "41111111111111111111", nil},
		{"decimal", "4111111111111111.5", nil},
		{"glued", "x4111111111111111", nil},
		{"after plus", "+4111111111111111", nil},
	},
	IBAN: {
		{"DE grouped", "IBAN DE89 3704 0044 0532 0130 00.", []string{"IBAN DE89 3704 0044 0532 0130 00"}},
		{"GB compact", "GB29NWBK60161331926819", []string{"IBAN GB29NWBK60161331926819"}},
		{"FR dashes", "FR14-2004-1010-0505-0001-3M02-606", []string{"IBAN FR14-2004-1010-0505-0001-3M02-606"}},
		{"NO shortest", "NO93 8601 1117 947", []string{"IBAN NO93 8601 1117 947"}},
		{"word after group", "VG96 VPVG 0000 0123 4567 8901 X", []string{"IBAN VG96 VPVG 0000 0123 4567 8901"}},
		{"bad mod-97", "DE89 3704 0044 0532 0130 01", nil},
		{"too short", "DE89 3704 0044 0532 0130", nil},
		{"too long", "DE8937040044053201300012", nil},
		{"unknown country", "XX89370400440532013000", nil},
		{"lower case", "de89370400440532013000", []string{"IBAN de89370400440532013000"}},
		{"lower case grouped", "iban: de89 3704 0044 0532 0130 00", []string{"IBAN de89 3704 0044 0532 0130 00"}},
		{"no-break spaces", "DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000", []string{"IBAN DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000"}},
		{"double spaces", "DE89  3704  0044  0532  0130  00", []string{"IBAN DE89  3704  0044  0532  0130  00"}},
		{"glued to underscore", "iban_DE89370400440532013000", []string{"IBAN DE89370400440532013000"}},
		{"lower-case word", "the word de89370400440532013001 fails mod-97", nil},
		{"bad grouping", "DE89 370 40044 0532 0130 00", nil},
		{"slashes", "AL47/2121/1009/0000/0002/3569/8741", nil},
	},
	SSN: {
		{"dashes", "SSN 078-05-1123.", []string{"SSN 078-05-1123"}},
		{"spaces", "078 05 1123", []string{"SSN 078 05 1123"}},
		{"dots", "078.05.1123", []string{"SSN 078.05.1123"}},
		{"plain", "078051123", []string{"SSN 078051123"}},
		{"half dashed", "078-051123 and 07805-1123", []string{"SSN 078-051123", "SSN 07805-1123"}},
		{"area 000", "000-12-3456", nil},
		{"area 666", "666-12-3456", nil},
		{"area 9xx", "900-12-3456", nil},
		{"group 00", "123-00-4567", nil},
		{"serial 0000", "123-45-0000", nil},
		{"voided", "078-05-1120", nil},
		{"mixed separators", "078-05.1123", nil},
		{"longer number", "078-05-1123-4", nil},
		{"ten digits: a phone with a trunk 0", "0780511231", []string{"PHONE 0780511231"}},
		{"ZIP+4", "Springfield, IL 62704-1234", nil},
		{"ZIP+4 after ZIP", "ZIP 48494-6808", nil},
		{"order number", "order #120718450", nil},
		{"no-break spaces", "078\u00a005\u00a01123", []string{"SSN 078\u00a005\u00a01123"}},
		{"glued to underscore", "ssn_078051123", []string{"SSN 078051123"}},
		{"date", "1999-05-1234", nil},
	},
	IP: {
		{"v4", "host 192.168.0.1 up", []string{"IP 192.168.0.1"}},
		{"v4 with port", "10.0.0.1:8080", []string{"IP 10.0.0.1"}},
		{"v4 full stop", "IP: 192.168.1.1.", []string{"IP 192.168.1.1"}},
		{"v4 zeros", "0.0.0.0 and 255.255.255.255", []string{"IP 0.0.0.0", "IP 255.255.255.255"}},
		{"v6", "2001:db8::1", []string{"IP 2001:db8::1"}},
		{"v6 full", "2345:0425:2CA1:0000:0000:0567:5673:23b5", []string{"IP 2345:0425:2CA1:0000:0000:0567:5673:23b5"}},
		{"v6 zone", "fe80::1%eth0", []string{"IP fe80::1%eth0"}},
		{"v6 bracketed", "[::1]:80", []string{"IP ::1"}},
		{"v6 mapped v4", "::ffff:192.0.2.1", []string{"IP ::ffff:192.0.2.1"}},
		{"v6 embedded v4", "2001:db8::10.0.0.1", []string{"IP 2001:db8::10.0.0.1"}},
		{"v6 unspecified", "src=:: dst=::1", []string{"IP ::", "IP ::1"}},
		{"v6 full stop", "via 2001:db8::1.", []string{"IP 2001:db8::1"}},
		{"v6 trailing colon", ": ::f: ::f:", []string{"IP ::f", "IP ::f"}},
		{"octet too big", "999.1.1.1", nil},
		{"five dotted numbers", "1.2.3.4.5", []string{"IP 1.2.3.4"}},
		{"windows build", "version 10.0.19041.1", nil},
		{"three octets", "192.168.1", nil},
		{"leading zero", "192.168.01.1", nil},
		{"glued", "IP192.168.1.1text", nil},
		{"time", "12:34:56", nil},
		{"C++", "std::cout << MyClass::toString()", nil},
		{"two compressions", "2001::db8::1", nil},
		{"MAC", "aa:bb:cc:dd:ee:ff", nil},
		{"glued v6", "text::1", nil},
	},
}

// newTestRedactor builds a Redactor or fails the test.
func newTestRedactor(tb testing.TB, patterns ...config.RedactPattern) *Redactor {
	tb.Helper()
	r, err := New(patterns)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// describe renders findings as "TYPE value" for comparison.
func describe(text string, fs []Finding) []string {
	out := []string{}
	for _, f := range fs {
		out = append(out, string(f.Type)+" "+text[f.Start:f.End])
	}
	return out
}

func TestFind(t *testing.T) {
	r := newTestRedactor(t)
	for typ, cases := range findCases {
		for _, tc := range cases {
			t.Run(string(typ)+"/"+tc.name, func(t *testing.T) {
				want := tc.want
				if want == nil {
					want = []string{}
				}
				if diff := cmp.Diff(want, describe(tc.text, r.Find(tc.text))); diff != "" {
					t.Errorf("Find(%q) (-want +got):\n%s", tc.text, diff)
				}
			})
		}
	}
}

func TestFindNothing(t *testing.T) {
	r := newTestRedactor(t)
	for _, text := range []string{
		"",
		"Deploy v1.2.3 to prod on 2024-01-15 at 10:30; ticket ORD-2024-000123, invoice 9876543210.",
		"Order #A-20240117-0042 shipped 15/01/2024; total 1,234.56 EUR; build 10.0.19041.1",
		"Section 1.2.3 says the ratio is 1:2:3:4 and the hash is 8f953371d3e85eddb89b05ed6b9e6807",
		"func (s *Server) Run(ctx context.Context) error { return s.mux::serve() }",
	} {
		if got := describe(text, r.Find(text)); len(got) != 0 {
			t.Errorf("Find(%q) = %q, want nothing", text, got)
		}
	}
}

// TestFindLimits pins known false positives, so a change to them is seen.
func TestFindLimits(t *testing.T) {
	r := newTestRedactor(t)
	tests := []struct {
		text string
		want []string
	}{
		// The unspecified address alone is an address to the labelled data;
		// a spaced Haskell type signature pays for it.
		{"map :: (a -> b)", []string{"IP ::"}},
		// A four-part version is an IPv4 address.
		{"release 1.2.3.4", []string{"IP 1.2.3.4"}},
		// Nine plain digits in the SSN ranges are an SSN, unless a word
		// before them names an identifier.
		{"my number is 123456789", []string{"SSN 123456789"}},
		{"order 123456789", []string{}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, describe(tt.text, r.Find(tt.text))); diff != "" {
			t.Errorf("Find(%q) (-want +got):\n%s", tt.text, diff)
		}
	}
}

func TestFindOverlaps(t *testing.T) {
	r := newTestRedactor(t,
		config.RedactPattern{Name: "short", Regex: `\d{3}-\d{2}`},
		config.RedactPattern{Name: "case_ref", Regex: `SSN \d{3}-\d{2}-\d{4}`},
		config.RedactPattern{Name: "mail", Regex: `[a-z]+@example\.com`},
	)
	tests := []struct {
		name string
		text string
		want []string
	}{
		{"longest wins over a built-in", "SSN 078-05-1123", []string{"CASE_REF SSN 078-05-1123"}},
		{"built-in longer than custom", "id 078-05-1123", []string{"SSN 078-05-1123"}},
		{"equal length: built-in first", "bob@example.com", []string{"EMAIL bob@example.com"}},
		{"IPv4 inside IPv6", "2001:db8::10.0.0.1", []string{"IP 2001:db8::10.0.0.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, describe(tt.text, r.Find(tt.text))); diff != "" {
				t.Errorf("Find(%q) (-want +got):\n%s", tt.text, diff)
			}
		})
	}
}

func TestNewPatterns(t *testing.T) {
	tests := []struct {
		name    string
		p       config.RedactPattern
		wantErr string // "" for success
	}{
		{"valid", config.RedactPattern{Name: "employee_id", Regex: `EMP-\d{6}`}, ""},
		{"built-in name", config.RedactPattern{Name: "email", Regex: `[a-z]+@corp`}, ""},
		{"bad regex", config.RedactPattern{Name: "broken", Regex: `(`}, `pattern "broken"`},
		{"lookahead", config.RedactPattern{Name: "perl", Regex: `a(?=b)`}, `pattern "perl"`},
		{"empty regex", config.RedactPattern{Name: "empty", Regex: ``}, `pattern "empty": empty regex`},
		{"matches empty", config.RedactPattern{Name: "star", Regex: `a*`}, `pattern "star": regex matches the empty string`},
		{"too long", config.RedactPattern{Name: "long", Regex: strings.Repeat("a", maxPatternLen+1)}, `pattern "long": regex is`},
		{"too complex", config.RedactPattern{Name: "big", Regex: `[a-z]{700}[0-9]{700}x{700}`}, `pattern "big": regex too complex`},
		{"bad name", config.RedactPattern{Name: "employee id", Regex: `x`}, `pattern "employee id": name must be`},
		{"name starts with digit", config.RedactPattern{Name: "1x", Regex: `x`}, `pattern "1x": name must be`},
		{"name too long", config.RedactPattern{Name: strings.Repeat("n", maxPatternName+1), Regex: `x`}, `name must be`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New([]config.RedactPattern{tt.p})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("New(%+v) = %v, want success", tt.p, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("New(%+v) = %v, want error containing %q", tt.p, err, tt.wantErr)
			}
		})
	}
	if _, err := New(make([]config.RedactPattern, maxPatterns+1)); err == nil {
		t.Errorf("New(%d patterns) succeeded, want error", maxPatterns+1)
	}
}

func TestCustomPattern(t *testing.T) {
	r := newTestRedactor(t, config.RedactPattern{Name: "employee_id", Regex: `\bEMP-\d{6}\b`})
	text := "EMP-004211 reports to EMP-000017, not EMP-12"
	want := []string{"EMPLOYEE_ID EMP-004211", "EMPLOYEE_ID EMP-000017"}
	if diff := cmp.Diff(want, describe(text, r.Find(text))); diff != "" {
		t.Errorf("Find(%q) (-want +got):\n%s", text, diff)
	}
}

// TestPhoneCheckBudget: past maxPhoneChecks candidates in one text, phone
// candidates are taken on their shape without the library, so a text full
// of numbers costs linear time and still leaks none. The block below is
// one the library rejects (area code 492 is not assigned): taken only
// after the budget is spent.
func TestPhoneCheckBudget(t *testing.T) {
	r := newTestRedactor(t)
	if got := r.Find("call 4925671040"); len(got) != 0 {
		t.Fatalf("Find(one unassigned number) = %v, want nothing (the library rejects it)", got)
	}
	text := strings.Repeat("call 4925671040 ", maxPhoneChecks+10)
	got := r.Find(text)
	if len(got) != 10 {
		t.Errorf("Find(%d unassigned numbers) found %d, want the 10 past the budget", maxPhoneChecks+10, len(got))
	}
}

// TestPhoneCheckBudgetPerSession: the budget is the request's, not each
// text's, so splitting a prompt into many messages does not multiply it.
func TestPhoneCheckBudgetPerSession(t *testing.T) {
	s := newTestRedactor(t).NewSession(Mask)
	redacted := 0
	for range maxPhoneChecks + 10 {
		if s.Redact("call 4925671040") != "call 4925671040" {
			redacted++
		}
	}
	if redacted != 10 {
		t.Errorf("a session redacted %d of %d unassigned numbers, want the 10 past its budget", redacted, maxPhoneChecks+10)
	}
}

// TestIdentifierLookbackBounded: the look back for a word such as "order"
// before a number is bounded, so runs of spaces, letters or "number"
// words before many numbers cost linear time and no deep recursion.
func TestIdentifierLookbackBounded(t *testing.T) {
	r := newTestRedactor(t)
	for _, prefix := range []string{strings.Repeat(" ", 1<<20), strings.Repeat("x", 1<<20) + " ", strings.Repeat("number ", 1<<17)} {
		text := prefix + strings.Repeat("call 4155550132 ", 100)
		if got := len(r.Find(text)); got != 100 {
			t.Errorf("Find(%d-byte prefix + 100 phones) found %d, want 100", len(prefix), got)
		}
	}
	if got := r.Find("order number 4155550132"); len(got) != 0 {
		t.Errorf(`Find("order number 4155550132") = %v, want nothing`, got)
	}
}
