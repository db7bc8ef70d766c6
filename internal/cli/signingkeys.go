package cli

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/identity"
)

func newSigningKeys(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "signing-keys",
		Short: "List and rotate the keys corral signs tokens with",
		Long: `corral signs its tokens (agents' access tokens, delegated tokens, and the
identity tokens it sends upstreams) with Ed25519 keys. Each replica keeps its
private keys under DATA/signing-keys and publishes the public halves through
NATS, so that every replica verifies every replica's tokens and serves them
all at /.well-known/jwks.json.

Rotating adds a new key that signs from then on; the old one stays in the
JWKS, for verification only, until every token it signed has expired.`,
		Example: `  corral signing-keys list
  corral signing-keys rotate
  curl -s http://127.0.0.1:7070/.well-known/jwks.json`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newSigningKeysList(s), newSigningKeysRotate(s))
	return cmd
}

func newSigningKeysList(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the signing keys every replica verifies with",
		Example: `  corral signing-keys list
  corral signing-keys list -o json`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd)
	output := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var l api.SigningKeyList
		if err := c.do(cmd.Context(), "GET", "/v1/signing-keys", nil, &l); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, l)
		}
		return writeSigningKeys(s.out, time.Now(), l.Items)
	}
	return cmd
}

func newSigningKeysRotate(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Sign with a new key from now on; keep the old one for verification",
		Long: `Create a new signing key on the server this command reaches and sign with it
from now on. The previous key stays in the JWKS until the tokens it signed
have expired (the longest token lifetime plus a minute), then it is deleted.
With several replicas, each signs with its own key: rotate each of them.`,
		Example: `  corral signing-keys rotate
  corral signing-keys rotate --server https://corral-b.internal:7070`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd)
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var k identity.SigningKey
		if err := c.do(cmd.Context(), "POST", "/v1/signing-keys/rotate", nil, &k); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, k)
		}
		fmt.Fprintf(s.out, "signing with key %s (%s) from now on; the previous key verifies until its tokens expire\n", k.ID, k.Algorithm)
		return nil
	}
	return cmd
}

func writeSigningKeys(w io.Writer, now time.Time, keys []identity.SigningKey) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tALG\tCREATED\tSTATE")
	for _, k := range keys {
		state := "verifies"
		switch {
		case k.Signing:
			state = "signs (this replica)"
		case k.Retires != nil:
			state = "retires in " + k.Retires.Sub(now).Round(time.Second).String()
		case !k.Local:
			state = "another replica's"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.ID, k.Algorithm, k.Created.Format(time.RFC3339), state)
	}
	return tw.Flush()
}
