// Package forwarded finds who sent a request that reached corral through
// trusted reverse proxies or load balancers, from their X-Forwarded-For.
package forwarded

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// Header is the header proxies append the address they were reached from to.
const Header = "X-Forwarded-For"

// Proxies are the peers whose X-Forwarded-For corral believes. The zero
// value trusts nobody.
type Proxies struct {
	prefixes []netip.Prefix
}

// New trusts the proxies within prefixes (as ParsePrefix returns them).
func New(prefixes []netip.Prefix) *Proxies {
	return &Proxies{prefixes: prefixes}
}

// ParsePrefix reads one trusted proxy: a CIDR prefix, or a bare IP address
// standing for itself (/32 or /128). Host bits are dropped (10.1.2.3/8 is
// 10.0.0.0/8), and an IPv4-mapped IPv6 prefix is its IPv4 prefix, since
// addresses are compared in their IPv4 form.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Errorf("want a CIDR prefix (10.0.0.0/8, fd00::/8) or an IP address")
		}
	} else {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("want a CIDR prefix (10.0.0.0/8, fd00::/8) or an IP address")
		}
		p = netip.PrefixFrom(ip, ip.BitLen())
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("an IPv4-mapped prefix must be /96 or longer")
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// Trusts reports whether ip is one of the trusted proxies.
func (p *Proxies) Trusts(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("") // Prefix.Contains is false for any zoned address
	for _, pre := range p.prefixes {
		if pre.Contains(ip) {
			return true
		}
	}
	return false
}

// Client returns the address of the client behind a request from peer (its
// TCP peer, host:port as net/http gives it) that carried the X-Forwarded-For
// values xff, in the order they came.
//
// From a peer that is not a trusted proxy, the header is ignored: anyone can
// send it, so believing it would let a client be whoever it liked. From a
// trusted one, the entries are read right to left (the nearest proxy's
// first): the first that is not itself a trusted proxy is the client; if
// all are trusted, the leftmost. An entry that is not an IP address (with or
// without a port) stops the walk and the peer is kept: everything to its
// right was a trusted proxy, and whatever lies beyond garbage cannot be
// told from it. An address read from the header has no port: it comes back
// as "ip:0", so it stays in the host:port form consumers parse.
func (p *Proxies) Client(peer string, xff []string) string {
	if len(p.prefixes) == 0 || len(xff) == 0 {
		return peer
	}
	ap, err := netip.ParseAddrPort(peer)
	if err != nil || !p.Trusts(ap.Addr()) {
		return peer
	}
	var leftmost netip.Addr
	for i := len(xff) - 1; i >= 0; i-- {
		rest := xff[i]
		for rest != "" {
			var entry string
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				entry, rest = rest[j+1:], rest[:j]
			} else {
				entry, rest = rest, ""
			}
			entry = strings.Trim(entry, " \t")
			if entry == "" {
				continue // an empty list element, which HTTP says to ignore
			}
			ip, ok := ParseEntry(entry)
			if !ok {
				return peer
			}
			if !p.Trusts(ip) {
				return addr(ip)
			}
			leftmost = ip
		}
	}
	if leftmost.IsValid() {
		return addr(leftmost)
	}
	return peer
}

// addr is ip in host:port form, its port 0 since the header carries none.
func addr(ip netip.Addr) string {
	return netip.AddrPortFrom(ip, 0).String()
}

// ParseEntry reads one X-Forwarded-For entry: an IPv4 or IPv6 address,
// optionally bracketed, optionally with a port (some proxies add one), which
// is dropped along with any IPv6 zone (meaningless off its host). Anything
// else (a hostname, "unknown", an RFC 7239 obfuscated identifier) is not ok.
func ParseEntry(s string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		switch {
		case perr == nil:
			ip = ap.Addr()
		case len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']':
			if ip, err = netip.ParseAddr(s[1 : len(s)-1]); err != nil || !ip.Is6() {
				return netip.Addr{}, false
			}
		default:
			return netip.Addr{}, false
		}
	}
	return ip.Unmap().WithZone(""), true
}

// Handler sets each request's RemoteAddr to its client's address (Client)
// before next sees it, so that everything downstream reading RemoteAddr
// (the audit's remote, the refusal limiter, the console's sign-in limits)
// sees the client, not the proxy. With no trusted proxies it is next.
func (p *Proxies) Handler(next http.Handler) http.Handler {
	if len(p.prefixes) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if xff := r.Header.Values(Header); len(xff) > 0 {
			if client := p.Client(r.RemoteAddr, xff); client != r.RemoteAddr {
				r = r.WithContext(r.Context()) // a shallow copy: handlers do not change what they were given
				r.RemoteAddr = client
			}
		}
		next.ServeHTTP(w, r)
	})
}
