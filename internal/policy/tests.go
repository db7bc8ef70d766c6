package policy

import (
	"cmp"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestOptions select and shape a test run.
type TestOptions struct {
	// Run, when set, runs only the tests whose package-qualified name
	// (data.corral.authz_test.test_x) it matches.
	Run *regexp.Regexp
	// Default adds the built-in default bundle to the modules under test, as
	// the server adds it to the Policy resources.
	Default bool
	// Timeout bounds each test; 5s when zero.
	Timeout time.Duration
}

// TestResult is the outcome of one Rego test (a rule named test_*).
type TestResult struct {
	Package string `json:"package"`
	Name    string `json:"name"`
	// Location is "file:line" of the test rule.
	Location string `json:"location"`
	Pass     bool   `json:"pass"`
	// Fail: the test ran and its body was false or undefined. Pass, Fail,
	// Skip and Error exclude each other.
	Fail bool `json:"fail,omitempty"`
	// Skip: a test named todo_test_*, listed but not run.
	Skip bool `json:"skip,omitempty"`
	// Error: the test could not be evaluated (a conflict, a time-out).
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration"`
	// Output holds what the test printed with print().
	Output []string `json:"output,omitempty"`

	file string // Location's parts, for sorting
	row  int
}

// RunTests runs the tests among b's modules, as `opa test` does, with
// corral's functions available. Modules may be of any package, so that
// tests can live in package corral.authz_test. The results are in the order
// of their location. A bundle that does not compile is a *CompileError.
func RunTests(ctx context.Context, b Bundle, opts TestOptions) ([]TestResult, error) {
	if opts.Default {
		b.Modules = append(DefaultModules(), b.Modules...)
	}
	modules := make(map[string]*ast.Module, len(b.Modules))
	var ce CompileError
	for _, m := range b.Modules {
		if _, dup := modules[m.Name]; dup {
			ce.Errors = append(ce.Errors, fmt.Sprintf("%s: two modules have this name", m.Name))
			continue
		}
		parsed, err := parseModule(m)
		if err != nil {
			ce.Errors = append(ce.Errors, compileError(err).Errors...)
			continue
		}
		modules[m.Name] = parsed
	}
	if len(ce.Errors) > 0 {
		return nil, &ce
	}
	store, err := dataStore(b.Data)
	if err != nil {
		return nil, err
	}
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: read data: %w", err)
	}
	defer store.Abort(ctx, txn)

	compiler := newCompiler().WithEnablePrintStatements(true)
	runner := tester.NewRunner().
		SetCompiler(compiler).
		SetStore(store).
		SetModules(modules).
		AddCustomBuiltins(testerBuiltins()).
		CapturePrintOutput(true).
		// As in the engine, a function that fails is an error, not undefined.
		RaiseBuiltinErrors(true).
		SetTimeout(cmp.Or(opts.Timeout, 5*time.Second))
	if opts.Run != nil {
		runner = runner.Filter(opts.Run.String())
	}
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		return nil, compileError(err)
	}
	var out []TestResult
	for r := range ch {
		out = append(out, testResult(r))
	}
	if err := ctx.Err(); err != nil {
		return out, fmt.Errorf("policy: tests: %w", err)
	}
	slices.SortFunc(out, func(a, b TestResult) int {
		return cmp.Or(cmp.Compare(a.file, b.file), cmp.Compare(a.row, b.row), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

func testResult(r *tester.Result) TestResult {
	tr := TestResult{
		Package:  strings.TrimPrefix(r.Package, "data."),
		Name:     r.Name,
		Pass:     r.Pass(),
		Fail:     r.Fail,
		Skip:     r.Skip,
		Duration: r.Duration,
	}
	if r.Location != nil {
		tr.file, tr.row = r.Location.File, r.Location.Row
		tr.Location = fmt.Sprintf("%s:%d", tr.file, tr.row)
	}
	if r.Error != nil {
		// OPA may mark an errored test as failed too; here the outcomes
		// exclude each other, as `corral policy test` prints one.
		tr.Error, tr.Fail = r.Error.Error(), false
	}
	if out := strings.TrimRight(string(r.Output), "\n"); out != "" {
		tr.Output = strings.Split(out, "\n")
	}
	return tr
}
