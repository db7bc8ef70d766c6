// Package conformance_test runs the MCP conformance suite
// (@modelcontextprotocol/conformance, server mode) against corral's MCP
// edge: corral runs in-process with the everything server (./everything)
// behind it as an MCP ToolSource started over stdio, and the suite talks to
// /mcp/everything, where the tools keep the names the scenarios call.
//
// The scenarios that pass are kept in baseline.txt. The test fails when a
// baseline scenario fails, and reports scenarios that pass but are not in
// the baseline; go test -update rewrites it. It runs only when
// CORRAL_CONFORMANCE=1 (make conformance), since it needs Node.js and npm
// and fetches Node 22, which the suite requires, from the npm registry.
package conformance_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/test/nodetest"
)

var update = flag.Bool("update", false, "rewrite baseline.txt with the scenarios that pass now")

// Bounds for a shared two-core machine: they catch a hang, not a slow run.
const (
	installTimeout = 5 * time.Minute
	suiteTimeout   = 10 * time.Minute
	readyTimeout   = 60 * time.Second
)

// mustPass are the scenarios corral must pass whatever the baseline says:
// the tool scenarios whose answers a gateway passes through. The other tool
// scenarios need messages corral does not relay: log and progress
// notifications from the tool, and requests from the tool to the client
// (sampling, elicitation).
var mustPass = []string{
	"server-initialize",
	"ping",
	"tools-list",
	"tools-call-simple-text",
	"tools-call-image",
	"tools-call-audio",
	"tools-call-embedded-resource",
	"tools-call-mixed-content",
	"tools-call-error",
	"json-schema-2020-12",
}

func TestConformance(t *testing.T) {
	if os.Getenv("CORRAL_CONFORMANCE") != "1" && !*update {
		t.Skip("set CORRAL_CONFORMANCE=1 to run the MCP conformance suite (make conformance does): it needs Node.js with npm, and fetches Node 22 from the npm registry")
	}
	npx := nodetest.Program(t, "npx")
	// The suite declares Node 22; npm only warns when it installs under older.
	nodetest.Install(t, "@modelcontextprotocol/conformance")
	node := node22(t, npx)
	fixture := buildFixture(t)

	srv := apptest.Start(t)
	srv.ApplyValues(t, map[string]any{
		"apiVersion": "corral.dev/v1", "kind": "ToolSource", "metadata": map[string]any{"name": "everything"},
		"spec": map[string]any{
			"description": "The MCP conformance suite's tools.",
			"mcp":         map[string]any{"command": []string{fixture}},
		},
	}, map[string]any{
		"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": map[string]any{"name": "conformance"},
		"spec": map[string]any{"description": "The MCP conformance suite.", "tools": []string{"everything.*"}},
	})
	key := srv.Key(t, "conformance")
	waitForTool(t, srv.URL+"/mcp/everything", key, "test_simple_text")

	// The suite's client sends no credentials: a proxy adds the agent key
	// and changes nothing else (the Host header included).
	proxy := httptest.NewServer(withKey(t, srv.URL, key))
	t.Cleanup(proxy.Close)

	results := runSuite(t, node, proxy.URL+"/mcp/everything")
	var passed []string
	for scenario, ok := range results {
		if ok {
			passed = append(passed, scenario)
		}
	}
	sort.Strings(passed)
	t.Logf("passing %d of %d scenarios: %s", len(passed), len(results), strings.Join(passed, " "))
	if *update {
		writeBaseline(t, passed)
		return
	}

	baseline := readBaseline(t)
	for _, s := range mustPass {
		if !slices.Contains(baseline, s) {
			t.Errorf("baseline.txt lacks %s, which corral must pass", s)
		}
	}
	for _, s := range baseline {
		ok, ran := results[s]
		switch {
		case !ran:
			t.Errorf("scenario %s (baseline.txt) did not run: the suite no longer has it?", s)
		case !ok:
			t.Errorf("scenario %s passed before (baseline.txt) and fails now", s)
		}
	}
	for _, s := range passed {
		if !slices.Contains(baseline, s) {
			t.Logf("scenario %s passes and is not in baseline.txt: go test ./test/conformance -update adds it", s)
		}
	}
}

// node22 returns a Node.js 22 binary: npx fetches the node package (which
// carries the binary) from the npm registry once and caches it.
func node22(t *testing.T, npx string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), installTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, npx, "-y", "node@22", "-p", "process.execPath").Output()
	if err != nil {
		t.Fatalf("npx -y node@22: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// buildFixture builds the everything server for corral to start.
func buildFixture(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "everything")
	if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./everything").CombinedOutput(); err != nil {
		t.Fatalf("go build ./everything: %v\n%s", err, out)
	}
	return bin
}

// waitForTool polls tools/list at endpoint, as the agent, until it shows name.
func waitForTool(t *testing.T, endpoint, key, name string) {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "conformance-wait", Version: "1"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{
		Endpoint: endpoint, HTTPClient: &http.Client{Transport: bearer(key)},
	}, nil)
	if err != nil {
		t.Fatalf("connect to %s: %v", endpoint, err)
	}
	defer cs.Close()
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		res, err := cs.ListTools(t.Context(), nil)
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		for _, tl := range res.Tools {
			if tl.Name == name {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s lists %d tools and not %s after %v: the everything source did not start", endpoint, len(res.Tools), name, readyTimeout)
		}
		<-tick.C
	}
}

type bearer string

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}

// withKey is a reverse proxy to base that adds the agent key.
func withKey(t *testing.T, base, key string) http.Handler {
	t.Helper()
	target, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host
		r.Out.Header.Set("Authorization", "Bearer "+key)
	}}
}

// runSuite runs every server scenario (the active and the pending ones)
// against url and reports, per scenario, whether it passed.
func runSuite(t *testing.T, node, url string) map[string]bool {
	t.Helper()
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), suiteTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js"),
		"server", "--url", url, "--suite", "all", "--output-dir", out)
	log, err := cmd.CombinedOutput()
	// The suite exits 1 when any scenario fails; the results say which.
	if ctx.Err() != nil {
		t.Fatalf("the conformance suite did not finish in %v:\n%s", suiteTimeout, log)
	}
	t.Logf("conformance suite (exit: %v):\n%s", err, summary(log))
	results, rerr := readResults(out)
	if rerr != nil || len(results) == 0 {
		t.Fatalf("reading the suite's results in %s: %v (exit: %v)\n%s", out, rerr, err, log)
	}
	return results
}

// summary is the suite's closing summary, or all of its output.
func summary(log []byte) []byte {
	if i := bytes.Index(log, []byte("=== SUMMARY ===")); i >= 0 {
		return log[i:]
	}
	return log
}

// resultDir is the name of a scenario's result directory:
// server-<scenario>-<ISO time with : and . as ->.
var resultDir = regexp.MustCompile(`^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$`)

// readResults reads checks.json of every scenario under dir. A scenario
// passes when one check succeeded and none failed or warned (the suite's
// own baseline counts a warning as a failure).
func readResults(dir string) (map[string]bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	results := map[string]bool{}
	for _, e := range entries {
		m := resultDir.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "checks.json"))
		if err != nil {
			return nil, err
		}
		var checks []struct{ Status string }
		if err := json.Unmarshal(b, &checks); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		results[m[1]] = scenarioPassed(checks)
	}
	return results, nil
}

func scenarioPassed(checks []struct{ Status string }) bool {
	ok := false
	for _, c := range checks {
		switch c.Status {
		case "SUCCESS":
			ok = true
		case "FAILURE", "WARNING":
			return false
		}
	}
	return ok
}

const baselineFile = "baseline.txt"

func readBaseline(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(baselineFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func writeBaseline(t *testing.T, passed []string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# MCP conformance scenarios (@modelcontextprotocol/conformance, server mode)\n")
	b.WriteString("# that corral's /mcp/{source} edge passes with test/conformance/everything\n")
	b.WriteString("# behind it. conformance_test.go fails if one of them fails; rewrite with\n")
	b.WriteString("# CORRAL_CONFORMANCE=1 go test ./test/conformance -update\n")
	for _, s := range passed {
		b.WriteString(s + "\n")
	}
	if err := os.WriteFile(baselineFile, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
