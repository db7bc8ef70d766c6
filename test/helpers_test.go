// Package test holds corral's black-box end-to-end tests: they build the real
// corral binary and run it as a user would, as separate processes talking
// over loopback HTTP.
package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Generous limits for a shared two-core machine: they bound how long a broken
// build hangs, not how fast a healthy one must be.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
	cliTimeout   = 60 * time.Second
)

// corralBin is the corral binary that TestMain builds for every test.
var corralBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "corral-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	corralBin = filepath.Join(dir, "corral")
	out, err := exec.Command("go", "build", "-o", corralBin, "github.com/corral-dev/corral/cmd/corral").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build corral: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// listeningLine is what `corral up` prints on stdout once it serves.
var listeningLine = regexp.MustCompile(`^corral listening on (https?://127\.0\.0\.1:\d+)$`)

// proc is a corral process started by a test. It is killed when the test
// ends unless it has exited already.
type proc struct {
	cmd     *exec.Cmd
	started time.Time
	stdout  *output
	stderr  *output
	done    chan struct{} // closed once the process has exited and its output is read

	Data  string // --data directory
	URL   string // http://127.0.0.1:PORT, once listening
	Token string // admin token from Data/admin.token, once listening
}

// launch starts corral with args, its working directory a fresh temporary
// directory and its environment the test's without CORRAL_* variables, plus
// env. It does not wait for anything.
func launch(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{
		stdout: &output{match: listeningLine, found: make(chan string, 1)},
		stderr: &output{},
		done:   make(chan struct{}),
	}
	p.cmd = exec.Command(corralBin, args...)
	p.cmd.Dir = t.TempDir()
	p.cmd.Env = cleanEnv(env)
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start corral %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		_ = p.cmd.Wait() // the exit status is read from ProcessState after done
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("corral %s\n--- stdout:\n%s--- stderr:\n%s", strings.Join(args, " "), p.stdout, p.stderr)
		}
	})
	return p
}

// startCorral runs `corral up` with args, adding --data (a temporary
// directory) and --http 127.0.0.1:0 unless args set them, and returns once
// it has printed its listening line.
func startCorral(t testing.TB, args ...string) *proc {
	t.Helper()
	data, ok := flagValue(args, "data")
	if !ok {
		data = t.TempDir()
		args = append([]string{"--data", data}, args...)
	}
	if _, ok := flagValue(args, "http"); !ok {
		args = append([]string{"--http", "127.0.0.1:0"}, args...)
	}
	p := launch(t, nil, append([]string{"up"}, args...)...)
	p.Data = data
	p.awaitListening(t)
	return p
}

// awaitListening waits for the listening line, then reads the admin token.
func (p *proc) awaitListening(t testing.TB) {
	t.Helper()
	select {
	case p.URL = <-p.stdout.found:
	case <-p.done:
		select {
		case p.URL = <-p.stdout.found:
		default:
			t.Fatalf("corral exited with code %d before listening\nstderr:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr)
		}
	case <-time.After(startTimeout):
		t.Fatalf("corral printed no listening line within %v\nstdout:\n%s\nstderr:\n%s", startTimeout, p.stdout, p.stderr)
	}
	token, err := os.ReadFile(filepath.Join(p.Data, "admin.token"))
	if err != nil {
		t.Fatalf("read admin token: %v", err)
	}
	p.Token = strings.TrimSpace(string(token))
}

// listeningAfter is how long after the process started its listening line appeared.
func (p *proc) listeningAfter() time.Duration {
	p.stdout.mu.Lock()
	defer p.stdout.mu.Unlock()
	return p.stdout.foundAt.Sub(p.started)
}

// stop sends sig and returns the exit code, failing the test if the process
// does not exit within stopTimeout.
func (p *proc) stop(t testing.TB, sig os.Signal) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal corral: %v", err)
	}
	return p.wait(t)
}

// wait returns the exit code once the process exits by itself.
func (p *proc) wait(t testing.TB) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(stopTimeout):
		t.Fatalf("corral did not exit within %v\nstderr:\n%s", stopTimeout, p.stderr)
		return -1
	}
}

// env points the CLI at this server with its admin token.
func (p *proc) env() []string {
	return []string{"CORRAL_SERVER=" + p.URL, "CORRAL_TOKEN=" + p.Token}
}

// sigterm is the signal a service manager sends; sigint is Ctrl-C's.
var (
	sigterm os.Signal = syscall.SIGTERM
	sigint  os.Signal = syscall.SIGINT
)

// output collects a process's output stream. When match is set, the first
// complete line matching it has its first submatch sent on found.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	scanned int // bytes of buf already checked for complete lines
	match   *regexp.Regexp
	found   chan string
	foundAt time.Time
}

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(b)
	for o.match != nil && o.foundAt.IsZero() {
		rest := o.buf.Bytes()[o.scanned:]
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		o.scanned += i + 1
		if m := o.match.FindSubmatch(rest[:i]); m != nil {
			o.foundAt = time.Now()
			o.found <- string(m[1])
		}
	}
	return len(b), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// runCLI runs a corral command to completion, as runCLIInput with no input.
func runCLI(t testing.TB, env []string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	return runCLIInput(t, "", env, args...)
}

// runCLIInput runs a corral command with stdin as its standard input, in a
// fresh working directory (so that no ./.corral/admin.token is picked up)
// and with the test's environment minus CORRAL_* variables, plus env.
func runCLIInput(t testing.TB, stdin string, env []string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	return runCLIIn(t, t.TempDir(), stdin, env, args...)
}

// runCLIIn is runCLIInput in the working directory dir.
func runCLIIn(t testing.TB, dir, stdin string, env []string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, corralBin, args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv(env)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("corral %s: did not finish within %v\nstderr:\n%s", strings.Join(args, " "), cliTimeout, errOut.String())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("corral %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// cleanEnv is the test's environment without CORRAL_* variables, which would
// otherwise leak a developer's settings into the processes under test, plus env.
func cleanEnv(env []string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CORRAL_") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// flagValue finds --name VALUE or --name=VALUE in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// response is an HTTP answer read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

// request sends an HTTP request with the bearer token, if any, and reads the answer.
func request(t testing.TB, method, url, token, body string) response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// waitFor calls cond every few milliseconds until it holds or timeout
// passes, and reports whether it held.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
