package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/corral-dev/corral/internal/bus/bustest"
)

// resource is a resource as `corral get -o json` prints it.
type resource struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   metadata       `json:"metadata"`
	Spec       map[string]any `json:"spec"`
}

type metadata struct {
	Name     string            `json:"name"`
	Labels   map[string]string `json:"labels"`
	Revision uint64            `json:"revision"`
	Updated  string            `json:"updated"`
}

// resourceList is what `corral get KIND -o json` prints.
type resourceList struct {
	Kind  string     `json:"kind"`
	Items []resource `json:"items"`
}

// problemJSON is an application/problem+json body.
type problemJSON struct {
	Status    int    `json:"status"`
	Code      string `json:"code"`
	Detail    string `json:"detail"`
	RequestID string `json:"request_id"`
	Errors    []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

const twoAgents = `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact, labels: {team: logistics}}
spec: {description: finds delayed orders}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: notifier, labels: {team: customer-care}}
spec: {description: writes to customers about delays}
`

// getAgents lists agents through the CLI.
func getAgents(t testing.TB, p *proc) resourceList {
	t.Helper()
	stdout, stderr, code := runCLI(t, p.env(), "get", "agents", "-o", "json")
	if code != 0 {
		t.Fatalf("corral get agents -o json: exit code: got %d, want 0\nstderr:\n%s", code, stderr)
	}
	var list resourceList
	if err := json.Unmarshal([]byte(stdout), &list); err != nil {
		t.Fatalf("corral get agents -o json: %v\nstdout:\n%s", err, stdout)
	}
	return list
}

func names(list resourceList) []string {
	var out []string
	for _, r := range list.Items {
		out = append(out, r.Metadata.Name)
	}
	return out
}

func TestUpPrintsListeningLineAndIsReady(t *testing.T) {
	data := t.TempDir()
	p := startCorral(t, "--data", data)

	// Modules and the binary are built before the clock starts. On a quiet
	// machine corral listens within a second or two; CI's load (every
	// package at once on two cores) stretches that, so the limit is 15 s:
	// still half the 30 s an embedded NATS gets to become ready, so a start
	// that waits out a readiness timeout fails here.
	t.Logf("listening line %v after the process started", p.listeningAfter())
	if d := p.listeningAfter(); d > 15*time.Second {
		t.Errorf("listening line after: got %v, want at most 15s", d)
	}
	tokenPath := filepath.Join(data, "admin.token")
	if want := "admin token written to " + tokenPath + "\n"; !strings.HasPrefix(p.stdout.String(), want) {
		t.Errorf("stdout: got %q, want it to start with %q", p.stdout.String(), want)
	}
	info, err := os.Stat(tokenPath)
	if err != nil {
		t.Fatalf("admin token: %v", err)
	}
	if got := info.Mode().Perm(); got != 0o600 {
		t.Errorf("admin token mode: got %v, want %v", got, os.FileMode(0o600))
	}
	if !strings.HasPrefix(p.Token, "corral_admin_") {
		t.Errorf("admin token: got %q, want a corral_admin_ token", p.Token)
	}

	for _, tc := range []struct {
		path       string
		wantStatus string // JSON "status" member; "" for /metrics
		wantText   []string
	}{
		{path: "/readyz", wantStatus: "ready"},
		{path: "/healthz", wantStatus: "alive"},
		{path: "/metrics", wantText: []string{"corral_build_info{", `corral_resources{kind="Agent"} 0`, "corral_http_requests_total{"}},
	} {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			resp := request(t, "GET", p.URL+tc.path, "", "")
			if resp.status != http.StatusOK {
				t.Fatalf("GET %s status: got %d, want 200\n%s", tc.path, resp.status, resp.body)
			}
			if tc.wantStatus != "" {
				var body struct{ Status string }
				if err := json.Unmarshal(resp.body, &body); err != nil {
					t.Fatalf("GET %s: %v\n%s", tc.path, err, resp.body)
				}
				if body.Status != tc.wantStatus {
					t.Errorf("GET %s status member: got %q, want %q", tc.path, body.Status, tc.wantStatus)
				}
			}
			for _, want := range tc.wantText {
				if !strings.Contains(string(resp.body), want) {
					t.Errorf("GET %s: got no %q in\n%s", tc.path, want, resp.body)
				}
			}
		})
	}

	if code := p.stop(t, sigterm); code != 0 {
		t.Errorf("exit code after SIGTERM: got %d, want 0", code)
	}
	for name, out := range map[string]string{"stdout": p.stdout.String(), "stderr": p.stderr.String()} {
		if strings.Contains(out, p.Token) {
			t.Errorf("%s: got the admin token in it, want only its path", name)
		}
	}
}

func TestApplyRestartGet(t *testing.T) {
	data := t.TempDir()
	p := startCorral(t, "--data", data)
	file := writeFile(t, t.TempDir(), "agents.yaml", twoAgents)

	for _, want := range []string{
		"Agent/impact created\nAgent/notifier created\n",
		"Agent/impact unchanged\nAgent/notifier unchanged\n",
	} {
		stdout, stderr, code := runCLI(t, p.env(), "apply", "-f", file)
		if code != 0 || stdout != want {
			t.Fatalf("corral apply -f %s: got exit code %d, stdout %q, want 0, %q\nstderr:\n%s", file, code, stdout, want, stderr)
		}
	}

	before := getAgents(t, p)
	wantBefore := resourceList{Kind: "Agent", Items: []resource{
		{APIVersion: "corral.dev/v1", Kind: "Agent", Metadata: metadata{Name: "impact", Labels: map[string]string{"team": "logistics"}},
			Spec: map[string]any{"description": "finds delayed orders"}},
		{APIVersion: "corral.dev/v1", Kind: "Agent", Metadata: metadata{Name: "notifier", Labels: map[string]string{"team": "customer-care"}},
			Spec: map[string]any{"description": "writes to customers about delays"}},
	}}
	if diff := cmp.Diff(wantBefore, before, cmpopts.IgnoreFields(metadata{}, "Revision", "Updated")); diff != "" {
		t.Errorf("agents after apply (-want +got):\n%s", diff)
	}
	for _, r := range before.Items {
		if r.Metadata.Revision == 0 || r.Metadata.Updated == "" {
			t.Errorf("%s: got revision %d, updated %q, want both set", r.Metadata.Name, r.Metadata.Revision, r.Metadata.Updated)
		}
	}

	if code := p.stop(t, sigterm); code != 0 {
		t.Fatalf("exit code after SIGTERM: got %d, want 0", code)
	}
	p2 := startCorral(t, "--data", data)
	if strings.Contains(p2.stdout.String(), "admin token written") {
		t.Errorf("restart stdout: got %q, want no new admin token", p2.stdout.String())
	}
	if p2.Token != p.Token {
		t.Errorf("admin token after restart: got a different one, want the same")
	}

	after := getAgents(t, p2)
	if diff := cmp.Diff(before, after, cmpopts.IgnoreFields(metadata{}, "Updated")); diff != "" {
		t.Errorf("agents after restart (-before +after):\n%s", diff)
	}
	// Updated is "when this revision was stored": a fact about the revision,
	// so a restart must not change it.
	for i := range min(len(before.Items), len(after.Items)) {
		b, a := before.Items[i].Metadata, after.Items[i].Metadata
		if b.Revision == a.Revision && b.Updated != a.Updated {
			t.Errorf("%s revision %d metadata.updated after restart: got %s, want %s as before", a.Name, a.Revision, a.Updated, b.Updated)
		}
	}

	yamlOut, stderr, code := runCLI(t, p2.env(), "get", "agent", "impact", "-o", "yaml")
	if code != 0 {
		t.Fatalf("corral get agent impact -o yaml: exit code: got %d, want 0\nstderr:\n%s", code, stderr)
	}
	stdout, stderr, code := runCLIInput(t, yamlOut, p2.env(), "apply", "-f", "-")
	if want := "Agent/impact unchanged\n"; code != 0 || stdout != want {
		t.Errorf("corral apply -f - of get -o yaml: got exit code %d, stdout %q, want 0, %q\nstderr:\n%s\ninput:\n%s", code, stdout, want, stderr, yamlOut)
	}
}

func TestBadFilesStoreNothing(t *testing.T) {
	p := startCorral(t)

	for _, tc := range []struct {
		name string
		bad  string // document 2 of the file; document 1 is a valid agent
		want []string
	}{
		{
			name: "malformed yaml",
			bad:  "apiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: impact\nspec: {}\n",
			want: []string{"bad.yaml: document 2: malformed YAML"},
		},
		{
			name: "unknown kind",
			bad:  "apiVersion: corral.dev/v1\nkind: Robot\nmetadata: {name: impact}\nspec: {}\n",
			want: []string{"bad.yaml: document 2 (Robot/impact): kind: unknown kind"},
		},
		{
			name: "missing name",
			bad:  "apiVersion: corral.dev/v1\nkind: Agent\nmetadata: {labels: {team: logistics}}\nspec: {}\n",
			want: []string{"bad.yaml: document 2 (Agent): metadata.name: required"},
		},
		{
			name: "description not a string",
			bad:  "apiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: impact}\nspec: {description: [a, b]}\n",
			want: []string{"bad.yaml: document 2 (Agent/impact): spec.description: must be string, got array"},
		},
		{
			name: "label value a number",
			bad:  "apiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: impact, labels: {team: 7}}\nspec: {}\n",
			want: []string{"bad.yaml: document 2 (Agent/impact): metadata.labels.team: must be string, got number"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			valid := "valid-" + strings.ReplaceAll(tc.name, " ", "-")
			content := "apiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: " + valid + "}\nspec: {description: fine}\n---\n" + tc.bad
			path := writeFile(t, t.TempDir(), "bad.yaml", content)
			dir := filepath.Dir(path) + string(filepath.Separator)
			want := append([]string{}, tc.want...)
			for i := range want {
				want[i] = dir + want[i] // the file is named as given to -f
			}
			for _, args := range [][]string{{"apply", "-f", path}, {"validate", "-f", path}} {
				summary := "corral: 1 problem(s)\n" // validate stores nothing anyway
				if args[0] == "apply" {
					summary = "corral: 1 problem(s); nothing was stored\n"
				}
				want := append(slices.Clone(want), summary)
				var env []string
				if args[0] == "apply" {
					env = p.env() // validate runs offline
				}
				stdout, stderr, code := runCLI(t, env, args...)
				if code == 0 {
					t.Errorf("corral %s: exit code: got 0, want non-zero\nstdout:\n%s", args[0], stdout)
				}
				for _, w := range want {
					if !strings.Contains(stderr, w) {
						t.Errorf("corral %s stderr: got\n%s\nwant a line containing %q", args[0], stderr, w)
					}
				}
			}

			if got := names(getAgents(t, p)); len(got) != 0 {
				t.Errorf("agents after refused apply: got %q, want none (not even %s)", got, valid)
			}
		})
	}

	// The CLI refuses bad files before sending them; the server must refuse a
	// mixed set on its own too, for clients that are not the CLI.
	t.Run("api mixed set", func(t *testing.T) {
		body := `{"resources": [
			{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"valid-api"},"spec":{}},
			{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"broken"},"spec":{"description":42}}]}`
		resp := request(t, "POST", p.URL+"/v1/apply", p.Token, body)
		if resp.status != http.StatusUnprocessableEntity {
			t.Fatalf("POST /v1/apply status: got %d, want 422\n%s", resp.status, resp.body)
		}
		var prob problemJSON
		if err := json.Unmarshal(resp.body, &prob); err != nil {
			t.Fatalf("POST /v1/apply: %v\n%s", err, resp.body)
		}
		if len(prob.Errors) != 1 || prob.Errors[0].Field != "spec.description" {
			t.Errorf("POST /v1/apply errors: got %+v, want one for spec.description", prob.Errors)
		}
		if got := names(getAgents(t, p)); len(got) != 0 {
			t.Errorf("agents after refused apply: got %q, want none", got)
		}
	})
}

func TestTwoReplicasExternalNATS(t *testing.T) {
	url := bustest.ExternalServer(t)
	a := startCorral(t, "--nats", url)
	b := startCorral(t, "--nats", url)
	if a.Token == b.Token {
		t.Fatalf("tokens of replicas A and B: got the same, want one each from their own data dirs")
	}

	file := writeFile(t, t.TempDir(), "agents.yaml", twoAgents)
	stdout, stderr, code := runCLI(t, a.env(), "apply", "-f", file)
	applied := time.Now()
	if code != 0 {
		t.Fatalf("corral apply through A: exit code: got %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}

	var visibleAfter time.Duration
	if !waitFor(startTimeout, func() bool {
		ok := request(t, "GET", b.URL+"/v1/resources/agents/impact", b.Token, "").status == http.StatusOK
		visibleAfter = time.Since(applied)
		return ok
	}) {
		t.Fatalf("Agent/impact on B: not visible within %v of the apply", startTimeout)
	}
	// Only B's watch brings the change (nothing re-reads the registry
	// later); well under a second on a quiet machine, logged and not
	// asserted, as CI runs loaded.
	t.Logf("Agent/impact visible on B %v after apply returned on A", visibleAfter)

	// Token hashes live in the shared substrate: every replica accepts every
	// replica's token.
	for _, tc := range []struct {
		name   string
		server *proc
		token  string
	}{
		{"A's token on B", b, a.Token},
		{"B's token on A", a, b.Token},
		{"A's token on A", a, a.Token},
	} {
		if resp := request(t, "GET", tc.server.URL+"/v1/resources/agents/impact", tc.token, ""); resp.status != http.StatusOK {
			t.Errorf("%s: GET /v1/resources/agents/impact status: got %d, want 200\n%s", tc.name, resp.status, resp.body)
		}
	}

	stdout, stderr, code = runCLI(t, b.env(), "delete", "agent", "impact")
	deleted := time.Now()
	if code != 0 || stdout != "Agent/impact deleted\n" {
		t.Fatalf("corral delete through B: got exit code %d, stdout %q, want 0, %q\nstderr:\n%s", code, stdout, "Agent/impact deleted\n", stderr)
	}
	var goneAfter time.Duration
	if !waitFor(startTimeout, func() bool {
		gone := request(t, "GET", a.URL+"/v1/resources/agents/impact", a.Token, "").status == http.StatusNotFound
		goneAfter = time.Since(deleted)
		return gone
	}) {
		t.Fatalf("Agent/impact on A: still there %v after the delete", startTimeout)
	}
	t.Logf("Agent/impact gone from A %v after delete returned on B", goneAfter)
	if got, want := names(getAgents(t, a)), []string{"notifier"}; !cmp.Equal(got, want) {
		t.Errorf("agents on A: got %q, want %q", got, want)
	}
}

func TestSettingsFromEnvAndConfigFile(t *testing.T) {
	t.Run("env and file", func(t *testing.T) {
		data := t.TempDir()
		fileData := t.TempDir() // the file names it too; the variable must win
		config := writeFile(t, t.TempDir(), "corral.yaml",
			"http: 127.0.0.1:0\nlog-format: json\ndata: "+fileData+"\n")
		p := launch(t, []string{"CORRAL_DATA=" + data}, "up", "--config", config)
		p.Data = data
		p.awaitListening(t)

		if _, err := os.Stat(filepath.Join(data, "admin.token")); err != nil {
			t.Errorf("admin token in CORRAL_DATA dir: %v", err)
		}
		if _, err := os.Stat(filepath.Join(fileData, "admin.token")); err == nil {
			t.Errorf("admin token in the config file's data dir: got one, want CORRAL_DATA to win over the file")
		}
		if resp := request(t, "GET", p.URL+"/readyz", "", ""); resp.status != http.StatusOK {
			t.Errorf("GET /readyz status: got %d, want 200", resp.status)
		}
		if code := p.stop(t, sigterm); code != 0 {
			t.Errorf("exit code after SIGTERM: got %d, want 0", code)
		}

		lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
		if len(lines) == 0 || lines[0] == "" {
			t.Fatalf("stderr: got nothing, want JSON log lines (at least the shutdown)")
		}
		for _, line := range lines {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("stderr line %q: got %v, want a JSON object", line, err)
				continue
			}
			if _, ok := rec["msg"]; !ok {
				t.Errorf("stderr line %q: got no msg member, want a slog JSON record", line)
			}
		}
	})

	t.Run("unknown key", func(t *testing.T) {
		config := writeFile(t, t.TempDir(), "corral.yaml", "htpp: x\n")
		p := launch(t, nil, "up", "--config", config, "--data", t.TempDir(), "--http", "127.0.0.1:0")
		if code := p.wait(t); code == 0 {
			t.Errorf("exit code: got 0, want non-zero")
		}
		stderr := p.stderr.String()
		if want := config + ": htpp: unknown setting"; !strings.Contains(stderr, want) {
			t.Errorf("stderr: got %q, want it to contain %q", stderr, want)
		}
		if strings.Contains(p.stdout.String(), "listening") {
			t.Errorf("stdout: got %q, want no listening line", p.stdout.String())
		}
	})
}

func TestProblemJSON(t *testing.T) {
	p := startCorral(t)
	const wrongType = `{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"impact"},"spec":{"description":42}}`

	for _, tc := range []struct {
		name, method, path, token, body string
		wantStatus                      int
		wantCode                        string
		wantField                       string // of errors[0], when set
	}{
		{name: "no token", method: "GET", path: "/v1/resources/agents", wantStatus: 401, wantCode: "unauthenticated"},
		{name: "wrong token", method: "GET", path: "/v1/resources/agents", token: "corral_admin_wrong", wantStatus: 401, wantCode: "unauthenticated"},
		{name: "unknown kind", method: "GET", path: "/v1/resources/robots", token: p.Token, wantStatus: 404, wantCode: "unknown_kind"},
		{name: "missing resource", method: "GET", path: "/v1/resources/agents/nope", token: p.Token, wantStatus: 404, wantCode: "resource_not_found"},
		{name: "wrong type", method: "PUT", path: "/v1/resources/agents/impact", token: p.Token, body: wrongType,
			wantStatus: 422, wantCode: "invalid_resource", wantField: "spec.description"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := request(t, tc.method, p.URL+tc.path, tc.token, tc.body)
			if resp.status != tc.wantStatus {
				t.Errorf("%s %s status: got %d, want %d", tc.method, tc.path, resp.status, tc.wantStatus)
			}
			if ct := resp.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
				t.Errorf("Content-Type: got %q, want application/problem+json", ct)
			}
			var prob problemJSON
			if err := json.Unmarshal(resp.body, &prob); err != nil {
				t.Fatalf("%s %s: %v\n%s", tc.method, tc.path, err, resp.body)
			}
			if prob.Code != tc.wantCode || prob.Status != tc.wantStatus {
				t.Errorf("code, status: got %q, %d, want %q, %d\n%s", prob.Code, prob.Status, tc.wantCode, tc.wantStatus, resp.body)
			}
			if prob.RequestID == "" || prob.RequestID != resp.header.Get("X-Request-Id") {
				t.Errorf("request_id: got %q, want non-empty and equal to X-Request-Id %q", prob.RequestID, resp.header.Get("X-Request-Id"))
			}
			if tc.wantField != "" && (len(prob.Errors) == 0 || prob.Errors[0].Field != tc.wantField) {
				t.Errorf("errors: got %+v, want a first entry with field %q", prob.Errors, tc.wantField)
			}
		})
	}

	if resp := request(t, "GET", p.URL+"/v1/resources/agents/impact", p.Token, ""); resp.status != http.StatusNotFound {
		t.Errorf("GET agents/impact after refused PUT: status: got %d, want 404", resp.status)
	}

	resp := request(t, "GET", p.URL+"/v1/schemas/Agent", "", "")
	if resp.status != http.StatusOK {
		t.Fatalf("GET /v1/schemas/Agent status: got %d, want 200\n%s", resp.status, resp.body)
	}
	var schema map[string]any
	if err := json.Unmarshal(resp.body, &schema); err != nil {
		t.Fatalf("GET /v1/schemas/Agent: %v\n%s", err, resp.body)
	}
	if _, ok := schema["$schema"]; !ok {
		t.Errorf("GET /v1/schemas/Agent: got members %v, want $schema among them", keys(schema))
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestDemo runs README's first command as a user would: the port-strike
// story tells all six steps and each holds (internal/cli's
// TestDemoTellsTheStory checks their outcomes one by one).
func TestDemo(t *testing.T) {
	tmp := t.TempDir()
	stdout, stderr, code := runCLI(t, []string{"TMPDIR=" + tmp}, "demo", "-o", "json")
	if code != 0 {
		t.Fatalf("corral demo: exit code: got %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var sum struct {
		Steps []struct {
			Step int
			Name string
			OK   bool
		}
	}
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("corral demo -o json: %v\n%s", err, stdout)
	}
	if len(sum.Steps) != 6 {
		t.Fatalf("corral demo -o json: got %d steps, want 6\n%s", len(sum.Steps), stdout)
	}
	for _, s := range sum.Steps {
		if !s.OK {
			t.Errorf("corral demo: step %d (%s) did not hold\nnarration:\n%s", s.Step, s.Name, stderr)
		}
		if want := fmt.Sprintf("[%d/6]", s.Step); !strings.Contains(stderr, want) {
			t.Errorf("corral demo: the narration (stderr) has no %s", want)
		}
	}
	// Without --keep the demo's data directory is removed.
	if left, err := os.ReadDir(tmp); err != nil || len(left) != 0 {
		t.Errorf("TMPDIR after corral demo: got %v (err %v), want it empty", left, err)
	}
}

func TestDataDirLocked(t *testing.T) {
	first := startCorral(t)
	second := launch(t, nil, "up", "--data", first.Data, "--http", "127.0.0.1:0")
	if code := second.wait(t); code == 0 {
		t.Errorf("second corral up on the same --data: exit code: got 0, want non-zero")
	}
	if stderr := second.stderr.String(); !strings.Contains(stderr, "in use") {
		t.Errorf("second corral up stderr: got %q, want it to contain %q", stderr, "in use")
	}
	if strings.Contains(second.stdout.String(), "listening") {
		t.Errorf("second corral up stdout: got %q, want no listening line", second.stdout.String())
	}
	if resp := request(t, "GET", first.URL+"/readyz", "", ""); resp.status != http.StatusOK {
		t.Errorf("first corral GET /readyz status: got %d, want 200", resp.status)
	}

	// The lock goes with the process: once the first stops, the directory is free.
	if code := first.stop(t, sigint); code != 0 {
		t.Errorf("first corral exit code after SIGINT: got %d, want 0", code)
	}
	third := startCorral(t, "--data", first.Data)
	if resp := request(t, "GET", third.URL+"/readyz", "", ""); resp.status != http.StatusOK {
		t.Errorf("corral up after the first stopped: GET /readyz status: got %d, want 200", resp.status)
	}
}

func TestDefaultDataDirAndToken(t *testing.T) {
	// With no --data, corral up keeps its data in ./.corral, and the CLI run
	// from the same directory finds the token there without being told.
	p := launch(t, nil, "up", "--http", "127.0.0.1:0")
	dir := p.cmd.Dir
	p.Data = filepath.Join(dir, ".corral")
	p.awaitListening(t)
	if want := "admin token written to .corral/admin.token\n"; !strings.HasPrefix(p.stdout.String(), want) {
		t.Errorf("stdout: got %q, want it to start with %q", p.stdout.String(), want)
	}

	server := []string{"CORRAL_SERVER=" + p.URL}
	if stdout, stderr, code := runCLIIn(t, dir, "", server, "get", "agents", "-o", "json"); code != 0 {
		t.Errorf("corral get agents from the server's directory: exit code: got %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	stdout, stderr, code := runCLI(t, server, "get", "agents")
	if code == 0 {
		t.Errorf("corral get agents elsewhere without a token: exit code: got 0, want non-zero\nstdout:\n%s", stdout)
	}
	if want := "no admin token"; !strings.Contains(stderr, want) {
		t.Errorf("corral get agents elsewhere without a token: stderr: got %q, want it to contain %q", stderr, want)
	}
	// --server and --token flags work as well as the variables.
	if stdout, stderr, code := runCLI(t, nil, "get", "agents", "-o", "json", "--server", p.URL, "--token", p.Token); code != 0 {
		t.Errorf("corral get agents --server --token: exit code: got %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}
