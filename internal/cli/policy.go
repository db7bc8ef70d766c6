package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/policy"
)

func newPolicy(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Test policies, evaluate them on an input, show the default bundle",
		Long: `Policy decides, on every action, whether an agent may do it: Rego modules
(package corral.authz) from Policy resources, added to corral's default
bundle. A rule set deny refuses, require_approval asks a human, allow lets
through; docs/policy.md states the contract and the input.

These commands work on files, offline, except 'eval' without paths, which
asks the running server.`,
		Example: `  corral policy show-default
  corral policy test examples/policies/payments
  corral policy eval --input transfer.json examples/policies/payments`,
	}
	cmd.AddCommand(newPolicyShowDefault(s), newPolicyTest(s), newPolicyEval(s), newPolicyApply(s))
	return cmd
}

func newPolicyShowDefault(s streams) *cobra.Command {
	return &cobra.Command{
		Use:   "show-default",
		Short: "Print the built-in default bundle's Rego",
		Long: `Print the Rego that corral adds to every set of policies, unless the server
runs with --policy-default=none or names other modules.`,
		Example: `  corral policy show-default
  corral policy show-default > default.rego   # a starting point for --policy-default=PATH`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			for _, m := range policy.DefaultModules() {
				if _, err := io.WriteString(s.out, m.Source); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// testReport is `corral policy test -o json`.
type testReport struct {
	Results []policy.TestResult `json:"results"`
	Summary testSummary         `json:"summary"`
}

type testSummary struct {
	Total int `json:"total"`
	Pass  int `json:"pass"`
	Fail  int `json:"fail"`
	Error int `json:"error"`
	Skip  int `json:"skip"`
}

func summarize(results []policy.TestResult) testSummary {
	sum := testSummary{Total: len(results)}
	for _, r := range results {
		switch {
		case r.Pass:
			sum.Pass++
		case r.Error != "":
			sum.Error++
		case r.Skip:
			sum.Skip++
		default:
			sum.Fail++
		}
	}
	return sum
}

func newPolicyTest(s streams) *cobra.Command {
	var (
		run       string
		verbose   bool
		noDefault bool
	)
	cmd := &cobra.Command{
		Use:   "test PATH... [--run REGEX] [-v] [--no-default]",
		Short: "Run the Rego tests of policies, as opa test does",
		Long: `Run the tests (rules named test_*) found in PATHs: .rego files and
directories of them, searched recursively. Data comes from data.json and
data.yaml files (their keys become data.<key>) and from Policy resources in
YAML files, whose modules and data are loaded as the server loads them.

corral's default bundle is loaded too, as on the server, unless --no-default.
Tests may be in any package; package corral.authz_test with
'import data.corral.authz' is the convention.

Each failing test is printed with its location; -v prints passing ones too,
with what they print(). The command fails when a test fails or errors.

OpenAPI documents in PATHs (YAML or JSON files with an openapi field, and
ToolSources with the document inline) are imported as the server imports them, and a rule that reads
input.action.arguments.<path> that none of their tools has is warned about
(module, line and rule): it could never fire on those tools. 'corral policy
apply' and 'corral apply' warn the same way against the server's catalogue.`,
		Example: `  corral policy test examples/policies/payments
  corral policy test policies/ --run 'transfer' -v
  corral policy test payments.rego payments_test.rego data.json --no-default
  corral policy test policies/ -o json | jq '.summary'`,
		Args: cobra.MinimumNArgs(1),
	}
	cmd.Flags().StringVar(&run, "run", "", "run only the tests whose name (package.test_name) matches this regular expression")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print every test and its print() output, not only failures")
	cmd.Flags().BoolVar(&noDefault, "no-default", false, "leave out corral's default bundle")
	output := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, paths []string) error {
		opts := policy.TestOptions{Default: !noDefault}
		if run != "" {
			re, err := regexp.Compile(run)
			if err != nil {
				return usageError{cmd, fmt.Errorf("--run %q: %w", run, err)}
			}
			opts.Run = re
		}
		b, err := policy.LoadDir(paths...)
		if err != nil {
			return err
		}
		results, err := policy.RunTests(cmd.Context(), b, opts)
		if err != nil {
			return err
		}
		if schemas, err := localSchemas(paths); err != nil {
			fmt.Fprintf(s.err, "warning: policy lint skipped: %v\n", err)
		} else if len(schemas) > 0 {
			warnLint(s.err, b.WithoutTests().Modules, schemas)
		}
		sum := summarize(results)
		if *output == "json" {
			if results == nil {
				results = []policy.TestResult{}
			}
			if err := writeJSON(s.out, testReport{Results: results, Summary: sum}); err != nil {
				return err
			}
		} else {
			writeTestResults(s.out, results, sum, verbose)
		}
		switch {
		case sum.Total == 0 && run != "":
			return fmt.Errorf("no test in %s matches --run %q", strings.Join(paths, ", "), run)
		case sum.Total == 0:
			return fmt.Errorf("no tests in %s: tests are rules named test_*", strings.Join(paths, ", "))
		case sum.Fail+sum.Error > 0:
			return fmt.Errorf("%d of %d tests failed", sum.Fail+sum.Error, sum.Total)
		}
		return nil
	}
	return cmd
}

// writeTestResults prints failures (every test with verbose) and a summary.
func writeTestResults(w io.Writer, results []policy.TestResult, sum testSummary, verbose bool) {
	for _, r := range results {
		outcome := "PASS"
		switch {
		case r.Error != "":
			outcome = "ERROR"
		case r.Skip:
			outcome = "SKIP"
		case r.Fail:
			outcome = "FAIL"
		}
		if outcome == "PASS" && !verbose {
			continue
		}
		fmt.Fprintf(w, "%s: %s.%s: %s (%v)\n", r.Location, r.Package, r.Name, outcome, r.Duration.Round(time.Microsecond))
		if r.Error != "" {
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(r.Error, "\n", "\n  "))
		}
		if verbose || outcome != "PASS" {
			for _, line := range r.Output {
				fmt.Fprintf(w, "  | %s\n", line)
			}
		}
	}
	if len(results) == 0 {
		return
	}
	if verbose || sum.Pass < sum.Total {
		fmt.Fprintln(w, strings.Repeat("-", 72))
	}
	fmt.Fprintf(w, "PASS: %d/%d\n", sum.Pass, sum.Total)
	for _, c := range []struct {
		name string
		n    int
	}{{"FAIL", sum.Fail}, {"ERROR", sum.Error}, {"SKIPPED", sum.Skip}} {
		if c.n > 0 {
			fmt.Fprintf(w, "%s: %d/%d\n", c.name, c.n, sum.Total)
		}
	}
}

// evalTimeout bounds a local evaluation: the CLI is not on an action's path.
const evalTimeout = 5 * time.Second

func newPolicyEval(s streams) *cobra.Command {
	var (
		cf        clientFlags
		input     string
		noDefault bool
	)
	cmd := &cobra.Command{
		Use:   "eval --input FILE [PATH...]",
		Short: "Decide one input: locally with the policies in PATHs, or on the server",
		Long: `Print the decision policy takes on one input: the effect (allow, deny or
approval), its reasons, the obligations and the revision of the policy that
decided. The input is a JSON or YAML document as docs/policy.md describes
it; --input - reads it from standard input. A field the input does not have
is an error, so that a misspelt field is not silently ignored.

With PATHs, the decision is taken here, by the default bundle (unless
--no-default) and the modules and data in PATHs (as 'corral policy test'
loads them, test files left out). Without PATHs, the running server decides
with its live policies (POST /v1/policy/eval, with the admin token).`,
		Example: `  corral policy eval --input transfer.json examples/policies/payments
  corral policy eval --input transfer.yaml              # ask the running server
  echo '{"action": {"kind": "tool", "target": "crm.find"}, "agent": {"name": "impact", "tools": ["crm.*"]}}' |
    corral policy eval --input - policies/ -o json`,
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&input, "input", "", "the input document, JSON or YAML; - for standard input")
	cmd.Flags().BoolVar(&noDefault, "no-default", false, "with PATHs: leave out corral's default bundle")
	output := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, paths []string) error {
		if input == "" {
			return usageError{cmd, errors.New("--input is required: a JSON or YAML file, or - for standard input")}
		}
		if len(paths) == 0 && noDefault {
			return usageError{cmd, errors.New("--no-default goes with PATHs: the server decides with the default bundle it was started with")}
		}
		in, err := readInput(s.in, input)
		if err != nil {
			return err
		}
		var d policy.Decision
		if len(paths) > 0 {
			d, err = evalLocal(cmd, in, paths, !noDefault)
		} else {
			d, err = evalRemote(cmd, cf, in)
		}
		if err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, d)
		}
		return writeDecision(s.out, d)
	}
	return cmd
}

// readInput reads and strictly decodes the --input document.
func readInput(stdin io.Reader, path string) (*policy.Input, error) {
	var (
		data []byte
		err  error
	)
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, 16<<20))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("--input %s: %w", path, err)
	}
	in, err := policy.DecodeInput(data)
	if err != nil {
		return nil, fmt.Errorf("--input %s: %w", path, err)
	}
	return in, nil
}

func evalLocal(cmd *cobra.Command, in *policy.Input, paths []string, withDefault bool) (policy.Decision, error) {
	b, err := policy.LoadDir(paths...)
	if err != nil {
		return policy.Decision{}, err
	}
	b = b.WithoutTests()
	if withDefault {
		b.Modules = append(policy.DefaultModules(), b.Modules...)
	}
	e, err := policy.Compile(cmd.Context(), b, policy.Options{Timeout: evalTimeout})
	if err != nil {
		return policy.Decision{}, err
	}
	return e.Decide(cmd.Context(), in)
}

func evalRemote(cmd *cobra.Command, cf clientFlags, in *policy.Input) (policy.Decision, error) {
	c, err := cf.client()
	if err != nil {
		return policy.Decision{}, err
	}
	var d policy.Decision
	err = c.do(cmd.Context(), "POST", "/v1/policy/eval", in, &d)
	return d, err
}

// writeDecision prints a decision for people: one reason a line.
func writeDecision(w io.Writer, d policy.Decision) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "EFFECT\t%s\n", d.Effect)
	label := "REASONS"
	if len(d.Reasons) == 0 {
		fmt.Fprintf(tw, "%s\t-\n", label)
	}
	for _, r := range d.Reasons {
		fmt.Fprintf(tw, "%s\t%s\n", label, oneLine(r, 200))
		label = ""
	}
	label = "OBLIGATIONS"
	if len(d.Obligations) == 0 {
		fmt.Fprintf(tw, "%s\t-\n", label)
	}
	keys := make([]string, 0, len(d.Obligations))
	for k := range d.Obligations {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v, err := json.Marshal(d.Obligations[k])
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s: %s\n", label, k, v)
		label = ""
	}
	fmt.Fprintf(tw, "REVISION\t%s\n", d.Revision)
	return tw.Flush()
}
