package policy

import (
	"net/url"
	"strings"
	"unicode"
)

// hostOf returns the lowercase host of a URL, without port and without
// the brackets of an IPv6 address; ok is false when the text is not a URL,
// names no host, or names one with characters no host has (Go's URL
// parser lets some through, such as "//]0").
func hostOf(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil {
		return "", false
	}
	host := u.Hostname()
	if host == "" {
		return "", false
	}
	for _, r := range host {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune(".-_:%~", r) {
			return "", false
		}
	}
	return strings.ToLower(host), true
}
