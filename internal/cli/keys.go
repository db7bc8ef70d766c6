package cli

import (
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
)

func newKeys(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create, list and revoke agents' API keys",
		Long: `Agents authenticate to corral with an API key: Authorization: Bearer <key>.
A key is shown once, when created; corral keeps only its hash. Its id (the
first digits of that hash) names it afterwards. A revoked key stops working
on every replica within a second.`,
		Example: `  corral keys create --agent impact
  corral keys create --agent impact -o json | jq -r .key
  corral keys list --agent impact
  corral keys revoke 3f9a0c1d2e4b`,
	}
	cmd.AddCommand(newKeysCreate(s), newKeysList(s), newKeysRevoke(s))
	return cmd
}

func newKeysCreate(s streams) *cobra.Command {
	var (
		cf    clientFlags
		agent string
	)
	cmd := &cobra.Command{
		Use:     "create --agent NAME",
		Short:   "Create an API key for an agent and print it once",
		Example: "  corral keys create --agent impact\n  corral keys create --agent impact -o json",
		Args:    cobra.NoArgs,
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&agent, "agent", "", "the agent the key is for (it must exist)")
	_ = cmd.MarkFlagRequired("agent")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var created api.CreatedKey
		if err := c.do(cmd.Context(), "POST", "/v1/keys", api.CreateKeyRequest{Agent: agent}, &created); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, created)
		}
		fmt.Fprintln(s.out, created.Secret)
		fmt.Fprintf(s.err, "key %s for Agent/%s: store it now, it is not shown again\n", created.ID, created.Agent)
		return nil
	}
	return cmd
}

func newKeysList(s streams) *cobra.Command {
	var (
		cf    clientFlags
		agent string
	)
	cmd := &cobra.Command{
		Use:     "list [--agent NAME]",
		Short:   "List API keys (their ids, never the keys)",
		Example: "  corral keys list\n  corral keys list --agent impact -o json",
		Args:    cobra.NoArgs,
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&agent, "agent", "", "only this agent's keys")
	output := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		path := "/v1/keys"
		if agent != "" {
			path += "?agent=" + url.QueryEscape(agent)
		}
		var list api.KeyList
		if err := c.do(cmd.Context(), "GET", path, nil, &list); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, list)
		}
		if len(list.Items) == 0 {
			fmt.Fprintln(s.err, "no keys")
			return nil
		}
		tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tAGENT\tAGE")
		for _, k := range list.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", k.ID, k.Agent, age(time.Now(), k.Created))
		}
		return tw.Flush()
	}
	return cmd
}

func newKeysRevoke(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke an API key",
		Example: "  corral keys revoke 3f9a0c1d2e4b",
		Args:    cobra.ExactArgs(1),
	}
	cf.register(cmd)
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var resp map[string]any
		if err := c.do(cmd.Context(), "DELETE", "/v1/keys/"+url.PathEscape(args[0]), nil, &resp); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, resp)
		}
		fmt.Fprintf(s.out, "key %s of Agent/%v revoked\n", args[0], resp["agent"])
		return nil
	}
	return cmd
}
