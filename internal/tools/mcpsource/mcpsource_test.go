package mcpsource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/tools"
	"github.com/corral-dev/corral/internal/tools/sourcetest"
	"github.com/corral-dev/corral/internal/upstream"
)

// waitFor bounds how long a test waits for something that should happen
// at once; it only matters when the test is about to fail. It is long
// because CI runs every package at once with the race detector on two cores.
const waitFor = time.Minute

func TestMain(m *testing.M) {
	code := m.Run()
	if serverDir != "" {
		os.RemoveAll(serverDir)
	}
	os.Exit(code)
}

var (
	buildMu   sync.Mutex
	serverDir string
	built     = map[string]string{} // package dir -> binary
)

// stdioServer builds testdata/server once per package run and returns the
// binary's path.
func stdioServer(t *testing.T) string { return testBinary(t, "server") }

// testBinary builds testdata/<name> once per package run and returns the
// binary's path.
func testBinary(t *testing.T, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := built[name]; ok {
		return bin
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to build the test server: %v", err)
	}
	if serverDir == "" {
		if serverDir, err = os.MkdirTemp("", "mcpsource-test-"); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(serverDir, name)
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	if out, err := exec.Command(goBin, "build", "-o", bin, "./testdata/"+name).CombinedOutput(); err != nil {
		t.Fatalf("go build ./testdata/%s: %v\n%s", name, err, out)
	}
	built[name] = bin
	return bin
}

type echoIn struct {
	Text string `json:"text"`
}

type slowIn struct {
	Ms int `json:"ms"`
}

type slowOut struct {
	OK bool `json:"ok"`
}

// newServer returns an MCP server with sourcetest's standard tools, and key,
// which answers the idempotency key it received. It hands out two tools per
// page, so that listing needs cursors. Calls to slow also end when done is
// closed.
func newServer(done <-chan struct{}) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "mcpsource-test"}, &mcp.ServerOptions{PageSize: 2})
	mcp.AddTool(s, &mcp.Tool{
		Name:        "echo",
		Title:       "Echo",
		Description: "Answers the text it is given.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true},
	}, func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, echoIn, error) {
		return nil, in, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "fail", Description: "Always fails."},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return nil, nil, errors.New("failing as asked")
		})
	mcp.AddTool(s, &mcp.Tool{Name: "slow", Description: "Waits ms milliseconds."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in slowIn) (*mcp.CallToolResult, slowOut, error) {
			select {
			case <-time.After(time.Duration(in.Ms) * time.Millisecond):
				return nil, slowOut{OK: true}, nil
			case <-ctx.Done():
				return nil, slowOut{}, ctx.Err()
			case <-done:
				return nil, slowOut{}, errors.New("server stopping")
			}
		})
	mcp.AddTool(s, &mcp.Tool{Name: "key", Description: "Answers the idempotency key."},
		func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, map[string]any, error) {
			return nil, map[string]any{"key": req.Params.GetMeta()[IdempotencyKeyMeta]}, nil
		})
	return s
}

// serve serves s over Streamable HTTP on 127.0.0.1, through wrap if set.
func serve(t *testing.T, s *mcp.Server, wrap func(http.Handler) http.Handler) *httptest.Server {
	t.Helper()
	var h http.Handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts
}

// serveNew serves a new newServer. Its slow calls end when the test does:
// a call the client abandoned may still run on the server (the SDK does not
// always deliver the cancellation before the session closes), and closing
// the test server would wait for it.
func serveNew(t *testing.T, wrap func(http.Handler) http.Handler) (*mcp.Server, *httptest.Server) {
	t.Helper()
	done := make(chan struct{})
	s := newServer(done)
	ts := serve(t, s, wrap)
	t.Cleanup(func() { close(done) }) // before ts.Close, which was registered first
	return s, ts
}

// testEnv logs to the test's output at debug level, also into buf if set.
func testEnv(t *testing.T, buf *syncBuffer) tools.Env {
	w := t.Output()
	if buf != nil {
		w = io.MultiWriter(w, buf)
	}
	return tools.Env{Logger: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))}
}

// open builds a source and closes it when the test ends.
func open(t *testing.T, name string, spec *config.ToolSourceSpec, env tools.Env) *Source {
	t.Helper()
	src, err := New(t.Context(), name, spec, env)
	if err != nil {
		t.Fatalf("New(%s) error: %v", name, err)
	}
	t.Cleanup(func() {
		if err := src.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return src.(*Source)
}

func httpFixture(t *testing.T) tools.Source {
	_, ts := serveNew(t, nil)
	return open(t, "t", &config.ToolSourceSpec{MCP: &config.MCPSource{URL: ts.URL}}, testEnv(t, nil))
}

func stdioFixture(t *testing.T) tools.Source {
	spec := &config.ToolSourceSpec{MCP: &config.MCPSource{Command: []string{stdioServer(t)}}}
	return open(t, "t", spec, testEnv(t, nil))
}

func TestConformanceHTTP(t *testing.T) {
	sourcetest.Run(t, httpFixture)
}

func TestConformanceStdio(t *testing.T) {
	sourcetest.Run(t, stdioFixture)
}

func TestListChanged(t *testing.T) {
	srv, ts := serveNew(t, nil)
	changed := make(chan struct{}, 1)
	env := testEnv(t, nil)
	env.Changed = func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	// adoptChanges: the new tool is taken into force, not held as drift.
	src := open(t, "t", &config.ToolSourceSpec{MCP: &config.MCPSource{URL: ts.URL, AdoptChanges: true}}, env)
	if slices.Contains(toolNames(src), "t.added") {
		t.Fatalf("Tools() = %v before the server added t.added", toolNames(src))
	}

	mcp.AddTool(srv, &mcp.Tool{Name: "added", Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "added"}}}, nil, nil
		})
	select {
	case <-changed:
	case <-time.After(waitFor):
		t.Fatalf("env.Changed not called within %v of the server adding a tool", waitFor)
	}
	if !slices.Contains(toolNames(src), "t.added") {
		t.Fatalf("Tools() = %v after list_changed, want t.added among them", toolNames(src))
	}
	res, err := src.Call(t.Context(), tools.Call{Tool: findTool(t, src, "t.added")})
	if err != nil {
		t.Fatalf("Call(t.added) error: %v", err)
	}
	if diff := cmp.Diff([]any{map[string]any{"type": "text", "text": "added"}}, decode(t, res.Content)); diff != "" {
		t.Errorf("Call(t.added) Content mismatch (-want +got):\n%s", diff)
	}

	srv.RemoveTools("added")
	select {
	case <-changed:
	case <-time.After(waitFor):
		t.Fatalf("env.Changed not called within %v of the server removing a tool", waitFor)
	}
	if slices.Contains(toolNames(src), "t.added") {
		t.Errorf("Tools() = %v after the server removed t.added", toolNames(src))
	}
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name   string
		auth   *config.UpstreamAuth
		header string // where the credential arrives
		want   func(secret string) string
	}{
		{
			name:   "bearer",
			auth:   &config.UpstreamAuth{Bearer: &config.SecretValue{SecretRef: "cred"}},
			header: "Authorization",
			want:   func(s string) string { return "Bearer " + s },
		},
		{
			name:   "apiKey",
			auth:   &config.UpstreamAuth{APIKey: &config.APIKeyAuth{Header: "X-Api-Key", Value: config.SecretValue{Env: "CRED"}}},
			header: "X-Api-Key",
			want:   func(s string) string { return s },
		},
		{
			name:   "basic",
			auth:   &config.UpstreamAuth{Basic: &config.BasicAuth{Username: "corral", Password: config.SecretValue{SecretRef: "cred"}}},
			header: "Authorization",
			want: func(s string) string {
				r, _ := http.NewRequest(http.MethodGet, "/", nil)
				r.SetBasicAuth("corral", s)
				return r.Header.Get("Authorization")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			secret := "first-secret-value"
			current := func() string {
				mu.Lock()
				defer mu.Unlock()
				return secret
			}
			// The server refuses any request without the current
			// credential and the static header, so a call that succeeds
			// proves both arrived.
			_, ts := serveNew(t, func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if got, want := r.Header.Get(tt.header), tt.want(current()); got != want {
						http.Error(w, "wrong credential", http.StatusUnauthorized)
						return
					}
					if got := r.Header.Get("X-Static"); got != "static-header-value" {
						http.Error(w, "missing static header", http.StatusBadRequest)
						return
					}
					next.ServeHTTP(w, r)
				})
			})
			var logs syncBuffer
			env := testEnv(t, &logs)
			env.Secret = func(_ context.Context, ref config.SecretValue) (string, error) {
				if ref.SecretRef != "cred" && ref.Env != "CRED" {
					return "", fmt.Errorf("no secret %+v", ref)
				}
				return current(), nil
			}
			spec := &config.ToolSourceSpec{
				MCP:  &config.MCPSource{URL: ts.URL, Headers: map[string]string{"X-Static": "static-header-value"}},
				Auth: tt.auth,
			}
			src := open(t, "t", spec, env)
			echo(t, src, "with the first secret")

			mu.Lock()
			secret = "rotated-secret-value"
			mu.Unlock()
			echo(t, src, "with the rotated secret")

			for _, v := range []string{"first-secret-value", "rotated-secret-value", "static-header-value"} {
				if strings.Contains(logs.String(), v) {
					t.Errorf("the log contains the header value %q:\n%s", v, logs.String())
				}
			}
		})
	}
}

func TestAuthSecretError(t *testing.T) {
	_, ts := serveNew(t, nil)
	env := testEnv(t, nil)
	env.Secret = func(context.Context, config.SecretValue) (string, error) {
		return "", errors.New("secret not found")
	}
	spec := &config.ToolSourceSpec{
		MCP:     &config.MCPSource{URL: ts.URL},
		Auth:    &config.UpstreamAuth{Bearer: &config.SecretValue{SecretRef: "missing"}},
		Timeout: "5s",
	}
	_, err := New(t.Context(), "t", spec, env)
	if !errors.Is(err, upstream.ErrUnavailable) || !strings.Contains(err.Error(), "secret not found") {
		t.Errorf("New with an unresolvable secret = %v, want an error wrapping upstream.ErrUnavailable that says why", err)
	}
}

func TestStdioRestart(t *testing.T) {
	spec := &config.ToolSourceSpec{MCP: &config.MCPSource{
		Command: []string{stdioServer(t)},
		Env:     map[string]string{"MCPSOURCE_TEST_ENV": "from-spec"},
	}}
	src := open(t, "t", spec, testEnv(t, nil))
	first := pid(t, src)
	if first.Env != "from-spec" {
		t.Errorf("server env MCPSOURCE_TEST_ENV = %q, want %q", first.Env, "from-spec")
	}
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %d: %v", first.PID, err)
	}
	// echo is read-only: whether the source has noticed the exit yet or
	// finds out during this call, it must answer from a new process.
	echo(t, src, "after the kill")
	second := pid(t, src)
	if second.PID == first.PID {
		t.Errorf("pid after restart = %d, want a new process", second.PID)
	}

	// Without any call, the background loop restarts a server that exits.
	old := src.live()
	if err := syscall.Kill(second.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %d: %v", second.PID, err)
	}
	deadline := time.Now().Add(waitFor)
	for cs := src.live(); cs == nil || cs == old; cs = src.live() {
		if time.Now().After(deadline) {
			t.Fatalf("no new session within %v of the server exiting", waitFor)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline: nothing to wait on from outside
	}
	if third := pid(t, src); third.PID == second.PID {
		t.Errorf("pid after background restart = %d, want a new process", third.PID)
	}
}

func TestSessionLostHTTP(t *testing.T) {
	// A server restart loses its sessions: swap in a new handler, as a new
	// server process would be.
	var mu sync.Mutex
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return newServer(nil) }, nil)
	ts := serve(t, nil, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			h := handler
			mu.Unlock()
			h.ServeHTTP(w, r)
		})
	})
	src := open(t, "t", &config.ToolSourceSpec{MCP: &config.MCPSource{URL: ts.URL}}, testEnv(t, nil))
	echo(t, src, "before the restart")

	restart := func() {
		mu.Lock()
		handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return newServer(nil) }, nil)
		mu.Unlock()
	}
	restart()
	echo(t, src, "after the restart")

	// key is not idempotent, but the new server answered 404 for the old
	// session without running anything, so the call may be sent again.
	restart()
	res, err := src.Call(t.Context(), tools.Call{Tool: findTool(t, src, "t.key"), IdempotencyKey: "k"})
	if err != nil || res.IsError {
		t.Fatalf("Call(t.key) after a restart = %+v, %v; want a result", res, err)
	}
}

func TestReconnectAfterOutage(t *testing.T) {
	var mu sync.Mutex
	var handler http.Handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return newServer(nil) }, nil)
	set := func(h http.Handler) {
		mu.Lock()
		handler = h
		mu.Unlock()
	}
	ts := serve(t, nil, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			h := handler
			mu.Unlock()
			h.ServeHTTP(w, r)
		})
	})
	src := open(t, "t", &config.ToolSourceSpec{MCP: &config.MCPSource{URL: ts.URL}}, testEnv(t, nil))
	echo(t, src, "before the outage")

	// Down: the session is gone and a new one cannot be made.
	set(http.NotFoundHandler())
	args := json.RawMessage(`{"text":"during the outage"}`)
	for range 2 { // the second call falls within the backoff
		_, err := src.Call(t.Context(), tools.Call{Tool: findTool(t, src, "t.echo"), Arguments: args})
		if !errors.Is(err, upstream.ErrUnavailable) {
			t.Fatalf("Call(t.echo) during the outage = %v, want an error wrapping upstream.ErrUnavailable", err)
		}
	}

	set(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return newServer(nil) }, nil))
	deadline := time.Now().Add(waitFor)
	for {
		_, err := src.Call(t.Context(), tools.Call{Tool: findTool(t, src, "t.echo"), Arguments: args})
		if err == nil {
			break
		}
		if !errors.Is(err, upstream.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Call(t.echo) after the outage = %v, want success within %v", err, waitFor)
		}
		time.Sleep(20 * time.Millisecond) // the backoff is the source's; poll with a deadline
	}
}

func TestNewUnavailable(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	down := ts.URL
	ts.Close()
	tests := []struct {
		name string
		mcp  *config.MCPSource
	}{
		{"http server down", &config.MCPSource{URL: down}},
		{"http not an mcp server", &config.MCPSource{URL: serve(t, nil, func(http.Handler) http.Handler { return http.NotFoundHandler() }).URL}},
		{"command not found", &config.MCPSource{Command: []string{filepath.Join(t.TempDir(), "no-such-server")}}},
		{"command exits", &config.MCPSource{Command: []string{"sh", "-c", "echo bye >&2"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := &config.ToolSourceSpec{MCP: tt.mcp, Timeout: "5s"}
			src, err := New(t.Context(), "t", spec, testEnv(t, nil))
			if err == nil {
				src.Close()
				t.Fatalf("New(%+v) = nil error, want one wrapping upstream.ErrUnavailable", tt.mcp)
			}
			if !errors.Is(err, upstream.ErrUnavailable) {
				t.Errorf("New(%+v) = %v, want an error wrapping upstream.ErrUnavailable", tt.mcp, err)
			}
		})
	}
}

func TestCallErrors(t *testing.T) {
	_, ts := serveNew(t, nil)
	src := open(t, "t", &config.ToolSourceSpec{MCP: &config.MCPSource{URL: ts.URL}, Timeout: "200ms"}, testEnv(t, nil))

	_, err := src.Call(t.Context(), tools.Call{Tool: &tools.Tool{Name: "t.nope", Source: "t"}, Arguments: json.RawMessage(`{}`)})
	if !errors.Is(err, tools.ErrInvalidAnswer) {
		t.Errorf("Call(t.nope) = %v, want an error wrapping tools.ErrInvalidAnswer", err)
	}

	// The tool would answer after a minute, 300 times the timeout: a call
	// that ends in half of that ended by the timeout, however slow the machine.
	start := time.Now()
	_, err = src.Call(t.Context(), tools.Call{Tool: findTool(t, src, "t.slow"), Arguments: json.RawMessage(`{"ms":60000}`)})
	if !errors.Is(err, upstream.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Call(t.slow) past the source's timeout = %v, want upstream.ErrTimeout and not context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Call(t.slow) with a 200ms timeout took %v", d)
	}

	_, err = src.Call(t.Context(), tools.Call{Tool: &tools.Tool{Name: "other.echo", Source: "other"}})
	if err == nil {
		t.Errorf("Call(other.echo) on source t = nil error, want one")
	}

	src.Close()
	_, err = src.Call(t.Context(), tools.Call{Tool: findTool(t, src, "t.echo"), Arguments: json.RawMessage(`{"text":"x"}`)})
	if !errors.Is(err, upstream.ErrUnavailable) {
		t.Errorf("Call after Close = %v, want an error wrapping upstream.ErrUnavailable", err)
	}
}

func TestIdempotencyKey(t *testing.T) {
	_, ts := serveNew(t, nil)
	src := open(t, "t", &config.ToolSourceSpec{MCP: &config.MCPSource{URL: ts.URL}}, testEnv(t, nil))
	tests := []struct {
		key  string
		want string
	}{
		{"task-1/step-3", `{"key":"task-1/step-3"}`},
		{"", `{"key":null}`},
	}
	for _, tt := range tests {
		res, err := src.Call(t.Context(), tools.Call{Tool: findTool(t, src, "t.key"), IdempotencyKey: tt.key})
		if err != nil {
			t.Fatalf("Call(t.key, %q) error: %v", tt.key, err)
		}
		if got := string(res.Structured); got != tt.want {
			t.Errorf("Call(t.key, %q) Structured = %s, want %s", tt.key, got, tt.want)
		}
	}
}

func TestToolsConverted(t *testing.T) {
	_, ts := serveNew(t, nil)
	var logs syncBuffer
	spec := &config.ToolSourceSpec{
		MCP: &config.MCPSource{URL: ts.URL},
		Overrides: map[string]config.ToolOverride{
			"fail":   {Destructive: ptr(false), Idempotent: ptr(true)},
			"absent": {ReadOnly: ptr(true)},
		},
	}
	src := open(t, "erp", spec, testEnv(t, &logs))
	got := src.Tools()
	for i := range got {
		got[i].InputSchema, got[i].OutputSchema = nil, nil // checked by the conformance kit
	}
	pinned := &tools.AnnotationsSource{ReadOnly: tools.FromPinned, Destructive: tools.FromPinned, Idempotent: tools.FromPinned}
	want := []tools.Tool{
		{Name: "erp.echo", Source: "erp", Title: "Echo", Description: "Answers the text it is given.",
			Annotations: tools.Annotations{ReadOnly: true, Idempotent: true}, AnnotationsSource: pinned},
		{Name: "erp.fail", Source: "erp", Description: "Always fails.",
			Annotations:       tools.Annotations{Idempotent: true},
			AnnotationsSource: &tools.AnnotationsSource{ReadOnly: tools.FromPinned, Destructive: tools.FromOverride, Idempotent: tools.FromOverride}},
		{Name: "erp.key", Source: "erp", Description: "Answers the idempotency key.",
			Annotations: tools.Annotations{Destructive: true}, AnnotationsSource: pinned},
		{Name: "erp.slow", Source: "erp", Description: "Waits ms milliseconds.",
			Annotations: tools.Annotations{Destructive: true}, AnnotationsSource: pinned},
	}
	sortTools := func(ts []tools.Tool) {
		slices.SortFunc(ts, func(a, b tools.Tool) int { return strings.Compare(a.Name, b.Name) })
	}
	sortTools(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Tools() mismatch (-want +got):\n%s", diff)
	}
	if !strings.Contains(logs.String(), "overrides=absent") {
		t.Errorf("no warning naming the override for the absent tool; log:\n%s", logs.String())
	}
}

func TestAnnotations(t *testing.T) {
	tests := []struct {
		name  string
		hints *mcp.ToolAnnotations
		o     config.ToolOverride
		want  tools.Annotations
	}{
		{"no hints: MCP defaults", nil, config.ToolOverride{}, tools.Annotations{Destructive: true}},
		{"empty hints: MCP defaults", &mcp.ToolAnnotations{}, config.ToolOverride{}, tools.Annotations{Destructive: true}},
		{"read-only is not destructive", &mcp.ToolAnnotations{ReadOnlyHint: true}, config.ToolOverride{},
			tools.Annotations{ReadOnly: true}},
		{"read-only ignores destructiveHint", &mcp.ToolAnnotations{ReadOnlyHint: true, DestructiveHint: ptr(true)}, config.ToolOverride{},
			tools.Annotations{ReadOnly: true}},
		{"additive", &mcp.ToolAnnotations{DestructiveHint: ptr(false)}, config.ToolOverride{}, tools.Annotations{}},
		{"idempotent", &mcp.ToolAnnotations{IdempotentHint: true}, config.ToolOverride{},
			tools.Annotations{Destructive: true, Idempotent: true}},
		{"open world kept", &mcp.ToolAnnotations{OpenWorldHint: ptr(false)}, config.ToolOverride{},
			tools.Annotations{Destructive: true, OpenWorld: ptr(false)}},
		{"override makes it read-only", nil, config.ToolOverride{ReadOnly: ptr(true)}, tools.Annotations{ReadOnly: true}},
		{"override makes a read-only tool writable", &mcp.ToolAnnotations{ReadOnlyHint: true}, config.ToolOverride{ReadOnly: ptr(false)},
			tools.Annotations{Destructive: true}},
		{"override keeps the server's destructiveHint when writable", &mcp.ToolAnnotations{ReadOnlyHint: true, DestructiveHint: ptr(false)},
			config.ToolOverride{ReadOnly: ptr(false)}, tools.Annotations{}},
		{"override says destructive", &mcp.ToolAnnotations{ReadOnlyHint: true}, config.ToolOverride{Destructive: ptr(true)},
			tools.Annotations{ReadOnly: true, Destructive: true}},
		{"override says not idempotent", &mcp.ToolAnnotations{IdempotentHint: true, DestructiveHint: ptr(false)},
			config.ToolOverride{Idempotent: ptr(false)}, tools.Annotations{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := annotations(tt.hints, tt.o, tools.FromPinned)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("annotations(%+v, %+v) mismatch (-want +got):\n%s", tt.hints, tt.o, diff)
			}
		})
	}
}

func TestStderrLog(t *testing.T) {
	var buf syncBuffer
	w := &stderrLog{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	long := strings.Repeat("x", maxStderrLine+10)
	for _, p := range []string{"first ", "line\nsecond line\n", long[:600], long[600:], "\n", "unterminated"} {
		if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
		}
	}
	out := buf.String()
	for _, want := range []string{`line="first line"`, `line="second line"`, "cut_bytes=10"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "unterminated") {
		t.Errorf("stderr log has an unterminated line before its end:\n%s", out)
	}
	if strings.Contains(out, long[:maxStderrLine+1]) {
		t.Errorf("stderr log has a line longer than %d bytes", maxStderrLine)
	}
}

// live returns the current session, nil while disconnected.
func (s *Source) live() *mcp.ClientSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.session
}

type pidOut struct {
	PID int    `json:"pid"`
	Env string `json:"env"`
}

func pid(t *testing.T, src tools.Source) pidOut {
	t.Helper()
	res, err := src.Call(t.Context(), tools.Call{Tool: findTool(t, src, "t.pid"), Arguments: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatalf("Call(t.pid) error: %v", err)
	}
	var out pidOut
	if err := json.Unmarshal(res.Structured, &out); err != nil || out.PID == 0 {
		t.Fatalf("Call(t.pid) Structured = %s (%v), want {\"pid\": ...}", res.Structured, err)
	}
	return out
}

func echo(t *testing.T, src tools.Source, text string) {
	t.Helper()
	args, _ := json.Marshal(map[string]string{"text": text})
	res, err := src.Call(t.Context(), tools.Call{Tool: findTool(t, src, "t.echo"), Arguments: args})
	if err != nil {
		t.Fatalf("Call(t.echo, %q) error: %v", text, err)
	}
	want, _ := json.Marshal(map[string]string{"text": text})
	if string(res.Structured) != string(want) || res.IsError {
		t.Fatalf("Call(t.echo, %q) = %+v, want Structured %s", text, res, want)
	}
}

func findTool(t *testing.T, src tools.Source, name string) *tools.Tool {
	t.Helper()
	for _, tool := range src.Tools() {
		if tool.Name == name {
			return &tool
		}
	}
	t.Fatalf("Tools() = %v, want one named %s", toolNames(src), name)
	return nil
}

func toolNames(src tools.Source) []string {
	var names []string
	for _, tool := range src.Tools() {
		names = append(names, tool.Name)
	}
	return names
}

// decode decodes each raw JSON value, for comparing values, not bytes.
func decode(t *testing.T, raw []json.RawMessage) []any {
	t.Helper()
	out := make([]any, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			t.Fatalf("decode %s: %v", r, err)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
