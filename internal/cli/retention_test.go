package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/policy"
)

// TestRetentionFlags: --dlq-retention and --a2a-retention reach the app's
// configuration, 30 days when not given; less than an hour is refused,
// naming the flag.
func TestRetentionFlags(t *testing.T) {
	const month = 30 * 24 * time.Hour
	tests := []struct {
		args     []string
		dlq, a2a time.Duration
		err      string
	}{
		{nil, month, month, ""},
		{[]string{"--dlq-retention", "72h", "--a2a-retention", "2160h"}, 72 * time.Hour, 2160 * time.Hour, ""},
		{[]string{"--dlq-retention", "30m"}, 0, 0, "--dlq-retention 30m0s: must be at least 1h"},
		{[]string{"--a2a-retention", "0s"}, 0, 0, "--a2a-retention 0s: must be at least 1h"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cfg, err := upConfig(t, tt.args)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("config(%v) = %v, want %q", tt.args, err, tt.err)
				}
				return
			}
			if err != nil || cfg.DeadLetterMaxAge != tt.dlq || cfg.A2AMaxAge != tt.a2a {
				t.Errorf("config(%v) = dlq %v, a2a %v, %v; want %v, %v", tt.args, cfg.DeadLetterMaxAge, cfg.A2AMaxAge, err, tt.dlq, tt.a2a)
			}
		})
	}
}

// TestPolicyTimeoutFlag: --policy-timeout reaches the app, defaults to the
// engine's own bound, and a value that would refuse every call or hold a
// runaway policy for ever is refused naming the flag.
func TestPolicyTimeoutFlag(t *testing.T) {
	tests := []struct {
		args []string
		want time.Duration
		err  string
	}{
		{nil, policy.DefaultTimeout, ""},
		{[]string{"--policy-timeout", "2s"}, 2 * time.Second, ""},
		{[]string{"--policy-timeout", "0s"}, 0, "--policy-timeout 0s: must be between 1ms and 1m"},
		{[]string{"--policy-timeout", "2h"}, 0, "--policy-timeout 2h0m0s: must be between 1ms and 1m"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cfg, err := upConfig(t, tt.args)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("config(%v) = %v, want %q", tt.args, err, tt.err)
				}
				return
			}
			if err != nil || cfg.PolicyTimeout != tt.want {
				t.Errorf("config(%v) = %v, %v; want %v", tt.args, cfg.PolicyTimeout, err, tt.want)
			}
		})
	}
}

// upConfig is the configuration `corral up` makes of args.
func upConfig(t *testing.T, args []string) (app.Config, error) {
	t.Helper()
	var f serverFlags
	cmd := &cobra.Command{Use: "up"}
	f.register(cmd, serverDefaults{data: ".corral", http: "127.0.0.1:0", logLevel: "info"})
	if err := cmd.Flags().Parse(args); err != nil {
		t.Fatal(err)
	}
	return f.config()
}
