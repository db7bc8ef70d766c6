package policy

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// paymentsDir is the example policy that docs/policy.md walks through.
const paymentsDir = "../../examples/policies/payments"

// slowMachine is for tests that check decisions rather than time-outs: on
// a busy machine, or under the race detector, an evaluation can outlast
// DefaultTimeout (TestDecideTimeout tests that).
var slowMachine = Options{Timeout: 10 * time.Second}

// mustCompile compiles modules (named test/<i>.rego) without the default bundle.
func mustCompile(tb testing.TB, sources ...string) *Engine {
	tb.Helper()
	e, err := Compile(tb.Context(), Bundle{Modules: modules(sources...)}, slowMachine)
	if err != nil {
		tb.Fatalf("Compile: %v", err)
	}
	return e
}

func modules(sources ...string) []Module {
	out := make([]Module, len(sources))
	for i, s := range sources {
		out[i] = Module{Name: fmt.Sprintf("test/%d.rego", i), Source: s}
	}
	return out
}

func jsonNumber(s string) any { return json.Number(s) }
