package redact

import (
	"net/netip"
	"strings"
)

// IP addresses. IPv4: four decimal octets 0-255 without leading zeros, not
// glued to a word. Four octets followed by more dotted digits are still
// taken ("192.168.1.1.1" hides "192.168.1.1"): a redactor that misses an
// address costs more than one that hides the head of a version number. IPv6: any form net/netip accepts, including "::"
// compression, an IPv4 suffix and a zone ("fe80::1%eth0"), not glued to a
// word ("std::cout" and "text::1" are not addresses).

// findIPs appends the IPv4 and IPv6 addresses in s to out. An IPv4 address
// inside an IPv6 one is reported too; Find keeps the longer.
func findIPs(s string, out []Finding) []Finding {
	out = findIPv4(s, out)
	return findIPv6(s, out)
}

func findIPv4(s string, out []Finding) []Finding {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) || !numberStart(s, i) {
			continue
		}
		end, ok := readIPv4(s, i)
		if !ok || wordAfter(s, end) {
			continue
		}
		out = append(out, Finding{Type: IP, Start: i, End: end})
		i = end - 1
	}
	return out
}

// readIPv4 reads a dotted quad starting at s[i] and reports where it ends.
func readIPv4(s string, i int) (int, bool) {
	for octet := range 4 {
		if octet > 0 {
			if i >= len(s) || s[i] != '.' {
				return 0, false
			}
			i++
		}
		start := i
		v := 0
		for i < len(s) && isDigit(s[i]) && i-start < 3 {
			v = v*10 + int(s[i]-'0')
			i++
		}
		n := i - start
		if n == 0 || v > 255 || (n > 1 && s[start] == '0') || (i < len(s) && isDigit(s[i])) {
			return 0, false
		}
	}
	return i, true
}

func isIPv6Byte(c byte) bool { return isHex(c) || c == ':' || c == '.' }

func findIPv6(s string, out []Finding) []Finding {
	// floor is where the last candidate ended: runs start at or after it,
	// so every step moves forward.
	floor := 0
	for {
		i := strings.IndexByte(s[floor:], ':')
		if i < 0 {
			return out
		}
		i += floor
		// The candidate is the run of hex digits, colons and dots around
		// this colon.
		start := i
		for start > floor && isIPv6Byte(s[start-1]) {
			start--
		}
		end := i
		for end < len(s) && isIPv6Byte(s[end]) {
			end++
		}
		if f, ok := ipv6At(s, start, end); ok {
			out = append(out, f)
			end = f.End
		}
		floor = end
	}
}

// ipv6At checks the candidate s[start:end]: trailing full stops and a lone
// trailing colon are punctuation, a zone may follow, and the address must
// not be glued to a word on either side.
func ipv6At(s string, start, end int) (Finding, bool) {
	if wordBefore(s, start) {
		return Finding{}, false
	}
	for end > start && s[end-1] == '.' {
		end--
	}
	if end-start >= 2 && s[end-1] == ':' && s[end-2] != ':' {
		end--
	}
	if strings.Count(s[start:end], ":") < 2 || end-start > len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255") {
		return Finding{}, false
	}
	if end < len(s) && s[end] == '%' {
		z := end + 1
		for z < len(s) && (isWord(s[z]) || s[z] == '-' || s[z] == '.') {
			z++
		}
		for z > end+1 && s[z-1] == '.' {
			z--
		}
		if z > end+1 {
			end = z
		}
	}
	if wordAfter(s, end) {
		return Finding{}, false
	}
	a, err := netip.ParseAddr(s[start:end])
	if err != nil || !a.Is6() {
		return Finding{}, false
	}
	return Finding{Type: IP, Start: start, End: end}, true
}
