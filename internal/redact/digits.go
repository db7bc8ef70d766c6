package redact

import "strings"

// group is one run of digits, s[start:end], and the separator byte that
// joins it to the previous group (0 for the first group of a run).
type group struct {
	start, end int
	join       byte
}

func (g group) len() int { return g.end - g.start }

// digitGroups collects the run of digit groups starting at s[i] (a digit),
// where groups are joined by one gap (see gapAt) whose kind is in seps. It
// returns the groups (reusing buf) and the end of the run.
func digitGroups(s string, i int, seps string, buf []group) ([]group, int) {
	buf = buf[:0]
	var join byte
	for {
		start := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		buf = append(buf, group{start: start, end: i, join: join})
		if w, kind := gapAt(s, i); w > 0 && isSep(kind, seps) && i+w < len(s) && isDigit(s[i+w]) {
			join = kind
			i += w
			continue
		}
		return buf, i
	}
}

// The spaces people and documents put between groups of digits besides the
// ASCII space: no-break space (PDFs, word processors), narrow no-break
// space (French number formatting), thin and figure spaces.
const (
	nbsp        = "\u00a0"
	narrowNBSP  = "\u202f"
	thinSpace   = "\u2009"
	figureSpace = "\u2007"
)

// gapAt returns the width in bytes of the separator between two groups at
// s[i], and its kind: ' ' for one or two ASCII spaces or one of the
// Unicode spaces above, '-' for a dash, '.' for a dot, '/' for a slash.
// It returns 0, 0 if there is none.
func gapAt(s string, i int) (width int, kind byte) {
	if i >= len(s) {
		return 0, 0
	}
	switch c := s[i]; c {
	case ' ':
		if i+1 < len(s) && s[i+1] == ' ' {
			return 2, ' '
		}
		return 1, ' '
	case '-', '.', '/':
		return 1, c
	case 0xc2, 0xe2:
		for _, u := range [...]string{nbsp, narrowNBSP, thinSpace, figureSpace} {
			if strings.HasPrefix(s[i:], u) {
				return len(u), ' '
			}
		}
	}
	return 0, 0
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
