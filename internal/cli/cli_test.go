package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/app/apptest"
)

// run runs corral in-process and returns stdout, stderr and the exit code.
func run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(t.Context(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), code
}

func TestEveryCommandHasHelpWithExample(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Short == "" || c.Example == "" {
			t.Errorf("%s: Short %q, Example %q; want both", c.CommandPath(), c.Short, c.Example)
		}
		for _, sub := range c.Commands() {
			if sub.Name() != "help" {
				walk(sub)
			}
		}
	}
	walk(newRoot(streams{}))
}

func TestResourceCommands(t *testing.T) {
	s := apptest.Start(t)
	t.Chdir(t.TempDir()) // no ./.corral/admin.token to fall back on
	conn := []string{"--server", s.URL, "--token", s.Token}
	file := filepath.Join(t.TempDir(), "agents.yaml")
	if err := os.WriteFile(file, []byte(`apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact, labels: {team: logistics}}
spec: {description: finds delayed orders}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: mailer}
spec: {}
`), 0o600); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := run(t, "", append([]string{"apply", "-f", file}, conn...)...)
	if code != 0 || out != "Agent/impact created\nAgent/mailer created\n" {
		t.Fatalf("apply = %d %q %q", code, out, errOut)
	}
	out, _, _ = run(t, "", append([]string{"apply", "-f", file, "-o", "json"}, conn...)...)
	var applied struct{ Results []struct{ Result string } }
	if err := json.Unmarshal([]byte(out), &applied); err != nil || len(applied.Results) != 2 || applied.Results[0].Result != "unchanged" {
		t.Errorf("apply -o json = %s, want two unchanged results", out)
	}

	out, _, code = run(t, "", append([]string{"get", "agents"}, conn...)...)
	if code != 0 || !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "team=logistics") || !strings.Contains(out, "finds delayed orders") {
		t.Errorf("get agents table = %q", out)
	}

	// get -o yaml round-trips through apply -f -.
	yamlOut, _, code := run(t, "", append([]string{"get", "agent", "impact", "-o", "yaml"}, conn...)...)
	if code != 0 || !strings.Contains(yamlOut, "revision:") {
		t.Fatalf("get -o yaml = %d %q", code, yamlOut)
	}
	out, errOut, code = run(t, yamlOut, append([]string{"apply", "-f", "-"}, conn...)...)
	if code != 0 || out != "Agent/impact unchanged\n" {
		t.Errorf("apply of get -o yaml = %d %q %q, want unchanged", code, out, errOut)
	}
	// An edit based on it applies; the same edit again is stale and refused.
	edited := strings.Replace(yamlOut, "finds delayed orders", "finds late orders", 1)
	if out, errOut, code = run(t, edited, append([]string{"apply", "-f", "-"}, conn...)...); code != 0 || out != "Agent/impact configured\n" {
		t.Errorf("apply edited = %d %q %q, want configured", code, out, errOut)
	}
	if _, errOut, code = run(t, edited, append([]string{"apply", "-f", "-"}, conn...)...); code != 1 || !strings.Contains(errOut, "code conflict") {
		t.Errorf("apply stale edit = %d %q, want a conflict", code, errOut)
	}

	out, _, code = run(t, "", append([]string{"get", "agents", "-o", "json"}, conn...)...)
	var list struct {
		Kind  string
		Items []json.RawMessage
	}
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || list.Kind != "Agent" || len(list.Items) != 2 {
		t.Errorf("get -o json = %d %s", code, out)
	}

	if out, _, code = run(t, "", append([]string{"delete", "agent", "mailer"}, conn...)...); code != 0 || out != "Agent/mailer deleted\n" {
		t.Errorf("delete = %d %q", code, out)
	}
	if _, errOut, code = run(t, "", append([]string{"get", "agent", "mailer"}, conn...)...); code != 1 || !strings.Contains(errOut, "resource_not_found") {
		t.Errorf("get deleted = %d %q, want resource_not_found", code, errOut)
	}
}

func TestCommandErrors(t *testing.T) {
	s := apptest.Start(t)
	t.Chdir(t.TempDir())
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: ok}\nspec: {}\n---\napiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: x}\nspec: {description: 5}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no token anywhere", []string{"get", "agents", "--server", s.URL}, "no admin token"},
		{"wrong token", []string{"get", "agents", "--server", s.URL, "--token", "corral_admin_x"}, "code unauthenticated"},
		{"server down", []string{"get", "agents", "--server", "http://127.0.0.1:1", "--token", "t"}, "cannot reach corral at http://127.0.0.1:1"},
		{"unknown kind", []string{"get", "robots", "--server", s.URL, "--token", s.Token}, `unknown kind "robots" (known kinds: Agent, ToolSource, Secret, Policy, Issuer, Model, Budget, RateLimit, Notifier, Workflow, Trigger)`},
		{"bad output", []string{"get", "agents", "-o", "xml", "--server", s.URL, "--token", s.Token}, `invalid argument "xml" for "-o, --output" flag: want one of table, json, yaml`},
		{"invalid file", []string{"apply", "-f", bad, "--server", s.URL, "--token", s.Token}, "bad.yaml: document 2 (Agent/x): spec.description: must be string, got number\ncorral: 1 problem(s); nothing was stored"},
		{"apply without -f", []string{"apply"}, `required flag(s) "filename" not set`},
		{"bad flag", []string{"get", "--bogus"}, "unknown flag: --bogus\nSee 'corral get --help'."},
		{"too many args", []string{"get", "a", "b", "c"}, "accepts between 1 and 2 arg(s)"},
		{"up bad sync", []string{"up", "--sync", "sometimes"}, `--sync "sometimes": want always or interval`},
		{"up bad log format", []string{"up", "--log-format", "xml", "--data", t.TempDir()}, `log format "xml": want text or json`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := run(t, "", tt.args...)
			if code != 1 || !strings.Contains(errOut, tt.want) {
				t.Errorf("corral %v = %d %q, want exit 1 and %q", tt.args, code, errOut, tt.want)
			}
		})
	}
	// The refused file stored nothing, not even its valid document.
	if _, errOut, code := run(t, "", "get", "agent", "ok", "--server", s.URL, "--token", s.Token); code != 1 || !strings.Contains(errOut, "resource_not_found") {
		t.Errorf("valid document of a refused file: get = %d %q, want not found", code, errOut)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("apiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: ok}\nspec: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, code := run(t, "", "validate", "-f", good)
	if code != 0 || !strings.Contains(out, "document 1 (Agent/ok): valid") {
		t.Errorf("validate good = %d %q", code, out)
	}
	out, _, code = run(t, "kind: Agent\n", "validate", "-f", "-", "-o", "json")
	var res struct {
		Valid  bool
		Errors []map[string]any
	}
	if err := json.Unmarshal([]byte(out), &res); code != 1 || err != nil || res.Valid || len(res.Errors) == 0 {
		t.Errorf("validate bad -o json = %d %s", code, out)
	}
}

func TestVersion(t *testing.T) {
	out, _, code := run(t, "", "version", "-o", "json")
	if code != 0 || !strings.Contains(out, `"version"`) {
		t.Errorf("version -o json = %d %q", code, out)
	}
}

func TestUpStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"up", "--data", t.TempDir(), "--http", "127.0.0.1:0"}, strings.NewReader(""), &out, &errOut)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "corral listening on") {
		if time.Now().After(deadline) {
			t.Fatalf("up did not print the listening line within 30s: %s", errOut.String())
		}
		select {
		case code := <-done:
			t.Fatalf("up exited %d before listening: %s", code, errOut.String())
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("up after cancel exited %d, want 0: %s", code, errOut.String())
	}
}

func TestKeysCommands(t *testing.T) {
	s := apptest.Start(t)
	t.Chdir(t.TempDir())
	conn := []string{"--server", s.URL, "--token", s.Token}
	if _, errOut, code := run(t, "", append([]string{"keys", "create", "--agent", "ghost"}, conn...)...); code != 1 || !strings.Contains(errOut, "Agent/ghost does not exist") {
		t.Errorf("keys create for a missing agent = %d %q, want a clear refusal", code, errOut)
	}
	agent := "apiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: impact}\nspec: {}\n"
	if _, errOut, code := run(t, agent, append([]string{"apply", "-f", "-"}, conn...)...); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	out, errOut, code := run(t, "", append([]string{"keys", "create", "--agent", "impact"}, conn...)...)
	secret := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(secret, "corral_ak_") || !strings.Contains(errOut, "not shown again") {
		t.Fatalf("keys create = %d %q %q", code, out, errOut)
	}
	out, _, _ = run(t, "", append([]string{"keys", "list", "--agent", "impact", "-o", "json"}, conn...)...)
	var list struct{ Items []struct{ ID, Agent string } }
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Items) != 1 || list.Items[0].Agent != "impact" {
		t.Fatalf("keys list -o json = %s", out)
	}
	if strings.Contains(out, secret) {
		t.Error("keys list printed the key itself")
	}
	id := list.Items[0].ID
	if out, _, code := run(t, "", append([]string{"keys", "revoke", id}, conn...)...); code != 0 || out != "key "+id+" of Agent/impact revoked\n" {
		t.Errorf("keys revoke = %d %q", code, out)
	}
	if _, errOut, code := run(t, "", append([]string{"keys", "revoke", id}, conn...)...); code != 1 || !strings.Contains(errOut, "key_not_found") {
		t.Errorf("keys revoke again = %d %q, want key_not_found", code, errOut)
	}
}
