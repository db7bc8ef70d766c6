package mcpsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/config"
)

// deleteTimeout bounds the DELETE that ends an HTTP session on Close. Ending
// the session is a courtesy, and a server that finishes its in-flight calls
// before answering must not hold up a reload (the SDK would wait 5 s).
const deleteTimeout = time.Second

// terminateAfter is how long closing a stdio server waits, after closing its
// stdin, before signalling it; the SDK's default of 5 s makes every restart
// of a stuck server slow.
const terminateAfter = 2 * time.Second

// httpTransport returns a fresh Streamable HTTP transport for each connect;
// all of them share client, whose RoundTripper adds the credentials.
func httpTransport(url string, client *http.Client) func() mcp.Transport {
	return func() mcp.Transport {
		return &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: client}
	}
}

// authRoundTripper adds the configured headers and credentials to every
// request. Credentials are resolved per request so that a rotated secret
// takes effect on the next request, without reconnecting.
type authRoundTripper struct {
	base http.RoundTripper
	// host is the configured endpoint's host: credentials go to it only,
	// never to a host a redirect points at.
	host    string
	headers map[string]string
	auth    *config.UpstreamAuth
	secret  func(ctx context.Context, ref config.SecretValue) (string, error)
	// identityHeader carries the call's identity token, when it has one.
	identityHeader string
}

type identityKey struct{}

// withIdentity hands a call's identity token to the RoundTripper, which
// sees only the request the SDK builds.
func withIdentity(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, identityKey{}, token)
}

// RoundTrip implements http.RoundTripper. Its errors name the credential
// that could not be resolved, never a header's value.
func (rt *authRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if req.Method == http.MethodDelete {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, deleteTimeout)
		// The DELETE's answer has no body worth reading; its connection
		// is released when the context ends.
		defer cancel()
	}
	// A RoundTripper must not modify the request it was given.
	req = req.Clone(ctx)
	if req.URL.Host != rt.host {
		return rt.base.RoundTrip(req)
	}
	for k, v := range rt.headers {
		req.Header.Set(k, v)
	}
	if token, _ := ctx.Value(identityKey{}).(string); token != "" && rt.identityHeader != "" {
		if strings.EqualFold(rt.identityHeader, "Authorization") {
			token = "Bearer " + token
		}
		req.Header.Set(rt.identityHeader, token)
	}
	if err := rt.authorize(req); err != nil {
		if req.Body != nil {
			req.Body.Close() // RoundTrip must close the body, even on errors
		}
		return nil, err
	}
	return rt.base.RoundTrip(req)
}

func (rt *authRoundTripper) authorize(req *http.Request) error {
	a := rt.auth
	if a == nil {
		return nil
	}
	if rt.secret == nil {
		return errors.New("mcpsource: auth is set but no secret resolver was given")
	}
	ctx := req.Context()
	switch {
	case a.Bearer != nil:
		v, err := rt.secret(ctx, *a.Bearer)
		if err != nil {
			return fmt.Errorf("mcpsource: resolve bearer token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+v)
	case a.APIKey != nil:
		v, err := rt.secret(ctx, a.APIKey.Value)
		if err != nil {
			return fmt.Errorf("mcpsource: resolve api key for header %s: %w", a.APIKey.Header, err)
		}
		req.Header.Set(a.APIKey.Header, v)
	case a.Basic != nil:
		v, err := rt.secret(ctx, a.Basic.Password)
		if err != nil {
			return fmt.Errorf("mcpsource: resolve basic auth password: %w", err)
		}
		req.SetBasicAuth(a.Basic.Username, v)
	}
	return nil
}

// commandTransport returns a transport that starts the server afresh on
// each connect. The process is not tied to any request's context: it lives
// until the session is closed or the process exits.
func commandTransport(argv []string, env map[string]string, logger *slog.Logger) func() mcp.Transport {
	environ := baseEnviron()
	for _, k := range slices.Sorted(maps.Keys(env)) {
		environ = append(environ, k+"="+env[k])
	}
	return func() mcp.Transport {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = environ
		cmd.Stderr = &stderrLog{log: logger}
		// A grandchild that keeps stderr open must not keep Wait, and so
		// Close, from returning.
		cmd.WaitDelay = time.Second
		return &stdioTransport{cmd: cmd, log: logger}
	}
}

// stdioTransport is the SDK's CommandTransport with a frameLimiter on the
// server's stdout, so that an answer over maxResult fails its own call
// instead of the session (the SDK ends a session at a line over 16 MiB).
type stdioTransport struct {
	cmd *exec.Cmd
	log *slog.Logger
}

// Connect starts the command and speaks to it over stdin and stdout.
func (t *stdioTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	stdout, err := t.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	stdin, err := t.cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	if err := t.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", t.cmd.Path, err)
	}
	lim := newFrameLimiter(stdout, maxResult, byLine)
	lim.standIn = func(sc *idScanner) []byte {
		if id, ok := sc.responseID(); ok {
			t.log.WarnContext(ctx, "mcp server answer over the cap; the call fails, the session stays", "bytes", sc.n, "limit", maxResult)
			return append(tooLargeError(id, maxResult), '\n')
		}
		t.log.WarnContext(ctx, "mcp server message over the cap answers no request; dropped", "bytes", sc.n, "limit", maxResult)
		return nil
	}
	// The stdout end is closed by Wait; closing stdin is what ends the
	// session (MCP's stdio shutdown).
	return (&mcp.IOTransport{Reader: io.NopCloser(lim), Writer: &processStdin{stdin: stdin, cmd: t.cmd}}).Connect(ctx)
}

// processStdin is the server's stdin; closing it shuts the server down as
// MCP's stdio transport says: close its input, wait, then SIGTERM, then
// SIGKILL.
type processStdin struct {
	stdin io.WriteCloser
	cmd   *exec.Cmd
}

func (p *processStdin) Write(b []byte) (int, error) { return p.stdin.Write(b) }

// Close stops the server, waiting terminateAfter between the steps.
func (p *processStdin) Close() error {
	if err := p.stdin.Close(); err != nil {
		return fmt.Errorf("close stdin: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	wait := func() (error, bool) {
		select {
		case err := <-exited:
			return err, true
		case <-time.After(terminateAfter):
			return nil, false
		}
	}
	if err, ok := wait(); ok {
		return err
	}
	if p.cmd.Process.Signal(syscall.SIGTERM) == nil {
		if err, ok := wait(); ok {
			return err
		}
	}
	if err := p.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	if err, ok := wait(); ok {
		return err
	}
	return errors.New("the server does not exit")
}

// stderrLog writes a server's stderr to the log at debug level, a line at a
// time. It holds at most maxStderrLine bytes of an unfinished line and cuts
// longer lines, so a chatty or binary stderr cannot grow memory.
type stderrLog struct {
	log *slog.Logger

	mu      sync.Mutex
	line    []byte
	cut     bool // the current line was already cut and logged
	dropped int  // bytes of the current line beyond the cut
}

const maxStderrLine = 1 << 10

func (w *stderrLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if w.cut {
			w.dropped += len(chunk)
		} else {
			room := maxStderrLine - len(w.line)
			if len(chunk) > room {
				w.line = append(w.line, chunk[:room]...)
				w.dropped = len(chunk) - room
				w.cut = true
			} else {
				w.line = append(w.line, chunk...)
			}
		}
		if i < 0 {
			break
		}
		w.flush()
		p = p[i+1:]
	}
	return n, nil
}

// flush logs the current line; the caller holds mu.
func (w *stderrLog) flush() {
	if len(w.line) > 0 || w.dropped > 0 {
		if w.dropped > 0 {
			w.log.Debug("mcp server stderr", "line", string(w.line), "cut_bytes", w.dropped)
		} else {
			w.log.Debug("mcp server stderr", "line", string(w.line))
		}
	}
	w.line, w.cut, w.dropped = w.line[:0], false, 0
}

// inherited are the variables a server started over stdio gets from corral's
// own environment: what programs need to run, nothing more. corral's
// environment holds credentials for other upstreams and the substrate; a
// server gets those only through spec.mcp.env.
var inherited = []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TEMP", "TMP",
	"SYSTEMROOT", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}

func baseEnviron() []string {
	var out []string
	for _, k := range inherited {
		if v, ok := os.LookupEnv(k); ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}
