// Package bustest starts substrates for tests: an embedded JetStream in a
// temporary directory, or a real nats-server process built from the module
// corral already depends on.
package bustest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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
	store := t.TempDir()
	var url string
	startFresh(t, func() []*pending {
		port := FreePort(t)
		url = "nats://127.0.0.1:" + strconv.Itoa(port)
		return []*pending{{args: []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", store}}}
	})
	return url
}

// ExternalTLSServer is ExternalServer requiring TLS with the server
// certificate in certPath and keyPath; with caPath, clients must present a
// certificate that CA signed. It returns a tls:// URL.
func ExternalTLSServer(t testing.TB, certPath, keyPath, caPath string) string {
	t.Helper()
	store := t.TempDir()
	var url string
	startFresh(t, func() []*pending {
		port := FreePort(t)
		url = "tls://127.0.0.1:" + strconv.Itoa(port)
		args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", store, "--tls", "--tlscert", certPath, "--tlskey", keyPath}
		if caPath != "" {
			args = append(args, "--tlsverify", "--tlscacert", caPath)
		}
		return []*pending{{args: args}}
	})
	return url
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
	servers := startFresh(t, func() []*pending {
		c.nodes = c.nodes[:0]
		clientPorts, routePorts, monitorPorts := make([]int, n), make([]int, n), make([]int, n)
		var routes []string
		for i := range n {
			clientPorts[i], routePorts[i], monitorPorts[i] = FreePort(t), FreePort(t), FreePort(t)
			routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(routePorts[i]))
		}
		servers := make([]*pending, n)
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
			servers[i] = &pending{args: node.args}
		}
		return servers
	})
	for i, node := range c.nodes {
		node.proc = servers[i].proc
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
// it says it is ready (not until JetStream has caught up). A port the node
// had may be held for a moment by another process (an outgoing connection
// given it as its local port); Start tries again for up to 30 s.
func (c *Cluster) Start(n *Node) {
	c.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for try := 1; n.proc == nil; try++ {
		p, err := startServer(c.t, n.args)
		if err != nil && errors.Is(err, errPortTaken) && try < 30 {
			c.t.Logf("%v; trying again", err)
			time.Sleep(time.Second)
			continue
		}
		if err != nil {
			c.t.Fatal(err)
		}
		n.proc = p
	}
}

// process is a running nats-server.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once it has exited and its output is read

	mu   sync.Mutex
	tail []string // its last lines of output
}

// kill kills the process with SIGKILL and waits until it has exited.
// Killing it again does nothing.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// output is the process's last lines of output.
func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// errPortTaken marks a nats-server that exited because a port it was given
// had been taken between FreePort and its bind.
var errPortTaken = errors.New("a port was taken")

// pending is a nats-server to start, and once started its process.
type pending struct {
	args []string
	proc *process
}

// startFresh starts every server plan describes. When one exits because
// another process took one of its ports first, it stops those it started
// and asks plan again for servers on fresh ports, up to three times; any
// other failure fails the test, with the server's last lines of output.
func startFresh(t testing.TB, plan func() []*pending) []*pending {
	t.Helper()
	for try := 1; ; try++ {
		servers := plan()
		var err error
		for _, s := range servers {
			if s.proc, err = startServer(t, s.args); err != nil {
				break
			}
		}
		if err == nil {
			return servers
		}
		for _, s := range servers {
			if s.proc != nil {
				s.proc.kill()
			}
		}
		if !errors.Is(err, errPortTaken) || try == 3 {
			t.Fatal(err)
		}
		t.Logf("%v; starting again on other ports", err)
	}
}

// startServer starts nats-server with args and waits until it says it is
// ready. The process is killed when the test ends, if it still runs.
func startServer(t testing.TB, args []string) (*process, error) {
	t.Helper()
	bin := NATSServerBinary(t)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
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
			line := sc.Text()
			p.mu.Lock()
			p.tail = append(p.tail[max(0, len(p.tail)-19):], line)
			p.mu.Unlock()
			if !signalled && strings.Contains(line, "Server is ready") {
				close(ready)
				signalled = true
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
	}()
	// A loaded machine running every package's tests at once can take a
	// while to start a process; a minute is generous.
	select {
	case <-ready:
		return p, nil
	case <-p.exited:
		out := p.output()
		if strings.Contains(out, "address already in use") {
			return nil, fmt.Errorf("nats-server %s exited: %w:\n%s", strings.Join(args, " "), errPortTaken, out)
		}
		return nil, fmt.Errorf("nats-server %s exited before it was ready:\n%s", strings.Join(args, " "), out)
	case <-time.After(time.Minute):
		p.kill()
		return nil, fmt.Errorf("nats-server %s did not become ready within a minute:\n%s", strings.Join(args, " "), p.output())
	}
}

// FreePort is a loopback port that was free a moment ago. It is chosen
// below the kernel's ephemeral range, from which the kernel picks both the
// ports it hands to listeners on port 0 and the local ports of outgoing
// connections, so the many connections a test run makes cannot take it
// before the server binds it. Another test binary choosing the same way can,
// rarely; startFresh starts again on other ports then.
func FreePort(t testing.TB) int {
	t.Helper()
	low := ephemeralLow()
	for range 100 {
		if low <= minPort+1000 {
			break
		}
		port := minPort + rand.IntN(low-minPort)
		portsMu.Lock()
		taken := portsGiven[port]
		portsGiven[port] = true
		portsMu.Unlock()
		if taken {
			continue
		}
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			_ = l.Close()
			return port
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// minPort is the lowest port FreePort chooses: above the ports services
// usually listen on (PostgreSQL's 5432, RabbitMQ's 5672, NATS's 4222...).
const minPort = 20000

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{} // ports FreePort has returned in this process
)

// ephemeralLow is the lowest port of the kernel's ephemeral range, or 0
// where it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0
	}
	low, _ := strconv.Atoi(fields[0])
	return low
}
