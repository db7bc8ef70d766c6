package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/policy"
)

func newPolicyApply(s streams) *cobra.Command {
	var (
		cf          clientFlags
		name, about string
	)
	cmd := &cobra.Command{
		Use:   "apply PATH... --name NAME",
		Short: "Store the Rego modules and data in PATHs as one Policy resource",
		Long: `Read .rego files (test files left out) and data.json / data.yaml files from
PATHs, as 'corral policy test' does, and apply them as Policy/NAME: the
modules go in spec.rego, the data in spec.data. The server compiles them with
the other policies before it stores anything, and refuses them with the
compiler's messages (module and line) if they do not compile.

-o yaml prints the resource instead of applying it, for review or for git.`,
		Example: `  corral policy test examples/policies/payments && \
    corral policy apply examples/policies/payments --name payments
  corral policy apply policies/ --name house-rules -o yaml > house-rules.yaml`,
		Args: cobra.MinimumNArgs(1),
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&name, "name", "", "the Policy's name (required)")
	cmd.Flags().StringVar(&about, "description", "", "what the rules are for")
	output := outputFlag(cmd, "text", "json", "yaml")
	cmd.RunE = func(cmd *cobra.Command, paths []string) error {
		if name == "" {
			return usageError{cmd, errors.New("--name is required: the Policy resource's name")}
		}
		res, modules, err := policyResource(name, about, paths)
		if err != nil {
			return err
		}
		if *output == "yaml" {
			return writeYAML(s.out, res)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		results, err := c.apply(cmd.Context(), []config.Document{{Source: paths[0], Index: 1, Resource: res}})
		if err != nil {
			return err
		}
		if schemas, err := serverSchemas(cmd.Context(), c); err != nil {
			fmt.Fprintf(s.err, "warning: policy lint skipped: listing the server's tools: %v\n", err)
		} else {
			b, _ := policy.LoadDir(paths...) // loaded once already by policyResource
			warnLint(s.err, b.WithoutTests().Modules, schemas)
		}
		if *output == "json" {
			return writeJSON(s.out, results[0])
		}
		fmt.Fprintf(s.out, "%s %s (%d module(s), policy revision %d)\n", results[0].Resource.ID(), results[0].Result, modules, results[0].Resource.Metadata.Revision)
		return nil
	}
	return cmd
}

// policyResource builds Policy/name from the modules and data in paths,
// validated as apply validates it.
func policyResource(name, description string, paths []string) (config.Resource, int, error) {
	b, err := policy.LoadDir(paths...)
	if err != nil {
		return config.Resource{}, 0, err
	}
	b = b.WithoutTests()
	if len(b.Modules) == 0 {
		return config.Resource{}, 0, fmt.Errorf("%v: no .rego modules (other than tests) there", paths)
	}
	spec := config.PolicySpec{Description: description, Data: b.Data}
	for _, m := range b.Modules {
		spec.Rego = append(spec.Rego, m.Source)
	}
	res, err := validResource("Policy", name, spec)
	if err != nil {
		return config.Resource{}, 0, err
	}
	return res, len(b.Modules), nil
}
