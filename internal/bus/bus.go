// Package bus connects corral to its substrate, NATS JetStream: a server
// embedded in the process by default, or an external NATS cluster. Both go
// through the same code path; only the connection differs.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options say which substrate to use and how.
type Options struct {
	// URL of an external NATS server or cluster (comma-separated URLs allowed).
	// Empty means: run an embedded server.
	URL string
	// DataDir holds the embedded server's JetStream store (DataDir/jetstream).
	DataDir string
	// Listen, when set, makes the embedded server also accept TCP clients on
	// host:port (port 0 picks a free one). By default it listens on no port
	// and corral talks to it in-process.
	Listen string
	// Replicas is the replica count of every stream and bucket corral creates.
	// More than 1 needs a clustered external NATS.
	Replicas int
	// SyncAlways makes the embedded store fsync every write; otherwise it
	// syncs on the server's interval (see README, "Durability").
	SyncAlways bool
}

// Bus is an open connection to the substrate.
type Bus struct {
	conn     *nats.Conn
	js       jetstream.JetStream
	server   *server.Server // nil when external
	unlock   func()         // releases the data directory; nil when external
	replicas int
	logger   *slog.Logger
	closed   chan struct{} // closed when the connection has closed
}

// readyTimeout bounds how long the embedded server may take to start.
const readyTimeout = 30 * time.Second

// Open starts the embedded server or connects to the external one, and checks
// that JetStream answers.
func Open(ctx context.Context, logger *slog.Logger, opts Options) (*Bus, error) {
	if opts.Replicas < 1 {
		opts.Replicas = 1
	}
	b := &Bus{replicas: opts.Replicas, logger: logger, closed: make(chan struct{})}
	connOpts := []nats.Option{
		nats.Name("corral"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(b.closed) }),
		nats.ReconnectHandler(func(c *nats.Conn) {
			logger.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
		}),
	}
	url := opts.URL
	if url == "" {
		if opts.Replicas > 1 {
			return nil, fmt.Errorf("bus: --replicas %d needs a NATS cluster; the embedded server is a single node (use --nats URL)", opts.Replicas)
		}
		if err := b.startEmbedded(logger, opts); err != nil {
			return nil, err
		}
		connOpts = append(connOpts, nats.InProcessServer(b.server))
	}
	conn, err := nats.Connect(url, connOpts...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bus: connect %s: %w", describe(opts), err)
	}
	b.conn = conn
	if b.js, err = jetstream.New(conn); err != nil {
		b.Close()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	if err := b.waitForJetStream(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// waitForJetStream pings JetStream until it answers: a cluster that has just
// started answers only once it has elected a leader.
func (b *Bus) waitForJetStream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		err := b.Ping(ctx)
		if err == nil {
			return nil
		}
		if attempt == 1 {
			b.logger.InfoContext(ctx, "waiting for jetstream", "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bus: jetstream not available after %s: %w", readyTimeout, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func describe(opts Options) string {
	if opts.URL == "" {
		return "embedded server"
	}
	return opts.URL
}

func (b *Bus) startEmbedded(logger *slog.Logger, opts Options) error {
	if opts.DataDir == "" {
		return errors.New("bus: the embedded server needs a data directory")
	}
	storeDir := filepath.Join(opts.DataDir, "jetstream")
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return fmt.Errorf("bus: data directory: %w", err)
	}
	unlock, err := lockDir(opts.DataDir)
	if err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	b.unlock = unlock
	sopts := &server.Options{
		ServerName: "corral",
		JetStream:  true,
		StoreDir:   storeDir,
		SyncAlways: opts.SyncAlways,
		DontListen: true,
		NoSigs:     true,
		// The embedded server has no HTTP monitor, no cluster and no leaf
		// listeners; those belong to an external deployment.
	}
	if opts.Listen != "" {
		host, port, err := splitHostPort(opts.Listen)
		if err != nil {
			return fmt.Errorf("bus: --nats-listen %q: %w", opts.Listen, err)
		}
		sopts.DontListen, sopts.Host, sopts.Port = false, host, port
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return fmt.Errorf("bus: embedded server: %w", err)
	}
	ns.SetLoggerV2(serverLogger{logger.With("component", "nats")}, false, false, false)
	b.server = ns
	ns.Start()
	if !ns.ReadyForConnections(readyTimeout) {
		return fmt.Errorf("bus: embedded server not ready after %s", readyTimeout)
	}
	if opts.Listen != "" {
		logger.Info("embedded nats listening", "url", ns.ClientURL())
	}
	return nil
}

// splitHostPort parses "host:port"; port 0 asks for a free port.
func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port must be a number from 0 to 65535")
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// JetStream returns the JetStream context shared by every component.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Conn returns the NATS connection shared by every component.
func (b *Bus) Conn() *nats.Conn { return b.conn }

// Embedded reports whether corral runs its own server.
func (b *Bus) Embedded() bool { return b.server != nil }

// ClientURL is the URL other processes use to reach the embedded server when
// it listens (--nats-listen), or "" otherwise.
func (b *Bus) ClientURL() string {
	if b.server == nil || b.server.Addr() == nil {
		return ""
	}
	return b.server.ClientURL()
}

// Ping checks that the substrate answers: the connection is up and JetStream
// responds. It backs /readyz.
func (b *Bus) Ping(ctx context.Context) error {
	if !b.conn.IsConnected() {
		return fmt.Errorf("bus: not connected (%s)", b.conn.Status())
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("bus: jetstream not available: %w", err)
	}
	return nil
}

// KeyValue creates a key-value bucket, or updates its configuration to cfg,
// with the bus's replica count and file storage. It is safe to call at every
// start and from several replicas at once.
func (b *Bus) KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = b.replicas
	cfg.Storage = jetstream.FileStorage
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// Close drains the connection, so that what was published is flushed, then
// shuts the embedded server down cleanly and releases the data directory.
func (b *Bus) Close() {
	if b.conn != nil {
		if err := b.conn.Drain(); err != nil {
			if !errors.Is(err, nats.ErrConnectionClosed) {
				b.logger.Warn("nats drain", "err", err)
			}
			b.conn.Close()
		}
		<-b.closed // Drain closes the connection when done, or after its timeout
	}
	if b.server != nil {
		b.server.Shutdown()
		b.server.WaitForShutdown()
	}
	if b.unlock != nil {
		b.unlock()
	}
}

// serverLogger sends the embedded server's log lines to slog.
type serverLogger struct{ l *slog.Logger }

func (s serverLogger) Noticef(f string, v ...any) { s.l.Debug(fmt.Sprintf(f, v...)) }
func (s serverLogger) Warnf(f string, v ...any)   { s.l.Warn(fmt.Sprintf(f, v...)) }
func (s serverLogger) Fatalf(f string, v ...any)  { s.l.Error(fmt.Sprintf(f, v...)) }
func (s serverLogger) Errorf(f string, v ...any)  { s.l.Error(fmt.Sprintf(f, v...)) }
func (s serverLogger) Debugf(f string, v ...any)  { s.l.Debug(fmt.Sprintf(f, v...)) }
func (s serverLogger) Tracef(f string, v ...any)  { s.l.Debug(fmt.Sprintf(f, v...)) }
