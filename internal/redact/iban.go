package redact

// IBANs: a country code from the SWIFT IBAN registry, two check digits and
// the BBAN, exactly as long as that country's IBANs are, written in one block
// or in groups of four joined by spaces (ASCII, doubled or no-break) or by
// dashes, passing the ISO 13616 mod-97 check. ISO 13616 writes letters in
// upper case; people copy them in lower case too ("de89 3704 ..."), so case
// is ignored: the exact length and the mod-97 check keep words out.

// ibanLengths is the total IBAN length per country (SWIFT IBAN registry,
// and Iran, whose IBANs are in wide use though it is not in the registry).
// Countries outside it (including the partial "IBAN-like" ones) are not
// detected: the length check is much of what keeps false positives out.
var ibanLengths = map[string]int{
	"AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
	"BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
	"DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
	"FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
	"GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IR": 26, "IS": 26,
	"IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
	"LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
	"MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
	"PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
	"SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
	"SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
	"YE": 30,
}

// findIBANs appends the IBANs in s to out.
func findIBANs(s string, out []Finding) []Finding {
	var buf [34]byte
	for i := 0; i+4 <= len(s); i++ {
		if !isAlpha(s[i]) || !isAlpha(s[i+1]) || !isDigit(s[i+2]) || !isDigit(s[i+3]) || wordBefore(s, i) {
			continue
		}
		n, ok := ibanLengths[string([]byte{upper(s[i]), upper(s[i+1])})]
		if !ok {
			continue
		}
		end, ok := readIBAN(s, i, n, buf[:0])
		if !ok {
			continue
		}
		out = append(out, Finding{Type: IBAN, Start: i, End: end})
		i = end - 1
	}
	return out
}

// readIBAN reads an IBAN of n characters starting at s[i] into buf and
// reports where it ends and whether it is valid. The gap after the first
// four characters decides whether the IBAN is written in groups; if it is,
// every later gap between groups of four must be the same separator.
func readIBAN(s string, i, n int, buf []byte) (int, bool) {
	var sep byte
	for len(buf) < n {
		if len(buf)%4 == 0 && len(buf) >= 4 {
			w, kind := gapAt(s, i)
			if len(buf) == 4 && (kind == ' ' || kind == '-') {
				sep = kind
			}
			if sep != 0 {
				if kind != sep {
					return 0, false
				}
				i += w
			}
		}
		if i >= len(s) || !isAlnum(s[i]) {
			return 0, false
		}
		buf = append(buf, upper(s[i]))
		i++
	}
	if wordAfter(s, i) {
		return 0, false
	}
	check := int(buf[2]-'0')*10 + int(buf[3]-'0')
	return i, check >= 2 && check <= 98 && mod97(buf)
}

// upper returns c in upper case if it is an ASCII letter.
func upper(c byte) byte {
	if isLower(c) {
		return c - 'a' + 'A'
	}
	return c
}

// mod97 reports whether the IBAN b (upper case, no separators) passes the
// ISO 7064 mod 97-10 check: moved-round with letters as 10..35, the number
// is 1 modulo 97.
func mod97(b []byte) bool {
	rem := 0
	add := func(c byte) {
		if isDigit(c) {
			rem = (rem*10 + int(c-'0')) % 97
			return
		}
		rem = (rem*100 + int(c-'A') + 10) % 97
	}
	for _, c := range b[4:] {
		add(c)
	}
	for _, c := range b[:4] {
		add(c)
	}
	return rem == 1
}
