package budget

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/config"
)

func TestCollector(t *testing.T) {
	res := newFakeResources()
	res.put(t, "daily", 1, &config.BudgetSpec{Window: config.WindowDay, Limit: config.BudgetLimit{Tokens: ptr[int64](1000), Calls: ptr[int64](2)}})
	res.put(t, "per-task", 1, &config.BudgetSpec{Window: config.WindowTask, Limit: config.BudgetLimit{Cost: ptr(2.5)}})
	b := open(t, bustest.Open(t), res, newClock(day).now)
	ctx := t.Context()

	for range 3 { // the third is refused
		_, _ = b.Reserve(ctx, toolCall, Usage{})
	}
	r, err := b.Reserve(ctx, Subject{Kind: KindModel, Task: "t1"}, Usage{Tokens: 10, Cost: 1})
	if err == nil || r != nil {
		t.Fatalf("model call after daily's calls ran out = %v, %v; want refused", r, err)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(b))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got = append(got, fmt.Sprintf("%s %s{%s} %g", mf.GetType(), mf.GetName(), strings.Join(labels, ","), v))
		}
	}
	want := []string{
		"COUNTER corral_budget_exceeded_total{budget=daily,limit=calls} 2",
		"COUNTER corral_budget_exceeded_total{budget=daily,limit=tokens} 0",
		"COUNTER corral_budget_exceeded_total{budget=per-task,limit=cost} 0",
		"GAUGE corral_budget_limit{budget=daily,limit=calls} 2",
		"GAUGE corral_budget_limit{budget=daily,limit=tokens} 1000",
		"GAUGE corral_budget_limit{budget=per-task,limit=cost} 2.5",
		"GAUGE corral_budget_used{budget=daily,limit=calls} 2",
		"GAUGE corral_budget_used{budget=daily,limit=tokens} 0",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}
