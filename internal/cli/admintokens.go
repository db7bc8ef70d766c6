package cli

import (
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
)

func newAdminTokens(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin-tokens",
		Short: "Create, list and revoke admin tokens",
		Long: `Admin tokens let people and pipelines use the API and the CLI. corral up
writes one to DATA/admin.token on first start; make one per person or
pipeline instead, with an expiry, and revoke the file's when you are done
with it (a restart does not bring a revoked token back). A token is shown
once, when created; its id names it afterwards. A revoked or expired token
stops working on every replica within a second.`,
		Example: `  corral admin-tokens create --name ci --ttl 720h
  corral admin-tokens list
  corral admin-tokens revoke 3f9a0c1d2e4b`,
	}
	cmd.AddCommand(newAdminTokensCreate(s), newAdminTokensList(s), newAdminTokensRevoke(s))
	return cmd
}

func newAdminTokensCreate(s streams) *cobra.Command {
	var (
		cf   clientFlags
		name string
		ttl  time.Duration
	)
	cmd := &cobra.Command{
		Use:     "create --name NAME [--ttl DURATION]",
		Short:   "Create an admin token and print it once",
		Example: "  corral admin-tokens create --name alice --ttl 8h\n  corral admin-tokens create --name ci -o json | jq -r .token",
		Args:    cobra.NoArgs,
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&name, "name", "", "what the token is for: who or which pipeline holds it")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the token lives, 1m to 8784h (default: until revoked)")
	_ = cmd.MarkFlagRequired("name")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		req := api.CreateAdminTokenRequest{Name: name}
		if ttl != 0 {
			req.TTL = ttl.String()
		}
		var created api.CreatedAdminToken
		if err := c.do(cmd.Context(), "POST", "/v1/admin-tokens", req, &created); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, created)
		}
		fmt.Fprintln(s.out, created.Token)
		expires := "never expires"
		if created.Expires != nil {
			expires = "expires " + created.Expires.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(s.err, "admin token %s (%s, %s): store it now, it is not shown again\n", created.ID, created.Name, expires)
		return nil
	}
	return cmd
}

func newAdminTokensList(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List admin tokens (their ids, never the tokens)",
		Example: "  corral admin-tokens list\n  corral admin-tokens list -o json",
		Args:    cobra.NoArgs,
	}
	cf.register(cmd)
	output := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var list api.AdminTokenList
		if err := c.do(cmd.Context(), "GET", "/v1/admin-tokens", nil, &list); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, list)
		}
		tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tAGE\tEXPIRES")
		now := time.Now()
		for _, t := range list.Items {
			expires := "never"
			switch {
			case t.Expired:
				expires = "expired"
			case t.Expires != nil:
				expires = "in " + age(*t.Expires, now)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Name, age(now, t.Created), expires)
		}
		return tw.Flush()
	}
	return cmd
}

func newAdminTokensRevoke(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke an admin token",
		Example: "  corral admin-tokens revoke 3f9a0c1d2e4b",
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
		if err := c.do(cmd.Context(), "DELETE", "/v1/admin-tokens/"+url.PathEscape(args[0]), nil, &resp); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, resp)
		}
		fmt.Fprintf(s.out, "admin token %s (%v) revoked\n", args[0], resp["name"])
		return nil
	}
	return cmd
}
