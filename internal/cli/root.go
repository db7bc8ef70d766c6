// Package cli is corral's command tree: it parses flags, settings from
// CORRAL_* variables and the --config file, and either runs the server (up,
// demo) or talks to one over its HTTP API.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/config"
)

// version is set at build time with
// -ldflags "-X github.com/corral-dev/corral/internal/cli.version=v1.2.3".
var version = "dev"

// Version returns corral's version: the one set at build time, else the
// module version when installed with go install, else "dev".
func Version() string {
	if version != "dev" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return version
}

// streams are the process's standard streams, passed down so commands can be
// run in tests.
type streams struct {
	in       io.Reader
	out, err io.Writer
}

// Main runs corral with args and returns the process exit code. Errors are
// printed here, once.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(streams{in: stdin, out: stdout, err: stderr})
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		printError(stderr, root, err)
		var ec exitCoder
		if errors.As(err, &ec) {
			return ec.ExitCode()
		}
		return 1
	}
	return 0
}

// exitCoder is an error that ends corral with an exit code other than 1,
// for scripts that branch on how a task ended.
type exitCoder interface {
	error
	ExitCode() int
}

func newRoot(s streams) *cobra.Command {
	root := &cobra.Command{
		Use:   "corral",
		Short: "corral: a governed mesh for AI agents",
		Long: `corral sits between AI agents and everything they touch: models, tools and
each other. Every call goes through one governed pipeline, and multi-step
agent work runs durably on NATS JetStream.

Every flag can also be set with a CORRAL_* environment variable (--nats-listen
is CORRAL_NATS_LISTEN) or a key of the YAML file named by --config
(nats-listen: 127.0.0.1:4333). A flag on the command line wins over the
variable, and the variable over the file.`,
		Example: `  corral demo                      # see corral work on an embedded substrate
  corral up                        # run the server on ./.corral
  corral apply -f examples/        # declare resources
  corral get agents                # list them`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applySettings(cmd)
		},
	}
	root.SetIn(s.in)
	root.SetOut(s.out)
	root.SetErr(s.err)
	root.PersistentFlags().String("config", "", "YAML file of settings, keyed by flag name (CORRAL_CONFIG)")
	root.AddCommand(
		newUp(s),
		newWorker(s),
		newDemo(s),
		newApply(s),
		newGet(s),
		newDelete(s),
		newValidate(s),
		newKeys(s),
		newHumans(s),
		newApprovals(s),
		newAdminTokens(s),
		newTools(s),
		newRun(s), newTasks(s),
		newKill(s), newUnkill(s), newAudit(s), newBudgets(s), newLimits(s), newTrace(s),
		newPolicy(s), newSigningKeys(s),
		newDLQ(s),
		newTriggers(s),
		newVersion(s),
		newCompletion(root),
	)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{cmd: cmd, err: err}
	})
	return root
}

// notStored marks an error that stopped a write before anything was stored,
// so that the message can say so.
type notStored struct{ err error }

func (e notStored) Error() string { return e.err.Error() }
func (e notStored) Unwrap() error { return e.err }

// usageError is a mistake in how a command was called.
type usageError struct {
	cmd *cobra.Command
	err error
}

func (e usageError) Error() string {
	return fmt.Sprintf("%v\nSee '%s --help'.", e.err, e.cmd.CommandPath())
}

// printError prints err for people. Resource errors get one line each.
func printError(w io.Writer, root *cobra.Command, err error) {
	var fieldErrs config.Errors
	if errors.As(err, &fieldErrs) {
		for _, e := range fieldErrs {
			fmt.Fprintln(w, e.Error())
		}
		summary := fmt.Sprintf("%s: %d problem(s)", root.Name(), len(fieldErrs))
		if errors.As(err, new(notStored)) {
			summary += "; nothing was stored"
		}
		fmt.Fprintln(w, summary)
		return
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "accepts ") || strings.HasPrefix(msg, "requires ") {
		msg += "\nSee 'corral --help'."
	}
	fmt.Fprintf(w, "%s: %s\n", root.Name(), msg)
}
