package cli

import (
	"bytes"
	"encoding/json"
	"github.com/corral-dev/corral/internal/app/apptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/policy"
)

const paymentsExample = "../../examples/policies/payments"

// runPolicy runs `corral policy ARGS` in-process, under a root command
// shaped as Main's, and returns stdout, stderr and the exit code.
func runPolicy(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	s := streams{in: strings.NewReader(stdin), out: &out, err: &errOut}
	root := &cobra.Command{Use: "corral", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newPolicy(s))
	root.SetArgs(append([]string{"policy"}, args...))
	root.SetOut(&out)
	root.SetErr(&errOut)
	if err := root.ExecuteContext(t.Context()); err != nil {
		printError(&errOut, root, err)
		return out.String(), errOut.String(), 1
	}
	return out.String(), errOut.String(), 0
}

func TestPolicyCommandsHaveHelpWithExample(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Short == "" || c.Example == "" {
			t.Errorf("%s: Short %q, Example %q; want both", c.CommandPath(), c.Short, c.Example)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newPolicy(streams{}))
}

func TestPolicyShowDefault(t *testing.T) {
	out, _, code := runPolicy(t, "", "show-default")
	if code != 0 || out != policy.DefaultModules()[0].Source || !strings.Contains(out, "package corral.authz") {
		t.Errorf("policy show-default = exit %d\n%s", code, out)
	}
}

func TestPolicyTest(t *testing.T) {
	out, errOut, code := runPolicy(t, "", "test", paymentsExample)
	if code != 0 || !strings.HasPrefix(out, "PASS: ") || strings.Contains(out, "FAIL") {
		t.Fatalf("policy test payments = exit %d\n%s%s", code, out, errOut)
	}

	out, _, code = runPolicy(t, "", "test", paymentsExample, "-v", "--run", "read_only")
	if code != 0 || !strings.Contains(out, "payments_test.rego:") || !strings.Contains(out, "test_read_only_agent_may_read: PASS") ||
		strings.Contains(out, "test_small_transfer") || !strings.Contains(out, "PASS: 3/3") {
		t.Errorf("policy test -v --run read_only = exit %d\n%s", code, out)
	}

	out, _, code = runPolicy(t, "", "test", paymentsExample, "-o", "json")
	var report testReport
	if err := json.Unmarshal([]byte(out), &report); code != 0 || err != nil || report.Summary.Pass != report.Summary.Total || report.Summary.Total < 20 {
		t.Errorf("policy test -o json = exit %d %v: %+v", code, err, report.Summary)
	}

	// Without the default bundle, a test that relies on it fails.
	dir := t.TempDir()
	write(t, filepath.Join(dir, "t_test.rego"), "package corral.authz_test\n\ntest_listed_tool_allowed if data.corral.authz.allow with input as "+
		`{"action": {"kind": "tool", "target": "crm.find"}, "agent": {"tools": ["crm.*"]}}`+"\n")
	if out, errOut, code := runPolicy(t, "", "test", dir); code != 0 {
		t.Errorf("policy test with the default bundle = exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runPolicy(t, "", "test", dir, "--no-default")
	if code != 1 || !strings.Contains(out, "t_test.rego:3: corral.authz_test.test_listed_tool_allowed: FAIL (") || !strings.Contains(out, "FAIL: 1/1") || !strings.Contains(errOut, "1 of 1 tests failed") {
		t.Errorf("policy test --no-default = exit %d\n%s%s", code, out, errOut)
	}
}

func TestPolicyTestFailures(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "p_test.rego"), `package corral.authz_test

test_ok if true

test_bad if {
	print("looking at", 42)
	false
}

test_error if to_number("ten") == 10
`)
	out, errOut, code := runPolicy(t, "", "test", dir)
	for _, want := range []string{"p_test.rego:5: corral.authz_test.test_bad: FAIL", "  | looking at 42", "p_test.rego:10: corral.authz_test.test_error: ERROR", "to_number", "PASS: 1/3", "FAIL: 1/3", "ERROR: 1/3"} {
		if !strings.Contains(out, want) {
			t.Errorf("policy test output lacks %q:\n%s", want, out)
		}
	}
	if code != 1 || !strings.Contains(errOut, "2 of 3 tests failed") || strings.Contains(out, "test_ok") {
		t.Errorf("policy test = exit %d, stderr %q; want 1 and failures only", code, errOut)
	}

	write(t, filepath.Join(dir, "broken.rego"), "package corral.authz\nallow if {\n")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"test", dir}, "broken.rego:3: rego_parse_error"},
		{[]string{"test", paymentsExample, "--run", "("}, `--run "(": error parsing regexp`},
		{[]string{"test", paymentsExample, "--run", "nothing_matches_this"}, `no test in ../../examples/policies/payments matches --run "nothing_matches_this"`},
		{[]string{"test", filepath.Join(paymentsExample, "payments.rego")}, "no tests in"},
		{[]string{"test", filepath.Join(dir, "missing")}, "missing"},
		{[]string{"test"}, "requires at least 1 arg"},
	}
	for _, tt := range tests {
		_, errOut, code := runPolicy(t, "", tt.args...)
		if code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("corral policy %s = exit %d %q, want an error containing %q", strings.Join(tt.args, " "), code, errOut, tt.want)
		}
	}
}

const transferJSON = `{
  "action": {"kind": "tool", "target": "banking.send_money",
             "arguments": {"to_iban": "NL91 ABNA 0417 1643 00", "amount": 1500, "currency": "EUR", "reference": "invoice 7"}},
  "agent": {"name": "treasurer", "tools": ["banking.*"]},
  "tool": {"name": "banking.send_money", "source": "banking", "method": "POST", "path": "/transfers",
           "annotations": {"readOnly": false, "destructive": false, "idempotent": false}},
  "time": "2026-03-02T10:00:00Z"
}`

func TestPolicyEvalLocal(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "transfer.json")
	write(t, input, transferJSON)

	out, errOut, code := runPolicy(t, "", "eval", "--input", input, paymentsExample)
	for _, want := range []string{"EFFECT       approval", "REASONS      the recipient is not a known recipient\n             transfers over 1000 EUR need approval",
		`OBLIGATIONS  approvers: ["payments-oncall"]`, "REVISION     sha256:"} {
		if !strings.Contains(out, want) {
			t.Errorf("policy eval output lacks %q:\n%s%s", want, out, errOut)
		}
	}
	if code != 0 {
		t.Errorf("policy eval = exit %d %s", code, errOut)
	}

	// YAML from standard input, JSON out.
	yamlInput := "action: {kind: tool, target: banking.get_balance, arguments: {id: acc-1}}\nagent: {name: auditor, tools: [banking.*], labels: {payments.corral.dev/mode: read-only}}\ntool: {name: banking.get_balance, source: banking, method: GET}\n"
	out, errOut, code = runPolicy(t, yamlInput, "eval", "--input", "-", paymentsExample, "-o", "json")
	var d policy.Decision
	if err := json.Unmarshal([]byte(out), &d); code != 0 || err != nil || d.Effect != policy.Allow || len(d.Reasons) != 0 {
		t.Errorf("policy eval --input - -o json = exit %d %v %+v %s", code, err, d, errOut)
	}

	// Without the default bundle nothing allows.
	write(t, filepath.Join(dir, "policy", "p.rego"), "package corral.authz\ndeny contains \"weekend\" if false\n")
	out, _, code = runPolicy(t, yamlInput, "eval", "--input", "-", "--no-default", filepath.Join(dir, "policy"))
	if code != 0 || !strings.Contains(out, "EFFECT       deny") || !strings.Contains(out, "REASONS      not allowed") || !strings.Contains(out, "OBLIGATIONS  -") {
		t.Errorf("policy eval --no-default = exit %d\n%s", code, out)
	}
}

func TestPolicyEvalErrors(t *testing.T) {
	dir := t.TempDir()
	misspelt := filepath.Join(dir, "misspelt.json")
	write(t, misspelt, `{"action": {"kind": "tool", "target": "x"}, "agnet": {"name": "impact"}}`)
	broken := filepath.Join(dir, "broken")
	write(t, filepath.Join(broken, "p.rego"), "package corral.authz\ndeny contains x if")
	good := filepath.Join(dir, "good.json")
	write(t, good, `{"action": {"kind": "tool", "target": "x"}}`)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"eval", paymentsExample}, "--input is required"},
		{[]string{"eval", "--input", misspelt, paymentsExample}, `--input ` + misspelt + `: policy: input: unknown field "agnet"`},
		{[]string{"eval", "--input", filepath.Join(dir, "none.json"), paymentsExample}, "--input " + filepath.Join(dir, "none.json")},
		{[]string{"eval", "--input", good, broken}, "p.rego:2: rego_parse_error"},
		{[]string{"eval", "--input", good, "--no-default"}, "--no-default goes with PATHs"},
		{[]string{"eval", "--input", good, paymentsExample, "-o", "yaml"}, `invalid argument "yaml" for "-o, --output" flag: want one of table, json`},
	}
	for _, tt := range tests {
		_, errOut, code := runPolicy(t, "", tt.args...)
		if code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("corral policy %s = exit %d %q, want an error containing %q", strings.Join(tt.args, " "), code, errOut, tt.want)
		}
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyApplyYAML: a directory becomes one Policy whose modules leave
// the tests out and whose data is the directory's data; a bad name is
// refused as apply would refuse it.
func TestPolicyApplyYAML(t *testing.T) {
	out, errOut, code := runPolicy(t, "", "apply", paymentsExample, "--name", "payments", "-o", "yaml")
	if code != 0 || !strings.Contains(out, "kind: Policy") || !strings.Contains(out, "known_recipients:") ||
		!strings.Contains(out, "package corral.authz") || strings.Contains(out, "test_") {
		t.Errorf("policy apply -o yaml = exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := runPolicy(t, "", "apply", paymentsExample, "--name", "Bad_Name", "-o", "yaml"); code == 0 || !strings.Contains(errOut, "metadata.name") {
		t.Errorf("policy apply --name Bad_Name = exit %d %s, want the name refused", code, errOut)
	}
	if _, errOut, code := runPolicy(t, "", "apply", paymentsExample); code == 0 || !strings.Contains(errOut, "--name is required") {
		t.Errorf("policy apply without --name = exit %d %s", code, errOut)
	}
}

// TestPolicyTestLint: `policy test` warns, naming file, line and rule,
// about a rule that reads an argument none of the OpenAPI documents in its
// paths has; the payments example itself reads none.
func TestPolicyTestLint(t *testing.T) {
	_, errOut, code := runPolicy(t, "", "test", paymentsExample)
	if code != 0 || strings.Contains(errOut, "warning") {
		t.Errorf("policy test %s = exit %d, stderr %q; want 0 and no warning", paymentsExample, code, errOut)
	}

	dir := t.TempDir()
	spec, err := os.ReadFile(filepath.Join(paymentsExample, "banking.openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "banking.openapi.yaml"), string(spec))
	write(t, filepath.Join(dir, "big.rego"), `package corral.authz

deny contains "too much" if {
	input.action.target == "banking.send_money"
	input.action.arguments.body.amount > 1000
}
`)
	write(t, filepath.Join(dir, "big_test.rego"), `package corral.authz_test
import data.corral.authz
test_big if authz.deny["too much"] with input as {"action": {"target": "banking.send_money", "arguments": {"body": {"amount": 5000}}}}
`)
	_, errOut, code = runPolicy(t, "", "test", dir)
	want := filepath.Join(dir, "big.rego") + ":5: rule deny reads body.amount, which no tool in the catalogue declares"
	if code != 0 || !strings.Contains(errOut, want) {
		t.Errorf("policy test = exit %d, stderr %q; want 0 and a warning %q", code, errOut, want)
	}

	// A ToolSource with the document inline, as `corral tools import
	// openapi -o yaml` writes it, is read the same way.
	if err := os.Remove(filepath.Join(dir, "banking.openapi.yaml")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "banking.yaml"), "apiVersion: corral.dev/v1\nkind: ToolSource\nmetadata: {name: banking}\nspec:\n  openapi:\n    document: |\n      "+
		strings.ReplaceAll(string(spec), "\n", "\n      ")+"\n")
	_, errOut, code = runPolicy(t, "", "test", dir)
	if code != 0 || !strings.Contains(errOut, want) {
		t.Errorf("policy test with a ToolSource = exit %d, stderr %q; want 0 and a warning %q", code, errOut, want)
	}
}

// TestApplyLint: `corral apply` of a Policy and `corral policy apply` warn,
// against the server's catalogue, about a rule reading an argument no tool
// has; the apply itself succeeds.
func TestApplyLint(t *testing.T) {
	abs, err := filepath.Abs(filepath.Join(paymentsExample, "banking.openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := apptest.Start(t)
	t.Chdir(t.TempDir())
	conn := []string{"--server", s.URL, "--token", s.Token}
	_, errOut, code := run(t, "", append([]string{"tools", "import", "openapi", abs, "--name", "banking", "--base-url", "http://127.0.0.1:1", "--apply"}, conn...)...)
	if code != 0 {
		t.Fatalf("tools import --apply: exit %d %s", code, errOut)
	}
	s.WaitTool(t, "banking.send_money")

	dir := t.TempDir()
	file := filepath.Join(dir, "limits.yaml")
	write(t, file, `apiVersion: corral.dev/v1
kind: Policy
metadata: {name: limits}
spec:
  rego:
    - |
      package corral.authz
      deny contains "too much" if input.action.arguments.body.amount > 1000
`)
	_, errOut, code = run(t, "", append([]string{"apply", "-f", file}, conn...)...)
	want := file + ": Policy/limits/0.rego:2: rule deny reads body.amount, which no tool in the catalogue declares"
	if code != 0 || !strings.Contains(errOut, want) {
		t.Errorf("apply = exit %d, stderr %q; want 0 and a warning %q", code, errOut, want)
	}

	write(t, filepath.Join(dir, "rules", "big.rego"), "package corral.authz\n\ndeny contains \"big\" if input.action.arguments.amount > 1000\nrequire_approval contains \"ref\" if input.action.arguments.referense != \"\"\n")
	_, errOut, code = run(t, "", append([]string{"policy", "apply", filepath.Join(dir, "rules"), "--name", "big"}, conn...)...)
	if code != 0 || !strings.Contains(errOut, "big.rego:4: rule require_approval reads referense") || strings.Contains(errOut, "reads amount") {
		t.Errorf("policy apply = exit %d, stderr %q; want one warning, for referense", code, errOut)
	}
}
