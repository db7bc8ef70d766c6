package policy

import (
	"cmp"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"
)

// Package is the Rego package every policy module declares.
const Package = "corral.authz"

// Module is one Rego module.
type Module struct {
	// Name identifies the module in errors: "payments/0.rego" for the
	// first module of Policy/payments, a file's path for files.
	Name   string `json:"name"`
	Source string `json:"source"`
}

// Bundle is a set of modules and the data they read (as data.<key>).
type Bundle struct {
	Modules []Module       `json:"modules"`
	Data    map[string]any `json:"data,omitempty"`
}

// Options tune an engine.
type Options struct {
	// Timeout bounds one decision; DefaultTimeout when zero.
	Timeout time.Duration
}

// DefaultTimeout bounds one decision when Options.Timeout is zero. It is
// wall time, so it must stay well above what a garbage collection or a busy
// machine adds to a decision that takes microseconds: it stops a runaway
// policy, not a slow moment (at 50 ms, a loaded 2-core machine denied about
// one call in 250 of a correct policy).
const DefaultTimeout = 250 * time.Millisecond

//go:embed decision.rego
var decisionRego string

// decisionModule is the name of corral's own module, which reads the
// contract's four documents at once (package corral.decision: no user
// module can add to it, since every user module is in corral.authz).
const decisionModule = "corral/decision.rego"

// unsafeBuiltins are OPA functions policies may not call: network access on
// every action would make decisions slow and give data a way out, and
// opa.runtime would show rules the server's environment variables.
var unsafeBuiltins = map[string]struct{}{
	"http.send":          {},
	"net.lookup_ip_addr": {},
	"opa.runtime":        {},
}

// Compile parses and compiles a bundle's modules with its data, and
// prepares the queries every decision runs. Errors are a *CompileError
// naming module and line.
func Compile(ctx context.Context, b Bundle, opts Options) (*Engine, error) {
	modules := make(map[string]*ast.Module, len(b.Modules)+1)
	var ce CompileError
	for _, m := range b.Modules {
		if m.Name == decisionModule {
			ce.Errors = append(ce.Errors, fmt.Sprintf("%s: the name is corral's own: name the module otherwise", m.Name))
			continue
		}
		if _, dup := modules[m.Name]; dup {
			ce.Errors = append(ce.Errors, fmt.Sprintf("%s: two modules have this name", m.Name))
			continue
		}
		parsed, err := parseModule(m)
		if err != nil {
			ce.Errors = append(ce.Errors, compileError(err).Errors...)
			continue
		}
		if got := parsed.Package.Path.String(); got != "data."+Package {
			ce.Errors = append(ce.Errors, fmt.Sprintf("%s:%d: package is %s, want package %s: every policy module adds rules to it",
				m.Name, parsed.Package.Location.Row, packageName(parsed), Package))
			continue
		}
		modules[m.Name] = parsed
	}
	if len(ce.Errors) > 0 {
		return nil, &ce
	}
	parsed, err := parseModule(Module{Name: decisionModule, Source: decisionRego})
	if err != nil {
		return nil, fmt.Errorf("policy: corral's decision module: %w", err)
	}
	modules[decisionModule] = parsed

	store, err := dataStore(b.Data)
	if err != nil {
		return nil, err
	}
	compiler, err := compile(ctx, modules, store, false)
	if err != nil {
		return nil, err
	}
	return prepare(ctx, compiler, store, opts, revision(b))
}

// parseModule parses one module as Rego v1.
func parseModule(m Module) (*ast.Module, error) {
	return ast.ParseModuleWithOpts(m.Name, m.Source, ast.ParserOptions{RegoVersion: ast.RegoV1})
}

// packageName returns a module's package as written ("corral.authz").
func packageName(m *ast.Module) string {
	return m.Package.Path[1:].String()
}

// dataStore returns an in-memory store holding data, converted to Rego
// values once so that reads cost nothing per decision.
func dataStore(data map[string]any) (storage.Store, error) {
	if data == nil {
		data = map[string]any{}
	}
	// A round trip through JSON turns whatever the caller built (numbers as
	// float64 or json.Number, typed slices) into plain JSON values.
	var plain any = data
	if err := util.RoundTrip(&plain); err != nil {
		return nil, &CompileError{Errors: []string{"data: " + err.Error()}}
	}
	v, err := ast.InterfaceToValue(plain)
	if err != nil {
		return nil, &CompileError{Errors: []string{"data: " + err.Error()}}
	}
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, &CompileError{Errors: []string{"data: must be an object"}}
	}
	return inmem.NewFromASTObject(obj), nil
}

// newCompiler returns a compiler with corral's functions declared and the
// unsafe ones left out (a call of one is an undefined function).
func newCompiler() *ast.Compiler {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = slices.DeleteFunc(caps.Builtins, func(b *ast.Builtin) bool {
		_, unsafe := unsafeBuiltins[b.Name]
		return unsafe
	})
	for _, b := range builtinDecls() {
		caps.Builtins = append(caps.Builtins, b)
	}
	return ast.NewCompiler().
		WithCapabilities(caps).
		WithDefaultRegoVersion(ast.RegoV1)
}

// compile compiles modules, checking that no rule and no data claim the
// same path.
func compile(ctx context.Context, modules map[string]*ast.Module, store storage.Store, print bool) (*ast.Compiler, error) {
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: read data: %w", err)
	}
	defer store.Abort(ctx, txn)
	c := newCompiler().
		WithEnablePrintStatements(print).
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn))
	c.Compile(modules)
	if c.Failed() {
		return nil, compileError(c.Errors)
	}
	return c, nil
}

// prepare prepares the decision query and the partial queries of Visible.
func prepare(ctx context.Context, c *ast.Compiler, store storage.Store, opts Options, rev string) (*Engine, error) {
	e := &Engine{revision: rev, timeout: opts.Timeout, base: &baseCache{}}
	e.decided = newDecisions(c.Modules)
	if e.timeout <= 0 {
		e.timeout = DefaultTimeout
	}
	// A function that fails (to_number("ten"), a division by zero) halts
	// the evaluation instead of making its expression undefined: otherwise a
	// deny rule whose function failed would simply not deny.
	base := append([]func(*rego.Rego){rego.Compiler(c), rego.Store(store), rego.StrictBuiltinErrors(true)}, builtinOptions()...)
	var err error
	e.decide, err = rego.New(append(base, rego.Query("data.corral.decision.result"))...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: prepare decision: %w", compileError(err))
	}
	// The queries of Visible are written so that they type-check whatever
	// types the rules give allow and deny: a policy that breaks the contract
	// fails its decisions, not its compilation. Should one still not
	// prepare, Visible reports the error.
	unknowns := rego.ParsedUnknowns(unknownsWithPrincipal)
	e.allowable, e.visibleErr = rego.New(append(base, unknowns, rego.Query("data.corral.authz.allow"))...).PrepareForPartial(ctx)
	if e.visibleErr == nil {
		e.mustDeny, e.visibleErr = rego.New(append(base, unknowns, rego.Query("some reason in data.corral.authz.deny"))...).PrepareForPartial(ctx)
	}
	return e, nil
}

// revision digests a bundle: its modules in name order and its data.
func revision(b Bundle) string {
	h := sha256.New()
	mods := slices.Clone(b.Modules)
	slices.SortFunc(mods, func(a, b Module) int { return cmp.Compare(a.Name, b.Name) })
	enc := json.NewEncoder(h)
	// Encoding cannot fail for strings; data was checked by dataStore.
	_ = enc.Encode(mods)
	_ = enc.Encode(b.Data)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:12]
}
