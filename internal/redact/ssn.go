package redact

// US Social Security numbers: AAA-GG-SSSS with dashes, spaces or dots (the
// same twice), nine plain digits, or the half-dashed AAA-GGSSSS and
// AAAGG-SSSS; area not 000, 666 or 900-999, group not 00, serial not 0000,
// and not one of the numbers the SSA voided after they were published. Nine
// plain digits or AAAGG-SSSS after '#' or a word such as "order" or "ZIP" are
// an identifier.

// findSSNs appends the US Social Security numbers in s to out.
func findSSNs(s string, out []Finding) []Finding {
	var groups []group
	var digits []byte
	for i := 0; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		start := i
		groups, i = digitGroups(s, i, " -.", groups)
		if !numberStart(s, start) {
			continue
		}
		endOK := numberEnd(s, i)
		for j := 0; j < len(groups); {
			k, ok := ssnWindow(s, groups, j)
			if !ok || (k == len(groups)-1 && !endOK) {
				j++
				continue
			}
			digits = digitsOf(digits[:0], s, groups[j:k+1])
			if validSSN(digits) && (k-j == 2 || !identifierBefore(s, groups[j].start)) {
				out = append(out, Finding{Type: SSN, Start: groups[j].start, End: groups[k].end})
				j = k + 1
				continue
			}
			j++
		}
	}
	return out
}

// ssnWindow returns the last group of the SSN-shaped window of groups that
// starts at j, if there is one. A window must stand apart from its
// neighbours: joined to them by a space only, and never by the separator it
// uses itself, so "078-05-1123-4" and "1.078.05.1123" are not taken.
func ssnWindow(s string, groups []group, j int) (int, bool) {
	shapeOf := func(k int) (sep byte, ok bool) {
		var lens [3]int
		n := k - j + 1
		for x := range n {
			lens[x] = groups[j+x].len()
		}
		switch {
		case n == 1 && lens[0] == 9:
			return 0, true
		case n == 2 && groups[j+1].join == '-' && (lens == [3]int{3, 6} || lens == [3]int{5, 4}):
			if lens[0] == 5 && zipBefore(s, groups[j].start) {
				return 0, false // ZIP+4: "Springfield, IL 62704-1234"
			}
			return '-', true
		case n == 3 && lens == [3]int{3, 2, 4} && groups[j+1].join == groups[j+2].join:
			return groups[j+1].join, true
		}
		return 0, false
	}
	for k := j; k < len(groups) && k < j+3; k++ {
		sep, ok := shapeOf(k)
		if !ok {
			continue
		}
		if j > 0 && (groups[j].join != ' ' || sep == ' ') {
			continue
		}
		if k+1 < len(groups) && (groups[k+1].join != ' ' || sep == ' ') {
			continue
		}
		return k, true
	}
	return 0, false
}

// validSSN reports whether the nine digits d form an SSN that can have been
// issued.
func validSSN(d []byte) bool {
	area, grp, serial := string(d[0:3]), string(d[3:5]), string(d[5:9])
	switch {
	case area == "000", area == "666", area[0] == '9', grp == "00", serial == "0000":
		return false
	}
	// Voided by the SSA after wide publication: the Woolworth wallet card
	// number and the one printed in a 1940 SSA pamphlet. They identify no
	// one and turn up in examples.
	switch string(d) {
	case "078051120", "219099999":
		return false
	}
	return true
}

// usStates are the two-letter codes of US states and territories, which
// precede a ZIP code in an address.
var usStates = map[string]bool{
	"AL": true, "AK": true, "AZ": true, "AR": true, "CA": true, "CO": true, "CT": true, "DE": true,
	"FL": true, "GA": true, "HI": true, "ID": true, "IL": true, "IN": true, "IA": true, "KS": true,
	"KY": true, "LA": true, "ME": true, "MD": true, "MA": true, "MI": true, "MN": true, "MS": true,
	"MO": true, "MT": true, "NE": true, "NV": true, "NH": true, "NJ": true, "NM": true, "NY": true,
	"NC": true, "ND": true, "OH": true, "OK": true, "OR": true, "PA": true, "RI": true, "SC": true,
	"SD": true, "TN": true, "TX": true, "UT": true, "VT": true, "VA": true, "WA": true, "WV": true,
	"WI": true, "WY": true, "DC": true, "PR": true, "GU": true, "VI": true, "AS": true, "MP": true,
}

// zipBefore reports whether s[:i] ends in a US state code and a space, so the
// number at i is a ZIP code.
func zipBefore(s string, i int) bool {
	if i < 3 || s[i-1] != ' ' || !usStates[s[i-3:i-1]] {
		return false
	}
	return i == 3 || !isWord(s[i-4])
}
