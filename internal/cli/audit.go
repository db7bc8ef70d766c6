package cli

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/audit"
)

func newAudit(s streams) *cobra.Command {
	var (
		cf                 clientFlags
		agent, tool, since string
		limit              int
	)
	cmd := &cobra.Command{
		Use:   "audit [--agent NAME] [--tool PATTERN] [--since 1h] [--limit N]",
		Short: "Show what agents did: the audit records of their calls",
		Long: `Every call an agent makes through corral, allowed or refused, leaves one
audit record, stored before the agent gets its answer. The AUDIT ID column is
the audit_id that answer carried.

'corral audit' prints the newest records (--limit, 100 by default, at most
10000) stored since --since, oldest first. --since takes a duration before now
(30m, 2h, 7d) or an RFC 3339 time; records are kept 30 days by default.
--tool takes a tool's name or a pattern where '*' stands for anything.

-o json prints the server's answer, {"records": [...]}; -o jsonl prints one
record per line, for jq, grep and log tools.`,
		Example: `  corral audit                               # the last 24 hours, newest 100
  corral audit --agent impact --since 1h
  corral audit --tool 'crm.*' --since 7d --limit 1000
  corral audit --since 2026-05-01T00:00:00Z -o jsonl | jq 'select(.status != "ok")'
  corral audit -o json | jq -r '.records[].id'`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&agent, "agent", "", "only this agent's records")
	cmd.Flags().StringVar(&tool, "tool", "", "only calls of this tool; '*' matches anything (crm.*)")
	cmd.Flags().StringVar(&since, "since", "24h", "records stored since: a duration before now (1h, 7d) or an RFC 3339 time")
	cmd.Flags().IntVar(&limit, "limit", audit.DefaultLimit, fmt.Sprintf("the most records shown, the newest ones (at most %d)", audit.MaxLimit))
	output := outputFlag(cmd, "table", "json", "jsonl")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if limit < 1 || limit > audit.MaxLimit {
			return usageError{cmd, fmt.Errorf("--limit %d: want 1 to %d", limit, audit.MaxLimit)}
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		q := url.Values{}
		for name, v := range map[string]string{"agent": agent, "tool": tool, "since": since} {
			if v != "" {
				q.Set(name, v)
			}
		}
		q.Set("limit", strconv.Itoa(limit))
		var list api.AuditList
		if err := c.do(cmd.Context(), "GET", "/v1/audit?"+q.Encode(), nil, &list); err != nil {
			return err
		}
		switch *output {
		case "json":
			return writeJSON(s.out, list)
		case "jsonl":
			enc := json.NewEncoder(s.out)
			enc.SetEscapeHTML(false)
			for _, r := range list.Records {
				if err := enc.Encode(r); err != nil {
					return err
				}
			}
			return nil
		}
		if len(list.Records) == 0 {
			fmt.Fprintln(s.err, "no audit records"+auditFilterWords(agent, tool, since))
			return nil
		}
		if err := writeAuditTable(s.out, list.Records); err != nil {
			return err
		}
		if len(list.Records) == limit {
			fmt.Fprintf(s.err, "showing the newest %d; --limit shows more, --since narrows the period\n", limit)
		}
		return nil
	}
	return cmd
}

func auditFilterWords(agent, tool, since string) string {
	var out string
	if agent != "" {
		out += " of Agent/" + agent
	}
	if tool != "" {
		out += " for tool " + tool
	}
	if since != "" {
		out += " since " + since
	}
	return out
}

// auditTimeLayout is local time to the second: the date matters once
// --since reaches past midnight.
const auditTimeLayout = "2006-01-02 15:04:05"

func writeAuditTable(w io.Writer, records []audit.Record) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tAGENT\tTOOL\tDECISION\tCODE\tSTATUS\tDURATION\tAUDIT ID")
	for _, r := range records {
		decision := r.Decision
		if r.Event != "" {
			decision = cmp.Or(decision, "event:"+r.Event)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.Time.Local().Format(auditTimeLayout),
			cmp.Or(r.Agent, "-"),
			cmp.Or(oneLine(r.Target, 60), "-"),
			cmp.Or(decision, "-"),
			cmp.Or(r.Code, "-"),
			cmp.Or(r.Status, "-"),
			auditDuration(r.DurationMS),
			r.ID)
	}
	return tw.Flush()
}

// auditDuration prints milliseconds the way people read them: 850µs, 12.3ms, 4.21s.
func auditDuration(ms float64) string {
	switch {
	case ms <= 0:
		return "-"
	case ms < 1:
		return fmt.Sprintf("%.0fµs", ms*1000)
	case ms < 1000:
		return fmt.Sprintf("%.1fms", ms)
	}
	return (time.Duration(ms * float64(time.Millisecond))).Round(10 * time.Millisecond).String()
}
