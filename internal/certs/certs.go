// Package certs serves TLS from certificate and key files that operators
// (or cert-manager, or a SPIFFE helper) replace in place: each handshake
// uses the pair on disk now, read again only when the files change, so a
// rotated certificate takes effect without a restart.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Pair is a certificate and key kept in step with their files.
type Pair struct {
	certPath, keyPath string
	logger            *slog.Logger

	mu       sync.Mutex
	cert     *tls.Certificate
	certStat os.FileInfo
	keyStat  os.FileInfo
	failed   string // the stamp of the files that last failed to load, so it is logged once
}

// Load reads the pair; it fails if the files are missing or do not match.
func Load(logger *slog.Logger, certPath, keyPath string) (*Pair, error) {
	p := &Pair{certPath: certPath, keyPath: keyPath, logger: logger}
	cs, ks, err := p.stat()
	if err != nil {
		return nil, err
	}
	if err := p.load(cs, ks); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Pair) stat() (cert, key os.FileInfo, err error) {
	if cert, err = os.Stat(p.certPath); err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	if key, err = os.Stat(p.keyPath); err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	return cert, key, nil
}

func (p *Pair) load(cs, ks os.FileInfo) error {
	c, err := tls.LoadX509KeyPair(p.certPath, p.keyPath)
	if err != nil {
		return fmt.Errorf("certs: %s and %s: %w", p.certPath, p.keyPath, err)
	}
	p.cert, p.certStat, p.keyStat = &c, cs, ks
	return nil
}

// changed reports whether a file is not the one last loaded: another file
// renamed into place, or the same one rewritten.
func changed(old, now os.FileInfo) bool {
	return !os.SameFile(old, now) || !old.ModTime().Equal(now.ModTime()) || old.Size() != now.Size()
}

// Current returns the pair on disk, reloading it if the files changed. A
// pair that does not load (a key written before its certificate, say)
// leaves the previous one in use until the files are whole again.
func (p *Pair) Current() *tls.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs, ks, err := p.stat()
	if err != nil || (!changed(p.certStat, cs) && !changed(p.keyStat, ks)) {
		return p.cert
	}
	stamp := fmt.Sprint(cs.ModTime().UnixNano(), cs.Size(), ks.ModTime().UnixNano(), ks.Size())
	if err := p.load(cs, ks); err != nil {
		if p.failed != stamp {
			p.failed = stamp
			p.logger.Warn("certificate files changed but do not load; serving the previous certificate", "cert", p.certPath, "err", err)
		}
		return p.cert
	}
	p.failed = ""
	p.logger.Info("certificate reloaded", "cert", p.certPath, "not_after", notAfter(p.cert))
	return p.cert
}

func notAfter(c *tls.Certificate) string {
	if c.Leaf == nil {
		return ""
	}
	return c.Leaf.NotAfter.UTC().Format(time.RFC3339)
}

// GetCertificate serves the current pair (tls.Config.GetCertificate).
func (p *Pair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return p.Current(), nil
}

// Pool reads a PEM file of CA certificates.
func Pool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New("certs: " + path + " holds no PEM certificate")
	}
	return pool, nil
}

// Server returns the TLS configuration of a server that serves pair and,
// when clientCAs is set, verifies the certificates clients present against
// it (mTLS). Clients without a certificate are let through: they
// authenticate with a key or a token instead. A certificate that does not
// verify fails the handshake.
func Server(pair *Pair, clientCAs *x509.CertPool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: pair.GetCertificate,
	}
	if clientCAs != nil {
		cfg.ClientCAs = clientCAs
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg
}
