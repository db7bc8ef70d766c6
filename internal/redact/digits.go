package redact

// group is one run of digits, s[start:end], and the separator byte that
// joins it to the previous group (0 for the first group of a run).
type group struct {
	start, end int
	join       byte
}

func (g group) len() int { return g.end - g.start }

// digitGroups collects the run of digit groups starting at s[i] (a digit),
// where groups are joined by exactly one byte of seps. It returns the groups
// (reusing buf) and the end of the run.
func digitGroups(s string, i int, seps string, buf []group) ([]group, int) {
	buf = buf[:0]
	var join byte
	for {
		start := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		buf = append(buf, group{start: start, end: i, join: join})
		if i+1 < len(s) && isSep(s[i], seps) && isDigit(s[i+1]) {
			join = s[i]
			i++
			continue
		}
		return buf, i
	}
}

func isSep(c byte, seps string) bool {
	for i := 0; i < len(seps); i++ {
		if seps[i] == c {
			return true
		}
	}
	return false
}

// digitsOf appends the digits of groups to dst, dropping separators.
func digitsOf(dst []byte, s string, groups []group) []byte {
	for _, g := range groups {
		dst = append(dst, s[g.start:g.end]...)
	}
	return dst
}

// numberStart reports whether a number may start at s[i]: not glued to a
// word, not the tail of a dotted number, not after a '+' (a phone number).
func numberStart(s string, i int) bool {
	return !wordBefore(s, i) && !decimalBefore(s, i) && (i == 0 || s[i-1] != '+')
}

// numberEnd reports whether a number may end at i: not glued to a word and
// not the head of a dotted number.
func numberEnd(s string, i int) bool {
	return !wordAfter(s, i) && !decimalAfter(s, i)
}
