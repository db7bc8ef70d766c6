package cli

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/killswitch"
)

func newKill(s streams) *cobra.Command {
	var (
		cf     clientFlags
		agent  string
		all    bool
		list   bool
		reason string
	)
	cmd := &cobra.Command{
		Use:   "kill --agent NAME | --all | --list",
		Short: "Stop an agent, or every agent, at once; list what is stopped",
		Long: `A kill switch refuses every call of an agent (--agent) or of every agent
(--all) with 423 killed, until 'corral unkill' turns it off. It takes effect on
every replica within a second and survives restarts. The global switch wins
over an agent's own; turning it off leaves agents killed by name stopped.

Killing again updates the reason. An agent that is not declared yet can be
killed; corral warns, since a typo would otherwise stop nobody. Every kill and
unkill is an audit record (kind killswitch) naming who, which switch and why.`,
		Example: `  corral kill --agent impact --reason "looping on refunds"
  corral kill --all --reason "incident 42: upstream CRM corrupting orders"
  corral kill --list
  corral kill --list -o json
  corral unkill --agent impact`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&agent, "agent", "", "the agent to stop")
	cmd.Flags().BoolVar(&all, "all", false, "stop every agent")
	cmd.Flags().BoolVar(&list, "list", false, "list the switches that are on")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for whoever reads the refusal or the list")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if countSet(agent != "", all, list) != 1 {
			return usageError{cmd, errors.New("give exactly one of --agent NAME, --all or --list")}
		}
		if list && cmd.Flags().Changed("reason") {
			return usageError{cmd, errors.New("--reason goes with --agent or --all, not --list")}
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		if list {
			var l api.KillSwitchList
			if err := c.do(cmd.Context(), "GET", "/v1/killswitches", nil, &l); err != nil {
				return err
			}
			if *output == "json" {
				return writeJSON(s.out, l)
			}
			if len(l.Items) == 0 {
				fmt.Fprintln(s.err, "no kill switch is on")
				return nil
			}
			return writeKillTable(s.out, time.Now(), l.Items)
		}
		var resp api.KillResponse
		if err := c.do(cmd.Context(), "POST", "/v1/killswitches", api.KillRequest{All: all, Agent: agent, Reason: reason}, &resp); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, resp)
		}
		if resp.Warning != "" {
			fmt.Fprintln(s.err, "warning: "+resp.Warning)
		}
		if all {
			fmt.Fprintln(s.out, "all agents killed: every call is refused until 'corral unkill --all'")
		} else {
			fmt.Fprintf(s.out, "Agent/%s killed: its calls are refused until 'corral unkill --agent %s'\n", agent, agent)
		}
		return nil
	}
	return cmd
}

func newUnkill(s streams) *cobra.Command {
	var (
		cf     clientFlags
		agent  string
		all    bool
		reason string
	)
	cmd := &cobra.Command{
		Use:   "unkill --agent NAME | --all",
		Short: "Turn a kill switch off",
		Long: `Turn off the kill switch of one agent (--agent) or the global one (--all).
Calls are let through again on every replica within a second, unless another
switch still stops them: an agent killed by name stays killed when the global
switch goes off.

Every kill and unkill is an audit record (kind killswitch): who, which switch,
the reason; 'corral audit' shows them.`,
		Example: `  corral unkill --agent impact --reason "refund loop fixed in v2.3"
  corral unkill --all`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&agent, "agent", "", "the agent to let through again")
	cmd.Flags().BoolVar(&all, "all", false, "turn the global switch off")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if countSet(agent != "", all) != 1 {
			return usageError{cmd, errors.New("give exactly one of --agent NAME or --all")}
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		path, what := "/v1/killswitches/all", "global kill switch"
		if !all {
			path, what = "/v1/killswitches/agent/"+url.PathEscape(agent), "kill switch of Agent/"+agent
		}
		var body any
		if reason != "" {
			body = api.UnkillRequest{Reason: reason}
		}
		var resp api.Unkilled
		if err := c.do(cmd.Context(), "DELETE", path, body, &resp); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, resp)
		}
		fmt.Fprintf(s.out, "%s turned off\n", what)
		return nil
	}
	return cmd
}

// countSet is how many of the flags are set.
func countSet(flags ...bool) int {
	n := 0
	for _, f := range flags {
		if f {
			n++
		}
	}
	return n
}

func writeKillTable(w io.Writer, now time.Time, items []killswitch.Switch) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tREASON\tBY\tAGE")
	for _, sw := range items {
		target := "Agent/" + sw.Agent
		if sw.All {
			target = "ALL AGENTS"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", target, cmp.Or(oneLine(sw.Reason, 60), "-"), cmp.Or(sw.By, "-"), age(now, sw.At))
	}
	return tw.Flush()
}
