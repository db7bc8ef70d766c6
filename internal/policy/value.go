package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
)

// maxArgumentDepth bounds the nesting of arguments turned into Rego values;
// decoded JSON from corral's edges is far shallower.
const maxArgumentDepth = 100

// value returns the input as a Rego value, built directly rather than by
// encoding to JSON and parsing it back. Slices and maps that are nil
// become empty arrays and objects, so that rules can iterate them without
// checking first; absent principal, task, tool and model stay absent.
func (in *Input) value() (ast.Value, error) {
	args, err := argValue(in.Action.Arguments, 0)
	if err != nil {
		return nil, fmt.Errorf("action.arguments: %w", err)
	}
	items := make([][2]*ast.Term, 0, 7)
	items = append(items,
		[2]*ast.Term{keyAction, ast.ObjectTerm(
			[2]*ast.Term{keyKind, kindTerm(in.Action.Kind)},
			[2]*ast.Term{keyTarget, str(in.Action.Target)},
			[2]*ast.Term{keyArguments, ast.NewTerm(args)},
		)},
		[2]*ast.Term{keyAgent, agentTerms.term(&in.Agent)},
		[2]*ast.Term{keyTime, str(in.Time)},
	)
	if p := in.Principal; p != nil {
		t, err := principalTerm(p)
		if err != nil {
			return nil, err
		}
		items = append(items, [2]*ast.Term{keyPrincipal, t})
	}
	if t := in.Task; t != nil {
		items = append(items, [2]*ast.Term{keyTask, taskTerms.term(t)})
	}
	if t := in.Tool; t != nil {
		items = append(items, [2]*ast.Term{keyTool, toolTerms.term(t)})
	}
	if m := in.Model; m != nil {
		items = append(items, [2]*ast.Term{keyModel, modelTerms.term(m)})
	}
	return ast.NewObject(items...), nil
}

// principalTerm returns the principal's value: kept per subject (memo.go)
// when it has no claims, as the pipeline's principals do; built with its
// claims, which are arbitrary JSON, otherwise.
func principalTerm(p *Principal) (*ast.Term, error) {
	if len(p.Claims) == 0 {
		return principalTerms.term(p), nil
	}
	claims, err := argValue(p.Claims, 0)
	if err != nil {
		return nil, fmt.Errorf("principal.claims: %w", err)
	}
	return principalObject(p, ast.NewTerm(claims)), nil
}

func principalObject(p *Principal, claims *ast.Term) *ast.Term {
	return ast.ObjectTerm(
		[2]*ast.Term{keySub, str(p.Sub)},
		[2]*ast.Term{keyIssuer, str(p.Issuer)},
		[2]*ast.Term{keyGroups, stringArray(p.Groups)},
		[2]*ast.Term{keyRoles, stringArray(p.Roles)},
		[2]*ast.Term{keyClaims, claims},
	)
}

func taskTerm(t *Task) *ast.Term {
	return ast.ObjectTerm(
		[2]*ast.Term{keyID, str(t.ID)},
		[2]*ast.Term{keyChain, stringArray(t.Chain)},
		[2]*ast.Term{keyDepth, ast.InternedTerm(t.Depth)},
		[2]*ast.Term{keyTurns, ast.InternedTerm(t.Turns)},
	)
}

func agentTerm(a *Agent) *ast.Term {
	return ast.ObjectTerm(
		[2]*ast.Term{keyName, str(a.Name)},
		[2]*ast.Term{keyLabels, stringMap(a.Labels)},
		[2]*ast.Term{keyTools, stringArray(a.Tools)},
		[2]*ast.Term{keyModels, stringArray(a.Models)},
		[2]*ast.Term{keyAgents, stringArray(a.Agents)},
	)
}

func toolTerm(t *Tool) *ast.Term {
	return ast.ObjectTerm(
		[2]*ast.Term{keyName, str(t.Name)},
		[2]*ast.Term{keySource, str(t.Source)},
		[2]*ast.Term{keyMethod, str(t.Method)},
		[2]*ast.Term{keyPath, str(t.Path)},
		[2]*ast.Term{keyAnnotations, annotationTerms[t.Annotations]},
		[2]*ast.Term{keyAnnotationsSource, ast.ObjectTerm(
			[2]*ast.Term{keyReadOnly, str(t.AnnotationsSource.ReadOnly)},
			[2]*ast.Term{keyDestructive, str(t.AnnotationsSource.Destructive)},
			[2]*ast.Term{keyIdempotent, str(t.AnnotationsSource.Idempotent)},
		)},
	)
}

// kindTerm returns the action's kind, shared for the three kinds there are.
func kindTerm(kind string) *ast.Term {
	if t, ok := kindTerms[kind]; ok {
		return t
	}
	return str(kind)
}

var kindTerms = map[string]*ast.Term{KindTool: ast.StringTerm(KindTool), KindModel: ast.StringTerm(KindModel), KindAgent: ast.StringTerm(KindAgent)}

func modelTerm(m *Model) *ast.Term {
	targets := make([]*ast.Term, len(m.Targets))
	for i := range m.Targets {
		targets[i] = modelTerm(&m.Targets[i])
	}
	return ast.ObjectTerm(
		[2]*ast.Term{keyName, str(m.Name)},
		[2]*ast.Term{keyProvider, str(m.Provider)},
		[2]*ast.Term{keyRegion, str(m.Region)},
		[2]*ast.Term{keyRedact, str(m.Redact)},
		[2]*ast.Term{keyTargets, ast.ArrayTerm(targets...)},
	)
}

// The input's keys, made once: a decision builds the input on every action.
var (
	keyAction, keyKind, keyTarget, keyArguments             = ast.StringTerm("action"), ast.StringTerm("kind"), ast.StringTerm("target"), ast.StringTerm("arguments")
	keyAgent, keyName, keyLabels, keyTools, keyModels       = ast.StringTerm("agent"), ast.StringTerm("name"), ast.StringTerm("labels"), ast.StringTerm("tools"), ast.StringTerm("models")
	keyPrincipal, keySub, keyIssuer, keyGroups, keyRoles    = ast.StringTerm("principal"), ast.StringTerm("sub"), ast.StringTerm("issuer"), ast.StringTerm("groups"), ast.StringTerm("roles")
	keyClaims, keyTask, keyID, keyChain, keyDepth, keyTurns = ast.StringTerm("claims"), ast.StringTerm("task"), ast.StringTerm("id"), ast.StringTerm("chain"), ast.StringTerm("depth"), ast.StringTerm("turns")
	keyTool, keySource, keyMethod, keyPath, keyAnnotations  = ast.StringTerm("tool"), ast.StringTerm("source"), ast.StringTerm("method"), ast.StringTerm("path"), ast.StringTerm("annotations")
	keyModel, keyProvider, keyRegion, keyTime, keyTargets   = ast.StringTerm("model"), ast.StringTerm("provider"), ast.StringTerm("region"), ast.StringTerm("time"), ast.StringTerm("targets")
	keyReadOnly, keyDestructive, keyIdempotent              = ast.StringTerm("readOnly"), ast.StringTerm("destructive"), ast.StringTerm("idempotent")
	keyAnnotationsSource                                    = ast.StringTerm("annotations_source")
)

// keyAgents is apart from the keys above, as a later addition.
var keyAgents = ast.StringTerm("agents")

// keyRedact is apart from the keys above, as a later addition.
var keyRedact = ast.StringTerm("redact")

// annotationTerms holds the eight possible annotations objects.
var annotationTerms = func() map[Annotations]*ast.Term {
	m := make(map[Annotations]*ast.Term, 8)
	for _, r := range []bool{false, true} {
		for _, d := range []bool{false, true} {
			for _, i := range []bool{false, true} {
				m[Annotations{ReadOnly: r, Destructive: d, Idempotent: i}] = ast.ObjectTerm(
					[2]*ast.Term{keyReadOnly, ast.InternedTerm(r)},
					[2]*ast.Term{keyDestructive, ast.InternedTerm(d)},
					[2]*ast.Term{keyIdempotent, ast.InternedTerm(i)},
				)
			}
		}
	}
	return m
}()

// str returns a string term, shared for the empty string.
func str(s string) *ast.Term {
	if s == "" {
		return emptyString
	}
	return ast.StringTerm(s)
}

var emptyString = ast.StringTerm("")

func stringArray(ss []string) *ast.Term {
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = str(s)
	}
	return ast.ArrayTerm(terms...)
}

func stringMap(m map[string]string) *ast.Term {
	items := make([][2]*ast.Term, 0, len(m))
	for k, v := range m {
		items = append(items, [2]*ast.Term{ast.StringTerm(k), str(v)})
	}
	return ast.ObjectTerm(items...)
}

// argValue turns decoded JSON into a Rego value. Numbers may be
// json.Number or float64 (and Go integers, for callers that build
// arguments by hand); anything else is an error rather than a guess.
func argValue(v any, depth int) (ast.Value, error) {
	if depth > maxArgumentDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxArgumentDepth)
	}
	switch v := v.(type) {
	case nil:
		return ast.Null{}, nil
	case string:
		return ast.String(v), nil
	case bool:
		return ast.Boolean(v), nil
	case json.Number:
		// A json.Number from a decoder is valid; one made by hand may not be.
		if _, err := strconv.ParseFloat(string(v), 64); err != nil {
			return nil, fmt.Errorf("invalid number %q", string(v))
		}
		return ast.Number(v), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("number %v has no JSON form", v)
		}
		return ast.Number(strconv.FormatFloat(v, 'g', -1, 64)), nil
	case int:
		return ast.Number(strconv.Itoa(v)), nil
	case int64:
		return ast.Number(strconv.FormatInt(v, 10)), nil
	case map[string]any:
		items := make([][2]*ast.Term, 0, len(v))
		for k, e := range v {
			e, err := argValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			items = append(items, [2]*ast.Term{ast.StringTerm(k), ast.NewTerm(e)})
		}
		return ast.NewObject(items...), nil
	case []any:
		terms := make([]*ast.Term, len(v))
		for i, e := range v {
			ev, err := argValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			terms[i] = ast.NewTerm(ev)
		}
		return ast.NewArray(terms...), nil
	case []string:
		return stringArray(v).Value, nil
	case map[string]string:
		return stringMap(v).Value, nil
	}
	return nil, fmt.Errorf("unsupported value of type %T", v)
}
