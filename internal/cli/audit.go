package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
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
record per line, for jq, grep and log tools.

Each record carries the digest of the record stored before it: 'corral audit
verify' checks that none was changed or removed, and 'corral audit export'
writes them as stored, for archives that can be verified offline.`,
		Example: `  corral audit                               # the last 24 hours, newest 100
  corral audit --agent impact --since 1h
  corral audit --tool 'crm.*' --since 7d --limit 1000
  corral audit --since 2026-05-01T00:00:00Z -o jsonl | jq 'select(.status != "ok")'
  corral audit -o json | jq -r '.records[].id'
  corral audit verify
  corral audit export --since 2026-11-01 > audit.jsonl`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newAuditVerify(s), newAuditExport(s))
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
			cmp.Or(auditStatus(r), "-"),
			auditDuration(r.DurationMS),
			r.ID)
	}
	return tw.Flush()
}

// auditStatus is a record's status as people read it: an intent with no
// outcome record is a call whose outcome is unknown.
func auditStatus(r audit.Record) string {
	if r.Phase == audit.PhaseIntent && r.Status == audit.StatusUnknown {
		return "outcome unknown"
	}
	return r.Status
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

func newAuditVerify(s streams) *cobra.Command {
	var (
		cf                       clientFlags
		since, file, checkpoints string
	)
	cmd := &cobra.Command{
		Use:   "verify [--since 7d] [--file ARCHIVE.jsonl [--checkpoints FILE]] [-o json]",
		Short: "Check that no stored audit record was changed or removed",
		Long: `Every audit record carries the digest of the record stored before it, and
corral keeps checkpoints of that chain apart from the records. 'corral audit
verify' walks the chain on the server, from the oldest record kept or from
--since, and reports what is wrong: a record changed after it was written, a
record missing, a record that does not match its checkpoint. When the chain is
broken it exits 1 and names the record: its seq, id, time, agent and target.

--file verifies an archive written by 'corral audit export' offline, with no
server. --checkpoints adds checkpoints written by 'corral audit export
--checkpoints' and kept apart from the archive: they also catch an archive
rewritten whole, chain and all.

What verify cannot see: a change to the newest record before a later record
or a checkpoint covers it, and a forger who rewrote the records and every
checkpoint too. Keep exported checkpoints off the host to close the second.

-o json prints the whole report.`,
		Example: `  corral audit verify
  corral audit verify --since 7d -o json
  corral audit verify --file audit-2026-11.jsonl --checkpoints checkpoints.jsonl`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&since, "since", "", "verify the records stored since: a duration before now (1h, 7d), a date or an RFC 3339 time (default: every record kept)")
	cmd.Flags().StringVar(&file, "file", "", "verify this archive from 'corral audit export' offline ('-' reads standard input)")
	cmd.Flags().StringVar(&checkpoints, "checkpoints", "", "with --file: checkpoints from 'corral audit export --checkpoints' to check the archive against")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var (
			rep audit.Report
			err error
		)
		switch {
		case file != "" && since != "":
			return usageError{cmd, errors.New("--since goes with the server's audit, not --file")}
		case file == "" && checkpoints != "":
			return usageError{cmd, errors.New("--checkpoints goes with --file")}
		case file != "":
			rep, err = verifyArchive(s, file, checkpoints)
		default:
			rep, err = verifyServer(cmd.Context(), cf, since)
		}
		if err != nil {
			return err
		}
		if *output == "json" {
			err = writeJSON(s.out, rep)
		} else {
			err = writeVerifyReport(s.out, rep)
		}
		if err != nil {
			return err
		}
		if !rep.OK {
			return brokenChain{rep}
		}
		return nil
	}
	return cmd
}

// verifyServer asks the server to verify its audit.
func verifyServer(ctx context.Context, cf clientFlags, since string) (audit.Report, error) {
	c, err := cf.client()
	if err != nil {
		return audit.Report{}, err
	}
	path := "/v1/audit/verify"
	if since != "" {
		path += "?" + url.Values{"since": {since}}.Encode()
	}
	var rep audit.Report
	// A large audit takes longer than a request usually may.
	if err := c.untimed().do(ctx, "GET", path, nil, &rep); err != nil {
		return audit.Report{}, err
	}
	return rep, nil
}

// verifyArchive verifies an exported archive offline, saying how far it got
// every million records.
func verifyArchive(s streams, file, checkpoints string) (audit.Report, error) {
	var cps []audit.Checkpoint
	if checkpoints != "" {
		f, err := os.Open(checkpoints)
		if err != nil {
			return audit.Report{}, err
		}
		defer f.Close()
		if cps, err = audit.ReadCheckpoints(f); err != nil {
			return audit.Report{}, fmt.Errorf("--checkpoints %s: %w", checkpoints, err)
		}
	}
	var in io.Reader = s.in
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return audit.Report{}, err
		}
		defer f.Close()
		in = f
	}
	rep, err := audit.VerifyArchive(in, cps, func(p audit.Progress) {
		if p.Records%1_000_000 == 0 {
			fmt.Fprintf(s.err, "checked %d records (seq %d)\n", p.Records, p.Seq)
		}
	})
	if err != nil {
		return audit.Report{}, fmt.Errorf("--file %s: %w", file, err)
	}
	return rep, nil
}

// writeVerifyReport prints a verification's summary, notes and problems.
func writeVerifyReport(w io.Writer, rep audit.Report) error {
	state := "intact"
	if !rep.OK {
		state = "BROKEN"
	}
	span := ""
	if rep.LastSeq > 0 {
		span = fmt.Sprintf(" (seq %d to %d)", rep.FirstSeq, rep.LastSeq)
	}
	line := fmt.Sprintf("audit chain %s: %d records checked%s, %s matched", state, rep.Records, span, plural(rep.Checkpoints, "checkpoint"))
	if n := len(rep.Problems) + rep.MoreProblems; n > 0 {
		line += ", " + plural(n, "problem")
	}
	if rep.OutcomeUnknown > 0 {
		line += fmt.Sprintf(", %d with outcome unknown", rep.OutcomeUnknown)
	}
	fmt.Fprintln(w, line)
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "  note: "+n)
	}
	for _, p := range rep.Problems {
		fmt.Fprintln(w, "  problem: "+p.String())
	}
	if rep.MoreProblems > 0 {
		fmt.Fprintf(w, "  and %s more\n", plural(rep.MoreProblems, "problem"))
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// brokenChain is a verification that found problems: the command fails,
// naming the first.
type brokenChain struct{ rep audit.Report }

func (e brokenChain) Error() string {
	msg := "the audit chain is broken"
	if len(e.rep.Problems) > 0 {
		msg += " at " + e.rep.Problems[0].String()
	}
	if more := len(e.rep.Problems) + e.rep.MoreProblems - 1; more > 0 {
		msg += fmt.Sprintf(" (and %s more)", plural(more, "problem"))
	}
	return msg
}

func newAuditExport(s streams) *cobra.Command {
	var (
		cf           clientFlags
		since, until string
		checkpoints  bool
	)
	cmd := &cobra.Command{
		Use:   "export [--since 24h|2026-11-01] [--until ...] [--format jsonl] [--checkpoints] > FILE",
		Short: "Write the audit records as stored, for archives",
		Long: `'corral audit export' writes every audit record stored in a period to standard
output, one per line exactly as stored, so that the archive can be verified
offline with 'corral audit verify --file', long after its records aged out of
corral (30 days by default).

--since and --until take a duration before now (30m, 2h, 7d), a date
(2026-11-01, midnight UTC) or an RFC 3339 time; without them the export holds
every record kept. --format jsonl, one JSON record per line, is the only
format for now.

--checkpoints writes the checkpoints of the chain instead. Keep them apart
from the archives (another host, write-once storage): an archive rewritten
whole, chain and all, still fails verification against them.

An export cut short (the server went away) exits 1 and says so: the output is
then incomplete.`,
		Example: `  corral audit export --since 2026-11-01 --until 2026-12-01 > audit-2026-11.jsonl
  corral audit export --checkpoints > checkpoints.jsonl
  corral audit verify --file audit-2026-11.jsonl --checkpoints checkpoints.jsonl`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&since, "since", "", "records stored since: a duration before now (1h, 7d), a date (2026-11-01) or an RFC 3339 time (default: every record kept)")
	cmd.Flags().StringVar(&until, "until", "", "records stored until, in the same forms (default: now)")
	cmd.Flags().BoolVar(&checkpoints, "checkpoints", false, "export the checkpoints of the chain instead of the records")
	format := &enumValue{value: "jsonl", allowed: []string{"jsonl"}}
	cmd.Flags().Var(format, "format", "archive format: jsonl, the only one for now")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(format.allowed, cobra.ShellCompDirectiveNoFileComp))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		path := "/v1/audit/export"
		if checkpoints {
			path = "/v1/audit/checkpoints"
		}
		q := url.Values{}
		for name, v := range map[string]string{"since": since, "until": until} {
			if v != "" {
				q.Set(name, v)
			}
		}
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		return c.untimed().stream(cmd.Context(), path, s.out)
	}
	return cmd
}

// untimed is c without a limit on how long a request takes: verifying or
// exporting a large audit takes minutes. The context still ends it.
func (c *client) untimed() *client {
	out := *c
	out.http = &http.Client{Transport: c.http.Transport}
	return &out
}

// stream sends a GET and copies a successful answer's body to w as it
// comes. An answer cut short is an error saying that w got only part.
func (c *client) stream(ctx context.Context, path string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return fmt.Errorf("--server %q: %w", c.base, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return unreachable{c.base, err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return fmt.Errorf("read answer of GET %s: %w", path, err)
		}
		return decodeProblem(resp, data)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return fmt.Errorf("the export was cut short after %d bytes: the output is incomplete: %w", n, err)
	}
	return nil
}
