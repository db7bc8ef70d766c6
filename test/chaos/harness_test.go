// Package chaos kills parts of a corral deployment while it serves and then
// counts, at the far side, what was lost: three nats-server processes in a
// JetStream cluster, two corral replicas with --replicas 3, a counting
// upstream and a few clients alternating replicas.
package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/bus/bustest"
)

// Generous limits for a shared two-core machine: they bound how long a broken
// build hangs, not how fast a healthy one must be.
const (
	startTimeout = 60 * time.Second
	callTimeout  = 30 * time.Second
)

// corralBinary builds corral once per test binary.
func corralBinary(t testing.TB) string {
	t.Helper()
	return bustest.Binary(t, "github.com/corral-dev/corral/cmd/corral")
}

var listeningLine = regexp.MustCompile(`corral listening on (http://127\.0\.0\.1:\d+)`)

// replica is one corral process, restartable on the same port and data.
type replica struct {
	name string
	args []string // after "up"
	data string
	addr string // 127.0.0.1:PORT, fixed at the first start

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	logs   bytes.Buffer // stderr of every start, for a failing test
	token  string
}

func newReplica(t testing.TB, name string, args ...string) *replica {
	t.Helper()
	r := &replica{name: name, data: t.TempDir(), args: args, addr: "127.0.0.1:" + strconv.Itoa(bustest.FreePort(t))}
	r.start(t)
	t.Cleanup(r.kill)
	t.Cleanup(func() {
		if t.Failed() {
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Logf("replica %s stderr:\n%s", r.name, lastLines(r.logs.String(), 200))
		}
	})
	return r
}

// URL is the replica's base URL.
func (r *replica) URL() string { return "http://" + r.addr }

// start runs `corral up` and waits for its listening line.
func (r *replica) start(t testing.TB) {
	t.Helper()
	args := append([]string{"up", "--data", r.data, "--http", r.addr}, r.args...)
	cmd := exec.Command(corralBinary(t), args...)
	cmd.Dir = r.data
	cmd.Env = cleanEnv()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	cmd.Stderr = &lockedWriter{mu: &r.mu, w: &r.logs}
	r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start corral: %v", err)
	}
	exited := make(chan struct{})
	listening := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		once := false
		for sc.Scan() {
			if !once && listeningLine.MatchString(sc.Text()) {
				close(listening)
				once = true
			}
		}
		_ = cmd.Wait()
	}()
	r.mu.Lock()
	r.cmd, r.exited = cmd, exited
	r.mu.Unlock()
	select {
	case <-listening:
	case <-exited:
		t.Fatalf("replica %s exited before listening", r.name)
	case <-time.After(startTimeout):
		t.Fatalf("replica %s did not listen within %v", r.name, startTimeout)
	}
	token, err := os.ReadFile(filepath.Join(r.data, "admin.token"))
	if err != nil {
		t.Fatalf("read admin token: %v", err)
	}
	r.mu.Lock()
	r.token = strings.TrimSpace(string(token))
	r.mu.Unlock()
}

// kill sends SIGKILL and waits for the process to be gone.
func (r *replica) kill() {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// env points the CLI at this replica with its admin token.
func (r *replica) env() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(cleanEnv(), "CORRAL_SERVER="+r.URL(), "CORRAL_TOKEN="+r.token)
}

func (r *replica) adminToken() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.token
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// cli runs a corral command against r and returns its standard output, or
// both outputs when it fails, and its exit code.
func cli(t testing.TB, r *replica, stdin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, corralBinary(t), args...)
	cmd.Dir = t.TempDir()
	cmd.Env = r.env()
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("corral %s: %v", strings.Join(args, " "), err)
	}
	if cmd.ProcessState.ExitCode() != 0 {
		return string(out) + stderr.String(), cmd.ProcessState.ExitCode()
	}
	return string(out), 0
}

// cleanEnv is the test's environment without CORRAL_* variables.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CORRAL_") {
			out = append(out, kv)
		}
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// upstream counts the requests it receives, by the call number in the path.
type upstream struct {
	addr string
	mu   sync.Mutex
	seen map[int]int // call number -> requests
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: ln.Addr().String(), seen: map[int]int{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/items/"))
		if err != nil {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		u.mu.Lock()
		u.seen[id]++
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id": %d}`, id)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return u
}

// calls returns every call number the upstream saw and how often.
func (u *upstream) calls() map[int]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[int]int, len(u.seen))
	for k, v := range u.seen {
		out[k] = v
	}
	return out
}

// jsz is the part of nats-server's /jsz answer the test reads.
type jsz struct {
	Meta struct {
		Leader string `json:"leader"`
	} `json:"meta_cluster"`
	Accounts []struct {
		Streams []struct {
			Name    string `json:"name"`
			Cluster struct {
				Leader string `json:"leader"`
			} `json:"cluster"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

// leaders asks the live nodes' monitoring endpoints who leads the meta
// group and the stream named stream; "" when no live node knows.
func leaders(ctx context.Context, c *bustest.Cluster, stream string) (meta, streamLeader string) {
	for _, n := range c.Nodes() {
		var j jsz
		if getJSON(ctx, n.Monitor+"/jsz?accounts=true&streams=true", "", &j) != nil {
			continue
		}
		if meta == "" {
			meta = j.Meta.Leader
		}
		for _, a := range j.Accounts {
			for _, s := range a.Streams {
				if s.Name == stream && s.Cluster.Leader != "" && streamLeader == "" {
					streamLeader = s.Cluster.Leader
				}
			}
		}
	}
	return meta, streamLeader
}

var plainClient = &http.Client{Timeout: callTimeout}

// getJSON GETs url with a bearer token (if any) and decodes a 200 answer.
func getJSON(ctx context.Context, url, token string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d %s", url, resp.StatusCode, body)
	}
	return json.Unmarshal(body, v)
}
