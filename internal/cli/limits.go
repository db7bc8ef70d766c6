package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/ratelimit"
)

func newLimits(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "limits",
		Short: "Show each rate limit, its current state and the backends throttling corral",
		Long: `A RateLimit paces the calls it covers (requests per second or minute, with a
burst) and caps how many run at once; a call over it is refused with 429
rate_limited. 'corral limits' prints one line per counter of each limit: the
calls its rate would admit at once now, the calls in flight on every replica,
and what the replica that answered admitted and refused since it started.
Then the tool sources and models that answered 429, which corral leaves alone
until their Retry-After has passed.

-o json prints the server's answer, {"items": [...], "throttled": [...]}.`,
		Example: `  corral limits
  corral limits -o json | jq '.items[] | select(.replica.refused > 0)'
  corral apply -f ratelimit.yaml   # kind: RateLimit; see docs/limits.md`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd)
	output := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var list api.LimitList
		if err := c.do(cmd.Context(), "GET", "/v1/limits", nil, &list); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, list)
		}
		if len(list.Items) == 0 {
			fmt.Fprintln(s.err, "no rate limits; declare one with kind: RateLimit (docs/limits.md)")
		} else if err := writeLimitTable(s.out, list.Items); err != nil {
			return err
		}
		for _, st := range list.Items {
			if st.Error != "" {
				fmt.Fprintf(s.err, "warning: RateLimit/%s %s\n", st.Limit, st.Error)
			}
			if st.CounterCount > len(st.Counters) {
				fmt.Fprintf(s.err, "RateLimit/%s: showing %d of %d counters\n", st.Limit, len(st.Counters), st.CounterCount)
			}
		}
		if len(list.Throttled) > 0 {
			fmt.Fprintln(s.out)
			writeThrottleTable(s.out, time.Now(), list.Throttled)
		}
		return nil
	}
	return cmd
}

// writeLimitTable prints one row per counter of each limit.
func writeLimitTable(w io.Writer, items []ratelimit.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LIMIT\tSCOPE\tEACH\tRATE\tAVAILABLE\tIN FLIGHT\tADMITTED\tREFUSED")
	for _, st := range items {
		rate, inflight := "-", "-"
		if st.Rate != nil {
			rate = fmt.Sprintf("%d/%s burst %d", st.Rate.Requests, st.Rate.Per, st.Rate.BurstOrDefault())
		}
		if st.InFlight != nil {
			inflight = strconv.FormatInt(*st.InFlight, 10)
		}
		each := "-"
		if st.Each != "" {
			each = st.Each
		}
		counts := fmt.Sprintf("%d\t%d", st.Replica.Admitted, st.Replica.Refused)
		if st.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t%s\n", st.Limit, limitScopeText(st.Scope), each, rate, counts)
			continue
		}
		if len(st.Counters) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t0/%s\t%s\n", st.Limit, limitScopeText(st.Scope), each, rate, inflight, counts)
			continue
		}
		for _, c := range st.Counters {
			name := each
			if st.Each != "" {
				name = st.Each + "=" + oneLine(c.Value, 40)
			}
			avail := "-"
			if c.Available != nil {
				avail = strconv.FormatInt(*c.Available, 10)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%s\t%s\n", st.Limit, limitScopeText(st.Scope), name, rate, avail, c.InFlight, inflight, counts)
		}
	}
	return tw.Flush()
}

// writeThrottleTable prints the backends throttling corral.
func writeThrottleTable(w io.Writer, now time.Time, items []ratelimit.ThrottleStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "THROTTLED\tNAME\tFOR")
	for _, t := range items {
		kind := "tool source"
		if t.Kind == ratelimit.ThrottleModel {
			kind = "model"
		}
		left := max(t.Until.Sub(now), 0).Round(time.Second)
		fmt.Fprintf(tw, "%s\t%s\t%s\n", kind, oneLine(t.Name, 60), left)
	}
	_ = tw.Flush()
}

// limitScopeText is "toolSource=erp,tool=erp.create_*", or "all".
func limitScopeText(sc config.RateLimitScope) string {
	var parts []string
	for _, f := range []struct{ name, value string }{
		{"agent", sc.Agent}, {"principal", sc.Principal}, {"toolSource", sc.ToolSource},
		{"tool", sc.Tool}, {"model", sc.Model}, {"task", sc.Task},
	} {
		if f.value != "" {
			parts = append(parts, f.name+"="+oneLine(f.value, 40))
		}
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, ",")
}
