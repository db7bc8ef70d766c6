package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/config"
)

func newApply(s streams) *cobra.Command {
	var (
		cf    clientFlags
		files []string
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR [-f ...]",
		Short: "Create or update resources from YAML files",
		Long: `Create or update resources declared in YAML (or JSON) files: several
documents per file separated by '---', or a directory searched for .yaml, .yml
and .json files. '-f -' reads standard input.

Every document is validated first; if any is invalid, every problem is listed
with its file, document and field, and nothing is stored. Each resource is then
reported as created, configured or unchanged.

A document that carries metadata.revision (as 'corral get -o yaml' prints it)
is applied only if the stored revision is still that one, so an edit based on
a stale copy is refused instead of overwriting someone else's change.`,
		Example: `  corral apply -f agents.yaml
  corral apply -f examples/
  corral get agent impact -o yaml | sed 's/old/new/' | corral apply -f -
  corral apply -f agents.yaml -o json`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd)
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file or directory of resources; repeatable; - for standard input")
	_ = cmd.MarkFlagRequired("filename")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		docs, err := config.Load(files, s.in)
		if err != nil {
			return notStored{err}
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		results, err := c.apply(cmd.Context(), docs)
		if err != nil {
			return err
		}
		lintApplied(cmd.Context(), s.err, c, docs)
		if *output == "json" {
			return writeJSON(s.out, api.ApplyResponse{Results: results})
		}
		for _, r := range results {
			fmt.Fprintf(s.out, "%s %s\n", r.Resource.ID(), r.Result)
		}
		return nil
	}
	return cmd
}

func newGet(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show resources",
		Long: `Show the resources of a kind, or one resource. KIND is the kind's name or
plural in any case: Agent, agent, agents. 'corral get tools' lists the tools
that ToolSources provide.

-o yaml prints documents that 'corral apply -f' accepts back.`,
		Example: `  corral get agents
  corral get agent impact -o yaml
  corral get tools -o json
  corral get agents -o json | jq '.items[].metadata.name'`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeKinds,
	}
	cf.register(cmd)
	output := outputFlag(cmd, "table", "json", "yaml")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if strings.EqualFold(args[0], "tools") || strings.EqualFold(args[0], "tool") {
			// Tools are not resources: they come from ToolSources.
			if len(args) == 2 {
				return fmt.Errorf("use 'corral tools describe %s' to show one tool", args[1])
			}
			if *output == "yaml" {
				return fmt.Errorf("-o yaml is for resources; tools print as table or json")
			}
			return listTools(cmd.Context(), s, cf, *output)
		}
		k, err := config.LookupKind(args[0])
		if err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var items []config.Resource
		if len(args) == 2 {
			var res config.Resource
			if err := c.do(cmd.Context(), "GET", "/v1/resources/"+k.Name+"/"+url.PathEscape(args[1]), nil, &res); err != nil {
				return err
			}
			items = []config.Resource{res}
		} else {
			var list api.List
			if err := c.do(cmd.Context(), "GET", "/v1/resources/"+k.Name, nil, &list); err != nil {
				return err
			}
			items = list.Items
		}
		switch {
		case *output == "json" && len(args) == 2:
			return writeJSON(s.out, items[0])
		case *output == "json":
			return writeJSON(s.out, api.List{Kind: k.Name, Items: items})
		case *output == "yaml":
			for i, res := range items {
				if i > 0 {
					fmt.Fprintln(s.out, "---")
				}
				if err := writeYAML(s.out, res); err != nil {
					return err
				}
			}
			return nil
		}
		if len(items) == 0 {
			fmt.Fprintf(s.err, "no %s\n", k.Plural)
			return nil
		}
		return writeTable(s, items, time.Now())
	}
	return cmd
}

// writeTable lists resources one per line: name, revision, age, labels and,
// where the spec has one, its description.
func writeTable(s streams, items []config.Resource, now time.Time) error {
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tREVISION\tAGE\tLABELS\tDESCRIPTION")
	for _, res := range items {
		var spec struct {
			Description string `json:"description"`
		}
		_ = json.Unmarshal(res.Spec, &spec) // a spec without a description shows none
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", res.Metadata.Name, res.Metadata.Revision,
			age(now, res.Metadata.Updated), labels(res.Metadata.Labels), oneLine(spec.Description, 60))
	}
	return tw.Flush()
}

func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func labels(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(l))
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// oneLine fits text from the server (descriptions from upstreams, names
// from audit records) on one line of a table, with control characters shown
// escaped rather than sent to the terminal.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

func newDelete(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:               "delete KIND NAME",
		Short:             "Delete a resource",
		Example:           `  corral delete agent impact`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeKinds,
	}
	cf.register(cmd)
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if strings.EqualFold(args[0], "tools") || strings.EqualFold(args[0], "tool") {
			return fmt.Errorf("tools come from ToolSources: delete its ToolSource (corral delete toolsource SOURCE), or take %s out of the agents' spec.tools", args[1])
		}
		k, err := config.LookupKind(args[0])
		if err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var resp map[string]string
		if err := c.do(cmd.Context(), "DELETE", "/v1/resources/"+k.Name+"/"+url.PathEscape(args[1]), nil, &resp); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, resp)
		}
		fmt.Fprintf(s.out, "%s/%s deleted\n", k.Name, args[1])
		return nil
	}
	return cmd
}

func newValidate(s streams) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "validate -f FILE|DIR [-f ...]",
		Short: "Check resource files offline",
		Long: `Check resource files against the schemas built into this corral, without a
server: every problem is listed with its file, document and field. The server
runs the same checks on apply.`,
		Example: `  corral validate -f agents.yaml
  corral validate -f examples/ -o json`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file or directory of resources; repeatable; - for standard input")
	_ = cmd.MarkFlagRequired("filename")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(_ *cobra.Command, _ []string) error {
		docs, err := config.Load(files, s.in)
		var fieldErrs config.Errors
		if *output == "json" && errors.As(err, &fieldErrs) {
			if werr := writeJSON(s.out, map[string]any{"valid": false, "errors": fieldErrs}); werr != nil {
				return werr
			}
			return err
		}
		if err != nil {
			return err
		}
		if *output == "json" {
			type entry struct {
				Source   string `json:"source"`
				Document int    `json:"document"`
				Resource string `json:"resource"`
			}
			var list []entry
			for _, d := range docs {
				list = append(list, entry{d.Source, d.Index, d.Resource.ID()})
			}
			return writeJSON(s.out, map[string]any{"valid": true, "resources": list})
		}
		for _, d := range docs {
			fmt.Fprintf(s.out, "%s: document %d (%s): valid\n", d.Source, d.Index, d.Resource.ID())
		}
		fmt.Fprintf(s.out, "%d resource(s) valid\n", len(docs))
		return nil
	}
	return cmd
}

// completeKinds completes the KIND argument with the plural of every kind.
func completeKinds(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, k := range config.Kinds() {
		out = append(out, k.Plural+"\t"+k.Summary)
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
