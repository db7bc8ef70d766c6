package cli

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/deadletter"
)

func newDLQ(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, show, retry or discard dead letters: work that failed past its retries",
		Long: `A dead letter is work corral gave up on after its retries: a workflow step
that kept failing (docs/workflows.md), and, from the sources that put them, a
trigger's event that could not start its task. Each says what failed, why
(the problem code and detail), the task and step, the payload (the step's
arguments or input), the attempts made and when.

'corral dlq retry ID' hands the entry back to its source: a workflow run
that waits dead-lettered (onFailure: deadletter) resumes at the failed step,
with its attempts anew, and does not repeat the steps that succeeded. Fix
what made it fail first. 'corral dlq discard ID' removes the entry; a run
that waited on it is compensated (its completed steps undone in reverse
order) and fails. Every put, retry and discard is in the audit.

Admin only.`,
		Example: `  corral dlq list
  corral dlq list --source workflow --state pending -o json
  corral dlq show dlq_0123456789abcdefghjkmnpqrs
  corral dlq retry dlq_0123456789abcdefghjkmnpqrs
  corral dlq discard dlq_0123456789abcdefghjkmnpqrs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newDLQList(s), newDLQShow(s), newDLQAct(s, "retry"), newDLQAct(s, "discard"))
	return cmd
}

func newDLQList(s streams) *cobra.Command {
	var (
		cf                         clientFlags
		source, state, task, after string
		limit                      int
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, newest first",
		Long: `'corral dlq list' prints a page of dead letters (--limit, 50 by default, at
most 1000), newest first by when they last changed. When more follow it says
so, with the --after value of the next page. One page reads at most 2000
entries: with a filter that matches few, a page may hold fewer than --limit,
none even, and still have a next page.

Entries are kept 30 days after they last changed, pending or not
('corral up --dlq-retention').

-o json prints the server's answer, {"items": [...], "next": "..."}.`,
		Example: `  corral dlq list
  corral dlq list --source workflow --state pending
  corral dlq list --after 1234
  corral dlq list --task task_01m98rx1aqtvja9xehf45tc22k -o json | jq -r '.items[].id'`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&source, "source", "", "only entries from workflow, trigger or task")
	cmd.Flags().StringVar(&state, "state", "", "only pending or retried entries")
	cmd.Flags().StringVar(&task, "task", "", "only entries of this task (a workflow run)")
	cmd.Flags().IntVar(&limit, "limit", 50, "at most this many (1-1000)")
	cmd.Flags().StringVar(&after, "after", "", "the page after this one: the value the previous page gave")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		q := url.Values{}
		for k, v := range map[string]string{"source": source, "state": state, "task": task, "after": after} {
			if v != "" {
				q.Set(k, v)
			}
		}
		q.Set("limit", fmt.Sprint(limit))
		var l api.DeadLetterList
		if err := c.do(cmd.Context(), "GET", "/v1/dlq?"+q.Encode(), nil, &l); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, l)
		}
		more := ""
		if l.Next != "" {
			more = "more follow: corral dlq list --after " + l.Next + " (with the same filters)"
		}
		if len(l.Items) == 0 {
			fmt.Fprintln(s.err, cmp.Or(more, "no dead letters"))
			return nil
		}
		if err := writeDLQTable(s.out, time.Now(), l.Items); err != nil {
			return err
		}
		if more != "" {
			fmt.Fprintln(s.err, more)
		}
		return nil
	}
	return cmd
}

func writeDLQTable(w io.Writer, now time.Time, items []deadletter.Entry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSOURCE\tNAME\tTASK\tSTEP\tATTEMPTS\tCODE\tSTATE\tAGE")
	for _, e := range items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", e.ID, e.Source, e.Name, dash(e.Task), dash(e.Step), e.Attempts, dash(e.Code), e.State, now.Sub(e.Time).Round(time.Second))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newDLQShow(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "show ID",
		Short:   "Show a dead letter: what failed, why, where, its payload",
		Example: "  corral dlq show dlq_0123456789abcdefghjkmnpqrs\n  corral dlq show dlq_0123456789abcdefghjkmnpqrs -o json | jq .payload",
		Args:    cobra.ExactArgs(1),
	}
	cf.register(cmd)
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if !deadletter.ValidID(args[0]) {
			return usageError{cmd, errors.New("ID: a dead letter's id, dlq_ and 26 characters (corral dlq list shows them)")}
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var e deadletter.Entry
		if err := c.do(cmd.Context(), "GET", "/v1/dlq/"+args[0], nil, &e); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, e)
		}
		fmt.Fprintf(s.out, "id:        %s\nsource:    %s\nname:      %s\ntask:      %s\nstep:      %s\nattempts:  %d\ncode:      %s\nreason:    %s\ntime:      %s\nstate:     %s\nresumable: %v\n",
			e.ID, e.Source, e.Name, dash(e.Task), dash(e.Step), e.Attempts, dash(e.Code), e.Reason, e.Time.Format(time.RFC3339), e.State, e.Resumable)
		if len(e.Payload) > 0 {
			var b bytes.Buffer
			if json.Compact(&b, e.Payload) != nil {
				b.Reset()
				b.Write(e.Payload)
			}
			fmt.Fprintf(s.out, "payload:   %s\n", b.Bytes())
		}
		return nil
	}
	return cmd
}

func newDLQAct(s streams, verb string) *cobra.Command {
	var cf clientFlags
	short, method, suffix := "Hand a dead letter back to its source: a workflow run resumes at its failed step", "POST", "/retry"
	if verb == "discard" {
		short, method, suffix = "Remove a dead letter; a run waiting on it is compensated and fails", "DELETE", ""
	}
	cmd := &cobra.Command{
		Use:     verb + " ID",
		Short:   short,
		Example: "  corral dlq " + verb + " dlq_0123456789abcdefghjkmnpqrs\n  corral dlq " + verb + " dlq_0123456789abcdefghjkmnpqrs -o json",
		Args:    cobra.ExactArgs(1),
	}
	cf.register(cmd)
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if !deadletter.ValidID(args[0]) {
			return usageError{cmd, errors.New("ID: a dead letter's id, dlq_ and 26 characters (corral dlq list shows them)")}
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var e deadletter.Entry
		if err := c.do(cmd.Context(), method, "/v1/dlq/"+args[0]+suffix, nil, &e); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, e)
		}
		if verb == "retry" {
			fmt.Fprintf(s.out, "retried %s: task %s resumes at step %s\n", e.ID, dash(e.Task), dash(e.Step))
		} else {
			fmt.Fprintf(s.out, "discarded %s\n", e.ID)
		}
		return nil
	}
	return cmd
}
