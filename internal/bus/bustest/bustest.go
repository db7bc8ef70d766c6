// Package bustest starts substrates for tests: an embedded JetStream in a
// temporary directory, or a real nats-server process built from the module
// corral already depends on.
package bustest

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/bus"
)

// Open starts an embedded bus with its store in a fresh temporary directory
// and closes it when the test ends.
func Open(t testing.TB) *bus.Bus {
	t.Helper()
	return OpenWith(t, bus.Options{DataDir: t.TempDir()})
}

// OpenWith opens a bus with the given options and closes it when the test ends.
func OpenWith(t testing.TB, opts bus.Options) *bus.Bus {
	t.Helper()
	b, err := bus.Open(t.Context(), slog.New(slog.DiscardHandler), opts)
	if err != nil {
		t.Fatalf("bus.Open: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// NATSServerBinary builds nats-server from the version in corral's go.mod,
// once per test binary, and returns its path.
func NATSServerBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "corral-nats-server-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "nats-server")
		out, err := exec.Command("go", "build", "-o", binary, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("build nats-server: %v", buildErr)
	}
	return binary
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// ExternalServer runs nats-server with JetStream as its own process on a free
// loopback port, with its store in a temporary directory, and returns its
// URL. The process is killed when the test ends.
func ExternalServer(t testing.TB) string {
	t.Helper()
	port := freePort(t)
	runServer(t, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", t.TempDir())
	return "nats://127.0.0.1:" + strconv.Itoa(port)
}

// ExternalCluster runs a JetStream cluster of n nats-server processes on
// loopback and returns their client URLs. JetStream may still be electing
// its leader when this returns; bus.Open waits for it.
func ExternalCluster(t testing.TB, n int) []string {
	t.Helper()
	clientPorts, routePorts := make([]int, n), make([]int, n)
	var routes []string
	for i := range n {
		clientPorts[i], routePorts[i] = freePort(t), freePort(t)
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(routePorts[i]))
	}
	urls := make([]string, n)
	for i := range n {
		runServer(t, "-a", "127.0.0.1", "-p", strconv.Itoa(clientPorts[i]), "-js", "-sd", t.TempDir(),
			"-n", "node"+strconv.Itoa(i), "--cluster_name", "corral-test",
			"--cluster", routes[i], "--routes", strings.Join(routes, ","))
		urls[i] = "nats://127.0.0.1:" + strconv.Itoa(clientPorts[i])
	}
	return urls
}

// runServer starts nats-server with args and waits until it says it is ready.
func runServer(t testing.TB, args ...string) {
	t.Helper()
	bin := NATSServerBinary(t)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan struct{})
	go func() {
		// nats-server logs to stderr; it is ready once it says so.
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), "Server is ready") {
				close(ready)
				signalled = true
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("nats-server did not become ready within 30s")
	}
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before nats-server binds it; on a test machine that is rare enough.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
