package redact

// Payment cards: 12 to 19 digits, in one block or in groups joined by
// spaces (ASCII, doubled, or no-break) or dashes, mixed or not, with a known
// issuer prefix and length, and a valid Luhn check digit.

const (
	minCardDigits = 12
	maxCardDigits = 19
	// maxCardGroup is the longest group of a card printed in groups
	// (4-6-5 for Amex): "637-9872353-4719787" is an order number.
	maxCardGroup = 6
)

// findCards appends the payment card numbers in s to out.
func findCards(s string, out []Finding) []Finding {
	var groups []group
	var digits []byte
	for i := 0; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		start := i
		groups, i = digitGroups(s, i, " -", groups)
		if !numberStart(s, start) {
			continue
		}
		endOK := numberEnd(s, i)
		// Take, from each group on, the longest window of groups that
		// is a valid card; then go on after it.
		for j := 0; j < len(groups); {
			best, n := -1, 0
			for k := j; k < len(groups); k++ {
				n += groups[k].len()
				if n > maxCardDigits || (k > j && max(groups[k].len(), groups[j].len()) > maxCardGroup) {
					break
				}
				if n < minCardDigits || (k == len(groups)-1 && !endOK) || !cardApart(groups, j, k) {
					continue
				}
				digits = digitsOf(digits[:0], s, groups[j:k+1])
				if validCard(digits) {
					best = k
				}
			}
			if best < 0 {
				j++
				continue
			}
			out = append(out, Finding{Type: Card, Start: groups[j].start, End: groups[best].end})
			j = best + 1
		}
	}
	return out
}

// cardApart reports whether the window groups[j..k] stands apart from the
// groups around it. A window that starts inside a run must follow a space
// and either be written differently from the run (one block, or joined by
// dashes) or end the run: "ref 12 4111 1111 1111 1111" holds a card, "9400
// 1800 5057 8889 1784 23" is a tracking number with no card in its middle.
func cardApart(groups []group, j, k int) bool {
	if j == 0 {
		return true
	}
	if groups[j].join != ' ' {
		return false
	}
	return k == j || k == len(groups)-1 || groups[j+1].join != ' '
}

// validCard reports whether d (digits only) has a known issuer prefix with a
// length that issuer uses, and a valid Luhn check digit.
func validCard(d []byte) bool {
	return knownIssuer(d) && luhn(d)
}

// luhn reports whether the digits d end in a valid Luhn check digit.
func luhn(d []byte) bool {
	sum := 0
	for i := range d {
		v := int(d[len(d)-1-i] - '0')
		if i%2 == 1 {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
	}
	return sum%10 == 0
}

// knownIssuer reports whether the digits d start with an issuer
// identification number in use and have a length that issuer issues. The
// table covers the networks in wide use; a card of a small local network
// with an unlisted prefix is missed rather than guessed.
func knownIssuer(d []byte) bool {
	n := len(d)
	p := func(k int) int { // the first k digits as a number
		v := 0
		for _, c := range d[:k] {
			v = v*10 + int(c-'0')
		}
		return v
	}
	in := func(v, lo, hi int) bool { return lo <= v && v <= hi }
	switch {
	case d[0] == '4': // Visa (and Visa Electron, Dankort co-brands)
		return n == 13 || n == 16 || n == 19
	case in(p(2), 51, 55), in(p(4), 2221, 2720): // Mastercard
		return n == 16
	case in(p(4), 2200, 2204): // Mir
		return n >= 16
	case p(2) == 34, p(2) == 37: // American Express
		return n == 15
	case in(p(3), 300, 305), p(4) == 3095, p(2) == 36, p(2) == 38, p(2) == 39: // Diners Club
		return n >= 14
	case in(p(4), 3528, 3589): // JCB
		return n >= 16
	case p(4) == 6011, in(p(3), 644, 649), p(2) == 65: // Discover, RuPay
		return n >= 16
	case p(2) == 62: // UnionPay (and Discover's 622126-622925)
		return n >= 16
	case p(4) == 5019: // Dankort
		return n == 16
	case p(2) == 50, in(p(2), 56, 58), p(2) == 63, p(2) == 67: // Maestro (12 to 19), Verve, InstaPayment
		return n >= 12
	case p(2) == 60, p(2) == 81, p(2) == 82: // RuPay
		return n == 16
	case d[0] == '1': // UATP (airline cards)
		return n == 15
	}
	return false
}
