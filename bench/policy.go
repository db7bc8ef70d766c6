package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/corral-dev/corral/internal/policy"
)

// paymentsDir is the example policy the decision benchmark adds to the
// default bundle; the bench runs from the repository's root.
const paymentsDir = "examples/policies/payments"

// benchPolicy measures the policy stage as the pipeline runs it (the input
// built from the agent, the tool and the decoded arguments, then one
// prepared evaluation) with the default bundle alone and with the payments
// policy added, on calls that policy allows, denies and sends to a human.
// The default bundle reads no arguments: its row is a decision the engine
// keeps (docs/policy.md, Performance); the payments example reads them, so
// its rows are evaluations.
func benchPolicy(ctx context.Context, o options) error {
	payments, err := policy.LoadDir(paymentsDir)
	if err != nil {
		return fmt.Errorf("policy: %w (run the bench from the repository's root)", err)
	}
	payments = payments.WithoutTests()
	bundles := []struct {
		name string
		b    policy.Bundle
	}{
		{"default bundle", policy.Bundle{Modules: policy.DefaultModules()}},
		{"default + payments", policy.Bundle{Modules: append(policy.DefaultModules(), payments.Modules...), Data: payments.Data}},
	}
	inputs := []struct {
		name, want string
		in         func() *policy.Input
	}{
		{"balance (GET)", policy.Allow, func() *policy.Input {
			return toolInput("banking.get_balance", "GET", false, map[string]any{"account": "acc-1"})
		}},
		{"transfer, known, small", policy.Allow, func() *policy.Input {
			return toolInput("banking.send_money", "POST", false, map[string]any{"to_iban": "DE89370400440532013000", "amount": json.Number("120.50"), "currency": "EUR", "reference": "invoice 42"})
		}},
		{"transfer, large", policy.Approval, func() *policy.Input {
			return toolInput("banking.send_money", "POST", false, map[string]any{"to_iban": "DE89370400440532013000", "amount": json.Number("25000"), "currency": "EUR", "reference": "invoice 43"})
		}},
		{"transfer, bad IBAN", policy.Deny, func() *policy.Input {
			return toolInput("banking.send_money", "POST", false, map[string]any{"to_iban": "DE00 0000", "amount": json.Number("10"), "currency": "EUR", "reference": "x"})
		}},
	}
	n := o.calls * 5
	fmt.Printf("policy decisions: the input built as the pipeline builds it, then one prepared evaluation; %d per row after %d to warm up\n", n, o.warmup*5)
	fmt.Printf("  %-20s %-24s %9s %9s %9s %11s\n", "bundle", "call", "p50 µs", "p90 µs", "p99 µs", "allocs/call")
	for _, b := range bundles {
		// A time-out far above the pipeline's: on a machine busy with other
		// work a decision can wait longer than 50 ms for a core, and the
		// bench measures rather than fails.
		engine, err := policy.Compile(ctx, b.b, policy.Options{Timeout: 10 * time.Second})
		if err != nil {
			return fmt.Errorf("policy: compile %s: %w", b.name, err)
		}
		for _, tc := range inputs {
			if b.name == "default bundle" && tc.name != "balance (GET)" {
				continue // the default bundle knows nothing of transfers
			}
			if d, err := engine.Decide(ctx, tc.in()); err != nil || d.Effect != tc.want {
				return fmt.Errorf("policy: %s, %s: decided %+v (%v), want %s", b.name, tc.name, d, err, tc.want)
			}
			for range o.warmup * 5 {
				_, _ = engine.Decide(ctx, tc.in())
			}
			times := make([]time.Duration, n)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for i := range n {
				start := time.Now()
				if _, err := engine.Decide(ctx, tc.in()); err != nil {
					return fmt.Errorf("policy: %s: %w", tc.name, err)
				}
				times[i] = time.Since(start)
			}
			runtime.ReadMemStats(&after)
			slices.Sort(times)
			fmt.Printf("  %-20s %-24s %9.1f %9.1f %9.1f %11d\n", b.name, tc.name, us(quantile(times, .5)), us(quantile(times, .9)), us(quantile(times, .99)),
				(after.Mallocs-before.Mallocs)/uint64(n))
		}
	}
	return nil
}

// toolInput is the input the pipeline builds for a call of an agent that
// may call every banking tool.
func toolInput(tool, method string, destructive bool, args map[string]any) *policy.Input {
	return &policy.Input{
		Action: policy.Action{Kind: policy.KindTool, Target: tool, Arguments: args},
		Agent:  policy.Agent{Name: "treasurer", Labels: map[string]string{"team": "finance"}, Tools: []string{"banking.*"}},
		Tool: &policy.Tool{Name: tool, Source: "banking", Method: method, Path: "/x",
			Annotations: policy.Annotations{ReadOnly: method == "GET", Destructive: destructive}},
		Time: time.Now().UTC().Format(time.RFC3339Nano),
	}
}
