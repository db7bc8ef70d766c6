// Package app is corral's composition root: it builds every component in
// order, wires them together and runs them until the context ends. Only the
// CLI (and tests, through apptest) import it.
package app

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/approval"
	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/budget"
	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/console"
	"github.com/corral-dev/corral/internal/deadletter"
	a2aedge "github.com/corral-dev/corral/internal/edge/a2a"
	mcpedge "github.com/corral-dev/corral/internal/edge/mcp"
	"github.com/corral-dev/corral/internal/edge/oauth"
	openaiedge "github.com/corral-dev/corral/internal/edge/openai"
	"github.com/corral-dev/corral/internal/edge/rest"
	"github.com/corral-dev/corral/internal/forwarded"
	"github.com/corral-dev/corral/internal/idempotency"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/killswitch"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/notify"
	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/policy"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/ratelimit"
	"github.com/corral-dev/corral/internal/registry"
	"github.com/corral-dev/corral/internal/secret"
	"github.com/corral-dev/corral/internal/telemetry"
	"github.com/corral-dev/corral/internal/tools"
	"github.com/corral-dev/corral/internal/tools/mcpsource"
	"github.com/corral-dev/corral/internal/tools/restsource"
	"github.com/corral-dev/corral/internal/trigger"
)

// Config is the static configuration of one corral server process.
type Config struct {
	DataDir    string // admin token, and the embedded JetStream store
	HTTPAddr   string // host:port; port 0 picks a free one
	NATSURL    string // external NATS; "" runs the embedded server
	NATSListen string // embedded server's optional TCP listener
	NATSCreds  string // credentials file for an external NATS
	SecretsKey string // key file sealing Secrets; "" is DATA/secrets.key
	// Issuer is corral's public URL, the iss of its tokens; "" is URL().
	Issuer string
	// TokenTTL is the lifetime of access tokens; 0 is 15 minutes.
	TokenTTL time.Duration
	// PolicyDefault is the policy under every Policy resource: "builtin"
	// (or ""), "none", or a path to .rego files that replace it.
	PolicyDefault string
	// PolicyTimeout bounds one policy decision; 0 is policy.DefaultTimeout.
	PolicyTimeout time.Duration
	// OTLPEndpoint and OTLPProtocol export traces to a collector; "" leaves
	// it to the OTEL_* variables.
	OTLPEndpoint, OTLPProtocol string
	// TraceMaxAge is how long the built-in trace store keeps spans; 0 is a week.
	TraceMaxAge time.Duration
	// DeadLetterMaxAge is how long a dead letter is kept after it last
	// changed; 0 is deadletter.DefaultMaxAge (30 days).
	DeadLetterMaxAge time.Duration
	// A2AMaxAge is how long the A2A edge keeps a task's record (context id,
	// push configs) after it last changed; 0 is a2a.DefaultMaxAge (30 days).
	A2AMaxAge time.Duration
	// NoTracing records no spans.
	NoTracing bool
	// ModelLimits bound model calls (body, concurrency, streams); zero
	// fields take the defaults.
	ModelLimits openaiedge.Limits
	Replicas    int
	SyncAlways  bool
	Version     string
	// WorkerLabels say where this replica's worker runs (region=eu): it
	// takes only tasks whose agent's placement they include.
	WorkerLabels map[string]string
	// NoWorker runs no hosted agents here: tasks are left to other replicas.
	NoWorker bool
	// WorkerID names this replica's worker; "" is host-pid.
	WorkerID string
	// AdminGroups are the groups whose people (corral humans, users of a
	// trusted Issuer) administer corral with their own credential.
	AdminGroups []string
	// ViewerGroups are the groups whose people only read in the web
	// console; nil is console.DefaultViewerGroups.
	ViewerGroups []string
	// ConsoleOIDC, when set, offers sign-in to the web console through an
	// identity provider (the authorization code flow).
	ConsoleOIDC *console.OIDC
	// TLS serves HTTPS, and verifies client certificates (mTLS).
	TLS TLS
	// TrustedProxies are the reverse proxies and load balancers whose
	// X-Forwarded-For names the client (forwarded.Proxies); none: the TCP
	// peer is the client.
	TrustedProxies []netip.Prefix
	// NATSTLS secures the connection to an external NATS, or the embedded
	// server's --nats-listen port.
	NATSTLS bus.TLS
	// A2APushAllowPrivate lets A2A push notifications reach private,
	// loopback and link-local addresses (docs/a2a.md, "Push security").
	A2APushAllowPrivate bool
}

// drainTimeout bounds how long shutdown waits for in-flight requests.
const drainTimeout = 15 * time.Second

// App is a built corral server, listening but not yet serving.
type App struct {
	cfg      Config
	logger   *slog.Logger
	bus      *bus.Bus
	registry *registry.Registry
	creds    *identity.Store
	kill     *killswitch.Switches
	audit    *audit.Log
	catalog  *tools.Catalog
	models   *llm.Catalog
	budgets  *budget.Budgets
	limits   *ratelimit.Limits
	gateway  *pipeline.Pipeline
	push     *a2aedge.Pusher
	signer   *identity.Signer
	issuers  *identity.Issuers
	policies *policy.Store
	tasks    *orchestrator.Store
	// deadLetters holds work that failed past its retries (corral dlq).
	deadLetters *deadletter.DLQ
	worker      *orchestrator.Worker
	tracing     *telemetry.Tracing
	listener    net.Listener
	server      *http.Server

	approvals *approval.Store
	notifier  *notify.Notifier
	triggers  *trigger.Manager

	adminTokenPath string
	adminCreated   bool
	ready          chan struct{}
	loading        *loading
}

// New builds corral: the substrate, the registry, the admin credential and the
// HTTP server, whose port it binds so that URL is known before Run.
func New(ctx context.Context, logger *slog.Logger, cfg Config) (_ *App, err error) {
	a := &App{cfg: cfg, logger: logger, ready: make(chan struct{}), loading: newLoading()}
	// The port first: if it is taken, fail before anything is created.
	if a.listener, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("app: --http %s: %w", cfg.HTTPAddr, err)
	}
	defer func() {
		if err != nil {
			a.listener.Close()
		}
	}()
	tl, err := a.listenTLS(a.listener)
	if err != nil {
		return nil, err
	}
	a.listener = tl
	a.bus, err = bus.Open(ctx, logger, bus.Options{
		URL:        cfg.NATSURL,
		DataDir:    cfg.DataDir,
		Listen:     cfg.NATSListen,
		Replicas:   cfg.Replicas,
		SyncAlways: cfg.SyncAlways,
		CredsFile:  cfg.NATSCreds,
		TLS:        cfg.NATSTLS,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.bus.Close()
		}
	}()

	if a.registry, err = registry.Open(ctx, logger.With("component", "registry"), a.bus); err != nil {
		return nil, err
	}
	if a.creds, err = identity.Open(ctx, logger.With("component", "identity"), a.bus); err != nil {
		return nil, err
	}
	if a.adminTokenPath, a.adminCreated, err = a.creds.Ensure(ctx, cfg.DataDir); err != nil {
		return nil, err
	}

	keyPath := cfg.SecretsKey
	if keyPath == "" {
		keyPath = filepath.Join(cfg.DataDir, "secrets.key")
	}
	sealer, _, err := secret.LoadOrCreateKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("app: --secrets-key: %w", err)
	}
	issuer := cfg.Issuer
	if issuer == "" {
		issuer = a.URL()
	}
	ttl := cmp.Or(cfg.TokenTTL, 15*time.Minute)
	if a.signer, err = identity.OpenSigner(ctx, logger.With("component", "tokens"), a.bus, cfg.DataDir, identity.SignerOptions{Issuer: issuer, MaxTTL: ttl}); err != nil {
		return nil, err
	}
	a.issuers = identity.NewIssuers(logger.With("component", "issuers"), a.registry, nil)
	defaults, err := defaultPolicy(cfg.PolicyDefault)
	if err != nil {
		return nil, err
	}
	a.policies = policy.NewStore(logger.With("component", "policy"), a.registry, policy.StoreOptions{Default: defaults, Engine: policy.Options{Timeout: cfg.PolicyTimeout}})
	a.registry.SetPrepare(func(res config.Resource) (config.Resource, error) {
		res, err := sealer.Prepare(res)
		if err != nil || res.Kind != "Policy" {
			return res, err
		}
		// A Policy that does not compile with the others is refused here,
		// with its errors, rather than found broken at the first call.
		if err := a.policies.Check(res); err != nil {
			return config.Resource{}, fmt.Errorf("spec.rego: %w", err)
		}
		return res, nil
	})
	if a.kill, err = killswitch.Open(ctx, logger.With("component", "killswitch"), a.bus); err != nil {
		return nil, err
	}
	if a.audit, err = audit.Open(ctx, logger.With("component", "audit"), a.bus, audit.Options{}); err != nil {
		return nil, err
	}
	a.kill.WithAudit(a.audit) // every kill and unkill is audited
	if a.approvals, err = approval.Open(ctx, logger.With("component", "approvals"), a.bus, approval.Options{Audit: a.audit}); err != nil {
		return nil, err
	}
	idem, err := idempotency.Open(ctx, a.bus)
	if err != nil {
		return nil, err
	}
	if a.tasks, err = orchestrator.Open(ctx, logger.With("component", "tasks"), a.bus); err != nil {
		return nil, err
	}
	taskService := orchestrator.NewService(logger.With("component", "tasks"), a.tasks, a.registry)
	a.tasks.SetAudit(a.audit) // shared task state's changes (docs/agents.md)
	// Workflow runs: a step's task that ends wakes its run; a failed step
	// past its retries goes to the dead-letter queue, whose retry and
	// discard hand it back to its run (docs/workflows.md).
	a.tasks.OnEnded(taskService.TaskEnded)
	if a.deadLetters, err = deadletter.Open(ctx, logger.With("component", "deadletter"), a.bus, a.audit, deadletter.Options{MaxAge: cfg.DeadLetterMaxAge}); err != nil {
		return nil, err
	}
	a.deadLetters.Handle(deadletter.SourceWorkflow, taskService.RetryDeadLetter, taskService.DiscardDeadLetter)
	// A task that ends withdraws its approvals still pending: nobody waits
	// for them any more.
	a.tasks.OnEnded(func(ctx context.Context, task string, st orchestrator.State) {
		if _, err := a.approvals.CancelTask(ctx, task, "task "+string(st)); err != nil {
			logger.WarnContext(ctx, "withdrawing the approvals of an ended task", "task", task, "err", err)
		}
	})
	// A decision on a call a task made wakes the task: its worker makes the
	// call again, which now runs (approved) or is refused (denied, expired).
	a.approvals.OnDecision(func(ctx context.Context, ap approval.Approval) {
		if ap.Action.Task == "" {
			return
		}
		if err := taskService.Wake(ctx, ap.Action.Task, fmt.Sprintf("approval %s %s", ap.ID, ap.State)); err != nil {
			logger.WarnContext(ctx, "waking a task after an approval's decision; it stays waiting", "task", ap.Action.Task, "approval", ap.ID, "err", err)
		}
	})

	traces, err := telemetry.OpenStore(ctx, logger.With("component", "traces"), a.bus, telemetry.StoreOptions{MaxAge: cfg.TraceMaxAge})
	if err != nil {
		return nil, err
	}
	a.tracing, err = telemetry.NewTracing(ctx, logger.With("component", "tracing"), telemetry.TracingOptions{
		ServiceName: "corral", ServiceVersion: cfg.Version, OTLPEndpoint: cfg.OTLPEndpoint, OTLPProtocol: cfg.OTLPProtocol,
		Store: traces, Disabled: cfg.NoTracing,
	})
	if err != nil {
		return nil, err
	}

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newResourceCollector(a.registry),
		killswitch.NewCollector(a.kill),
		newDriftCollector(func() []tools.Drift { return a.catalog.Drift() }),
	)
	breakers := newBreakerGauge(metrics, logger.With("component", "upstream"))
	pins, err := restsource.OpenPins(ctx, a.bus)
	if err != nil {
		return nil, err
	}
	if a.budgets, err = budget.Open(ctx, logger.With("component", "budget"), a.bus, a.registry, nil); err != nil {
		return nil, err
	}
	metrics.MustRegister(budget.NewCollector(a.budgets))
	if a.limits, err = ratelimit.Open(ctx, logger.With("component", "ratelimit"), a.bus, a.registry, nil); err != nil {
		return nil, err
	}
	metrics.MustRegister(ratelimit.NewCollector(a.limits))
	resolver := secret.NewResolver(sealer, a.registry.Get, os.LookupEnv)
	a.models = llm.NewCatalog(logger.With("component", "models"), a.registry, resolver.Resolve, llm.NewClient(telemetry.Transport))
	a.catalog = tools.NewCatalog(logger.With("component", "tools"), a.registry, map[string]tools.Factory{
		"openapi": restsource.Factory(restsource.Options{OnBreakerChange: breakers.set, Pins: pins, OnDrift: a.auditDrift}),
		"mcp":     mcpsource.Factory(mcpsource.Options{Pins: mcpPins{pins}, OnDrift: a.auditDrift}),
	}, resolver.Resolve)
	// One bound on unauthenticated refusals, whichever door they knock on.
	refusals := &audit.Refusals{}
	metrics.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "corral_audit_refusals_suppressed_total",
		Help: "Unauthenticated refusals past the per-address rate, not stored one by one: a sampled record a second stands for them.",
	}, func() float64 { return float64(refusals.Suppressed()) }))
	a.gateway = pipeline.New(logger.With("component", "pipeline"), pipeline.Deps{
		Keys:        a.creds,
		Tokens:      a.signer,
		Policy:      a.policies,
		Resources:   a.registry,
		Kill:        a.kill,
		Catalog:     a.catalog,
		Idempotency: idem,
		Audit:       a.audit,
		Models:      a.models,
		Budgets:     a.budgets,
		Limits:      a.limits,
		Metrics:     pipeline.NewMetrics(metrics),
		Tracer:      a.tracing.Tracer(),
		Refusals:    refusals,
		Tasks:       taskService,
		Approvals:   a.approvals,
	})
	gateway := a.gateway
	if !cfg.NoWorker {
		a.worker = orchestrator.NewWorker(logger.With("component", "worker"), a.tasks, gateway, a.signer, a.registry, a.registry, a.kill,
			orchestrator.WorkerOptions{ID: cfg.WorkerID, Labels: cfg.WorkerLabels,
				Remote: a2aedge.NewClient(logger.With("component", "a2a-client"), resolver.Resolve, a.audit)}).WithDeadLetters(a.deadLetters)
	}
	metrics.MustRegister(deadletter.NewCollector(a.deadLetters))
	metrics.MustRegister(orchestrator.NewCollector(a.tasks, a.worker))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "corral_build_info", Help: "Always 1; labels say which corral runs and on which substrate.",
	}, []string{"version", "substrate"})
	buildInfo.WithLabelValues(cfg.Version, a.substrate()).Set(1)
	metrics.MustRegister(buildInfo)

	// Triggers start tasks and workflow runs from webhooks, schedules and
	// queues; an event that cannot start its work is a dead letter.
	a.triggers = trigger.New(logger.With("component", "triggers"), trigger.Deps{
		Resources: a.registry, Tasks: taskService, Secret: resolver.Resolve, Bus: a.bus, Metrics: metrics,
		Workflows: triggerWorkflows{taskService}, DeadLetters: a.deadLetters.Events(),
	})

	httpLogger := logger.With("component", "http")
	mux := http.NewServeMux()
	// The console reads the API with a service token made here, in memory.
	consoleToken := console.NewServiceToken()
	apiCreds := console.WithServiceToken(a.creds, consoleToken)
	api.New(httpLogger, a.registry, apiCreds).WithOps(a.kill, a.audit).WithSecurity(a.policies, a.signer).WithBudgets(a.budgets).WithLimits(a.limits).WithTraces(traces).WithTasks(taskService, gateway).WithAdminTokens(a.creds).WithApprovals(a.approvals, a.creds, a.issuers).WithAdminGroups(cfg.AdminGroups).WithTriggers(a.triggers).WithDeadLetters(a.deadLetters).
		WithInForce("Policy", a.policies).WithInForce("Budget", a.budgets).WithInForce("RateLimit", a.limits).Register(mux)
	a.notifier = notify.New(logger.With("component", "notify"), a.registry, resolver.Resolve, a.creds, a.approvals, nil)
	a.approvals.OnRequest(a.notifier.Announce)
	a.notifier.Register(mux, func(h problem.HandlerFunc) http.Handler { return problem.Handle(httpLogger, h) })
	oauth.New(httpLogger, oauth.Deps{
		Keys: a.creds, Resources: a.registry, Kill: a.kill, Signer: a.signer, Issuers: a.issuers, Workloads: a.issuers,
		Delegations: delegations{gateway}, Audit: a.audit, Refusals: refusals, Tasks: taskService,
	}, oauth.Options{TTL: ttl}).Register(mux)
	rest.New(httpLogger, gateway, apiCreds, a.catalog, a.registry).WithApprovals(a.approvals).Register(mux)
	mcpedge.New(logger.With("component", "mcp"), gateway).WithApprovals(a.approvals).Register(mux)
	openaiedge.New(logger.With("component", "openai"), gateway, cfg.ModelLimits).Register(mux)
	mux.Handle("POST /hooks/{trigger}", problem.Handle(httpLogger, a.triggers.ServeHook))
	mux.Handle("/hooks/{trigger}", problem.Handle(httpLogger, problem.NotAllowed("POST")))
	a2aStore, err := a2aedge.OpenStore(ctx, a.bus, a2aedge.StoreOptions{MaxAge: cfg.A2AMaxAge})
	if err != nil {
		return nil, err
	}
	a.push = a2aedge.NewPusher(logger.With("component", "a2a-push"), taskService, a2aStore, a2aedge.PushOptions{AllowPrivate: cfg.A2APushAllowPrivate})
	a2aedge.New(logger.With("component", "a2a"), taskService, gateway, a.creds, a.registry, a2aStore, a.push, a2aedge.Options{PublicURL: cfg.Issuer, Version: cfg.Version}).Register(mux)
	// Console sessions live on the substrate: every replica sees them.
	consoleStore, err := console.OpenStore(ctx, a.bus)
	if err != nil {
		return nil, err
	}
	console.New(logger.With("component", "console"), mux, consoleStore, apiCreds, a.creds, a.issuers,
		console.Options{AdminGroups: cfg.AdminGroups, ViewerGroups: cfg.ViewerGroups, ServiceToken: consoleToken, OIDC: cfg.ConsoleOIDC,
			Audit: a.audit, Refusals: refusals}).Register(mux)
	mux.Handle("GET /healthz", problem.Handle(httpLogger, a.healthz))
	mux.Handle("GET /readyz", problem.Handle(httpLogger, a.readyz))
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		mux.Handle(path, problem.Handle(httpLogger, problem.NotAllowed("GET")))
	}
	mux.Handle("/", problem.Handle(httpLogger, func(_ http.ResponseWriter, r *http.Request) error {
		return problem.New(http.StatusNotFound, problem.NotFound, "no such endpoint: "+r.URL.Path)
	}))

	// The client's address is resolved once, here, before anything reads
	// r.RemoteAddr: behind a trusted proxy it becomes the client's (ip:0)
	// for every edge, the audit's remote, the refusal limiter and the
	// console's sign-in limits alike.
	handler := telemetry.NewHTTPMetrics(metrics).WithTracer(a.tracing.Tracer()).Middleware(httpLogger, a.gate(httpLogger, mux))
	a.server = &http.Server{
		Handler:           forwarded.New(cfg.TrustedProxies).Handler(handler),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute, // whole request; no WriteTimeout, so responses may stream
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(httpLogger.Handler(), slog.LevelWarn),
	}
	return a, nil
}

// delegations tells the token endpoint what policy lets an agent do for a
// user: the scope of a delegated token.
type delegations struct{ gateway *pipeline.Pipeline }

func (d delegations) Scopes(ctx context.Context, agent, agentUID string, u *identity.External) ([]string, error) {
	return d.gateway.Scopes(ctx, agent, agentUID, &pipeline.Principal{Subject: u.Subject, Issuer: u.Issuer, Groups: u.Groups, Roles: u.Roles})
}

// defaultPolicy reads --policy-default: nil is the built-in bundle.
func defaultPolicy(setting string) ([]policy.Module, error) {
	switch setting {
	case "", "builtin":
		return nil, nil
	case "none":
		return []policy.Module{}, nil
	}
	b, err := policy.LoadDir(setting)
	if err != nil {
		return nil, fmt.Errorf("app: --policy-default: %w", err)
	}
	if len(b.Data) > 0 {
		// Rules that read data would run without it, and a deny rule over
		// an absent list never fires: refuse rather than fail open.
		return nil, fmt.Errorf("app: --policy-default %s: holds data files; put data in a Policy resource's spec.data", setting)
	}
	var out []policy.Module
	for _, m := range b.Modules {
		if !strings.HasSuffix(m.Name, "_test.rego") {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("app: --policy-default %s: no .rego modules there", setting)
	}
	return out, nil
}

// auditDrift records a tool source's drift in the audit log.
func (a *App) auditDrift(d tools.Drift) {
	detail, _ := json.Marshal(d)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec := &audit.Record{Time: d.Detected, Kind: "tool", Target: d.Source, Source: d.Source, Edge: "server",
		Event: "drift", Decision: "held", Status: "drift", Reason: fmt.Sprintf("%d change(s) held back for review; previous tools stay in force", len(d.Changes)), Detail: detail}
	if _, err := a.audit.Append(ctx, rec); err != nil {
		a.logger.ErrorContext(ctx, "audit record of drift lost", "source", d.Source, "err", err)
	}
}

func (a *App) substrate() string {
	if a.bus.Embedded() {
		return "embedded"
	}
	return "external"
}

// Approvals are the parked calls awaiting people's decisions: register
// OnDecision here, before Run, to act on decisions.
func (a *App) Approvals() *approval.Store { return a.approvals }

// URL is the base URL the HTTP server answers on.
func (a *App) URL() string { return a.scheme() + "://" + a.listener.Addr().String() }

// AdminToken returns the admin token file's path and whether this start created it.
func (a *App) AdminToken() (path string, created bool) { return a.adminTokenPath, a.adminCreated }

// NATSURL is the embedded server's TCP URL, credentials included, when it
// listens, else "".
func (a *App) NATSURL() string { return a.bus.ClientURL() }

// Ready is closed once corral serves: resources are loaded.
func (a *App) Ready() <-chan struct{} { return a.ready }

// Run serves until ctx ends, then shuts down in order: stop accepting and
// drain in-flight requests, stop the registry's watch, close the substrate.
func (a *App) Run(ctx context.Context) error {
	defer a.bus.Close()
	defer func() {
		// Spans still batched go out before the substrate closes.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := a.tracing.Shutdown(sctx); err != nil {
			a.logger.WarnContext(ctx, "flushing traces", "err", err)
		}
	}()
	g, gctx := errgroup.WithContext(ctx)

	// The registry outlives the HTTP drain, so in-flight requests still read it.
	regCtx, stopRegistry := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRegistry()
	g.Go(func() error { return a.registry.Run(regCtx) })
	g.Go(func() error { return a.creds.Run(regCtx) })
	g.Go(func() error { return a.kill.Run(regCtx) })
	g.Go(func() error { return a.signer.Run(regCtx) })
	// Checkpoints of the audit chain; the last one, at shutdown, covers
	// what was written while requests drained.
	g.Go(func() error { return a.audit.Run(regCtx) })
	g.Go(func() error { return a.tasks.Run(regCtx) })
	g.Go(func() error { return a.approvals.Run(regCtx) })
	g.Go(func() error { return a.push.Run(gctx) })
	if a.worker != nil {
		// The worker stops taking work with the HTTP drain, and hands back
		// what it runs; the substrate stays up until it has.
		g.Go(func() error {
			if a.waitReady(gctx) != nil {
				return nil
			}
			return a.worker.Run(gctx)
		})
	}
	g.Go(func() error {
		if a.registry.WaitLoaded(regCtx) != nil {
			return nil
		}
		return a.catalog.Run(regCtx)
	})
	g.Go(func() error {
		if a.registry.WaitLoaded(regCtx) != nil {
			return nil
		}
		return a.models.Run(regCtx)
	})
	g.Go(func() error {
		if a.registry.WaitLoaded(regCtx) != nil {
			return nil
		}
		return a.budgets.Run(regCtx)
	})
	g.Go(func() error {
		if a.registry.WaitLoaded(regCtx) != nil {
			return nil
		}
		return a.limits.Run(regCtx)
	})
	// Policy and trusted issuers are built from the whole registry: a
	// partial one could miss a deny rule.
	g.Go(func() error {
		if a.registry.WaitLoaded(regCtx) != nil {
			return nil
		}
		return a.policies.Run(regCtx)
	})
	g.Go(func() error {
		if a.registry.WaitLoaded(regCtx) != nil {
			return nil
		}
		return a.issuers.Run(regCtx)
	})
	// Triggers take events once corral serves, and stop with the drain.
	g.Go(func() error {
		if a.waitReady(gctx) != nil {
			return nil
		}
		return a.triggers.Run(gctx)
	})
	g.Go(func() error {
		if a.waitReady(gctx) != nil {
			return nil // shutting down before ready
		}
		a.logger.InfoContext(ctx, "corral ready", "url", a.URL(), "version", a.cfg.Version, "substrate", a.substrate(),
			"data", a.cfg.DataDir, "sync_always", a.cfg.SyncAlways, "replicas", a.cfg.Replicas)
		close(a.ready)
		return nil
	})
	g.Go(func() error {
		if err := a.server.Serve(a.listener); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("app: serve http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		a.logger.InfoContext(ctx, "shutting down: draining requests")
		drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainTimeout)
		defer cancel()
		err := a.server.Shutdown(drainCtx)
		a.gateway.Close()  // shadow calls still running
		a.notifier.Close() // announcements still posting
		stopRegistry()
		if err != nil {
			return fmt.Errorf("app: drain http: %w", err)
		}
		return nil
	})
	return g.Wait()
}

// Health is the body of /healthz and /readyz.
type Health struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks,omitempty"`
}

func (a *App) healthz(w http.ResponseWriter, _ *http.Request) error {
	return problem.WriteJSON(w, http.StatusOK, Health{Status: "alive"})
}

// readyz answers 200 when the substrate answers and everything a call
// needs is loaded (the same condition that lets calls through), 503 naming
// the failing checks otherwise.
func (a *App) readyz(w http.ResponseWriter, r *http.Request) error {
	h := Health{Status: "ready", Checks: a.loading.checks()}
	h.Checks["substrate"] = "ok"
	status := http.StatusOK
	if err := a.bus.Ping(r.Context()); err != nil {
		a.logger.WarnContext(r.Context(), "not ready", "err", err)
		h.Checks["substrate"] = "unreachable"
		h.Status, status = "not ready", http.StatusServiceUnavailable
	}
	if !a.isReady() {
		h.Status, status = "not ready", http.StatusServiceUnavailable
	}
	return problem.WriteJSON(w, status, h)
}
