package policy

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Warning is a finding of Lint: a rule that reads an argument no tool has,
// and so can never fire on it.
type Warning struct {
	// Module is the module's name: a file's path, or "<policy>/<n>.rego".
	Module string `json:"module"`
	// Line is the line of the reference in the module.
	Line int `json:"line"`
	// Rule is the name of the rule holding the reference.
	Rule string `json:"rule"`
	// Ref is the reference as written: input.action.arguments.amout.
	Ref string `json:"ref"`
	// Argument is the path read below arguments: amout, or payee.iban.
	Argument string `json:"argument"`
}

func (w Warning) String() string {
	return fmt.Sprintf("%s:%d: rule %s reads %s, which no tool in the catalogue declares: it never fires on tools (%s)",
		w.Module, w.Line, w.Rule, w.Argument, w.Ref)
}

// Lint finds references to input.action.arguments.<path> in modules that
// no tool's input schema has: rules that can never fire on a tool. schemas
// are the tools' input schemas (JSON Schema, as the catalogue lists them).
//
// It follows the references that OPA's AST shows directly: the full ref,
// and a variable or a complete rule (of the same module) bound to
// input.action.arguments, as `transfer := input.action.arguments`. A path is
// had when some tool's schema declares it through properties (and $refs to
// $defs, allOf, anyOf and oneOf), or reaches a part of a schema that
// declares no properties (anything may be there). Only the leading string
// segments are checked: arguments.items[i].sku stops at items.
func Lint(modules []Module, schemas []json.RawMessage) ([]Warning, error) {
	roots := make([]map[string]any, 0, len(schemas))
	for _, raw := range schemas {
		var s map[string]any
		if json.Unmarshal(raw, &s) == nil {
			roots = append(roots, s)
		}
	}
	var out []Warning
	for _, m := range modules {
		mod, err := parseModule(m)
		if err != nil {
			return nil, fmt.Errorf("policy: lint %s: %w", m.Name, err)
		}
		aliases := ruleAliases(mod)
		for _, rule := range mod.Rules {
			locals := bodyAliases(rule)
			ast.WalkRefs(rule, func(ref ast.Ref) bool {
				path, ok := argumentPath(ref, aliases, locals)
				if ok && len(path) > 0 && !declared(roots, path) {
					out = append(out, Warning{
						Module: m.Name, Line: ref[0].Location.Row, Rule: rule.Head.Ref().String(),
						Ref: ref.String(), Argument: strings.Join(path, "."),
					})
				}
				return false
			})
		}
	}
	slices.SortStableFunc(out, func(a, b Warning) int {
		if c := strings.Compare(a.Module, b.Module); c != 0 {
			return c
		}
		return a.Line - b.Line
	})
	return out, nil
}

// ruleAliases returns the names of the module's complete rules whose value
// is input.action.arguments (transfer := input.action.arguments if ...),
// as the refs that read them: transfer and data.<package>.transfer.
func ruleAliases(mod *ast.Module) []ast.Ref {
	var out []ast.Ref
	for _, rule := range mod.Rules {
		h := rule.Head
		if h.Value == nil || h.Key != nil || len(h.Args) > 0 {
			continue
		}
		name, ok := h.Ref()[0].Value.(ast.Var)
		if v, isRef := h.Value.Value.(ast.Ref); ok && len(h.Ref()) == 1 && isRef && v.Equal(argumentsRef) {
			out = append(out, ast.Ref{ast.VarTerm(string(name))}, mod.Package.Path.Append(ast.StringTerm(string(name))))
		}
	}
	return out
}

// bodyAliases returns the variables a rule's body binds to
// input.action.arguments (args := input.action.arguments).
func bodyAliases(rule *ast.Rule) []ast.Ref {
	var out []ast.Ref
	for _, e := range rule.Body {
		if !e.IsAssignment() && !e.IsEquality() {
			continue
		}
		terms, ok := e.Terms.([]*ast.Term)
		if !ok || len(terms) != 3 {
			continue
		}
		v, isVar := terms[1].Value.(ast.Var)
		r, isRef := terms[2].Value.(ast.Ref)
		if isVar && isRef && r.Equal(argumentsRef) {
			out = append(out, ast.Ref{ast.VarTerm(string(v))})
		}
	}
	return out
}

// argumentPath returns the leading string segments a ref reads below the
// arguments, and whether it reads below them at all.
func argumentPath(ref ast.Ref, aliases ...[]ast.Ref) ([]string, bool) {
	var rest ast.Ref
	switch {
	case ref.HasPrefix(argumentsRef):
		rest = ref[len(argumentsRef):]
	default:
		found := false
		for _, list := range aliases {
			for _, a := range list {
				if ref.HasPrefix(a) {
					rest, found = ref[len(a):], true
					break
				}
			}
		}
		if !found {
			return nil, false
		}
	}
	var path []string
	for _, t := range rest {
		s, ok := t.Value.(ast.String)
		if !ok {
			break
		}
		path = append(path, string(s))
	}
	return path, true
}

// declared reports whether some schema has the path.
func declared(roots []map[string]any, path []string) bool {
	for _, root := range roots {
		if hasPath(root, root, path, 0) {
			return true
		}
	}
	return false
}

// hasPath reports whether schema s (within root, for $refs) has path: it
// declares the first segment and the rest is had below it, or it declares
// no properties at all.
func hasPath(root, s map[string]any, path []string, depth int) bool {
	if len(path) == 0 || depth > 64 {
		return true
	}
	if ref, ok := s["$ref"].(string); ok {
		if name, ok := strings.CutPrefix(ref, "#/$defs/"); ok {
			defs, _ := root["$defs"].(map[string]any)
			if d, ok := defs[name].(map[string]any); ok && hasPath(root, d, path, depth+1) {
				return true
			}
		}
	}
	branches := false
	for _, k := range []string{"allOf", "anyOf", "oneOf"} {
		list, _ := s[k].([]any)
		for _, b := range list {
			branches = true
			if bs, ok := b.(map[string]any); ok && hasPath(root, bs, path, depth+1) {
				return true
			}
		}
	}
	props, ok := s["properties"].(map[string]any)
	if !ok {
		// Nothing declared here: anything may be, unless $ref or the
		// branches declare what is.
		_, isRef := s["$ref"]
		return !isRef && !branches
	}
	next, ok := props[path[0]].(map[string]any)
	if !ok {
		return props[path[0]] == true
	}
	return hasPath(root, next, path[1:], depth+1)
}
