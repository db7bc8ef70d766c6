// Package expr compiles and evaluates the CEL expressions of workflows
// (docs/workflows.md): a step's input, its arguments, its condition and its
// compensation, over the variables input, steps, output and state.
package expr

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// The variables an expression may read.
const (
	// Input is the workflow run's input, as JSON.
	Input = "input"
	// Steps maps each finished step's name to {"output": ...}.
	Steps = "steps"
	// Output is the output of the step a compensation undoes.
	Output = "output"
	// State is the task tree's shared state document ({} before anything
	// was written).
	State = "state"
)

// MaxLength bounds an expression's source, in bytes.
const MaxLength = 4096

// costLimit bounds an evaluation's work (CEL's cost units), and evalTimeout
// its time: an expression cannot hang a workflow.
const (
	costLimit   = 1_000_000
	evalTimeout = time.Second
)

var env = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable(Input, cel.DynType),
		cel.Variable(Steps, cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable(Output, cel.DynType),
		cel.Variable(State, cel.DynType),
		cel.CrossTypeNumericComparisons(true),
	)
})

// Program is a compiled, type-checked expression.
type Program struct {
	src string
	prg cel.Program
	// refs are the steps the expression names as steps.NAME.
	refs []string
	// state: the expression reads the shared state.
	state bool
	bool  bool
}

// Compile parses and type-checks src. With wantBool the expression must
// be a condition (bool, or dyn checked at run time).
func Compile(src string, wantBool bool) (*Program, error) {
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("empty expression")
	}
	if len(src) > MaxLength {
		return nil, fmt.Errorf("expression of %d bytes, over the limit of %d", len(src), MaxLength)
	}
	e, err := env()
	if err != nil {
		return nil, fmt.Errorf("expr: environment: %w", err)
	}
	checked, iss := e.Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("%s", oneLine(iss.Err().Error()))
	}
	if wantBool {
		if t := checked.OutputType(); !t.IsExactType(types.BoolType) && !t.IsExactType(types.DynType) {
			return nil, fmt.Errorf("a condition must be a bool, not %s", t)
		}
	}
	prg, err := e.Program(checked, cel.CostLimit(costLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, fmt.Errorf("%s", oneLine(err.Error()))
	}
	return &Program{src: src, prg: prg, refs: stepRefs(checked.NativeRep()), state: names(checked.NativeRep(), State), bool: wantBool}, nil
}

// names reports whether the expression refers to the variable ident.
func names(a *ast.AST, ident string) bool {
	found := false
	ast.PostOrderVisit(a.Expr(), ast.NewExprVisitor(func(e ast.Expr) {
		if e.Kind() == ast.IdentKind && e.AsIdent() == ident {
			found = true
		}
	}))
	return found
}

// UsesState reports whether the expression reads the shared state, so an
// evaluation that does not need it skips reading it.
func (p *Program) UsesState() bool { return p.state }

// oneLine keeps CEL's messages, whose caret drawings span lines, one per
// error and on one line: "1:1: undeclared reference to 'inptu' ...".
func oneLine(s string) string {
	var msgs []string
	for _, line := range strings.Split(s, "\n") {
		if rest, ok := strings.CutPrefix(line, "ERROR: <input>:"); ok {
			msgs = append(msgs, strings.TrimSpace(rest))
		}
	}
	if len(msgs) == 0 {
		return strings.Join(strings.Fields(s), " ")
	}
	return strings.Join(msgs, "; ")
}

// stepRefs lists the names selected on steps (steps.NAME), sorted.
func stepRefs(a *ast.AST) []string {
	seen := map[string]bool{}
	ast.PostOrderVisit(a.Expr(), ast.NewExprVisitor(func(e ast.Expr) {
		if e.Kind() != ast.SelectKind {
			return
		}
		sel := e.AsSelect()
		if op := sel.Operand(); op.Kind() == ast.IdentKind && op.AsIdent() == Steps {
			seen[sel.FieldName()] = true
		}
	}))
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Refs returns the steps the expression names (steps.NAME).
func (p *Program) Refs() []string { return slices.Clone(p.refs) }

// String returns the expression's source.
func (p *Program) String() string { return p.src }

// Vars are the values of an evaluation: JSON-decoded values (maps,
// slices, strings, float64, bool, nil).
type Vars map[string]any

// Eval evaluates the expression and returns its value as JSON.
func (p *Program) Eval(ctx context.Context, vars Vars) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, evalTimeout)
	defer cancel()
	act := map[string]any{Input: nil, Steps: map[string]any{}, Output: nil, State: nil}
	for k, v := range vars {
		act[k] = v
	}
	out, _, err := p.prg.ContextEval(ctx, act)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.src, err)
	}
	v, err := out.ConvertToNative(reflect.TypeFor[*structpb.Value]())
	if err != nil {
		return nil, fmt.Errorf("%s: the value is not JSON: %w", p.src, err)
	}
	b, err := protojson.Marshal(v.(*structpb.Value))
	if err != nil {
		return nil, fmt.Errorf("%s: the value is not JSON: %w", p.src, err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil {
		return nil, fmt.Errorf("%s: the value is not JSON: %w", p.src, err)
	}
	return compact.Bytes(), nil
}

// Bool evaluates a condition.
func (p *Program) Bool(ctx context.Context, vars Vars) (bool, error) {
	raw, err := p.Eval(ctx, vars)
	if err != nil {
		return false, err
	}
	switch string(raw) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("%s: a condition must be true or false, not %s", p.src, raw)
}

// Decode turns JSON into the values Vars hold; invalid or empty JSON is
// nil. A number without a fraction or exponent is an int (CEL's int), so
// that input.qty * 10 works; others are doubles.
func Decode(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil
	}
	return numbers(v)
}

func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil && !strings.ContainsAny(string(x), ".eE") {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	}
	return v
}
