// Package mcpsource makes an MCP server a tool source: corral connects as an
// MCP client, over Streamable HTTP or by starting the server and speaking to
// it over stdio, lists its tools, follows changes to the list and calls them.
package mcpsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/telemetry"
	"github.com/corral-dev/corral/internal/tools"
	"github.com/corral-dev/corral/internal/upstream"
)

// Reconnect backoff: the first attempt after a session is lost is
// immediate, later ones wait minBackoff, doubling up to maxBackoff. A
// stdio session that ends within healthyAfter of its connect counts as a failed
// attempt, so that a server that connects and then dies (a stdio server
// writing garbage) is restarted ever more slowly, not at once forever; one
// that lived longer resets the count.
const (
	minBackoff   = 100 * time.Millisecond
	maxBackoff   = 30 * time.Second
	healthyAfter = 30 * time.Second
)

// relistWindow spaces re-lists asked for by notifications/tools/list_changed:
// one at once, then at most one per window, however many notifications come
// (a flood of them cost 1.5 cores re-listing).
const relistWindow = time.Second

var (
	_ tools.Factory = New
	_ tools.Drifter = (*Source)(nil)
)

// Source is one MCP server's tools. It keeps one MCP session, reconnecting
// (and for stdio restarting the server) when the session is lost. It is
// safe for concurrent use.
type Source struct {
	name    string
	timeout time.Duration
	refresh time.Duration
	env     tools.Env
	log     *slog.Logger
	// overrides are spec.Overrides: annotation changes by MCP tool name.
	overrides map[string]config.ToolOverride
	client    *mcp.Client
	// transport returns a new transport for each connect.
	transport func() mcp.Transport
	// idle closes the HTTP client's idle connections; nil for stdio.
	idle  func()
	stdio bool

	force  atomic.Pointer[inForce]
	drift  atomic.Pointer[tools.Drift]
	listMu sync.Mutex // serialises list-and-install, so an older list never replaces a newer one
	// pins and onDrift are Options'; adoptChanges is spec.mcp.adoptChanges;
	// from names the server in pins and drift.
	pins         Pins
	onDrift      func(tools.Drift)
	adoptChanges bool
	from         string

	// relist is signalled on notifications/tools/list_changed, lost when
	// the session ends by itself; the background loop answers both.
	relist chan struct{}
	lost   chan struct{}

	mu         sync.Mutex
	session    *mcp.ClientSession // nil while disconnected
	dialing    chan struct{}      // non-nil while a connect runs; closed when it ends
	cancelDial context.CancelFunc
	failures   int       // consecutive failed connects and short-lived sessions
	connected  time.Time // when the current session was made
	retryAt    time.Time // no new connect before this
	lastErr    error     // why the last connect failed
	closed     bool

	stop context.CancelFunc // stops the background loop
	wg   sync.WaitGroup     // the loop, connects and session watchers
}

// New connects to the MCP server spec.MCP declares, lists its tools, and
// returns the source, with no pins (Factory takes Options). If the first
// connect or list fails it returns an error wrapping
// upstream.ErrUnavailable, and the caller retries.
func New(ctx context.Context, name string, spec *config.ToolSourceSpec, env tools.Env) (tools.Source, error) {
	return build(ctx, name, spec, env, Options{})
}

func build(ctx context.Context, name string, spec *config.ToolSourceSpec, env tools.Env, opts Options) (tools.Source, error) {
	if spec == nil || spec.MCP == nil {
		return nil, fmt.Errorf("mcpsource: %s: spec.mcp is not set", name)
	}
	m := spec.MCP
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "mcpsource", "source", name)
	s := &Source{
		name:      name,
		timeout:   spec.TimeoutOrDefault(),
		refresh:   spec.RefreshOrDefault(),
		env:       env,
		log:       log,
		overrides: spec.Overrides,
		relist:    make(chan struct{}, 1),
		lost:      make(chan struct{}, 1),

		pins:         opts.Pins,
		onDrift:      opts.OnDrift,
		adoptChanges: m.AdoptChanges,
		from:         m.URL,
	}
	if m.URL == "" {
		s.from = strings.Join(m.Command, " ")
	}
	switch {
	case m.URL != "" && len(m.Command) == 0:
		base := http.DefaultTransport.(*http.Transport).Clone()
		s.idle = base.CloseIdleConnections
		endpoint, err := url.Parse(m.URL)
		if err != nil {
			return nil, fmt.Errorf("mcpsource: %s: spec.mcp.url: %w", name, err)
		}
		// telemetry.Transport passes the call's trace context on (traceparent).
		rt := &authRoundTripper{base: telemetry.Transport(base), host: endpoint.Host, headers: m.Headers, auth: spec.Auth, secret: env.Secret}
		if spec.Identity.Enabled() {
			rt.identityHeader = spec.Identity.HeaderOr()
		}
		s.transport = httpTransport(m.URL, &http.Client{Transport: &limitTransport{base: rt, limit: maxResult}})
	case m.URL == "" && len(m.Command) > 0:
		s.transport = commandTransport(m.Command, m.Env, log)
		s.stdio = true
	default:
		return nil, fmt.Errorf("mcpsource: %s: set exactly one of spec.mcp.url and spec.mcp.command", name)
	}
	s.client = mcp.NewClient(&mcp.Implementation{Name: "corral"}, &mcp.ClientOptions{
		Logger: log,
		// The SDK delivers notifications on its reading goroutine: listing
		// from here would wait on that same goroutine, so hand it over.
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			signal(s.relist)
		},
		// corral offers no roots, sampling or elicitation to servers.
		Capabilities: &mcp.ClientCapabilities{},
	})

	dctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	cs, err := s.dial(dctx)
	if err != nil {
		if s.idle != nil {
			s.idle()
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("mcpsource: %s: connect: %w", name, ctx.Err())
		}
		// %v: a timeout here is the source's, not the caller's deadline.
		return nil, fmt.Errorf("mcpsource: %s: connect: %w: %v", name, upstream.ErrUnavailable, err)
	}
	s.session, s.connected = cs, time.Now()
	loopCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = stop
	s.wg.Go(func() { s.watch(cs) })
	s.wg.Go(func() { s.run(loopCtx) })
	return s, nil
}

// Tools returns the tools in force, named "<source>.<tool>": the server's
// last list, unless a new tool or a changed annotation in it is held back.
func (s *Source) Tools() []tools.Tool {
	if p := s.force.Load(); p != nil {
		return p.tools
	}
	return nil
}

// Close ends the session (for stdio, stops the server process), stops the
// background loop and waits for everything the source started. It is safe
// to call more than once.
func (s *Source) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	cs := s.session
	s.session = nil
	if s.cancelDial != nil {
		s.cancelDial()
	}
	s.mu.Unlock()

	s.stop()
	if cs != nil {
		// A server that exits uncleanly when told to stop is its own
		// affair: the session is gone either way.
		if err := cs.Close(); err != nil {
			s.log.Debug("mcp session close", "error", err)
		}
	}
	s.wg.Wait()
	if s.idle != nil {
		s.idle()
	}
	return nil
}

// run is the background loop: it re-lists on list_changed and every
// refresh, and reconnects when the session is lost, with backoff.
func (s *Source) run(ctx context.Context) {
	var tick <-chan time.Time
	if s.refresh > 0 {
		t := time.NewTicker(s.refresh)
		defer t.Stop()
		tick = t.C
	}
	var retry, due <-chan time.Time
	gate := relistGate{window: relistWindow}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.relist:
			if wait, later := gate.ask(time.Now()); later {
				if due == nil {
					due = time.After(wait)
				}
				continue
			}
		case <-due:
		case <-tick:
		case <-s.lost:
		case <-retry:
		}
		due = nil
		gate.ran(time.Now())
		s.relistNow(ctx)
		retry = nil
		if d, ok := s.reconnectIn(); ok {
			retry = time.After(d)
		}
	}
}

// relistGate spaces re-lists: a list_changed within window of the last
// re-list waits for the end of the window, where one re-list serves every
// notification that came meanwhile.
type relistGate struct {
	window time.Duration
	last   time.Time
}

// ask reports how long a re-list asked for at now must wait, and whether
// it must wait at all.
func (g *relistGate) ask(now time.Time) (time.Duration, bool) {
	wait := g.last.Add(g.window).Sub(now)
	return wait, !g.last.IsZero() && wait > 0
}

// ran records a re-list at now.
func (g *relistGate) ran(now time.Time) { g.last = now }

// relistNow lists the tools again, connecting first if the session was
// lost (a connect lists the tools itself).
func (s *Source) relistNow(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	cs, fresh, err := s.current(ctx)
	if err != nil || fresh {
		return // a failed connect was logged where it failed
	}
	if err := s.list(ctx, cs); err != nil {
		if s.lostSession(err) {
			s.drop(cs, err)
		}
		s.log.WarnContext(ctx, "mcp tools/list failed; keeping the previous tools", "error", err)
	}
}

// reconnectIn reports, while there is no session, how long until the next
// connect may be tried.
func (s *Source) reconnectIn() (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.session != nil || s.dialing != nil {
		return 0, false
	}
	return max(0, time.Until(s.retryAt)), true
}

// current returns the live session, connecting if there is none; fresh
// reports that this call's connect made it (and so listed the tools just
// now). Concurrent callers share one connect. Within the backoff after a
// failed connect it fails at once, wrapping upstream.ErrUnavailable.
func (s *Source) current(ctx context.Context) (cs *mcp.ClientSession, fresh bool, err error) {
	started := false
	for {
		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			return nil, false, fmt.Errorf("mcpsource: %s: %w: source closed", s.name, upstream.ErrUnavailable)
		case s.session != nil:
			cs := s.session
			s.mu.Unlock()
			return cs, started, nil
		case s.dialing == nil:
			if wait := time.Until(s.retryAt); wait > 0 {
				err := s.lastErr
				s.mu.Unlock()
				return nil, false, fmt.Errorf("mcpsource: %s: %w: reconnecting in %v after: %v", s.name, upstream.ErrUnavailable, wait.Round(time.Millisecond), err)
			}
			s.startDialLocked()
			started = true
		}
		ch := s.dialing
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// startDialLocked connects in a goroutine of its own, so that a caller who
// gives up does not abandon a half-made session. The caller holds mu.
func (s *Source) startDialLocked() {
	ch := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	s.dialing, s.cancelDial = ch, cancel
	s.wg.Go(func() {
		defer cancel()
		cs, err := s.dial(ctx)
		s.mu.Lock()
		s.dialing, s.cancelDial = nil, nil
		closed := s.closed
		switch {
		case err == nil && !closed:
			if s.failures > 0 {
				s.log.InfoContext(ctx, "mcp server reconnected", "failed_attempts", s.failures)
			}
			s.session, s.connected, s.lastErr = cs, time.Now(), nil
			s.wg.Go(func() { s.watch(cs) })
		case err != nil && !closed:
			s.failures++
			wait := backoff(s.failures)
			s.retryAt, s.lastErr = time.Now().Add(wait), err
			s.log.WarnContext(ctx, "mcp server unreachable", "error", err, "attempt", s.failures, "retry_in", wait)
			// Whoever started this connect, the background loop schedules
			// the next one.
			signal(s.lost)
		}
		close(ch)
		s.mu.Unlock()
		if err == nil && closed {
			_ = cs.Close()
		}
	})
}

// backoff is the wait after the n-th consecutive failed connect, with
// jitter so that replicas do not reconnect in step.
func backoff(n int) time.Duration {
	d := minBackoff << min(n-1, 16)
	d = min(d, maxBackoff)
	return d/2 + rand.N(d/2+1)
}

// dial opens a session and lists the tools on it.
func (s *Source) dial(ctx context.Context) (*mcp.ClientSession, error) {
	cs, err := s.client.Connect(ctx, s.transport(), nil)
	if err != nil {
		return nil, err
	}
	if err := s.list(ctx, cs); err != nil {
		_ = cs.Close()
		return nil, err
	}
	return cs, nil
}

// watch waits for a session to end, so that one that ends by itself (the
// server went away, the process exited) is replaced without waiting for a
// call to find out.
func (s *Source) watch(cs *mcp.ClientSession) {
	s.drop(cs, cs.Wait())
}

// drop forgets cs if it is the current session, closes it, and has the
// background loop reconnect.
func (s *Source) drop(cs *mcp.ClientSession, why error) {
	s.mu.Lock()
	current := s.session == cs && !s.closed
	var wait time.Duration
	failures := 0
	if current {
		s.session = nil
		wait = s.lostLocked(why)
		failures = s.failures
	}
	s.mu.Unlock()
	if current {
		s.log.Info("mcp session lost", "error", why, "failures", failures, "reconnect_in", wait)
		signal(s.lost)
	}
	_ = cs.Close() // idempotent; for stdio it reaps the process
}

// lostLocked counts a stdio session that ended before it proved healthy
// as a failure: the first reconnect after it is immediate, later ones back
// off. (Over HTTP a lost session is mostly a restarted server answering
// 404 for it, and a failed connect already backs off.) It returns the wait
// before the next connect. The caller holds mu.
func (s *Source) lostLocked(why error) time.Duration {
	if !s.stdio || time.Since(s.connected) >= healthyAfter {
		s.failures = 0
		return 0
	}
	s.failures++
	s.lastErr = why
	if s.failures == 1 {
		return 0
	}
	wait := backoff(s.failures - 1)
	s.retryAt = time.Now().Add(wait)
	return wait
}

// lostSession reports whether err means the session is gone for good, so
// that only a new one can carry on. Over stdio, the end of the pipes means
// the process exited; over HTTP an EOF may be one dropped connection, and
// only the SDK's verdict counts.
func (s *Source) lostSession(err error) bool {
	if errors.Is(err, mcp.ErrConnectionClosed) || errors.Is(err, mcp.ErrSessionMissing) {
		return true
	}
	return s.stdio && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed))
}

// undelivered reports whether a failed request certainly did not reach the
// server, so that sending it again cannot repeat its effect.
func (s *Source) undelivered(err error) bool {
	return errors.Is(err, mcp.ErrSessionMissing) || (s.stdio && errors.Is(err, syscall.EPIPE))
}

// signal wakes whoever waits on ch, without blocking: one pending signal
// is as good as many.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
