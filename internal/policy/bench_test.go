package policy

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// benchEngine compiles the default bundle with the payments example.
func benchEngine(tb testing.TB) *Engine {
	tb.Helper()
	b, err := LoadDir(paymentsDir)
	if err != nil {
		tb.Fatal(err)
	}
	b = b.WithoutTests()
	b.Modules = append(DefaultModules(), b.Modules...)
	// A generous time-out: the machine may be busy with other work, and a
	// benchmark measures rather than asserts.
	e, err := Compile(tb.Context(), b, Options{Timeout: 10 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// transferInput is a banking.send_money call as the pipeline builds it.
func transferInput() *Input {
	return &Input{
		Action: Action{Kind: KindTool, Target: "banking.send_money", Arguments: map[string]any{
			"to_iban": "NL91 ABNA 0417 1643 00", "amount": json.Number("1200.50"), "currency": "EUR", "reference": "invoice 7",
		}},
		Agent:     Agent{Name: "treasurer", Labels: map[string]string{"team": "finance"}, Tools: []string{"banking.*", "crm.read_*"}},
		Principal: &Principal{Sub: "alice@example.com", Issuer: "https://idp.example.com", Groups: []string{"finance"}},
		Task:      &Task{ID: "t-1", Chain: []string{"treasurer"}, Depth: 1, Turns: 3},
		Tool:      &Tool{Name: "banking.send_money", Source: "banking", Method: "POST", Path: "/transfers"},
		Time:      "2026-03-02T10:00:00Z",
	}
}

// BenchmarkDecide reports the latency percentiles of Decide besides ns/op:
// the pipeline pays one decision per action.
func BenchmarkDecide(b *testing.B) {
	e := benchEngine(b)
	in := transferInput()
	ctx := b.Context()
	var lat []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		if _, err := e.Decide(ctx, in); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func BenchmarkDecideParallel(b *testing.B) {
	e := benchEngine(b)
	in := transferInput()
	ctx := b.Context()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.Decide(ctx, in); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
