// Package upstream calls the HTTP services behind corral's tools: one client
// per upstream with keep-alive and timeouts, retries with backoff only for
// idempotent calls, a circuit breaker that makes calls fail fast while the
// upstream is down, a cap on the size of what it answers, and the caller's
// trace context passed on in a traceparent header.
package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/corral-dev/corral/internal/telemetry"
)

// Errors callers branch on; the gateway maps them to 503 upstream_unavailable,
// 504 upstream_timeout and 502 upstream_invalid.
var (
	// ErrUnavailable: the breaker is open, or the upstream cannot be reached.
	ErrUnavailable = errors.New("upstream unavailable")
	// ErrTimeout: the upstream did not answer in time.
	ErrTimeout = errors.New("upstream timed out")
	// ErrTooLarge: the answer exceeds the size cap.
	ErrTooLarge = errors.New("upstream response too large")
	// ErrInvalidRequest: the request cannot be sent as it is (a header
	// value with control characters); the caller's fault, not the upstream's.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrNotSent is wrapped, beside another error, when the request
	// certainly never reached the upstream (breaker open, connection
	// refused, invalid request), so a caller may safely try it again.
	ErrNotSent = errors.New("request not sent")
)

// Config describes one upstream. Zero values take the defaults in New.
type Config struct {
	Name             string
	Timeout          time.Duration // per attempt; default 30s
	MaxResponseBytes int64         // default 10 MiB
	MaxRetries       int           // idempotent calls only; default 2; negative for none
	Backoff          time.Duration // before the first retry, doubling; default 100ms
	BreakerFailures  int           // consecutive failures that open the breaker; default 5
	BreakerCooldown  time.Duration // how long it stays open; default 10s
	// OnBreakerChange, if set, is told of every breaker state change (for
	// metrics and logs). It runs with the breaker locked: keep it short.
	OnBreakerChange func(name string, from, to State)
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Client calls one upstream. It is safe for concurrent use.
type Client struct {
	cfg     Config
	http    *http.Client
	breaker *breaker
}

// New returns a client for one upstream, with its own connection pool.
func New(cfg Config) *Client {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 10 << 20
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 2
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 100 * time.Millisecond
	}
	if cfg.BreakerFailures <= 0 {
		cfg.BreakerFailures = 5
	}
	if cfg.BreakerCooldown <= 0 {
		cfg.BreakerCooldown = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64 // keep-alive for a busy upstream, not 2
	b := &breaker{threshold: cfg.BreakerFailures, cooldown: cfg.BreakerCooldown, now: cfg.Now}
	if cfg.OnBreakerChange != nil {
		b.onChange = func(from, to State) { cfg.OnBreakerChange(cfg.Name, from, to) }
	}
	return &Client{cfg: cfg, breaker: b, http: &http.Client{
		// Each attempt carries the caller's trace context (traceparent) and,
		// when the caller's span records, gets a client span of its own.
		Transport: telemetry.Transport(transport),
		// A redirect is the upstream's answer, not an instruction: following
		// it could carry the credentials corral adds to another host.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Request is one call. Body is bytes, not a reader, so that a retry can send
// it again.
type Request struct {
	Method     string
	URL        string
	Header     http.Header
	Body       []byte
	Idempotent bool // may be retried: GET, PUT, DELETE, or as the tool declares
}

// Response is what the upstream answered, read in full.
type Response struct {
	Status   int
	Header   http.Header
	Body     []byte
	Attempts int
}

// BreakerState reports the breaker's state, for metrics and readiness.
func (c *Client) BreakerState() State { return c.breaker.current() }

// Do sends the request. A 5xx answer is returned as a Response, not an
// error, but counts against the breaker and is retried when idempotent.
func (c *Client) Do(ctx context.Context, r Request) (*Response, error) {
	attempts := 1
	if r.Idempotent && c.cfg.MaxRetries > 0 {
		attempts += c.cfg.MaxRetries
	}
	var (
		resp *Response
		err  error
	)
	for name, values := range r.Header {
		for _, v := range values {
			if !validHeaderValue(v) {
				return nil, fmt.Errorf("%s: header %s: control characters are not allowed: %w: %w", c.cfg.Name, name, ErrInvalidRequest, ErrNotSent)
			}
		}
	}
	backoff := c.cfg.Backoff
	for i := 1; i <= attempts; i++ {
		if !c.breaker.allow() {
			return nil, fmt.Errorf("%s: circuit breaker open: %w: %w", c.cfg.Name, ErrUnavailable, ErrNotSent)
		}
		resp, err = c.attempt(ctx, r)
		if ctx.Err() != nil {
			// The caller gave up: that says nothing about the upstream.
			c.breaker.release()
			return nil, fmt.Errorf("%s: %w", c.cfg.Name, ctx.Err())
		}
		failed := err != nil && !errors.Is(err, ErrTooLarge) || resp != nil && resp.Status >= 500
		c.breaker.done(!failed)
		if resp != nil {
			resp.Attempts = i
		}
		if !failed || i == attempts {
			break
		}
		// Full jitter keeps retrying clients from arriving in step.
		wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		backoff *= 2
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w", c.cfg.Name, ctx.Err())
		case <-time.After(wait):
		}
	}
	return resp, err
}

func (c *Client) attempt(ctx context.Context, r Request) (*Response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, body)
	if err != nil {
		return nil, fmt.Errorf("%s: build request: %w", c.cfg.Name, err)
	}
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.classify(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxResponseBytes+1))
	if err != nil {
		return nil, c.classify(ctx, err)
	}
	if int64(len(data)) > c.cfg.MaxResponseBytes {
		return nil, fmt.Errorf("%s: answer over %d bytes: %w", c.cfg.Name, c.cfg.MaxResponseBytes, ErrTooLarge)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// classify turns a transport error into ErrTimeout or ErrUnavailable, and
// marks a failure to connect as ErrNotSent.
func (c *Client) classify(ctx context.Context, err error) error {
	var netErr net.Error
	if ctx.Err() != nil || errors.As(err, &netErr) && netErr.Timeout() {
		return fmt.Errorf("%s: %w: %v", c.cfg.Name, ErrTimeout, err)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return fmt.Errorf("%s: %w: %w: %v", c.cfg.Name, ErrUnavailable, ErrNotSent, err)
	}
	return fmt.Errorf("%s: %w: %v", c.cfg.Name, ErrUnavailable, err)
}

// validHeaderValue reports whether v can be sent as a header value: no
// control characters but tab (RFC 9110, section 5.5).
func validHeaderValue(v string) bool {
	for i := range len(v) {
		if b := v[i]; b < 0x20 && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}

// Close closes the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }
