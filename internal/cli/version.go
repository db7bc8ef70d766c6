package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

func newVersion(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print corral's version",
		Example: "  corral version\n  corral version -o json",
		Args:    cobra.NoArgs,
	}
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(*cobra.Command, []string) error {
		info := map[string]string{"version": Version(), "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}
		if *output == "json" {
			return writeJSON(s.out, info)
		}
		fmt.Fprintf(s.out, "corral %s (%s, %s)\n", info["version"], info["go"], info["platform"])
		return nil
	}
	return cmd
}

// newCompletion replaces cobra's default completion command with one whose
// help carries an example, like every other command.
func newCompletion(root *cobra.Command) *cobra.Command {
	root.CompletionOptions.DisableDefaultCmd = true
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `Print a script that teaches your shell to complete corral's commands, flags
and resource kinds. Load it in the current shell, or install it for every new one.`,
		Example: `  source <(corral completion bash)
  corral completion zsh > "${fpath[1]}/_corral"
  corral completion fish > ~/.config/fish/completions/corral.fish`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			case "powershell":
				return root.GenPowerShellCompletionWithDesc(out)
			}
			return fmt.Errorf("unknown shell %q: want bash, zsh, fish or powershell", args[0])
		},
	}
}
