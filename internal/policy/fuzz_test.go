package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fuzzEngine is the default bundle with the payments example, built once.
var fuzzEngine = sync.OnceValues(func() (*Engine, error) {
	b, err := LoadDir(paymentsDir)
	if err != nil {
		return nil, err
	}
	b = b.WithoutTests()
	b.Modules = append(DefaultModules(), b.Modules...)
	return Compile(context.Background(), b, Options{Timeout: time.Second})
})

// checkDecision fails unless d, err is a valid decision or an ErrEvaluation.
func checkDecision(t *testing.T, d Decision, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrEvaluation) {
			t.Fatalf("Decide() error %v is not an ErrEvaluation", err)
		}
		if d.Effect == Allow {
			t.Fatalf("Decide() = allow with error %v", err)
		}
		return
	}
	switch d.Effect {
	case Allow:
		if len(d.Reasons) != 0 {
			t.Fatalf("Decide() = allow with reasons %v", d.Reasons)
		}
	case Deny, Approval:
		if len(d.Reasons) == 0 {
			t.Fatalf("Decide() = %s without reasons", d.Effect)
		}
	default:
		t.Fatalf("Decide() effect %q", d.Effect)
	}
}

// FuzzDecodeInput: any document either fails to decode or decodes to an
// input that Decide answers, or fails with ErrEvaluation; never a panic.
func FuzzDecodeInput(f *testing.F) {
	for _, tt := range decodeInputTests {
		f.Add([]byte(tt.doc))
	}
	in, _ := json.Marshal(transferInput())
	f.Add(in)
	f.Fuzz(func(t *testing.T, doc []byte) {
		e, err := fuzzEngine()
		if err != nil {
			t.Fatal(err)
		}
		in, err := DecodeInput(doc)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "policy: input") {
				t.Fatalf("DecodeInput() error %q does not say it is about the input", err)
			}
			return
		}
		d, err := e.Decide(t.Context(), in)
		checkDecision(t, d, err)
		if _, err := e.Visible(t.Context(), in); err != nil && !errors.Is(err, ErrEvaluation) {
			t.Fatalf("Visible() error %v is not an ErrEvaluation", err)
		}
	})
}

// FuzzDecideArguments: any JSON as the arguments of a transfer.
func FuzzDecideArguments(f *testing.F) {
	for _, s := range []string{
		`{"to_iban": "DE89 3704 0044 0532 0130 00", "amount": 10, "currency": "EUR"}`,
		`{"to_iban": "NL91 ABNA 0417 1643 00", "amount": 1e308, "currency": "GBP"}`,
		`{"to_iban": 7, "amount": "x", "currency": null}`,
		`{"amount": -0.0000001}`, `[]`, `null`, `"x"`, `{"a": {"b": [1, [2, {"c": true}]]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := fuzzEngine()
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var args any
		if dec.Decode(&args) != nil {
			return
		}
		in := transferInput()
		in.Action.Arguments = args
		d, err := e.Decide(t.Context(), in)
		checkDecision(t, d, err)
	})
}

// FuzzCompile: any module text either fails to compile or decides (or
// fails with ErrEvaluation); and a Policy that does not compile never
// yields allow from the store it is the only policy of.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		"package corral.authz\nallow := true",
		"package corral.authz\ndeny contains \"x\" if input.agent.name == \"impact\"",
		"package corral.authz\nallow if {",
		"package corral.authz\nallow := \"yes\"",
		"package corral.authz\ndeny := [1]",
		"package corral.authz\nobligations := 1\nallow := true",
		"package corral.authz\nallow if corral.sql.is_mutation(input.action.arguments.q) == false",
		"package other\nallow := true",
		"package corral.authz\nallow := true\nallow contains 1",
		"package corral.authz\nrequire_approval contains x if some x in input.agent.tools",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		// A Policy's modules arrive as JSON strings, so always as valid
		// UTF-8: the store and Compile must be given the same text.
		src = strings.ToValidUTF8(src, "\uFFFD")
		// Every module allows: the one under test can only take that away or
		// fail to compile.
		allowAll := Module{Name: "allow/0.rego", Source: "package corral.authz\nallow := true"}
		e, err := Compile(t.Context(), Bundle{Modules: []Module{allowAll, {Name: "fuzz/0.rego", Source: src}}}, Options{Timeout: time.Second})
		if err != nil {
			var ce *CompileError
			if !errors.As(err, &ce) || len(ce.Errors) == 0 {
				t.Fatalf("Compile() error %v, want a *CompileError with problems", err)
			}
			res := newFakeResources()
			res.put(policyResource(t, "fuzz", nil, src))
			s := NewStore(discard(), res, StoreOptions{Default: []Module{allowAll}})
			if err := s.Reload(t.Context()); err == nil {
				t.Fatalf("Compile() failed with %v, but the store compiled the same module", ce)
			}
			d, err := s.Engine().Decide(t.Context(), transferInput())
			if err == nil && d.Effect == Allow {
				t.Fatalf("a store whose only policy does not compile allowed: %+v", d)
			}
			return
		}
		d, err := e.Decide(t.Context(), transferInput())
		checkDecision(t, d, err)
	})
}

func FuzzIsMutation(f *testing.F) {
	for _, tt := range sqlTests {
		f.Add(tt.query)
	}
	f.Fuzz(func(t *testing.T, q string) {
		m := isMutation(q)
		if !m && strings.TrimSpace(q) == "" {
			t.Fatalf("isMutation(%q) = false for an empty query", q)
		}
	})
}

func FuzzHostOf(f *testing.F) {
	for _, tt := range hostTests {
		f.Add(tt.url)
	}
	f.Fuzz(func(t *testing.T, u string) {
		host, ok := hostOf(u)
		if !ok {
			if host != "" {
				t.Fatalf("hostOf(%q) = %q, false", u, host)
			}
			return
		}
		if host == "" || host != strings.ToLower(host) || strings.ContainsAny(host, "[]") {
			t.Fatalf("hostOf(%q) = %q: want a non-empty lowercase host without brackets", u, host)
		}
	})
}

func FuzzValidIBAN(f *testing.F) {
	for _, tt := range ibanTests {
		f.Add(tt.iban)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !validIBAN(s) {
			return
		}
		compact := strings.ToUpper(strings.ReplaceAll(s, " ", ""))
		if !validIBAN(compact) {
			t.Fatalf("validIBAN(%q) = true but false for its compact form %q", s, compact)
		}
		if n := ibanLengths[compact[:2]]; n != len(compact) {
			t.Fatalf("validIBAN(%q) = true with length %d, want %d", s, len(compact), n)
		}
	})
}
