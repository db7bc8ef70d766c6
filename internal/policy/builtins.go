package policy

import (
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/corral-dev/corral/internal/tools"
)

// builtin is one of corral's Rego functions: its declaration and the option
// that adds its implementation to a rego.Rego. They are passed explicitly to
// the engine and to the test runner rather than registered globally, so that
// importing this package changes nothing in OPA for anyone else.
type builtin struct {
	decl *rego.Function
	impl func(*rego.Rego)
}

// builtins are corral's functions, documented in docs/policy.md.
var builtins = []builtin{
	function2("corral.glob.match", "reports whether a tool name matches a glob of Agent.spec.tools",
		types.NewFunction(types.Args(types.Named("pattern", types.S), types.Named("name", types.S)), types.B),
		globMatch),
	function1("corral.sql.is_mutation", "reports whether a SQL text (MySQL dialect) may do anything but read",
		types.NewFunction(types.Args(types.Named("query", types.S)), types.B),
		sqlIsMutation),
	function1("corral.url.host", "returns the lowercase host of a URL, without port or brackets",
		types.NewFunction(types.Args(types.Named("url", types.S)), types.S),
		urlHost),
	function1("corral.iban.valid", "reports whether a string is a valid IBAN (ISO 13616)",
		types.NewFunction(types.Args(types.Named("iban", types.S)), types.B),
		ibanValid),
}

func function1(name, desc string, decl *types.Function, f rego.Builtin1) builtin {
	fn := &rego.Function{Name: name, Description: desc, Decl: decl}
	return builtin{decl: fn, impl: rego.Function1(fn, f)}
}

func function2(name, desc string, decl *types.Function, f rego.Builtin2) builtin {
	fn := &rego.Function{Name: name, Description: desc, Decl: decl}
	return builtin{decl: fn, impl: rego.Function2(fn, f)}
}

// builtinDecls returns the declarations, for a compiler.
func builtinDecls() map[string]*ast.Builtin {
	m := make(map[string]*ast.Builtin, len(builtins))
	for _, b := range builtins {
		m[b.decl.Name] = &ast.Builtin{Name: b.decl.Name, Description: b.decl.Description, Decl: b.decl.Decl}
	}
	return m
}

// builtinOptions returns the implementations, for rego.New.
func builtinOptions() []func(*rego.Rego) {
	opts := make([]func(*rego.Rego), len(builtins))
	for i, b := range builtins {
		opts[i] = b.impl
	}
	return opts
}

// testerBuiltins returns the functions in the form the OPA test runner takes.
func testerBuiltins() []*tester.Builtin {
	decls := builtinDecls()
	out := make([]*tester.Builtin, len(builtins))
	for i, b := range builtins {
		out[i] = &tester.Builtin{Decl: decls[b.decl.Name], Func: b.impl}
	}
	return out
}

// stringArg returns a term's string, or ok false when it is not one. The
// type checker catches most misuses, but input values are only known at
// evaluation time; a non-string then makes the call undefined.
func stringArg(t *ast.Term) (string, bool) {
	s, ok := t.Value.(ast.String)
	return string(s), ok
}

// Results of the functions. Returning a nil term makes the call undefined.
var (
	trueTerm  = ast.BooleanTerm(true)
	falseTerm = ast.BooleanTerm(false)
)

func boolTerm(b bool) *ast.Term {
	if b {
		return trueTerm
	}
	return falseTerm
}

func globMatch(_ rego.BuiltinContext, pattern, name *ast.Term) (*ast.Term, error) {
	p, ok1 := stringArg(pattern)
	n, ok2 := stringArg(name)
	if !ok1 || !ok2 {
		return nil, nil
	}
	return boolTerm(tools.Match(p, n)), nil
}

func sqlIsMutation(_ rego.BuiltinContext, query *ast.Term) (*ast.Term, error) {
	q, ok := stringArg(query)
	if !ok {
		return nil, nil
	}
	return boolTerm(isMutation(q)), nil
}

func urlHost(_ rego.BuiltinContext, u *ast.Term) (*ast.Term, error) {
	s, ok := stringArg(u)
	if !ok {
		return nil, nil
	}
	host, ok := hostOf(s)
	if !ok {
		return nil, nil
	}
	return ast.StringTerm(host), nil
}

func ibanValid(_ rego.BuiltinContext, s *ast.Term) (*ast.Term, error) {
	v, ok := stringArg(s)
	if !ok {
		return nil, nil
	}
	return boolTerm(validIBAN(v)), nil
}
