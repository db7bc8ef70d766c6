package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/approval"
	"github.com/corral-dev/corral/internal/identity"
)

func newHumans(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "humans",
		Short: "Create, list and revoke the humans who decide approvals",
		Long: `Approvals are decided by people, never by the admin token or an agent. A
human gets a key, shown once (corral keeps only its hash), and acts with it
as CORRAL_TOKEN: corral approvals approve ID. Groups say which approvals a
human may decide (policy's approvers obligation); --slack-user maps a Slack
user id to the human, so that their Slack button presses count.`,
		Example: `  corral humans create payments-lead --groups payments-oncall
  corral humans create payments-lead --groups payments-oncall,ops --slack-user U0123ABCD -o json
  corral humans list
  corral humans revoke payments-lead`,
	}
	cmd.AddCommand(newHumansCreate(s), newHumansList(s), newHumansRevoke(s))
	return cmd
}

func newHumansCreate(s streams) *cobra.Command {
	var (
		cf        clientFlags
		groups    []string
		slackUser string
	)
	cmd := &cobra.Command{
		Use:     "create NAME [--groups a,b] [--slack-user U123]",
		Short:   "Create a human and print their key once",
		Example: "  corral humans create payments-lead --groups payments-oncall\n  corral humans create payments-lead --groups payments-oncall -o json | jq -r .key",
		Args:    cobra.ExactArgs(1),
	}
	cf.register(cmd)
	cmd.Flags().StringSliceVar(&groups, "groups", nil, "the groups the human belongs to, comma-separated")
	cmd.Flags().StringVar(&slackUser, "slack-user", "", "the human's Slack user id (U...), for deciding in Slack")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var created api.HumanCreated
		if err := c.do(cmd.Context(), "POST", "/v1/humans", api.HumanRequest{Name: args[0], Groups: groups, SlackUser: slackUser}, &created); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, created)
		}
		fmt.Fprintln(s.out, created.Key)
		fmt.Fprintf(s.err, "human %s (groups %s): give them this key now, it is not shown again\n", created.Name, strings.Join(created.Groups, ","))
		return nil
	}
	return cmd
}

func newHumansList(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the humans (never their keys)",
		Example: "  corral humans list\n  corral humans list -o json",
		Args:    cobra.NoArgs,
	}
	cf.register(cmd)
	output := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var list []identity.Human
		if err := c.do(cmd.Context(), "GET", "/v1/humans", nil, &list); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, list)
		}
		if len(list) == 0 {
			fmt.Fprintln(s.err, "no humans")
			return nil
		}
		tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tGROUPS\tSLACK\tAGE")
		for _, h := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", h.Name, strings.Join(h.Groups, ","), h.SlackUser, age(time.Now(), h.Created))
		}
		return tw.Flush()
	}
	return cmd
}

func newHumansRevoke(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "revoke NAME",
		Short:   "Revoke a human and their key",
		Example: "  corral humans revoke payments-lead",
		Args:    cobra.ExactArgs(1),
	}
	cf.register(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		if err := c.do(cmd.Context(), "DELETE", "/v1/humans/"+url.PathEscape(args[0]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(s.err, "human %s revoked\n", args[0])
		return nil
	}
	return cmd
}

func newApprovals(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approvals",
		Short: "List, show and decide the calls policy parked for approval",
		Long: `A call policy wants approved is parked: the agent gets 202 approval_pending
with the approval's id, and the same call runs once it is approved. Deciding
needs a person's credential as CORRAL_TOKEN (a human's key from corral humans
create, or an identity provider's token); the admin token may list and show
but not decide. docs/approvals.md has the rules.`,
		Example: `  corral approvals list --state pending
  corral approvals show 5Jx1...
  CORRAL_TOKEN=$BOB corral approvals approve 5Jx1... --comment "invoice checked"
  CORRAL_TOKEN=$BOB corral approvals deny 5Jx1...`,
	}
	cmd.AddCommand(newApprovalsList(s), newApprovalsShow(s), newApprovalsDecide(s, approval.Approve), newApprovalsDecide(s, approval.Deny))
	return cmd
}

func newApprovalsList(s streams) *cobra.Command {
	var (
		cf           clientFlags
		state, agent string
		limit        int
	)
	cmd := &cobra.Command{
		Use:     "list [--state pending] [--agent NAME]",
		Short:   "List approvals, newest first",
		Example: "  corral approvals list --state pending\n  corral approvals list --agent treasurer -o json",
		Args:    cobra.NoArgs,
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&state, "state", "", "only approvals in this state: pending, approved, denied, expired, executed, canceled")
	cmd.Flags().StringVar(&agent, "agent", "", "only this agent's approvals")
	cmd.Flags().IntVar(&limit, "limit", 50, "at most this many (1 to 1000)")
	output := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		q := url.Values{}
		if state != "" {
			q.Set("state", state)
		}
		if agent != "" {
			q.Set("agent", agent)
		}
		q.Set("limit", fmt.Sprint(limit))
		var list api.ApprovalList
		if err := c.do(cmd.Context(), "GET", "/v1/approvals?"+q.Encode(), nil, &list); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, list)
		}
		if len(list.Items) == 0 {
			fmt.Fprintln(s.err, "no approvals")
			return nil
		}
		tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tAGENT\tTARGET\tAPPROVALS\tEXPIRES\tREASONS")
		for _, a := range list.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", a.ID, a.State, a.Action.Agent, approvalTarget(a.Action),
				approvals(a), a.Quorum, a.Expires.Local().Format(time.DateTime), strings.Join(a.Reasons, "; "))
		}
		return tw.Flush()
	}
	return cmd
}

// approvalTarget is what an approval's action calls, as the list shows it: a
// tool's name, or "agent:<callee>" for an agent calling another.
func approvalTarget(a approval.Action) string {
	if a.Kind == "agent" {
		return "agent:" + a.Target
	}
	return a.Target
}

func approvals(a approval.Approval) int {
	n := 0
	for _, d := range a.Decisions {
		if d.Verdict == approval.Approve {
			n++
		}
	}
	return n
}

func newApprovalsShow(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "show ID",
		Short:   "Show an approval: the action, its arguments (masked), the reasons, who decided",
		Example: "  corral approvals show 5Jx1ZkQp0aBcD\n  corral approvals show 5Jx1ZkQp0aBcD -o json",
		Args:    cobra.ExactArgs(1),
	}
	cf.register(cmd)
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var a approval.Approval
		if err := c.do(cmd.Context(), "GET", "/v1/approvals/"+url.PathEscape(args[0]), nil, &a); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, a)
		}
		printApproval(s, a)
		return nil
	}
	return cmd
}

func printApproval(s streams, a approval.Approval) {
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("ID", a.ID)
	row("State", string(a.State))
	row("Agent", a.Action.Agent)
	if a.Action.Principal != "" {
		row("On behalf of", a.Action.Principal+" ("+a.Action.PrincipalIssuer+")")
	}
	row("Task", a.Action.Task)
	row("Action", a.Action.Kind+" "+a.Action.Target)
	var args bytes.Buffer
	if json.Compact(&args, a.Action.Arguments) != nil {
		args.Reset()
		args.Write(a.Action.Arguments)
	}
	row("Arguments", args.String())
	row("Digest", a.Action.ArgsDigest)
	row("Reasons", strings.Join(a.Reasons, "; "))
	row("Approvers", strings.Join(a.Approvers, ", "))
	row("Quorum", fmt.Sprintf("%d of %d", approvals(a), a.Quorum))
	row("Expires", a.Expires.Local().Format(time.DateTime))
	for _, d := range a.Decisions {
		row("Decision", fmt.Sprintf("%s %s at %s %s", d.Name, d.Verdict, d.At.Local().Format(time.DateTime), d.Comment))
	}
	if ex := a.Execution; ex != nil {
		row("Executed", fmt.Sprintf("%s %s audit %s", ex.At.Local().Format(time.DateTime), ex.Status, ex.AuditID))
	}
	_ = tw.Flush()
}

func newApprovalsDecide(s streams, v approval.Verdict) *cobra.Command {
	var (
		cf      clientFlags
		comment string
	)
	cmd := &cobra.Command{
		Use:     string(v) + " ID [--comment TEXT]",
		Short:   strings.ToUpper(string(v[:1])) + string(v[1:]) + " an approval, as whoever CORRAL_TOKEN is",
		Example: "  CORRAL_TOKEN=corral_hk_... corral approvals " + string(v) + " 5Jx1ZkQp0aBcD --comment \"checked\"",
		Args:    cobra.ExactArgs(1),
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&comment, "comment", "", "why, for the record")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var a approval.Approval
		if err := c.do(cmd.Context(), "POST", "/v1/approvals/"+url.PathEscape(args[0])+"/"+string(v), api.DecisionRequest{Comment: comment}, &a); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, a)
		}
		fmt.Fprintf(s.err, "approval %s: %s (%d of %d approvals)\n", a.ID, a.State, approvals(a), a.Quorum)
		return nil
	}
	return cmd
}
