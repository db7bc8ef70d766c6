package a2a

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrForbiddenAddress: a webhook's address is private, loopback,
// link-local, a cloud metadata address or otherwise not public.
var ErrForbiddenAddress = errors.New("not a public address")

// notPublic are the ranges a webhook may not reach unless the admin allows
// private targets, beyond what netip's predicates cover.
var notPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("100::/64"),        // discard
}

// Public reports whether a webhook may reach addr: not loopback, private
// (RFC 1918, unique local), link-local (where cloud metadata services
// answer: 169.254.169.254, fd00:ec2::254 is unique local), unspecified,
// multicast or reserved. An IPv4 address inside IPv6 (mapped, NAT64) is
// judged as the IPv4 address it carries.
func Public(addr netip.Addr) bool {
	addr = addr.Unmap()
	if addr.Is6() {
		if nat64 := netip.MustParsePrefix("64:ff9b::/96"); nat64.Contains(addr) {
			b := addr.As16()
			return Public(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		}
	}
	if !addr.IsValid() || addr.IsLoopback() || addr.IsPrivate() || addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast() ||
		addr.IsInterfaceLocalMulticast() || addr.IsMulticast() || addr.IsUnspecified() {
		return false
	}
	for _, p := range notPublic {
		if p.Contains(addr) {
			return false
		}
	}
	return true
}

// guardedDialer dials only public addresses, checked on the address
// actually dialed (after DNS), so a name that resolves to loopback, or
// resolves to a public address once and to a private one the next time
// (DNS rebinding), is refused all the same.
func guardedDialer(allowPrivate bool) *net.Dialer {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if allowPrivate {
		return d
	}
	d.Control = func(network, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return fmt.Errorf("webhook address %s: %w", address, ErrForbiddenAddress)
		}
		addr, err := netip.ParseAddr(host)
		if err != nil || !Public(addr) {
			return fmt.Errorf("webhook address %s: %w", address, ErrForbiddenAddress)
		}
		return nil
	}
	return d
}

// pushClient posts webhooks: through the guarded dialer, never through a
// proxy (the proxy would dial instead), following no redirect (a redirect
// to an internal address is a classic way around a check by name).
func pushClient(allowPrivate bool) *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         guardedDialer(allowPrivate).DialContext,
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     30 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Resolver looks host names up (net.Resolver).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// checkWebhook checks a webhook URL when it is configured: http or https,
// no user info, and (unless private targets are allowed) a host that is
// and resolves to public addresses only. The dialer checks again at every
// delivery; this check only makes the refusal come early and clearly.
func checkWebhook(ctx context.Context, raw string, allowPrivate bool, res Resolver) error {
	if raw == "" || len(raw) > 2048 {
		return errors.New("url: required, an http or https URL of at most 2048 characters")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("url: %q is not an http or https URL", truncate(raw, 100))
	}
	if u.User != nil {
		return errors.New("url: user info (user:password@) is not allowed; use authentication")
	}
	if allowPrivate {
		return nil
	}
	host := u.Hostname()
	if addr, err := netip.ParseAddr(strings.TrimSuffix(host, ".")); err == nil {
		if !Public(addr) {
			return fmt.Errorf("url: %s is %w (private, loopback, link-local and metadata addresses are refused unless the admin allows private push targets)", host, ErrForbiddenAddress)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := res.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return fmt.Errorf("url: the host %s does not resolve", truncate(host, 100))
	}
	for _, a := range addrs {
		if !Public(a) {
			return fmt.Errorf("url: %s resolves to %s, which is %w (private, loopback, link-local and metadata addresses are refused unless the admin allows private push targets)", truncate(host, 100), a, ErrForbiddenAddress)
		}
	}
	return nil
}
