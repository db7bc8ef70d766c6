package otelcol

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configgrpc"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
)

// Generous limits for a shared two-core machine.
const (
	exportTimeout = 30 * time.Second
	startTimeout  = 30 * time.Second
)

// protocols are the OTLP transports corral exports over.
var protocols = []string{"grpc", "http/protobuf"}

var (
	corralBin     string // the corral binary
	telemetryTest string // internal/telemetry's test binary
)

// TestMain builds, from the main module two directories up, the corral
// binary and the test binary of internal/telemetry.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "corral-otelcol-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "otelcol:", err)
		os.Exit(1)
	}
	corralBin = filepath.Join(dir, "corral")
	telemetryTest = filepath.Join(dir, "telemetry.test")
	root := filepath.Join("..", "..")
	for _, args := range [][]string{
		{"build", "-o", corralBin, "./cmd/corral"},
		{"test", "-c", "-o", telemetryTest, "./internal/telemetry"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "otelcol: go %s: %v\n%s", strings.Join(args, " "), err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// collector is an OTLP receiver from the OpenTelemetry Collector, serving
// one protocol on a free loopback port, with a sink that keeps what it gets.
type collector struct {
	endpoint string // http://127.0.0.1:PORT
	sink     *consumertest.TracesSink
}

func startCollector(t *testing.T, protocol string) *collector {
	t.Helper()
	factory := otlpreceiver.NewFactory()
	cfg := factory.CreateDefaultConfig().(*otlpreceiver.Config)
	addr := freeAddr(t)
	switch protocol {
	case "grpc":
		cfg.Protocols.GRPC.GetOrInsertDefault().NetAddr.Endpoint = addr
		cfg.Protocols.HTTP = configoptional.None[otlpreceiver.HTTPConfig]()
	case "http/protobuf":
		cfg.Protocols.HTTP.GetOrInsertDefault().ServerConfig.NetAddr.Endpoint = addr
		cfg.Protocols.GRPC = configoptional.None[configgrpc.ServerConfig]()
	default:
		t.Fatalf("protocol %q", protocol)
	}
	sink := new(consumertest.TracesSink)
	r, err := factory.CreateTraces(t.Context(), receivertest.NewNopSettings(factory.Type()), cfg, sink)
	if err != nil {
		t.Fatalf("create OTLP receiver: %v", err)
	}
	if err := r.Start(t.Context(), componenttest.NewNopHost()); err != nil {
		t.Fatalf("start OTLP receiver: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Shutdown(context.Background()); err != nil {
			t.Errorf("stop OTLP receiver: %v", err)
		}
	})
	return &collector{endpoint: "http://" + addr, sink: sink}
}

// span is a received span, flattened.
type span struct {
	traceID, spanID, parentID, name, kind string
	service, version                      string
	attrs                                 map[string]any
}

// spans returns what the collector received of the trace.
func (c *collector) spans(traceID string) []span {
	var out []span
	for _, td := range c.sink.AllTraces() {
		for _, rs := range td.ResourceSpans().All() {
			res := rs.Resource().Attributes()
			service, _ := res.Get("service.name")
			version, _ := res.Get("service.version")
			for _, ss := range rs.ScopeSpans().All() {
				for _, s := range ss.Spans().All() {
					if s.TraceID().String() != traceID {
						continue
					}
					out = append(out, span{
						traceID: s.TraceID().String(), spanID: s.SpanID().String(), parentID: s.ParentSpanID().String(),
						name: s.Name(), kind: s.Kind().String(), service: service.AsString(), version: version.AsString(),
						attrs: s.Attributes().AsRaw(),
					})
				}
			}
		}
	}
	return out
}

// await waits until the collector holds spans of the trace that satisfy
// done, and returns them.
func (c *collector) await(t *testing.T, traceID string, done func([]span) bool) []span {
	t.Helper()
	deadline := time.Now().Add(exportTimeout)
	for {
		got := c.spans(traceID)
		if done(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the collector holds %d spans of trace %s: %v", exportTimeout, len(got), traceID, names(got))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func names(spans []span) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.name)
	}
	return out
}

func byName(spans []span, name string) (span, bool) {
	for _, s := range spans {
		if s.name == name {
			return s, true
		}
	}
	return span{}, false
}

// TestTelemetryExportsToCollector runs internal/telemetry's
// TestExportToEndpointFromEnvironment against the receiver: NewTracing's
// OTLP exporter, as corral builds it, delivers an action's spans (the
// action, its policy stage, the invoke stage and the upstream client span)
// to a real collector.
func TestTelemetryExportsToCollector(t *testing.T) {
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			c := startCollector(t, protocol)
			cmd := exec.CommandContext(t.Context(), telemetryTest, "-test.run", "^TestExportToEndpointFromEnvironment$", "-test.v")
			cmd.Dir = t.TempDir()
			cmd.Env = append(cleanEnv(), "CORRAL_TEST_OTLP_ENDPOINT="+c.endpoint, "CORRAL_TEST_OTLP_PROTOCOL="+protocol)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("telemetry test: %v\n%s", err, out)
			}
			m := regexp.MustCompile(`(?m)^CORRAL_TRACE_ID=([0-9a-f]{32})$`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("telemetry test printed no trace id (did it skip?):\n%s", out)
			}
			traceID := string(m[1])
			got := c.await(t, traceID, func(s []span) bool { return len(s) >= 4 })
			t.Logf("the collector received trace %s over %s: %v", traceID, protocol, names(got))
			action, ok := byName(got, "execute_tool crm.get_order")
			if !ok {
				t.Fatalf("received %v, want the action span", names(got))
			}
			if action.service != "corral" || action.version != "test" || action.attrs["gen_ai.operation.name"] != "execute_tool" {
				t.Errorf("action span = %+v, want service corral version test and gen_ai.operation.name", action)
			}
			policy, _ := byName(got, "policy")
			invoke, _ := byName(got, "invoke")
			get, _ := byName(got, "GET")
			if policy.parentID != action.spanID || invoke.parentID != action.spanID || get.parentID != invoke.spanID || get.kind != "Client" {
				t.Errorf("received %+v, want policy and invoke under the action and a GET client span under invoke", got)
			}
		})
	}
}

// TestCorralExportsToCollector runs `corral up` pointed at the receiver and
// makes one tool call with a traceparent: the upstream receives the same
// trace, the collector receives the action's spans under the caller's span,
// and `corral trace` shows them from the built-in store.
func TestCorralExportsToCollector(t *testing.T) {
	for i, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			c := startCollector(t, protocol)
			upstream := startUpstream(t)
			p := startCorral(t, []string{"OTEL_EXPORTER_OTLP_PROTOCOL=" + protocol, "OTEL_BSP_SCHEDULE_DELAY=100"},
				"--otlp-endpoint", c.endpoint)
			key := setUpTool(t, p, upstream.URL)

			traceID := fmt.Sprintf("4bf92f3577b34da6a3ce929d0e0e47%02x", i+0x30)
			const callerSpan = "00f067aa0ba902b7"
			status, body := p.invoke(t, key, "inventory.getItem", `{"id": 7}`, "00-"+traceID+"-"+callerSpan+"-01")
			if status != http.StatusOK {
				t.Fatalf("invoke: HTTP %d %s", status, body)
			}
			if tp := upstream.traceparent(); !strings.HasPrefix(tp, "00-"+traceID+"-") {
				t.Errorf("upstream received traceparent %q, want trace %s", tp, traceID)
			}

			const route = "POST /v1/tools/{name}/invoke"
			got := c.await(t, traceID, func(s []span) bool {
				_, action := byName(s, "execute_tool inventory.getItem")
				_, server := byName(s, route)
				return action && server
			})
			// The request's server span continues the caller's; the action is under it.
			server, _ := byName(got, route)
			action, _ := byName(got, "execute_tool inventory.getItem")
			if server.service != "corral" || server.kind != "Server" || server.parentID != callerSpan {
				t.Errorf("server span = %+v, want service.name corral, kind Server, under the caller's span %s", server, callerSpan)
			}
			if action.service != "corral" || action.parentID != server.spanID {
				t.Errorf("action span = %+v, want service.name corral under the server span %s", action, server.spanID)
			}

			// The built-in store has the same trace: corral trace shows it.
			out, errOut, code := p.cli(t, "trace", traceID, "--wait", "10s", "-o", "json")
			if code != 0 {
				t.Fatalf("corral trace: exit %d %s", code, errOut)
			}
			var tr struct {
				Spans []struct {
					SpanID       string `json:"span_id"`
					ParentSpanID string `json:"parent_span_id"`
					Name         string `json:"name"`
				} `json:"spans"`
			}
			if err := json.Unmarshal([]byte(out), &tr); err != nil {
				t.Fatalf("corral trace -o json: %v\n%s", err, out)
			}
			parents := map[string]string{}
			ids := map[string]string{}
			for _, s := range tr.Spans {
				parents[s.Name], ids[s.Name] = s.ParentSpanID, s.SpanID
			}
			actionID := ids["execute_tool inventory.getItem"]
			if actionID == "" || parents["policy"] != actionID || parents["invoke"] != actionID {
				t.Errorf("corral trace shows %s, want the action with policy and invoke under it", out)
			}
		})
	}
}

// upstream is an inventory service that keeps the last traceparent it saw.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	last string
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.last = r.Header.Get("Traceparent")
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id": %s, "name": "crate"}`, strings.TrimPrefix(r.URL.Path, "/items/"))
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) traceparent() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

// inventorySpec describes the upstream.
const inventorySpec = `openapi: 3.0.3
info: {title: inventory, version: "1"}
paths:
  /items/{id}:
    get:
      operationId: getItem
      parameters: [{name: id, in: path, required: true, schema: {type: integer, minimum: 1}}]
      responses:
        "200":
          description: the item
          content: {application/json: {schema: {type: object, required: [id], properties: {id: {type: integer}, name: {type: string}}}}}
`

// setUpTool applies the inventory ToolSource and an agent allowed to call
// it, and returns a key of that agent.
func setUpTool(t *testing.T, p *corral, baseURL string) string {
	t.Helper()
	indented := "      " + strings.ReplaceAll(inventorySpec, "\n", "\n      ")
	file := filepath.Join(t.TempDir(), "inventory.yaml")
	if err := os.WriteFile(file, []byte(`apiVersion: corral.dev/v1
kind: ToolSource
metadata: {name: inventory}
spec:
  openapi:
    baseURL: `+baseURL+`
    document: |
`+indented+`
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec: {tools: ["inventory.*"]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := p.cli(t, "apply", "-f", file); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code := p.cli(t, "keys", "create", "--agent", "impact", "-o", "json")
	var key struct {
		Key string `json:"key"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &key) != nil || key.Key == "" {
		t.Fatalf("keys create: exit %d %s %s", code, out, errOut)
	}
	// The registry applies the source asynchronously: wait for the tool.
	deadline := time.Now().Add(startTimeout)
	for {
		status, body := p.invoke(t, key.Key, "inventory.getItem", `{"id": 1}`, "")
		if status == http.StatusOK {
			return key.Key
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tool never answered: HTTP %d %s", status, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// corral is a `corral up` process.
type corral struct {
	url, token string
}

var listening = regexp.MustCompile(`corral listening on (http://127\.0\.0\.1:\d+)`)

// startCorral runs `corral up` on a free loopback port with a fresh data
// directory, env added to a clean environment, and waits until it listens.
func startCorral(t *testing.T, env []string, args ...string) *corral {
	t.Helper()
	data := t.TempDir()
	cmd := exec.Command(corralBin, append([]string{"up", "--data", data, "--http", "127.0.0.1:0"}, args...)...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(cleanEnv(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start corral: %v", err)
	}
	exited := make(chan struct{})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(startTimeout):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("corral stderr:\n%s", stderr.String())
		}
	})
	p := &corral{}
	select {
	case p.url = <-found:
	case <-exited:
		t.Fatalf("corral exited before listening:\n%s", stderr.String())
	case <-time.After(startTimeout):
		t.Fatalf("corral did not listen within %v:\n%s", startTimeout, stderr.String())
	}
	token, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	p.token = strings.TrimSpace(string(token))
	return p
}

// cli runs a corral command against the server.
func (p *corral) cli(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, corralBin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(cleanEnv(), "CORRAL_SERVER="+p.url, "CORRAL_TOKEN="+p.token)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("corral %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// invoke calls a tool over REST with the agent's key and, if set, a
// traceparent header.
func (p *corral) invoke(t *testing.T, key, tool, args, traceparent string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "POST", p.url+"/v1/tools/"+tool+"/invoke", strings.NewReader(`{"arguments": `+args+`}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	if traceparent != "" {
		req.Header.Set("Traceparent", traceparent)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("invoke %s: %v", tool, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// cleanEnv is the test's environment without CORRAL_* and OTEL_* variables.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CORRAL_") && !strings.HasPrefix(kv, "OTEL_") {
			out = append(out, kv)
		}
	}
	return out
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
