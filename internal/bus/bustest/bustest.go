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
	"path"
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

// NATSServerBinary builds nats-server from the version in corral's go.mod,
// once per test binary, and returns its path.
func NATSServerBinary(t testing.TB) string {
	t.Helper()
	return Binary(t, "github.com/nats-io/nats-server/v2")
}

var (
	buildMu sync.Mutex
	built   = map[string]string{} // package -> binary
)

// Binary builds the main package pkg (an import path in corral's module
// graph) once per test binary and returns its path: nats-server for a real
// server process, corral itself for black-box tests.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := built[pkg]; ok {
		return bin
	}
	dir, err := os.MkdirTemp("", "corral-build-")
	if err != nil {
		t.Fatalf("build %s: %v", pkg, err)
	}
	bin := filepath.Join(dir, path.Base(strings.TrimSuffix(pkg, "/v2")))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	built[pkg] = bin
	return bin
}

// ExternalServer runs nats-server with JetStream as its own process on a free
// loopback port, with its store in a temporary directory, and returns its
// URL. The process is killed when the test ends.
func ExternalServer(t testing.TB) string {
	t.Helper()
	port := freePort(t)
	_ = runServer(t, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", t.TempDir())
	return "nats://127.0.0.1:" + strconv.Itoa(port)
}

// ExternalTLSServer is ExternalServer requiring TLS with the server
// certificate in certPath and keyPath; with caPath, clients must present a
// certificate that CA signed. It returns a tls:// URL.
func ExternalTLSServer(t testing.TB, certPath, keyPath, caPath string) string {
	t.Helper()
	port := freePort(t)
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", t.TempDir(), "--tls", "--tlscert", certPath, "--tlskey", keyPath}
	if caPath != "" {
		args = append(args, "--tlsverify", "--tlscacert", caPath)
	}
	_ = runServer(t, args...)
	return "tls://127.0.0.1:" + strconv.Itoa(port)
}

// ExternalCluster runs a JetStream cluster of n nats-server processes on
// loopback and returns their client URLs. JetStream may still be electing
// its leader when this returns; bus.Open waits for it.
func ExternalCluster(t testing.TB, n int) []string {
	t.Helper()
	return StartCluster(t, n).URLs()
}

// Cluster is a JetStream cluster of nats-server processes on loopback that a
// test can kill -9 and restart node by node, each on its own ports and store.
type Cluster struct {
	t     testing.TB
	nodes []*Node
}

// Node is one nats-server of a Cluster.
type Node struct {
	Name    string
	URL     string // client URL
	Monitor string // http://127.0.0.1:PORT of the monitoring endpoint
	args    []string

	mu   sync.Mutex
	proc *process // nil while killed
}

// StartCluster starts n nodes named node0..node{n-1}, routed to each other,
// each with a monitoring port, and stops them when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var routes []string
	clientPorts, monitorPorts := make([]int, n), make([]int, n)
	routePorts := make([]int, n)
	for i := range n {
		clientPorts[i], routePorts[i], monitorPorts[i] = freePort(t), freePort(t), freePort(t)
		routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(routePorts[i]))
	}
	for i := range n {
		node := &Node{
			Name:    "node" + strconv.Itoa(i),
			URL:     "nats://127.0.0.1:" + strconv.Itoa(clientPorts[i]),
			Monitor: "http://127.0.0.1:" + strconv.Itoa(monitorPorts[i]),
		}
		node.args = []string{"-a", "127.0.0.1", "-p", strconv.Itoa(clientPorts[i]), "-m", strconv.Itoa(monitorPorts[i]),
			"-js", "-sd", t.TempDir(), "-n", node.Name, "--cluster_name", "corral-test",
			"--cluster", routes[i], "--routes", strings.Join(routes, ",")}
		c.nodes = append(c.nodes, node)
	}
	for _, node := range c.nodes {
		c.Start(node)
	}
	t.Cleanup(func() {
		for _, node := range c.nodes {
			c.Kill(node)
		}
	})
	return c
}

// Nodes are the cluster's nodes, in the order of their names.
func (c *Cluster) Nodes() []*Node { return c.nodes }

// URLs are the nodes' client URLs.
func (c *Cluster) URLs() []string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.URL
	}
	return urls
}

// Node returns the node called name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Kill kills the node's process with SIGKILL, as a machine that is lost; its
// store stays for Start. Killing a killed node does nothing.
func (c *Cluster) Kill(n *Node) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil {
		n.proc.kill()
		n.proc = nil
	}
}

// Start starts a killed node again on its ports and store, and waits until
// it says it is ready (not until JetStream has caught up).
func (c *Cluster) Start(n *Node) {
	c.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		n.proc = runServer(c.t, n.args...)
	}
}

// process is a running nats-server.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once it has exited and its output is read
}

// kill kills the process with SIGKILL and waits until it has exited.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// runServer starts nats-server with args and waits until it says it is
// ready. The process is killed when the test ends, if it still runs.
func runServer(t testing.TB, args ...string) *process {
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
	p := &process{cmd: cmd, exited: make(chan struct{})}
	t.Cleanup(p.kill)
	ready := make(chan struct{})
	go func() {
		defer close(p.exited)
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
		_ = cmd.Wait()
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("nats-server did not become ready within 30s")
	}
	return p
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
