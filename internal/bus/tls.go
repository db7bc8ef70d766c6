package bus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/corral-dev/corral/internal/certs"
)

// listenTLS makes the embedded server's TCP port speak TLS only, with the
// certificate in t, and, when t names a CA, demand client certificates it
// signed. In-process connections are not affected.
func listenTLS(logger *slog.Logger, sopts *server.Options, t TLS) error {
	if !t.enabled() {
		return nil
	}
	if t.Cert == "" {
		return errors.New("bus: TLS on --nats-listen needs --nats-tls-cert and --nats-tls-key")
	}
	pair, err := certs.Load(logger, t.Cert, t.Key)
	if err != nil {
		return fmt.Errorf("bus: --nats-tls-cert/--nats-tls-key: %w", err)
	}
	cfg := certs.Server(pair, nil)
	if t.CA != "" {
		pool, err := certs.Pool(t.CA)
		if err != nil {
			return fmt.Errorf("bus: --nats-tls-ca: %w", err)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
		sopts.TLSVerify = true
	}
	sopts.TLS, sopts.TLSConfig = true, cfg
	return nil
}
