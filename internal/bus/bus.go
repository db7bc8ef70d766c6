// Package bus connects corral to its substrate, NATS JetStream: a server
// embedded in the process by default, or an external NATS cluster. Both go
// through the same code path; only the connection differs.
package bus

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
	// CredsFile is a NATS credentials file (JWT and nkey) for an external
	// server. A user and password can instead be given in URL.
	CredsFile string
	// TLS secures the connection to an external server, or the embedded
	// server's Listen port.
	TLS TLS
}

// TLS are the PEM files that secure NATS connections. With an external
// server, CA verifies its certificate and Cert and Key are corral's client
// certificate, read again at every reconnect. With the embedded server's
// Listen port, Cert and Key are its server certificate (reloaded when the
// files change) and CA, if set, must have signed every client's
// certificate, on top of the password.
type TLS struct {
	CA, Cert, Key string
}

func (t TLS) enabled() bool { return t.CA != "" || t.Cert != "" || t.Key != "" }

// listenUser is the user other processes authenticate as when the embedded
// server listens; its password is kept in DataDir/nats.password.
const (
	listenUser         = "corral"
	listenPasswordFile = "nats.password"
)

// Bus is an open connection to the substrate.
type Bus struct {
	conn      *nats.Conn
	js        jetstream.JetStream
	server    *server.Server // nil when external
	clientURL string         // the embedded server's TCP URL with credentials, when it listens
	unlock    func()         // releases the data directory; nil when external
	replicas  int
	logger    *slog.Logger
	closed    chan struct{} // closed when the connection has closed

	mu          sync.Mutex
	reconnected chan struct{} // closed, and replaced, at every reconnect
}

// readyTimeout bounds how long the embedded server may take to start.
const readyTimeout = 30 * time.Second

// Open starts the embedded server or connects to the external one, and checks
// that JetStream answers.
func Open(ctx context.Context, logger *slog.Logger, opts Options) (_ *Bus, err error) {
	if opts.Replicas < 1 {
		opts.Replicas = 1
	}
	b := &Bus{
		replicas:    opts.Replicas,
		logger:      logger.With("component", "bus"),
		closed:      make(chan struct{}),
		reconnected: make(chan struct{}),
	}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	connOpts := []nats.Option{
		nats.Name("corral"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(b.closed) }),
		nats.ReconnectHandler(func(c *nats.Conn) {
			b.logger.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
			b.mu.Lock()
			close(b.reconnected)
			b.reconnected = make(chan struct{})
			b.mu.Unlock()
		}),
	}
	if opts.CredsFile != "" {
		connOpts = append(connOpts, nats.UserCredentials(opts.CredsFile))
	}
	if (opts.TLS.Cert == "") != (opts.TLS.Key == "") {
		return nil, errors.New("bus: --nats-tls-cert and --nats-tls-key go together")
	}
	if opts.URL != "" && opts.TLS.enabled() {
		connOpts = append(connOpts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12}))
		if opts.TLS.CA != "" {
			connOpts = append(connOpts, nats.RootCAs(opts.TLS.CA))
		}
		if opts.TLS.Cert != "" {
			connOpts = append(connOpts, nats.ClientCert(opts.TLS.Cert, opts.TLS.Key))
		}
	}
	addr := opts.URL
	if addr == "" {
		if opts.Replicas > 1 {
			return nil, fmt.Errorf("bus: --replicas %d needs a NATS cluster; the embedded server is a single node (use --nats URL)", opts.Replicas)
		}
		password, err := b.startEmbedded(ctx, logger.With("component", "nats"), opts)
		if err != nil {
			return nil, err
		}
		connOpts = append(connOpts, nats.InProcessServer(b.server))
		if password != "" {
			connOpts = append(connOpts, nats.UserInfo(listenUser, password))
		}
	}
	if b.conn, err = nats.Connect(addr, connOpts...); err != nil {
		return nil, fmt.Errorf("bus: connect %s: %w", describe(opts), err)
	}
	if b.js, err = b.Publisher(); err != nil {
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	if err := b.waitForJetStream(ctx); err != nil {
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

// describe names the substrate for messages, without credentials.
func describe(opts Options) string {
	if opts.URL == "" {
		return "embedded server"
	}
	var out []string
	for _, s := range strings.Split(opts.URL, ",") {
		if u, err := url.Parse(strings.TrimSpace(s)); err == nil {
			s = u.Redacted()
		}
		out = append(out, s)
	}
	return strings.Join(out, ",")
}

// startEmbedded starts the in-process server. When it also listens on TCP,
// every client must authenticate; it returns the password they use.
func (b *Bus) startEmbedded(ctx context.Context, logger *slog.Logger, opts Options) (password string, err error) {
	if opts.DataDir == "" {
		return "", errors.New("bus: the embedded server needs a data directory")
	}
	storeDir := filepath.Join(opts.DataDir, "jetstream")
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return "", fmt.Errorf("bus: data directory: %w", err)
	}
	if b.unlock, err = lockDir(opts.DataDir); err != nil {
		return "", fmt.Errorf("bus: %w", err)
	}
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
			return "", fmt.Errorf("bus: --nats-listen %q: %w", opts.Listen, err)
		}
		if password, err = secretFile(filepath.Join(opts.DataDir, listenPasswordFile)); err != nil {
			return "", fmt.Errorf("bus: --nats-listen: %w", err)
		}
		sopts.DontListen, sopts.Host, sopts.Port = false, host, port
		sopts.Username, sopts.Password = listenUser, password
		if err := listenTLS(logger, sopts, opts.TLS); err != nil {
			return "", err
		}
	} else if opts.TLS.enabled() {
		return "", errors.New("bus: --nats-tls-* secure --nats (an external server) or --nats-listen; the embedded server has neither")
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return "", fmt.Errorf("bus: embedded server: %w", err)
	}
	// The server reports a fatal error (a port in use) through its logger
	// and expects the process to exit; here it ends the start instead.
	fatal := make(chan string, 1)
	ns.SetLoggerV2(serverLogger{l: logger, fatal: fatal}, false, false, false)
	b.server = ns
	ns.Start()
	deadline := time.Now().Add(readyTimeout)
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		select {
		case msg := <-fatal:
			return "", fmt.Errorf("bus: embedded server: %s", msg)
		case <-ctx.Done():
			return "", fmt.Errorf("bus: embedded server: %w", ctx.Err())
		default:
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("bus: embedded server not ready after %s", readyTimeout)
		}
	}
	if opts.Listen != "" {
		scheme := "nats"
		if sopts.TLS {
			scheme = "tls"
		}
		u := &url.URL{Scheme: scheme, User: url.UserPassword(listenUser, password), Host: ns.Addr().String()}
		b.clientURL = u.String()
		b.logger.InfoContext(ctx, "embedded nats listening", "url", u.Redacted(),
			"password_file", filepath.Join(opts.DataDir, listenPasswordFile))
	}
	return password, nil
}

// secretFile returns the secret kept in path, creating a random one (mode
// 0600) if the file does not exist.
func secretFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		if s := strings.TrimSpace(string(data)); s != "" {
			return s, nil
		}
		return "", fmt.Errorf("%s is empty", path)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var raw [24]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails
	secret := base64.RawURLEncoding.EncodeToString(raw[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(secret + "\n"); err != nil {
		f.Close()
		return "", err
	}
	return secret, f.Close()
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

// AsyncAckTimeout is how long an asynchronous publish waits for JetStream's
// acknowledgement before it fails with jetstream.ErrAsyncPublishTimeout.
// Without it, a publish whose acknowledgement is lost (the stream's leader
// died with it) stays pending for ever, and once a context holds 4,000 of
// those every asynchronous publish through it is refused as stalled: a
// replica that lived through a few leader changes under load could no
// longer write its audit.
const AsyncAckTimeout = 5 * time.Second

// Publisher returns a JetStream context of its own, for a component that
// publishes asynchronously (the audit, the trace store): the publishes it
// has waiting for acknowledgements are its own, so a stream that stalls
// elsewhere cannot use up its slots. Acknowledgements lost in a leader
// change expire after AsyncAckTimeout.
func (b *Bus) Publisher() (jetstream.JetStream, error) {
	return jetstream.New(b.conn, jetstream.WithPublishAsyncTimeout(AsyncAckTimeout))
}

// Embedded reports whether corral runs its own server.
func (b *Bus) Embedded() bool { return b.server != nil }

// ClientURL is the URL, credentials included, at which other processes reach
// the embedded server when it listens (--nats-listen), or "" otherwise.
// Treat it as a secret.
func (b *Bus) ClientURL() string { return b.clientURL }

// reconnects returns a channel that is closed at the next reconnect.
func (b *Bus) reconnects() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reconnected
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
// start and from several replicas at once. A changed TTL (retention) is
// applied to an existing bucket: entries older than the new one leave, the
// others stay. It never lowers the replica count
// of an existing bucket: a replica started with a smaller --replicas than the
// bucket has is refused, rather than silently reducing its redundancy.
func (b *Bus) KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if cfg.History == 0 {
		cfg.History = 1 // what JetStream makes of 0; said here so the comparison below holds
	}
	if existing, err := b.js.KeyValue(ctx, cfg.Bucket); err == nil {
		status, err := existing.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("bus: bucket %s: %w", cfg.Bucket, err)
		}
		sc := status.(*jetstream.KeyValueBucketStatus).StreamInfo().Config
		if sc.Replicas > b.replicas {
			return nil, fmt.Errorf("bus: bucket %s has %d replicas but --replicas is %d: start corral with --replicas %d (corral never reduces replication itself)",
				cfg.Bucket, sc.Replicas, b.replicas, sc.Replicas)
		}
		// Leave a bucket that is already as wanted alone: an update rewrites
		// the whole stream configuration, briefly clearing what only
		// UpdateAll needs (atomic batches) under other replicas' feet.
		if sc.Replicas == b.replicas && status.History() == int64(cfg.History) && sc.Description == cfg.Description && sc.MaxAge == cfg.TTL && sc.AllowAtomicPublish {
			return existing, nil
		}
	} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("bus: bucket %s: %w", cfg.Bucket, err)
	}
	cfg.Replicas = b.replicas
	cfg.Storage = jetstream.FileStorage
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: bucket %s: %w", cfg.Bucket, err)
	}
	// UpdateAll writes several keys as one atomic batch; the bucket's stream
	// must allow that, and the key-value configuration cannot say so.
	stream, err := b.js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("bus: bucket %s: %w", cfg.Bucket, err)
	}
	if sc := stream.CachedInfo().Config; !sc.AllowAtomicPublish {
		sc.AllowAtomicPublish = true
		if _, err := b.js.UpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("bus: bucket %s: allow atomic batches: %w", cfg.Bucket, err)
		}
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

// serverLogger sends the embedded server's log lines to slog, and its fatal
// errors, after logging them, to fatal.
type serverLogger struct {
	l     *slog.Logger
	fatal chan<- string
}

func (s serverLogger) Noticef(f string, v ...any) { s.l.Debug(fmt.Sprintf(f, v...)) }
func (s serverLogger) Warnf(f string, v ...any)   { s.l.Warn(fmt.Sprintf(f, v...)) }
func (s serverLogger) Errorf(f string, v ...any)  { s.l.Error(fmt.Sprintf(f, v...)) }
func (s serverLogger) Debugf(f string, v ...any)  { s.l.Debug(fmt.Sprintf(f, v...)) }
func (s serverLogger) Tracef(f string, v ...any)  { s.l.Debug(fmt.Sprintf(f, v...)) }

func (s serverLogger) Fatalf(f string, v ...any) {
	msg := fmt.Sprintf(f, v...)
	s.l.Error(msg)
	select {
	case s.fatal <- msg:
	default:
	}
}
