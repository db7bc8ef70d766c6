package cli

import (
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/trigger"
)

func newTriggers(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "triggers",
		Short: "Show the triggers: what starts tasks from webhooks, schedules and queues",
		Long: `A Trigger starts a task of an agent for each event of its source: a signed
webhook (POST /hooks/NAME), a cron schedule, a NATS subject, a RabbitMQ queue
or a Kafka topic. Declare one with corral apply (kind: Trigger); these
commands show how each runs on the replica you ask, and what became of its
events there: received, started, duplicate (an event delivered again),
refused (a webhook badly signed), deferred (over maxConcurrent) and
dead_lettered. docs/triggers.md has the rest.`,
		Example: `  corral triggers list
  corral triggers get port-events
  corral triggers list -o json | jq '.items[] | select(.state != "running")'`,
	}
	cmd.AddCommand(newTriggersList(s), newTriggersGet(s))
	return cmd
}

func newTriggersList(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the triggers with their state and event counts",
		Example: "  corral triggers list\n  corral triggers list -o json",
		Args:    cobra.NoArgs,
	}
	cf.register(cmd)
	output := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var list api.TriggerList
		if err := c.do(cmd.Context(), "GET", "/v1/triggers", nil, &list); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, list)
		}
		if len(list.Items) == 0 {
			fmt.Fprintln(s.err, "no triggers; declare one with kind: Trigger (docs/triggers.md)")
			return nil
		}
		return writeTriggerTable(s.out, list.Items)
	}
	return cmd
}

func writeTriggerTable(w io.Writer, items []trigger.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSOURCE\tSTARTS\tSTATE\tLIVE\tRECEIVED\tSTARTED\tDUPLICATE\tREFUSED\tDEFERRED\tDEAD")
	for _, st := range items {
		live := fmt.Sprint(st.Live)
		if st.MaxConcurrent > 0 {
			live += fmt.Sprintf("/%d", st.MaxConcurrent)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", st.Name, st.Source, st.Start, st.State, live,
			st.Events[trigger.Received], st.Events[trigger.Started], st.Events[trigger.Duplicate], st.Events[trigger.Refused],
			st.Events[trigger.Deferred], st.Events[trigger.DeadLettered])
	}
	return tw.Flush()
}

func newTriggersGet(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "get NAME",
		Short:   "Show one trigger: its source, state, next tick and event counts",
		Example: "  corral triggers get port-events\n  corral triggers get nightly-report -o json | jq .next",
		Args:    cobra.ExactArgs(1),
	}
	cf.register(cmd)
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var st trigger.Status
		if err := c.do(cmd.Context(), "GET", "/v1/triggers/"+url.PathEscape(args[0]), nil, &st); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, st)
		}
		tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "name:\t%s (revision %d)\n", st.Name, st.Revision)
		fmt.Fprintf(tw, "source:\t%s\n", st.Source)
		if st.Path != "" {
			fmt.Fprintf(tw, "path:\tPOST %s\n", st.Path)
		}
		fmt.Fprintf(tw, "starts:\t%s\n", st.Start)
		fmt.Fprintf(tw, "state:\t%s since %s\n", st.State, st.Since.Format(time.RFC3339))
		if st.Error != "" {
			fmt.Fprintf(tw, "error:\t%s\n", st.Error)
		}
		if st.Next != nil {
			fmt.Fprintf(tw, "next tick:\t%s\n", st.Next.Format(time.RFC3339))
		}
		if st.MaxConcurrent > 0 {
			fmt.Fprintf(tw, "live tasks:\t%d of at most %d\n", st.Live, st.MaxConcurrent)
		} else {
			fmt.Fprintf(tw, "live tasks:\t%d\n", st.Live)
		}
		var counts []string
		for _, o := range []string{trigger.Received, trigger.Started, trigger.Duplicate, trigger.Refused, trigger.Deferred, trigger.DeadLettered} {
			counts = append(counts, fmt.Sprintf("%s %d", o, st.Events[o]))
		}
		fmt.Fprintf(tw, "events here:\t%s\n", strings.Join(counts, ", "))
		return tw.Flush()
	}
	return cmd
}
