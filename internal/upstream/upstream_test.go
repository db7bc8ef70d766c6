package upstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// upstreamServer answers with status (an atomic, so a test can change it)
// and counts calls and new connections.
type upstreamServer struct {
	*httptest.Server
	status atomic.Int32
	calls  atomic.Int32
	conns  atomic.Int32
}

func newUpstream(t *testing.T, handler http.HandlerFunc) *upstreamServer {
	t.Helper()
	u := &upstreamServer{}
	u.status.Store(200)
	if handler == nil {
		handler = func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(int(u.status.Load()))
			_, _ = w.Write([]byte(`{"ok":true}`))
		}
	}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.calls.Add(1)
		handler(w, r)
	}))
	u.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.conns.Add(1)
		}
	}
	u.Start()
	t.Cleanup(u.Close)
	return u
}

func TestKeepAlive(t *testing.T) {
	u := newUpstream(t, nil)
	c := New(Config{Name: "erp"})
	for range 5 {
		resp, err := c.Do(t.Context(), Request{Method: "GET", URL: u.URL, Idempotent: true})
		if err != nil || resp.Status != 200 || string(resp.Body) != `{"ok":true}` {
			t.Fatalf("Do = %+v, %v, want 200", resp, err)
		}
	}
	if n := u.conns.Load(); n != 1 {
		t.Errorf("5 sequential calls opened %d connections, want 1 (keep-alive)", n)
	}
}

func TestRetriesOnlyIdempotentCalls(t *testing.T) {
	tests := []struct {
		name         string
		idempotent   bool
		wantAttempts int32
	}{
		{"idempotent retried", true, 3},
		{"not idempotent sent once", false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream(t, nil)
			u.status.Store(503)
			c := New(Config{Name: "erp", Backoff: time.Millisecond})
			resp, err := c.Do(t.Context(), Request{Method: "PUT", URL: u.URL, Body: []byte(`{}`), Idempotent: tt.idempotent})
			if err != nil || resp.Status != 503 {
				t.Fatalf("Do = %+v, %v, want the 503 answer", resp, err)
			}
			if got := u.calls.Load(); got != tt.wantAttempts || int32(resp.Attempts) != tt.wantAttempts {
				t.Errorf("upstream saw %d calls (Attempts %d), want %d", got, resp.Attempts, tt.wantAttempts)
			}
		})
	}
}

func TestRetrySucceeds(t *testing.T) {
	var n atomic.Int32
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.WriteHeader(502)
			return
		}
		body := make([]byte, 2)
		_, _ = r.Body.Read(body)
		_, _ = w.Write(body) // the body was sent again
	})
	c := New(Config{Name: "erp", Backoff: time.Millisecond})
	resp, err := c.Do(t.Context(), Request{Method: "PUT", URL: u.URL, Body: []byte("hi"), Idempotent: true})
	if err != nil || resp.Status != 200 || string(resp.Body) != "hi" || resp.Attempts != 2 {
		t.Errorf("Do = %+v, %v, want 200 echoing the body on the second attempt", resp, err)
	}
}

func TestResponseSizeCap(t *testing.T) {
	u := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", 1025)))
	})
	c := New(Config{Name: "erp", MaxResponseBytes: 1024})
	if _, err := c.Do(t.Context(), Request{Method: "GET", URL: u.URL, Idempotent: true}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Do(1025 bytes, cap 1024) err = %v, want ErrTooLarge", err)
	}
	if got := u.calls.Load(); got != 1 {
		t.Errorf("a too-large answer was retried: %d calls, want 1", got)
	}
}

func TestTimeout(t *testing.T) {
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers in time
	})
	c := New(Config{Name: "slow", Timeout: 50 * time.Millisecond, MaxRetries: -1})
	if _, err := c.Do(t.Context(), Request{Method: "GET", URL: u.URL, Idempotent: true}); !errors.Is(err, ErrTimeout) {
		t.Errorf("Do(slow upstream) err = %v, want ErrTimeout", err)
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	c := New(Config{Name: "gone", MaxRetries: -1})
	if _, err := c.Do(t.Context(), Request{Method: "GET", URL: url}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Do(closed port) err = %v, want ErrUnavailable", err)
	}
}

// TestBreaker: failures open the breaker, calls then fail fast without
// reaching the upstream, and after the cool-down one probe closes it again
// once the upstream is back.
func TestBreaker(t *testing.T) {
	u := newUpstream(t, nil)
	u.status.Store(500)
	clock := &fakeClock{now: time.Unix(0, 0)}
	var changes []string
	c := New(Config{Name: "erp", MaxRetries: -1, BreakerFailures: 3, BreakerCooldown: 10 * time.Second, Now: clock.Now,
		OnBreakerChange: func(name string, from, to State) { changes = append(changes, name+":"+from.String()+">"+to.String()) }})
	call := func() error {
		_, err := c.Do(t.Context(), Request{Method: "GET", URL: u.URL})
		return err
	}
	for range 3 {
		if err := call(); err != nil {
			t.Fatalf("a 500 answer is a response, not an error: %v", err)
		}
	}
	if c.BreakerState() != Open {
		t.Fatalf("after 3 failures the breaker is %v, want open", c.BreakerState())
	}
	before := u.calls.Load()
	if err := call(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("call while open err = %v, want ErrUnavailable", err)
	}
	if u.calls.Load() != before {
		t.Error("a call while open reached the upstream")
	}

	// Still down after the cool-down: the probe fails and it opens again.
	clock.Advance(10 * time.Second)
	if err := call(); err != nil {
		t.Fatal(err)
	}
	if c.BreakerState() != Open {
		t.Errorf("after a failed probe the breaker is %v, want open", c.BreakerState())
	}

	// Back up: the next probe closes it.
	u.status.Store(200)
	clock.Advance(10 * time.Second)
	if err := call(); err != nil {
		t.Fatal(err)
	}
	if c.BreakerState() != Closed {
		t.Errorf("after a good probe the breaker is %v, want closed", c.BreakerState())
	}
	want := "erp:closed>open erp:open>half-open erp:half-open>open erp:open>half-open erp:half-open>closed"
	if got := strings.Join(changes, " "); got != want {
		t.Errorf("breaker changes = %s, want %s", got, want)
	}
}

func TestCallerCancelDoesNotTrip(t *testing.T) {
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	c := New(Config{Name: "erp", BreakerFailures: 1, MaxRetries: -1})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Do(ctx, Request{Method: "GET", URL: u.URL}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Do with the caller's deadline err = %v, want it passed on", err)
	}
	if c.BreakerState() != Closed {
		t.Errorf("the caller giving up tripped the breaker: %v", c.BreakerState())
	}
}

func TestRedirectsAreAnswersAndControlCharactersRefused(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/steal", http.StatusFound)
	}))
	defer up.Close()
	c := New(Config{Name: "t", BreakerFailures: 1})
	resp, err := c.Do(t.Context(), Request{Method: "GET", URL: up.URL, Header: http.Header{"X-Api-Key": {"s3cret"}}})
	if err != nil || resp.Status != http.StatusFound || elsewhere.Load() != 0 {
		t.Errorf("Do against a redirect = %v, %v (other host hit %d times); want the 302 itself", resp, err, elsewhere.Load())
	}
	_, err = c.Do(t.Context(), Request{Method: "GET", URL: up.URL, Header: http.Header{"X-Tenant": {"a\r\nX-Evil: 1"}}, Idempotent: true})
	if !errors.Is(err, ErrInvalidRequest) || !errors.Is(err, ErrNotSent) {
		t.Errorf("Do with CR/LF in a header: err = %v, want ErrInvalidRequest and ErrNotSent", err)
	}
	if got := c.BreakerState(); got != Closed {
		t.Errorf("breaker after a refused request = %v, want closed: the caller's mistake is not the upstream's failure", got)
	}
}

func TestConnectionRefusedIsNotSent(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err := New(Config{Name: "t", MaxRetries: -1}).Do(t.Context(), Request{Method: "POST", URL: url})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrNotSent) {
		t.Errorf("Do against a closed port: err = %v, want ErrUnavailable and ErrNotSent", err)
	}
}

// TestPropagatesTraceContext: every attempt of a call carries the caller's
// trace in traceparent, under a client span of its own.
func TestPropagatesTraceContext(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Traceparent"))
		n := len(seen)
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusBadGateway) // retried: the call is idempotent
		}
	})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("test").Start(t.Context(), "invoke")
	c := New(Config{Name: "crm", Backoff: time.Millisecond})
	defer c.Close()
	resp, err := c.Do(ctx, Request{Method: "GET", URL: u.URL + "/orders/7", Idempotent: true})
	span.End()
	if err != nil || resp.Status != 200 || resp.Attempts != 2 {
		t.Fatalf("Do = %+v, %v; want 200 after 2 attempts", resp, err)
	}
	traceID := span.SpanContext().TraceID().String()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] == seen[1] {
		t.Fatalf("upstream saw traceparents %q, want two, one per attempt", seen)
	}
	for _, tp := range seen {
		if !strings.HasPrefix(tp, "00-"+traceID+"-") {
			t.Errorf("upstream saw traceparent %q, want trace %s", tp, traceID)
		}
	}
	if ended := rec.Ended(); len(ended) != 3 || ended[0].Name() != "GET" || ended[0].Parent().SpanID() != span.SpanContext().SpanID() {
		t.Errorf("recorded %d spans, want two GET client spans under invoke, then invoke", len(ended))
	}
}
