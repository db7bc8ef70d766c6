package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/examples"
	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
)

func newDemo(s streams) *cobra.Command {
	var (
		f    serverFlags
		keep bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run corral on an embedded substrate and walk through what it does",
		Long: `Start corral with an embedded JetStream in a fresh temporary directory (or
--data), then use its HTTP API the way the CLI does: apply the example agents,
apply them again (nothing changes), change one, and send a broken file that is
refused with the field named and nothing stored. Then list what is stored.

It exits when done; with --keep it goes on serving until interrupted, and
prints how to point the CLI at it.`,
		Example: `  corral demo
  corral demo --keep
  corral demo --data ./demo-data --http 127.0.0.1:7070 --keep`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.data == "" {
				dir, err := os.MkdirTemp("", "corral-demo-")
				if err != nil {
					return err
				}
				defer func() {
					if !keep {
						os.RemoveAll(dir)
					}
				}()
				f.data = dir
			}
			cfg, logger, err := f.build(s)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), s, logger, cfg, func(ctx context.Context, a *app.App) error {
				return tour(ctx, s, a, keep)
			})
		},
	}
	f.register(cmd, serverDefaults{
		dataUsage: "data directory (default: a new temporary directory, removed afterwards unless --keep)",
		http:      "127.0.0.1:0", // never collide with a corral already on the default port
		logLevel:  "warn",        // the tour's output is the point
	})
	cmd.Flags().BoolVar(&keep, "keep", false, "keep serving after the tour, until interrupted")
	return cmd
}

// tour drives a running corral through its HTTP API, printing each step.
func tour(ctx context.Context, s streams, a *app.App, keep bool) error {
	path, _ := a.AdminToken()
	token, err := identity.ReadToken(path)
	if err != nil {
		return err
	}
	c := newClient(a.URL(), token)

	docs, err := exampleDocuments()
	if err != nil {
		return err
	}
	step := func(n int, title string) { fmt.Fprintf(s.out, "\n[%d/5] %s\n", n, title) }
	apply := func(docs []config.Document) error {
		results, err := c.apply(ctx, docs)
		if err != nil {
			return err
		}
		for _, r := range results {
			fmt.Fprintf(s.out, "  %s %s (revision %d)\n", r.Resource.ID(), r.Result, r.Resource.Metadata.Revision)
		}
		return nil
	}

	step(1, "apply the example agents (examples/agents.yaml): stored in a JetStream key-value bucket")
	if err := apply(docs); err != nil {
		return err
	}
	step(2, "apply the same file again: nothing changes")
	if err := apply(docs); err != nil {
		return err
	}
	step(3, "change one agent's description: only that one is configured")
	changed := docs[0]
	changed.Resource.Spec = []byte(`{"description":"Finds delayed orders, now with the carrier's new delay codes."}`)
	if err := apply([]config.Document{changed}); err != nil {
		return err
	}
	step(4, "send a broken set straight to the API: 422 problem+json, every problem named, nothing stored")
	broken := api.ApplyRequest{Resources: []json.RawMessage{
		json.RawMessage(`{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"fine"},"spec":{}}`),
		json.RawMessage(`{"apiVersion":"corral.dev/v1","kind":"Agent","metadata":{"name":"Bad_Name"},"spec":{"description":42,"tools":["erp.*"]}}`),
	}}
	err = c.do(ctx, "POST", "/v1/apply", broken, nil)
	var refused *apiError
	if !errors.As(err, &refused) {
		return fmt.Errorf("demo: the broken set was not refused as a problem: %v", err)
	}
	fmt.Fprintf(s.out, "  HTTP %d %s: %s\n", refused.Status, refused.Code, refused.Detail)
	for _, e := range refused.fieldErrors {
		fmt.Fprintf(s.out, "  %s\n", e)
	}
	step(5, "what is stored now (corral get agents)")
	var list struct{ Items []config.Resource }
	if err := c.do(ctx, "GET", "/v1/resources/agents", nil, &list); err != nil {
		return err
	}
	if err := writeTable(s, list.Items, time.Now()); err != nil {
		return err
	}
	for _, it := range list.Items {
		if it.Metadata.Name == "fine" {
			return errors.New("demo: a resource from the broken file was stored")
		}
	}

	if !keep {
		fmt.Fprintf(s.out, "\ndone. Run 'corral demo --keep' to keep the server up and try the CLI against it.\n")
		return nil
	}
	fmt.Fprintf(s.out, "\ncorral keeps serving; in another shell:\n  export CORRAL_SERVER=%s CORRAL_TOKEN=$(cat %s)\n  corral get agents\nInterrupt (Ctrl-C) to stop.\n", a.URL(), path)
	<-ctx.Done()
	return nil
}

// exampleDocuments decodes the example files embedded in the binary.
func exampleDocuments() ([]config.Document, error) {
	var docs []config.Document
	err := fs.WalkDir(examples.Files, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := examples.Files.ReadFile(path)
		if err != nil {
			return err
		}
		got, err := config.Decode("examples/"+path, data)
		docs = append(docs, got...)
		return err
	})
	return docs, err
}
