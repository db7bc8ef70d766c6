package cli

import (
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestTrustedProxiesFlag: --trusted-proxies takes prefixes and bare
// addresses, from the command line or CORRAL_TRUSTED_PROXIES, and a bad
// entry is refused with the flag and the entry named.
func TestTrustedProxiesFlag(t *testing.T) {
	for _, tt := range []struct {
		args []string
		env  string
		want string // the prefixes, or the error
	}{
		{nil, "", "[]"},
		{[]string{"--trusted-proxies", "10.0.0.0/8,192.0.2.1", "--trusted-proxies", "fd00::/8"}, "", "[10.0.0.0/8 192.0.2.1/32 fd00::/8]"},
		{nil, "10.1.2.3/16, 2001:db8::7", "[10.1.0.0/16 2001:db8::7/128]"},
		{[]string{"--trusted-proxies", "10.0.0.0/8,proxy.internal"}, "", `--trusted-proxies "proxy.internal": want a CIDR prefix (10.0.0.0/8, fd00::/8) or an IP address`},
		{nil, "10.0.0.0/40", `--trusted-proxies "10.0.0.0/40": want a CIDR prefix (10.0.0.0/8, fd00::/8) or an IP address`},
	} {
		t.Run(strings.Join(tt.args, " ")+tt.env, func(t *testing.T) {
			var f serverFlags
			cmd := &cobra.Command{Use: "up", RunE: func(*cobra.Command, []string) error { return nil }}
			f.register(cmd, serverDefaults{data: ".corral", http: "127.0.0.1:0", logLevel: "info"})
			if tt.env != "" {
				t.Setenv("CORRAL_TRUSTED_PROXIES", tt.env)
			}
			if err := cmd.Flags().Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if err := applySettings(cmd); err != nil {
				t.Fatal(err)
			}
			cfg, err := f.config()
			got := fmt.Sprint(cfg.TrustedProxies)
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("config(%v, env %q) = %s, want %s", tt.args, tt.env, got, tt.want)
			}
		})
	}
}
