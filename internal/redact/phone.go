package redact

import (
	"strings"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"
)

// Phone numbers are found in two steps. A cheap scanner collects candidates:
// runs of digit groups joined by spaces (ASCII, doubled or no-break),
// dashes, dots or slashes, one group optionally in parentheses, starting
// with '+', "00", a digit or "(+" (a country code in parentheses), not
// glued to a word or a longer number ("(0)" after the country code, the
// trunk 0 of "+44 (0)7911 123456", is not one of the number's digits), and
// not shaped like a date, an amount, a version or an SSN. Then
// libphonenumber's metadata (github.com/nyaruka/phonenumbers, the port
// Presidio uses) decides:
//
//   - international ("+44 20 7123 4567", "0044 20 7123 4567"): the country
//     code names the region; the number must be possible there (a length
//     the country's numbering plan has);
//   - national in groups, with a trunk 0 ("020 7123 4567", "0151
//     23456789"): possible in a region that dials one;
//   - national in groups, without: possible if written as North America
//     writes numbers or with a parenthesised area code ("(555) 123-4567",
//     "(11) 98765-4321"), otherwise grouped as the region formats its
//     numbers or valid there in groups of three digits or more;
//   - one block of digits ("4155550132", "02079460958"): possible with a
//     trunk 0, otherwise valid (the number plan's prefixes must match).
//
// A number after '#' or a word naming an identifier ("order", "invoice";
// identifier.go) is not a phone. The default regions are the ten whose
// formats the evaluation set covers; numbers of other countries are found
// when written with their country code. At most maxPhoneChecks candidates
// of one request (a Session's texts, or one call of Find) go to the
// library; after that a candidate is taken on its shape alone (redacting
// too much rather than too little), so a request costs time linear in its
// length, and at most a few milliseconds of library checks.

// The regions tried for a number without a country code. trunkRegions
// dial a national number with a leading 0 (which the international form
// drops); the others write theirs without one.
var (
	trunkRegions   = []string{"GB", "DE", "FR", "NL", "SE", "JP", "IT", "BR"}
	noTrunkRegions = []string{"US", "ES", "IT", "BR"}
	// blockRegions are tried for one block of digits without a trunk 0:
	// Brazil's ten-digit numbers would take in Unix times ("1778133506"),
	// so it is tried for eleven-digit blocks only (a mobile with its area
	// code).
	blockRegions       = []string{"US", "ES", "IT"}
	blockMobileRegions = []string{"US", "IT", "BR"}
)

const (
	minPhoneDigits = 7
	maxPhoneDigits = 15 // E.164
	// maxPhoneChecks bounds the candidates of one request that the
	// library checks (for each default region that fits: 5-20 µs).
	maxPhoneChecks = 512
)

type phoneGroup struct {
	group
	paren bool
}

// phoneScan is the state of one text's phone scan.
type phoneScan struct {
	s      string
	groups []phoneGroup
	digits []byte
	num    phonenumbers.PhoneNumber
	// The fields p.num points to, so that building it allocates nothing.
	cc          int32
	nsn         uint64
	zeros       int32
	leadingZero bool
	budget      *budget
	// grouping, when set, lets check take a possible number written in
	// the groups of the region's national format.
	grouping []phoneGroup
}

// findPhones appends the phone numbers in s to out.
func findPhones(s string, out []Finding, b *budget) []Finding {
	p := phoneScan{s: s, budget: b}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c != '+' && c != '(' && !isDigit(c)) || !phoneStart(s, i) {
			continue
		}
		groups, tail, long := readPhone(s, i, p.groups)
		p.groups = groups
		if long {
			i = skipDigitRun(s, i)
			continue
		}
		if len(groups) == 0 {
			continue
		}
		if f, ok := p.best(i, tail); ok {
			out = append(out, f)
			i = f.End - 1
			continue
		}
		// A run that holds no number at its start holds none later
		// ("8213 0925 6314" is one reference), except after a date:
		// "2024-01-15 0151 23456789".
		if dateLike(p.groups) && len(p.groups) > 3 && p.groups[3].join == ' ' {
			i = p.groups[3].start - 1
			if p.groups[3].paren {
				i--
			}
			continue
		}
		i = skipDigitRun(s, i)
	}
	return out
}

// skipDigitRun returns the index of the last byte of the run of digits and
// gaps that starts at s[i].
func skipDigitRun(s string, i int) int {
	for i < len(s) {
		if isDigit(s[i]) || s[i] == '+' || s[i] == '(' || s[i] == ')' {
			i++
			continue
		}
		w, _ := gapAt(s, i)
		if w == 0 || i+w >= len(s) || !isDigit(s[i+w]) {
			break
		}
		i += w
	}
	return i - 1
}

// phoneStart reports whether a phone number may start at s[i]: not glued to
// a word, a longer number or a currency sign, not after '#' ("#4155550132"
// is an order number). After a comma only if no digit precedes it: a CSV
// field, not the tail of "8,600,419".
func phoneStart(s string, i int) bool {
	if i == 0 {
		return true
	}
	switch p := s[i-1]; {
	case isWord(p), p == '+', p == '-', p == '(', p == ')', p == '/', p == '#', p == '$':
		return false
	case p == ',':
		return s[i] == '+' || i < 2 || !isDigit(s[i-2])
	case p == '.':
		return !decimalBefore(s, i)
	case p >= utf8.RuneSelf:
		r, _ := utf8.DecodeLastRuneInString(s[:i])
		return r != '€' && r != '£' && r != '¥'
	}
	return true
}

// phoneEnd reports whether a phone number may end at i: not glued to a
// word, a parenthesis, a decimal part ("1.234.567,89") or a dash or dot and
// more ("01-23-45-67-89-AB").
func phoneEnd(s string, i int) bool {
	if i >= len(s) {
		return true
	}
	switch c := s[i]; {
	case isWord(c), c == '(', c == ')':
		return false
	case c == '-' || c == '.' || c == '/' || c == ':':
		return i+1 >= len(s) || !isAlnum(s[i+1])
	case c == ',':
		return i+1 >= len(s) || !isDigit(s[i+1]) // a CSV field, not "1.234,56"
	}
	return true
}

// readPhone collects the groups of a phone-like run starting at s[i], up to
// maxPhoneDigits digits in all (plus a "00" international prefix). If the
// run goes on past the groups (a second parenthesis), tail is the separator
// that joins the rest; otherwise tail is 0. long reports a run with more
// digits than a phone number has ("9400 1602 8712 5821 3921 03"), which
// holds none.
func readPhone(s string, i int, buf []phoneGroup) (groups []phoneGroup, tail byte, long bool) {
	buf = buf[:0]
	if s[i] == '+' {
		i++
	}
	limit := maxPhoneDigits
	if i+1 < len(s) && s[i] == '0' && s[i+1] == '0' {
		limit += 2
	}
	digits, parens := 0, 0
	var join byte
	for i < len(s) {
		g := phoneGroup{group: group{join: join}}
		if s[i] == '(' {
			if parens > 0 {
				break
			}
			parens++
			g.paren = true
			i++
			if len(buf) == 0 && i < len(s) && s[i] == '+' {
				i++ // a country code in parentheses: "(+44) 7911 123456"
			}
		}
		g.start = i
		for i < len(s) && isDigit(s[i]) && digits <= limit {
			i++
			digits++
		}
		g.end = i
		if digits > limit {
			return buf, join, true
		}
		if g.len() == 0 {
			break
		}
		if g.paren {
			if g.len() > 5 || i >= len(s) || s[i] != ')' {
				break
			}
			i++
		}
		buf = append(buf, g)
		// What joins the next group: one gap, or nothing next to a
		// parenthesis.
		w, kind := gapAt(s, i)
		switch {
		case w > 0 && i+w < len(s) && (isDigit(s[i+w]) || s[i+w] == '(' && kind == ' '):
			join = kind
			i += w
		case i < len(s) && (g.paren && isDigit(s[i]) || s[i] == '('):
			join = 0
		default:
			return buf, 0, false
		}
	}
	return buf, join, false
}

// groupsEnd is where the last group ends, after its closing parenthesis.
func groupsEnd(groups []phoneGroup) int {
	g := groups[len(groups)-1]
	if g.paren {
		return g.end + 1
	}
	return g.end
}

// best returns the longest prefix of the run's groups that is a phone
// number and stands apart from what follows: the end of the run (not glued
// to a word or a longer number), or a space before the next group.
func (p *phoneScan) best(start int, tail byte) (Finding, bool) {
	if dateLike(p.groups) {
		return Finding{}, false
	}
	for k := len(p.groups); k >= 1; k-- {
		next := tail
		if k < len(p.groups) {
			next = p.groups[k].join
		}
		end := groupsEnd(p.groups[:k])
		switch {
		case next == ' ':
		case next != 0, k < len(p.groups), !phoneEnd(p.s, end):
			continue
		}
		if p.isPhone(start, p.groups[:k]) {
			return Finding{Type: Phone, Start: start, End: end}, true
		}
	}
	return Finding{}, false
}

// dateLike reports whether a run starts like a date: three groups joined
// by the same dash, dot or slash, as year-month-day or day-month-year
// ("2024-01-15", "15.01.2024", "01/12/25").
func dateLike(groups []phoneGroup) bool {
	if len(groups) < 3 || groups[1].join != groups[2].join || groups[1].join == ' ' || groups[1].join == 0 || groups[0].paren {
		return false
	}
	a, b, c := groups[0].len(), groups[1].len(), groups[2].len()
	return a == 4 && b <= 2 && c <= 2 || a <= 2 && b <= 2 && (c == 4 || c == 2)
}

// isPhone decides whether the groups, starting at s[start], are a phone
// number.
func (p *phoneScan) isPhone(start int, groups []phoneGroup) bool {
	p.digits = p.digits[:0]
	for k, g := range groups {
		if k == 1 && g.paren && p.s[g.start:g.end] == "0" {
			continue // the trunk 0 after a country code: "+44 (0)7911 123456"
		}
		p.digits = append(p.digits, p.s[g.start:g.end]...)
	}
	d := p.digits
	plus := p.s[start] == '+' || strings.HasPrefix(p.s[start:], "(+")
	if !plus && (identifierBefore(p.s, start) || zipBefore(p.s, start) || versionLike(groups) || ssnShape(groups)) {
		return false
	}
	if len(groups) > 1 && groups[len(groups)-1].len() == 1 {
		return false // a check digit: "078-05-1123-4"
	}
	intl := plus
	if !plus && len(d) > 2 && d[0] == '0' && d[1] == '0' && exitPrefix(groups) {
		intl, d = true, d[2:]
	}
	if len(d) < minPhoneDigits || len(d) > maxPhoneDigits {
		return false
	}
	if intl {
		return d[0] != '0' && p.check(d, true, false)
	}
	trunk := d[0] == '0'
	switch {
	case !separated(groups):
		// One block: possible with a trunk 0, valid without.
		return p.check(d, false, !trunk)
	case trunk, groups[0].paren:
		return p.check(d, false, false)
	case nanpShape(groups):
		return d[len(d)-10] >= '2' && p.check(d, false, false)
	}
	// Groups without a trunk 0, in a shape other than North America's,
	// must be grouped as the region writes its numbers ("918 93 68 80"),
	// or be valid there and in groups of three digits or more ("918 936
	// 880"): "7461 4967 54" is as likely a reference as a number.
	p.grouping = groups
	defer func() { p.grouping = nil }()
	return p.check(d, false, true)
}

// longGroups reports whether every group has three digits or more.
func longGroups(groups []phoneGroup) bool {
	for _, g := range groups {
		if g.len() < 3 {
			return false
		}
	}
	return true
}

// ssnShape reports whether groups are written as a US Social Security
// number, AAA-GG-SSSS, which no numbering plan groups a phone number as.
func ssnShape(groups []phoneGroup) bool {
	return len(groups) == 3 && groups[0].len() == 3 && groups[1].len() == 2 && groups[2].len() == 4 && !groups[0].paren
}

// groupedAsRegion reports whether p.grouping has the digit groups of the
// national format of p.num ("918 93 68 80": 3-2-2-2).
func (p *phoneScan) groupedAsRegion() bool {
	formatted := phonenumbers.Format(&p.num, phonenumbers.NATIONAL)
	k, n := 0, 0
	for i := 0; i <= len(formatted); i++ {
		if i < len(formatted) && isDigit(formatted[i]) {
			n++
			continue
		}
		if n == 0 {
			continue
		}
		if k >= len(p.grouping) || p.grouping[k].len() != n {
			return false
		}
		k, n = k+1, 0
	}
	return k == len(p.grouping)
}

// nanpShape reports whether groups are written as a North American number:
// 3-3-4, optionally after a 1.
func nanpShape(groups []phoneGroup) bool {
	if len(groups) == 4 && groups[0].len() == 1 {
		groups = groups[1:]
	}
	return len(groups) == 3 && groups[0].len() == 3 && groups[1].len() == 3 && groups[2].len() == 4
}

// exitPrefix reports whether a number that starts with 00 starts with the
// international call prefix followed by a country code: "0044 20 7123 4567", "001 (447)
// 646-0635", "00 49 30 1234567", "00442071234567"; not "006-2144796-...".
func exitPrefix(groups []phoneGroup) bool {
	g := groups[0]
	if g.paren || g.len() < 2 {
		return false
	}
	if len(groups) == 1 {
		return true
	}
	return g.len() <= 5 && groups[1].join == ' '
}

// separated reports whether the number is written in groups rather than as
// one block.
func separated(groups []phoneGroup) bool { return len(groups) > 1 }

// versionLike reports whether dotted groups include a one-digit group, as
// version numbers do ("10.6.20487.5203") and phone numbers do not.
func versionLike(groups []phoneGroup) bool {
	dotted, single := false, false
	for _, g := range groups {
		dotted = dotted || g.join == '.'
		single = single || g.len() == 1
	}
	return dotted && single
}

// check asks the library whether the digits d are a phone number: an
// international one (country code first) if intl is set, otherwise a
// national number of one of the default regions that fit its first digit.
// strict asks for a valid number, not merely a possible one. Past the
// budget of library calls, a candidate that got here is taken.
func (p *phoneScan) check(d []byte, intl, strict bool) bool {
	if !p.budget.takePhoneCheck() {
		return true
	}
	if intl {
		return p.international(d) && phonenumbers.IsPossibleNumber(&p.num)
	}
	regions := noTrunkRegions
	switch {
	case d[0] == '0':
		regions = trunkRegions
	case strict && p.grouping == nil && len(d) == 11:
		regions = blockMobileRegions
	case strict && p.grouping == nil:
		regions = blockRegions
	}
	for _, r := range regions {
		if !p.national(d, r) {
			continue
		}
		switch {
		case !strict && phonenumbers.IsPossibleNumber(&p.num):
			return true
		case p.grouping != nil:
			if phonenumbers.IsPossibleNumber(&p.num) && p.groupedAsRegion() || longGroups(p.grouping) && phonenumbers.IsValidNumberForRegion(&p.num, r) {
				return true
			}
		case strict && phonenumbers.IsValidNumberForRegion(&p.num, r):
			return true
		}
	}
	return false
}

// international sets p.num to the digits d read as a country code and a
// national significant number. It builds the number from the library's
// metadata rather than parsing text: parsing costs ten times more, for
// normalisations the scanner has done already.
func (p *phoneScan) international(d []byte) bool {
	for n := 1; n <= 3 && n < len(d); n++ {
		cc := atoi(d[:n])
		if phonenumbers.GetRegionCodeForCountryCode(cc) != "ZZ" {
			return p.setNumber(int32(cc), d[n:])
		}
	}
	return false
}

// national sets p.num to the digits d read as a national number of region,
// without the trunk 0 (Italy keeps its leading 0 in the number).
func (p *phoneScan) national(d []byte, region string) bool {
	cc := phonenumbers.GetCountryCodeForRegion(region)
	if cc == 0 {
		return false
	}
	if d[0] == '0' && region != "IT" {
		d = d[1:]
	}
	return p.setNumber(int32(cc), d)
}

// setNumber sets p.num to country code cc and national significant number
// nsn; a leading 0 is kept as libphonenumber keeps Italy's.
func (p *phoneScan) setNumber(cc int32, nsn []byte) bool {
	zeros := 0
	for zeros < len(nsn) && nsn[zeros] == '0' {
		zeros++
	}
	if len(nsn) == 0 || zeros == len(nsn) {
		return false
	}
	n := uint64(atoi(nsn[zeros:]))
	p.cc, p.nsn, p.zeros, p.leadingZero = cc, n, int32(zeros), zeros > 0
	p.num = phonenumbers.PhoneNumber{CountryCode: &p.cc, NationalNumber: &p.nsn}
	if zeros > 0 {
		p.num.ItalianLeadingZero = &p.leadingZero
		p.num.NumberOfLeadingZeros = &p.zeros
	}
	return true
}

// atoi reads the digits d (at most maxPhoneDigits of them) as a number.
func atoi(d []byte) int {
	v := 0
	for _, c := range d {
		v = v*10 + int(c-'0')
	}
	return v
}
