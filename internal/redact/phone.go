package redact

// Phone numbers, in three shapes:
//
//   - international: '+', then 8 to 15 digits (E.164) in groups joined by a
//     space, dot or dash, one group optionally in parentheses:
//     "+1 415 555 0132", "+44 (20) 7123 4567", "+4930123456";
//   - North American: "(415) 555-0132", "415-555-0132", "415.555.0132",
//     "1-800-555-0132", with an area code that does not start with 0 or 1;
//   - national with a trunk 0: 9 to 11 digits in at least two groups, a
//     prefix of 2 to 5 digits then groups of at least 3, or five pairs:
//     "020 7123 4567", "030 1234567", "09-7625400", "090-1234-5678",
//     "01 42 68 53 00".
//
// Apart from the parentheses, groups of a national number are joined by the
// same separator throughout. Bare digit strings without '+' are not taken:
// they are as often order numbers or timestamps.

const (
	minE164Digits = 8
	maxE164Digits = 15
)

type phoneGroup struct {
	group
	paren bool
}

// findPhones appends the phone numbers in s to out.
func findPhones(s string, out []Finding) []Finding {
	var groups []phoneGroup
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c != '+' && c != '(' && !isDigit(c)) || !phoneStart(s, i) {
			continue
		}
		var tail byte
		groups, tail = readPhone(s, i, groups)
		if f, ok := bestPhone(s, i, groups, tail); ok {
			out = append(out, f)
			i = f.End - 1
		}
	}
	return out
}

// phoneStart reports whether a phone number may start at s[i]: not glued to
// a word or to a longer number.
func phoneStart(s string, i int) bool {
	if i == 0 {
		return true
	}
	switch p := s[i-1]; {
	case isWord(p), p == '+', p == '-', p == '(', p == ')', p == '/':
		return false
	case p == '.':
		return !decimalBefore(s, i)
	}
	return true
}

// phoneEnd reports whether a phone number may end at i: not glued to a
// word, a parenthesis, or a dash or dot and more ("01-23-45-67-89-AB").
func phoneEnd(s string, i int) bool {
	if i >= len(s) {
		return true
	}
	switch c := s[i]; {
	case isWord(c), c == '(', c == ')':
		return false
	case c == '-' || c == '.':
		return i+1 >= len(s) || !isAlnum(s[i+1])
	}
	return true
}

// readPhone collects the groups of a phone-like run starting at s[i], up to
// maxE164Digits digits in all. If the run goes on past the groups it
// returns (more digits, a second parenthesis), tail is the separator that
// joins the rest; otherwise tail is 0.
func readPhone(s string, i int, buf []phoneGroup) (groups []phoneGroup, tail byte) {
	buf = buf[:0]
	if s[i] == '+' {
		i++
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
		}
		g.start = i
		for i < len(s) && isDigit(s[i]) && digits < maxE164Digits+1 {
			i++
			digits++
		}
		g.end = i
		if g.len() == 0 || digits > maxE164Digits || (i < len(s) && isDigit(s[i])) {
			break
		}
		if g.paren {
			if g.len() > 5 || i >= len(s) || s[i] != ')' {
				break
			}
			i++
		}
		buf = append(buf, g)
		// What joins the next group: one separator, or nothing next to a
		// parenthesis.
		switch {
		case i+1 < len(s) && isSep(s[i], " .-") && (isDigit(s[i+1]) || s[i+1] == '('):
			join = s[i]
			i++
		case i < len(s) && (g.paren && isDigit(s[i]) || s[i] == '('):
			join = 0
		default:
			return buf, 0
		}
	}
	return buf, join
}

// groupsEnd is where the last group ends, after its closing parenthesis.
func groupsEnd(groups []phoneGroup) int {
	if len(groups) == 0 {
		return 0
	}
	g := groups[len(groups)-1]
	if g.paren {
		return g.end + 1
	}
	return g.end
}

// bestPhone returns the longest prefix of groups that is a phone number and
// stands apart from what follows: the end of the run (not glued to a word or
// a longer number), or a space before the next group.
func bestPhone(s string, start int, groups []phoneGroup, tail byte) (Finding, bool) {
	plus := s[start] == '+'
	for k := len(groups); k >= 1; k-- {
		next := tail
		if k < len(groups) {
			next = groups[k].join
		}
		end := groupsEnd(groups[:k])
		switch {
		case next == ' ':
		case next != 0, k < len(groups), !phoneEnd(s, end):
			continue
		}
		if isPhone(s, groups[:k], plus) {
			return Finding{Type: Phone, Start: start, End: end}, true
		}
	}
	return Finding{}, false
}

// isPhone classifies a run of groups as one of the three shapes.
func isPhone(s string, groups []phoneGroup, plus bool) bool {
	digits := 0
	for _, g := range groups {
		digits += g.len()
	}
	first := s[groups[0].start]
	if plus {
		return minE164Digits <= digits && digits <= maxE164Digits && first != '0'
	}
	if len(groups) < 2 {
		return false
	}
	var sep byte
	for x := 1; x < len(groups); x++ {
		if groups[x].paren || groups[x-1].paren {
			continue
		}
		if sep == 0 {
			sep = groups[x].join
		}
		if groups[x].join != sep {
			return false
		}
	}
	lens := make([]int, len(groups))
	for x, g := range groups {
		lens[x] = g.len()
	}
	switch {
	case len(lens) == 3 && lens[0] == 3 && lens[1] == 3 && lens[2] == 4:
		return first >= '2'
	case len(lens) == 4 && lens[0] == 1 && first == '1' && lens[1] == 3 && lens[2] == 3 && lens[3] == 4:
		return s[groups[1].start] >= '2'
	case first == '0':
		return trunkNational(s, groups, lens, digits)
	}
	return false
}

// trunkNational checks the national shape with a trunk 0: 9 to 11 digits,
// an area or mobile prefix of 2 to 5 digits that does not start with 00 (the
// international call prefix), then groups of 3 or more digits ("020 7123
// 4567", "090-1234-5678") or the French pairs ("01 42 68 53 00"). Runs of
// zero-padded blocks such as "0440 1162 44" are account or serial numbers.
func trunkNational(s string, groups []phoneGroup, lens []int, digits int) bool {
	if digits < 9 || digits > 11 || lens[0] < 2 || lens[0] > 5 || s[groups[0].start+1] == '0' {
		return false
	}
	pairs, long := true, true
	for _, n := range lens {
		pairs = pairs && n == 2
	}
	for _, n := range lens[1:] {
		long = long && n >= 3
	}
	return long || (pairs && len(lens) == 5)
}
