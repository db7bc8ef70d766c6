package cli

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/budget"
	"github.com/corral-dev/corral/internal/config"
)

func newBudgets(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "budgets",
		Short: "Show what each budget has used against its limits",
		Long: `A Budget caps the tokens, cost and calls of the calls it covers in a window
(hour, day or month in UTC, per task, or in total); a call past a limit is
refused with 429 budget_exceeded. 'corral budgets' prints one line per limit
of each budget: what the current window used, what is left and when the
window starts again. The usage is shared by every replica.

A budget with window task keeps counters per task; the table shows the tasks
that used it most recently. Calls in flight count with their worst case until
they settle.

-o json prints the server's answer, {"items": [...]}.`,
		Example: `  corral budgets
  corral budgets -o json | jq '.items[] | select(.used.calls >= .limit.calls)'
  corral apply -f budget.yaml   # kind: Budget; see docs/budgets.md`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd)
	output := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var list api.BudgetList
		if err := c.do(cmd.Context(), "GET", "/v1/budgets", nil, &list); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, list)
		}
		if len(list.Items) == 0 {
			fmt.Fprintln(s.err, "no budgets; declare one with kind: Budget (docs/budgets.md)")
			return nil
		}
		if err := writeBudgetTable(s.out, time.Now(), list.Items); err != nil {
			return err
		}
		for _, st := range list.Items {
			if st.Error != "" {
				fmt.Fprintf(s.err, "warning: Budget/%s %s\n", st.Budget, st.Error)
			}
			if st.TaskCount > len(st.Tasks) {
				fmt.Fprintf(s.err, "Budget/%s: showing the %d most recent of %d tasks\n", st.Budget, len(st.Tasks), st.TaskCount)
			}
		}
		return nil
	}
	return cmd
}

// writeBudgetTable prints one row per limit of each budget; for task
// windows, one per limit of each task shown.
func writeBudgetTable(w io.Writer, now time.Time, items []budget.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BUDGET\tSCOPE\tWINDOW\tLIMIT\tUSED\tLEFT\tRESETS")
	for _, st := range items {
		row := func(window string, used *budget.Usage, resets string) {
			for _, l := range budgetLimits(st.Limit) {
				usedText, left := "-", "-"
				if used != nil {
					u := l.used(*used)
					usedText, left = formatAmount(u), formatAmount(max(l.max-u, 0))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%s\t%s\t%s\n",
					st.Budget, scopeText(st.Scope), window, l.name, formatAmount(l.max), usedText, left, resets)
			}
		}
		switch {
		case st.Error != "":
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\tnot enforced\n", st.Budget, scopeText(st.Scope), oneLine(st.Window, 20))
		case st.Window == config.WindowTask && len(st.Tasks) == 0:
			row("task", nil, "-")
		case st.Window == config.WindowTask:
			for _, tu := range st.Tasks {
				row("task "+oneLine(tu.Task, 40), &tu.Used, "-")
			}
		default:
			row(st.Window, st.Used, resetsIn(now, st.ResetsAt))
		}
	}
	return tw.Flush()
}

// budgetLimit is one limit that is set.
type budgetLimit struct {
	name string
	max  float64
	used func(budget.Usage) float64
}

func budgetLimits(lim config.BudgetLimit) []budgetLimit {
	var out []budgetLimit
	if lim.Tokens != nil {
		out = append(out, budgetLimit{budget.LimitTokens, float64(*lim.Tokens), func(u budget.Usage) float64 { return float64(u.Tokens) }})
	}
	if lim.Cost != nil {
		out = append(out, budgetLimit{budget.LimitCost, *lim.Cost, func(u budget.Usage) float64 { return u.Cost }})
	}
	if lim.Calls != nil {
		out = append(out, budgetLimit{budget.LimitCalls, float64(*lim.Calls), func(u budget.Usage) float64 { return float64(u.Calls) }})
	}
	return out
}

// scopeText is "agent=impact,model=gpt-*", or "all" for an empty scope.
func scopeText(sc config.BudgetScope) string {
	var parts []string
	for _, f := range []struct{ name, value string }{{"agent", sc.Agent}, {"principal", sc.Principal}, {"model", sc.Model}, {"task", sc.Task}} {
		if f.value != "" {
			parts = append(parts, f.name+"="+oneLine(f.value, 40))
		}
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, ",")
}

// formatAmount prints a count as an integer and money to four decimals at
// most: 200000, 4.6875, 0.0031.
func formatAmount(v float64) string {
	return strconv.FormatFloat(math.Round(v*1e4)/1e4, 'f', -1, 64)
}

// resetsIn says when a window starts again: "in 9h30m", "in 3d", "never".
func resetsIn(now, at time.Time) string {
	if at.IsZero() {
		return "never"
	}
	d := at.Sub(now)
	switch {
	case d <= 0:
		return "now"
	case d < time.Minute:
		return "in <1m"
	case d < time.Hour:
		return fmt.Sprintf("in %dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("in %dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("in %dd", int(d.Hours()/24))
}
