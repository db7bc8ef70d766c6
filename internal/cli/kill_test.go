package cli

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/killswitch"
)

func TestKillUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"kill"}, "give exactly one of --agent NAME, --all or --list\nSee 'corral kill --help'."},
		{[]string{"kill", "--agent", "impact", "--all"}, "give exactly one of --agent NAME, --all or --list"},
		{[]string{"kill", "--all", "--list"}, "give exactly one of --agent NAME, --all or --list"},
		{[]string{"kill", "--list", "--reason", "x"}, "--reason goes with --agent or --all, not --list"},
		{[]string{"kill", "impact"}, `unknown command "impact" for "corral kill"`},
		{[]string{"unkill"}, "give exactly one of --agent NAME or --all\nSee 'corral unkill --help'."},
		{[]string{"unkill", "--agent", "impact", "--all"}, "give exactly one of --agent NAME or --all"},
		{[]string{"unkill", "--list"}, "unknown flag: --list"},
		{[]string{"kill", "--list", "-o", "yaml"}, `invalid argument "yaml" for "-o, --output" flag: want one of text, json`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, errOut, code := run(t, "", tt.args...)
			if code != 1 || !strings.Contains(errOut, tt.want) {
				t.Errorf("corral %v = %d %q, want exit 1 and %q", tt.args, code, errOut, tt.want)
			}
		})
	}
}

// TestKillCommands needs the app to serve /v1/killswitches (app.go wires
// api.WithOps).
func TestKillCommands(t *testing.T) {
	s := apptest.Start(t)
	t.Chdir(t.TempDir())
	conn := []string{"--server", s.URL, "--token", s.Token}
	kill := func(args ...string) (string, string, int) {
		t.Helper()
		return run(t, "", append(append([]string{"kill"}, args...), conn...)...)
	}
	unkill := func(args ...string) (string, string, int) {
		t.Helper()
		return run(t, "", append(append([]string{"unkill"}, args...), conn...)...)
	}

	if _, errOut, code := kill("--list"); code != 0 || errOut != "no kill switch is on\n" {
		t.Errorf("kill --list with none = %d %q", code, errOut)
	}
	out, errOut, code := kill("--agent", "impact", "--reason", "looping on refunds")
	if code != 0 || out != "Agent/impact killed: its calls are refused until 'corral unkill --agent impact'\n" {
		t.Errorf("kill --agent = %d %q %q", code, out, errOut)
	}
	if !strings.Contains(errOut, "warning: Agent/impact does not exist (yet)") {
		t.Errorf("kill --agent of an undeclared agent: stderr %q, want a warning", errOut)
	}
	if out, errOut, code = kill("--all", "-o", "json"); code != 0 || !strings.Contains(out, `"all": true`) {
		t.Errorf("kill --all -o json = %d %q %q", code, out, errOut)
	}
	out, _, code = kill("--list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "TARGET") || !strings.HasPrefix(lines[1], "ALL AGENTS") ||
		!strings.HasPrefix(lines[2], "Agent/impact") || !strings.Contains(lines[2], "looping on refunds") {
		t.Errorf("kill --list = %d\n%s", code, out)
	}
	out, _, _ = kill("--list", "-o", "json")
	var list struct{ Items []killswitch.Switch }
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Items) != 2 {
		t.Errorf("kill --list -o json = %s, want two switches", out)
	}

	if out, errOut, code = unkill("--all"); code != 0 || out != "global kill switch turned off\n" {
		t.Errorf("unkill --all = %d %q %q", code, out, errOut)
	}
	if _, errOut, code = unkill("--all"); code != 1 || !strings.Contains(errOut, "code not_killed") {
		t.Errorf("unkill --all again = %d %q, want not_killed", code, errOut)
	}
	if out, errOut, code = unkill("--agent", "impact", "--reason", "refund loop fixed"); code != 0 || out != "kill switch of Agent/impact turned off\n" {
		t.Errorf("unkill --agent = %d %q %q", code, out, errOut)
	}
	// Each kill and unkill is in the audit, with its reason.
	out, errOut, code = run(t, "", append([]string{"audit", "--agent", "impact", "-o", "jsonl"}, conn...)...)
	var events []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r struct{ Event, Reason string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit -o jsonl line %q: %v", line, err)
		}
		events = append(events, r.Event+": "+r.Reason)
	}
	if want := []string{"killswitch.kill: looping on refunds", "killswitch.unkill: refund loop fixed"}; code != 0 || !slices.Equal(events, want) {
		t.Errorf("audit --agent impact = %d %q %q; want the records %q", code, events, errOut, want)
	}
	if _, errOut, code = kill("--agent", "Not_Valid"); code != 1 || !strings.Contains(errOut, "code invalid_request") {
		t.Errorf("kill --agent with a bad name = %d %q, want invalid_request", code, errOut)
	}
}

func TestWriteKillTable(t *testing.T) {
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	err := writeKillTable(&buf, now, []killswitch.Switch{
		{Target: killswitch.Target{All: true}, By: "admin", At: now.Add(-3 * time.Hour)},
		{Target: killswitch.Target{Agent: "impact"}, Reason: "looping\non refunds", By: "admin", At: now.Add(-90 * time.Second)},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `TARGET        REASON              BY     AGE
ALL AGENTS    -                   admin  3h
Agent/impact  looping on refunds  admin  1m
`
	if buf.String() != want {
		t.Errorf("writeKillTable =\n%s\nwant\n%s", buf.String(), want)
	}
}
