package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/deadletter"
	a2aedge "github.com/corral-dev/corral/internal/edge/a2a"
	openaiedge "github.com/corral-dev/corral/internal/edge/openai"
	"github.com/corral-dev/corral/internal/forwarded"
	"github.com/corral-dev/corral/internal/policy"
	"github.com/corral-dev/corral/internal/telemetry"
)

// serverFlags are the settings of a corral server process.
type serverFlags struct {
	data, http, nats, natsListen string
	natsCreds, secretsKey        string
	issuer, policyDefault        string
	otlpEndpoint, otlpProtocol   string
	traceRetention               time.Duration
	policyTimeout                time.Duration
	dlqRetention, a2aRetention   time.Duration
	tracing                      bool
	tokenTTL                     time.Duration
	replicas                     int
	sync                         string
	logFormat, logLevel          string
	model                        modelFlags
	worker                       bool
	a2aPushAllowPrivate          bool
	workerLabels, workerID       string
	adminGroups                  []string
	viewerGroups                 []string
	trustedProxies               []string
	consoleOIDC                  consoleOIDCFlags
	tls                          app.TLS
	natsTLS                      bus.TLS
}

// modelFlags are the limits on model calls (openaiedge.Limits).
type modelFlags struct {
	maxBodyMiB, concurrency, large  int
	writeTimeout, maxStreamDuration time.Duration
}

// serverDefaults are the defaults that differ between `up` and `demo`.
type serverDefaults struct {
	data, dataUsage, http, logLevel string
}

func (f *serverFlags) register(cmd *cobra.Command, d serverDefaults) {
	fl := cmd.Flags()
	fl.StringVar(&f.data, "data", d.data, d.dataUsage)
	fl.StringVar(&f.http, "http", d.http, "HTTP listen address; port 0 picks a free port")
	fl.StringVar(&f.nats, "nats", "", "URL of an external NATS server or cluster (default: run an embedded one)")
	fl.StringVar(&f.natsCreds, "nats-creds", "", "NATS credentials file (JWT and nkey) for --nats; a user and password can go in the URL instead")
	fl.StringVar(&f.natsListen, "nats-listen", "", "also let other processes reach the embedded NATS on this host:port, with the password in DATA/nats.password (default: no TCP port)")
	fl.StringVar(&f.tls.Cert, "tls-cert", "", "serve HTTPS with this PEM certificate (chain); read again whenever the file changes, no restart needed")
	fl.StringVar(&f.tls.Key, "tls-key", "", "the PEM private key of --tls-cert")
	fl.StringVar(&f.tls.ClientCA, "tls-client-ca", "", "PEM CAs whose client certificates authenticate agents (mTLS; Agent spec.certificates); other certificates fail the handshake")
	fl.StringVar(&f.natsTLS.CA, "nats-tls-ca", "", "PEM CAs that verify --nats's server certificate; with --nats-listen, the CAs whose client certificates it demands")
	fl.StringVar(&f.natsTLS.Cert, "nats-tls-cert", "", "PEM certificate: corral's client certificate for --nats, or the server certificate of --nats-listen (TLS only then)")
	fl.StringVar(&f.natsTLS.Key, "nats-tls-key", "", "the PEM private key of --nats-tls-cert")
	fl.StringSliceVar(&f.trustedProxies, "trusted-proxies", nil, "reverse proxies and load balancers (CIDR prefixes or IP addresses) whose X-Forwarded-For names the client, for the audit and the per-address limits (default: none; the TCP peer is the client)")
	fl.StringVar(&f.secretsKey, "secrets-key", "", "file holding the key that seals Secrets (default DATA/secrets.key, created if missing); replicas sharing a NATS need the same key")
	fl.StringVar(&f.issuer, "issuer", "", "corral's public URL, the iss of the tokens it signs; replicas must share it (default: the server's own URL)")
	fl.DurationVar(&f.tokenTTL, "token-ttl", 15*time.Minute, "lifetime of the access tokens /oauth2/token issues (at most 24h)")
	fl.StringVar(&f.policyDefault, "policy-default", "builtin", "the policy under every Policy resource: 'builtin' (corral policy show-default), 'none', or a path to .rego files that replace it")
	fl.StringVar(&f.otlpEndpoint, "otlp-endpoint", "", "also export traces over OTLP to this collector (http://host:4317 for gRPC, http://host:4318 for HTTP; default: OTEL_EXPORTER_OTLP_ENDPOINT, else none)")
	fl.StringVar(&f.otlpProtocol, "otlp-protocol", "", "OTLP protocol: grpc or http/protobuf (default: OTEL_EXPORTER_OTLP_PROTOCOL, else grpc)")
	fl.DurationVar(&f.policyTimeout, "policy-timeout", policy.DefaultTimeout, "how long one policy decision may take before the call is refused (policy_error); it stops a runaway policy, so keep it well above a decision's usual microseconds")
	fl.DurationVar(&f.traceRetention, "trace-retention", 7*24*time.Hour, "how long the built-in trace store keeps spans (corral trace ID)")
	fl.DurationVar(&f.dlqRetention, "dlq-retention", deadletter.DefaultMaxAge, "how long a dead letter is kept after it last changed, pending or not (corral dlq)")
	fl.DurationVar(&f.a2aRetention, "a2a-retention", a2aedge.DefaultMaxAge, "how long the A2A edge keeps a task's context id and push configs after they last changed")
	fl.BoolVar(&f.tracing, "tracing", true, "record traces; --tracing=false records none (the audit is kept either way)")
	fl.IntVar(&f.replicas, "replicas", 1, "replicas of every stream and bucket (more than 1 needs a NATS cluster)")
	fl.StringVar(&f.sync, "sync", "interval", "embedded store durability: 'always' fsyncs every write, 'interval' syncs periodically")
	fl.BoolVar(&f.worker, "worker", true, "run hosted agents' tasks on this replica; --worker=false leaves them to other replicas")
	fl.StringVar(&f.workerLabels, "worker-labels", "", "labels of this replica's worker, as region=eu,cloud=aws: it takes only tasks whose agent's spec.placement they include (docs/tasks.md)")
	fl.BoolVar(&f.a2aPushAllowPrivate, "a2a-push-allow-private", false, "let A2A push notifications reach private, loopback and link-local addresses (refused by default: docs/a2a.md)")
	fl.StringVar(&f.workerID, "worker-id", "", "name of this replica's worker in tasks and events (default host-pid)")
	fl.StringSliceVar(&f.adminGroups, "admin-groups", []string{"corral-admins"}, "groups whose people (corral humans, users of a trusted Issuer) administer corral with their own credential, as the admin token does; empty: only admin tokens")
	fl.StringSliceVar(&f.viewerGroups, "viewer-groups", []string{"viewers"}, "groups whose people only read in the web console (/ui/), even when another group would let them decide approvals")
	f.consoleOIDC.register(fl)
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.StringVar(&f.logLevel, "log-level", d.logLevel, "log level: debug, info, warn or error")
	fl.IntVar(&f.model.maxBodyMiB, "model-max-body", openaiedge.DefaultMaxBody>>20, "largest model request body, in MiB (docs/models.md, Limits)")
	fl.IntVar(&f.model.concurrency, "model-concurrency", openaiedge.DefaultMaxConcurrent, "model calls in flight per replica, streams included; more are answered 503 overloaded")
	fl.IntVar(&f.model.large, "model-concurrency-large", openaiedge.DefaultMaxConcurrentLarge, "of those, calls with a body over 1 MiB (or of unknown length)")
	fl.DurationVar(&f.model.writeTimeout, "stream-write-timeout", openaiedge.DefaultWriteTimeout, "longest one write of a stream to an agent may take; an agent that stops reading loses its stream")
	fl.DurationVar(&f.model.maxStreamDuration, "stream-max-duration", openaiedge.DefaultMaxStreamDuration, "longest a streamed model call may last")
}

// limits checks the model flags.
func (m modelFlags) limits() (openaiedge.Limits, error) {
	switch {
	case m.maxBodyMiB < 1 || m.maxBodyMiB > 1024:
		return openaiedge.Limits{}, fmt.Errorf("--model-max-body %d: must be between 1 and 1024 (MiB)", m.maxBodyMiB)
	case m.concurrency < 1:
		return openaiedge.Limits{}, fmt.Errorf("--model-concurrency %d: must be at least 1", m.concurrency)
	case m.large < 1 || m.large > m.concurrency:
		return openaiedge.Limits{}, fmt.Errorf("--model-concurrency-large %d: must be between 1 and --model-concurrency", m.large)
	case m.writeTimeout < time.Second:
		return openaiedge.Limits{}, fmt.Errorf("--stream-write-timeout %v: must be at least 1s", m.writeTimeout)
	case m.maxStreamDuration < time.Second:
		return openaiedge.Limits{}, fmt.Errorf("--stream-max-duration %v: must be at least 1s", m.maxStreamDuration)
	}
	return openaiedge.Limits{MaxBody: int64(m.maxBodyMiB) << 20, MaxConcurrent: m.concurrency, MaxConcurrentLarge: m.large,
		WriteTimeout: m.writeTimeout, MaxStreamDuration: m.maxStreamDuration}, nil
}

// build checks the flags and turns them into the app's configuration and
// the process logger.
func (f *serverFlags) build(s streams) (app.Config, *slog.Logger, error) {
	cfg, err := f.config()
	if err != nil {
		return app.Config{}, nil, err
	}
	logger, err := telemetry.NewLogger(s.err, f.logFormat, f.logLevel)
	return cfg, logger, err
}

func (f *serverFlags) config() (app.Config, error) {
	if f.sync != "always" && f.sync != "interval" {
		return app.Config{}, fmt.Errorf("--sync %q: want always or interval", f.sync)
	}
	if f.replicas < 1 {
		return app.Config{}, fmt.Errorf("--replicas %d: must be at least 1", f.replicas)
	}
	if f.natsCreds != "" && f.nats == "" {
		return app.Config{}, fmt.Errorf("--nats-creds applies to an external NATS given with --nats")
	}
	if f.nats != "" && f.natsListen != "" {
		return app.Config{}, fmt.Errorf("--nats-listen applies to the embedded server; with --nats %s, clients connect to that server instead", f.nats)
	}
	if f.data == "" {
		return app.Config{}, fmt.Errorf("--data: must name a directory")
	}
	if (f.tls.Cert == "") != (f.tls.Key == "") {
		return app.Config{}, fmt.Errorf("--tls-cert and --tls-key go together")
	}
	if f.tls.ClientCA != "" && f.tls.Cert == "" {
		return app.Config{}, fmt.Errorf("--tls-client-ca needs --tls-cert and --tls-key: client certificates are only asked for over HTTPS")
	}
	if (f.natsTLS.Cert == "") != (f.natsTLS.Key == "") {
		return app.Config{}, fmt.Errorf("--nats-tls-cert and --nats-tls-key go together")
	}
	if f.natsTLS != (bus.TLS{}) && f.nats == "" && f.natsListen == "" {
		return app.Config{}, fmt.Errorf("--nats-tls-* secure --nats or --nats-listen; neither is set")
	}
	if f.tokenTTL < time.Second || f.tokenTTL > 24*time.Hour {
		return app.Config{}, fmt.Errorf("--token-ttl %v: must be between 1s and 24h", f.tokenTTL)
	}
	if f.issuer != "" {
		if u, err := url.Parse(f.issuer); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return app.Config{}, fmt.Errorf("--issuer %q: want an http or https URL without query or fragment", f.issuer)
		}
	}
	if f.policyDefault == "" {
		return app.Config{}, fmt.Errorf("--policy-default: want builtin, none or a path")
	}
	if f.otlpEndpoint != "" {
		if _, err := telemetry.ParseOTLPEndpoint(f.otlpEndpoint); err != nil {
			return app.Config{}, fmt.Errorf("--otlp-endpoint: %w", err)
		}
	}
	switch f.otlpProtocol {
	case "", telemetry.ProtocolGRPC, telemetry.ProtocolHTTP:
	default:
		return app.Config{}, fmt.Errorf("--otlp-protocol %q: want %s or %s", f.otlpProtocol, telemetry.ProtocolGRPC, telemetry.ProtocolHTTP)
	}
	if f.policyTimeout < time.Millisecond || f.policyTimeout > time.Minute {
		return app.Config{}, fmt.Errorf("--policy-timeout %v: must be between 1ms and 1m", f.policyTimeout)
	}
	if f.traceRetention < time.Minute {
		return app.Config{}, fmt.Errorf("--trace-retention %v: must be at least 1m", f.traceRetention)
	}
	if f.dlqRetention < time.Hour {
		return app.Config{}, fmt.Errorf("--dlq-retention %v: must be at least 1h", f.dlqRetention)
	}
	if f.a2aRetention < time.Hour {
		return app.Config{}, fmt.Errorf("--a2a-retention %v: must be at least 1h", f.a2aRetention)
	}
	limits, err := f.model.limits()
	if err != nil {
		return app.Config{}, err
	}
	labels, err := parseLabels(f.workerLabels)
	if err != nil {
		return app.Config{}, fmt.Errorf("--worker-labels: %w", err)
	}
	if len(labels) > 0 && !f.worker {
		return app.Config{}, fmt.Errorf("--worker-labels applies to a replica that runs a worker; drop --worker=false")
	}
	consoleOIDC, err := f.consoleOIDC.config()
	if err != nil {
		return app.Config{}, err
	}
	var proxies []netip.Prefix
	for _, s := range f.trustedProxies {
		p, err := forwarded.ParsePrefix(s)
		if err != nil {
			return app.Config{}, fmt.Errorf("--trusted-proxies %q: %w", s, err)
		}
		proxies = append(proxies, p)
	}
	return app.Config{
		ConsoleOIDC:   consoleOIDC,
		WorkerLabels:  labels,
		AdminGroups:   f.adminGroups,
		ViewerGroups:  f.viewerGroups,
		NoWorker:      !f.worker,
		WorkerID:      f.workerID,
		DataDir:       f.data,
		HTTPAddr:      f.http,
		NATSURL:       f.nats,
		NATSListen:    f.natsListen,
		NATSCreds:     f.natsCreds,
		SecretsKey:    f.secretsKey,
		Issuer:        strings.TrimSuffix(f.issuer, "/"),
		TokenTTL:      f.tokenTTL,
		PolicyDefault: f.policyDefault,
		PolicyTimeout: f.policyTimeout,
		OTLPEndpoint:  f.otlpEndpoint,
		OTLPProtocol:  f.otlpProtocol,
		TraceMaxAge:   f.traceRetention,

		DeadLetterMaxAge: f.dlqRetention,
		A2AMaxAge:        f.a2aRetention,
		NoTracing:        !f.tracing,
		Replicas:         f.replicas,
		SyncAlways:       f.sync == "always",
		ModelLimits:      limits,
		Version:          Version(),
		TLS:              f.tls,
		NATSTLS:          f.natsTLS,

		A2APushAllowPrivate: f.a2aPushAllowPrivate,
		TrustedProxies:      proxies,
	}, nil
}

func newUp(s streams) *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the corral server",
		Long: `Run the corral server: the HTTP API, the registry of resources and, unless
--nats names an external NATS, an embedded JetStream server that keeps its
data under --data and listens on no TCP port.

On first start it creates an admin token in DATA/admin.token (mode 0600); the
CLI reads it from there. When ready it prints 'corral listening on URL'.
SIGINT or SIGTERM stops it cleanly: in-flight requests drain, JetStream closes.

Durability (--sync): 'interval' (default) survives a crash of corral, since
writes reach the OS at once, but a power loss can lose the last couple of
minutes; 'always' fsyncs every write and survives power loss, slower. For
production, run a three-node NATS cluster with --replicas 3.`,
		Example: `  corral up
  corral up --data /var/lib/corral --http 0.0.0.0:7070 --log-format json
  corral up --nats-listen 127.0.0.1:4333          # a second replica joins with
  corral up --data .corral-b --http 127.0.0.1:7071 \
    --nats nats://corral:$(cat .corral/nats.password)@127.0.0.1:4333
  corral up --nats nats://n1:4222,nats://n2:4222 --replicas 3
  corral up --http 0.0.0.0:7443 --tls-cert tls.crt --tls-key tls.key --tls-client-ca agents-ca.pem
  CORRAL_HTTP=127.0.0.1:0 corral up --config corral.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, logger, err := f.build(s)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), s, logger, cfg, nil)
		},
	}
	f.register(cmd, serverDefaults{
		data:      ".corral",
		dataUsage: "directory for the admin token and the embedded JetStream store",
		http:      "127.0.0.1:7070",
		logLevel:  "info",
	})
	return cmd
}

// parseLabels reads "region=eu,cloud=aws".
func parseLabels(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		switch {
		case !ok || k == "" || v == "":
			return nil, fmt.Errorf("%q: want key=value, as region=eu", part)
		case !config.ValidLabelKey(k):
			return nil, fmt.Errorf("%q is not a valid label key (letters, digits, '-', '_', '.', at most 63)", k)
		case !config.ValidLabelKey(v):
			return nil, fmt.Errorf("%q is not a valid label value (letters, digits, '-', '_', '.', at most 63)", v)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("label %q given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

func newWorker(s streams) *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a corral replica that takes tasks placed where it runs",
		Long: `Run a corral replica whose worker takes only the tasks whose agent's
spec.placement its --labels include: a task whose data must stay in a region
runs only on workers there. Tasks of agents without a placement run on any
worker. It is 'corral up --worker-labels', joined to the same NATS as the
other replicas; it serves the whole API too.`,
		Example: `  corral worker --labels region=eu --nats nats://n1:4222 --data /var/lib/corral-eu \
    --http 127.0.0.1:7071 --issuer https://corral.example.com`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.workerLabels == "" {
				return usageError{cmd: cmd, err: fmt.Errorf("--labels: required, as region=eu (a worker without labels is 'corral up')")}
			}
			cfg, logger, err := f.build(s)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), s, logger, cfg, nil)
		},
	}
	f.register(cmd, serverDefaults{
		data:      ".corral-worker",
		dataUsage: "directory for this replica's admin token and, without --nats, its embedded JetStream store",
		http:      "127.0.0.1:7071",
		logLevel:  "info",
	})
	cmd.Flags().StringVar(&f.workerLabels, "labels", "", "this worker's labels, as region=eu,cloud=aws (same as --worker-labels)")
	return cmd
}

// serve builds and runs corral until ctx ends. It prints the admin token's
// path on first start and the listening line once ready; then, if whenReady
// is set, it runs it and stops the server when it returns (the demo's way).
func serve(ctx context.Context, s streams, logger *slog.Logger, cfg app.Config, whenReady func(ctx context.Context, a *app.App) error) error {
	a, err := app.New(ctx, logger, cfg)
	if err != nil {
		return err
	}
	// The demo's tour says where its token is, when it keeps it.
	if path, created := a.AdminToken(); created && whenReady == nil {
		fmt.Fprintf(s.out, "admin token written to %s\n", path)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()

	select {
	case err := <-done:
		return err
	case <-a.Ready():
	}
	fmt.Fprintf(s.out, "corral listening on %s\n", a.URL())
	if whenReady != nil {
		werr := whenReady(runCtx, a)
		stop()
		if err := <-done; werr == nil {
			werr = err
		}
		return werr
	}
	err = <-done
	if err == nil {
		logger.InfoContext(ctx, "corral stopped")
	}
	return err
}
