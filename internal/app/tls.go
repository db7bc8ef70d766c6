package app

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/corral-dev/corral/internal/certs"
)

// TLS is how the HTTP server serves TLS: all empty serves plain HTTP.
type TLS struct {
	// Cert and Key are PEM files, read again whenever they change.
	Cert, Key string
	// ClientCA, when set, is a PEM file of the CAs whose client
	// certificates are verified (mTLS); a certificate they did not sign
	// fails the handshake, and no certificate at all is let through.
	ClientCA string
}

// enabled reports whether HTTPS is asked for.
func (t TLS) enabled() bool { return t.Cert != "" || t.Key != "" }

// listenTLS wraps l in TLS when cfg.TLS asks for it.
func (a *App) listenTLS(l net.Listener) (net.Listener, error) {
	t := a.cfg.TLS
	if !t.enabled() {
		if t.ClientCA != "" {
			return nil, fmt.Errorf("app: --tls-client-ca needs --tls-cert and --tls-key")
		}
		return l, nil
	}
	if t.Cert == "" || t.Key == "" {
		return nil, fmt.Errorf("app: --tls-cert and --tls-key go together")
	}
	pair, err := certs.Load(a.logger.With("component", "tls"), t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("app: --tls-cert/--tls-key: %w", err)
	}
	var cfg *tls.Config
	if t.ClientCA != "" {
		pool, err := certs.Pool(t.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("app: --tls-client-ca: %w", err)
		}
		cfg = certs.Server(pair, pool)
	} else {
		cfg = certs.Server(pair, nil)
	}
	return tls.NewListener(l, cfg), nil
}

// scheme is the scheme of URL().
func (a *App) scheme() string {
	if a.cfg.TLS.enabled() {
		return "https"
	}
	return "http"
}
