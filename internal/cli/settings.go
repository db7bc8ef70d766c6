package cli

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// envName is the variable that sets a flag: --nats-listen is CORRAL_NATS_LISTEN.
func envName(flag string) string {
	return "CORRAL_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// perInvocation are flags that say what one command does, not how corral is
// set up; they are only read from the command line, so that a shared
// settings file or a CORRAL_OUTPUT meant for one command cannot break another.
var perInvocation = []string{"help", "config", "output", "filename", "keep"}

// applySettings fills every flag of cmd not given on the command line from its
// CORRAL_* variable, else from the --config file. A bad value names where it
// came from; a key in the file that no corral command knows is an error, so a
// typo is never silently ignored.
func applySettings(cmd *cobra.Command) error {
	file, err := configFile(cmd)
	if err != nil {
		return err
	}
	var firstErr error
	set := func(f *pflag.Flag, value, from string) {
		if err := f.Value.Set(value); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("%s: invalid value %q for %s: %v", from, value, f.Name, err)
		}
		f.Changed = true
	}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || slices.Contains(perInvocation, f.Name) {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			set(f, v, envName(f.Name))
			return
		}
		if v, ok := file.values[f.Name]; ok {
			set(f, v, file.path+": "+f.Name)
		}
	})
	return firstErr
}

type settingsFile struct {
	path   string
	values map[string]string
}

// configFile reads the --config (or CORRAL_CONFIG) file, if any.
func configFile(cmd *cobra.Command) (settingsFile, error) {
	path, _ := cmd.Flags().GetString("config")
	if !cmd.Flags().Changed("config") {
		path = os.Getenv("CORRAL_CONFIG")
	}
	if path == "" {
		return settingsFile{}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return settingsFile{}, fmt.Errorf("config file: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return settingsFile{}, fmt.Errorf("%s: malformed YAML: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	known := allFlagNames(cmd.Root())
	out := settingsFile{path: path, values: map[string]string{}}
	for key, v := range raw {
		if !slices.Contains(known, key) {
			return settingsFile{}, fmt.Errorf("%s: %s: unknown setting (settings are flag names: %s)", path, key, strings.Join(known, ", "))
		}
		switch v.(type) {
		case map[string]any, []any, nil:
			return settingsFile{}, fmt.Errorf("%s: %s: must be a single value", path, key)
		}
		out.values[key] = fmt.Sprint(v)
	}
	return out, nil
}

// allFlagNames lists every flag of every command, sorted: a settings file may
// be shared by `corral up` and the client commands.
func allFlagNames(root *cobra.Command) []string {
	var names []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.LocalFlags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) {
				if !slices.Contains(perInvocation, f.Name) && !slices.Contains(names, f.Name) {
					names = append(names, f.Name)
				}
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	slices.Sort(names)
	return names
}
