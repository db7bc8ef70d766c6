package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// settingsRoot is a command tree with one command whose flags we inspect.
func settingsRoot(t *testing.T) (*cobra.Command, *cobra.Command, *string, *int) {
	t.Helper()
	var addr string
	var n int
	root := &cobra.Command{Use: "corral", SilenceErrors: true, SilenceUsage: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return applySettings(cmd) }}
	root.PersistentFlags().String("config", "", "")
	sub := &cobra.Command{Use: "up", RunE: func(*cobra.Command, []string) error { return nil }}
	sub.Flags().StringVar(&addr, "http", "default", "")
	sub.Flags().IntVar(&n, "replicas", 1, "")
	other := &cobra.Command{Use: "get", RunE: func(*cobra.Command, []string) error { return nil }}
	other.Flags().String("server", "", "")
	root.AddCommand(sub, other)
	return root, sub, &addr, &n
}

func TestSettingsPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "corral.yaml")
	if err := os.WriteFile(file, []byte("http: from-file\nreplicas: 3\nserver: http://shared-with-get\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantHTTP string
		wantN    int
	}{
		{"defaults", []string{"up"}, nil, "default", 1},
		{"file", []string{"up", "--config", file}, nil, "from-file", 3},
		{"file from env", []string{"up"}, map[string]string{"CORRAL_CONFIG": file}, "from-file", 3},
		{"env beats file", []string{"up", "--config", file}, map[string]string{"CORRAL_HTTP": "from-env"}, "from-env", 3},
		{"flag beats env", []string{"up", "--config", file, "--http", "from-flag"}, map[string]string{"CORRAL_HTTP": "from-env"}, "from-flag", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			root, _, addr, n := settingsRoot(t)
			root.SetArgs(tt.args)
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			if *addr != tt.wantHTTP || *n != tt.wantN {
				t.Errorf("%v: http, replicas = %q, %d, want %q, %d", tt.args, *addr, *n, tt.wantHTTP, tt.wantN)
			}
		})
	}
}

func TestSettingsErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string // substrings of the error
	}{
		{"unknown key", []string{"up", "--config", write("typo.yaml", "htpp: x\n")}, nil, []string{"typo.yaml", "htpp", "unknown setting"}},
		{"nested value", []string{"up", "--config", write("nested.yaml", "http: {a: b}\n")}, nil, []string{"nested.yaml", "http", "single value"}},
		{"malformed", []string{"up", "--config", write("bad.yaml", "http: [\n")}, nil, []string{"bad.yaml", "malformed YAML"}},
		{"missing file", []string{"up", "--config", filepath.Join(dir, "none.yaml")}, nil, []string{"none.yaml"}},
		{"bad env value", []string{"up"}, map[string]string{"CORRAL_REPLICAS": "three"}, []string{"CORRAL_REPLICAS", "three", "replicas"}},
		{"bad file value", []string{"up", "--config", write("n.yaml", "replicas: many\n")}, nil, []string{"n.yaml", "replicas", "many"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			root, _, _, _ := settingsRoot(t)
			root.SetArgs(tt.args)
			err := root.Execute()
			if err == nil {
				t.Fatalf("%v: no error", tt.args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v: error %q does not mention %q", tt.args, err, w)
				}
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	if got := envName("nats-listen"); got != "CORRAL_NATS_LISTEN" {
		t.Errorf("envName(nats-listen) = %q, want CORRAL_NATS_LISTEN", got)
	}
}
