package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/audit"
)

func TestAuditUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"audit", "--limit", "0"}, "--limit 0: want 1 to 10000\nSee 'corral audit --help'."},
		{[]string{"audit", "--limit", "10001"}, "--limit 10001: want 1 to 10000"},
		{[]string{"audit", "-o", "yaml"}, `want one of table, json, jsonl`},
		{[]string{"audit", "impact"}, `unknown command "impact" for "corral audit"`},
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

// TestAuditCommand needs the app to serve /v1/audit (app.go wires
// api.WithOps). It sees an empty audit: calls that leave records come with
// the tool gateway.
func TestAuditCommand(t *testing.T) {
	s := apptest.Start(t)
	t.Chdir(t.TempDir())
	conn := []string{"--server", s.URL, "--token", s.Token}

	out, errOut, code := run(t, "", append([]string{"audit", "--agent", "impact", "--since", "1h"}, conn...)...)
	if code != 0 || out != "" || errOut != "no audit records of Agent/impact since 1h\n" {
		t.Errorf("audit on an empty audit = %d %q %q", code, out, errOut)
	}
	if out, errOut, code = run(t, "", append([]string{"audit", "-o", "json"}, conn...)...); code != 0 || !strings.Contains(out, `"records": []`) {
		t.Errorf("audit -o json = %d %q %q", code, out, errOut)
	}
	if out, errOut, code = run(t, "", append([]string{"audit", "-o", "jsonl", "--tool", "crm.*"}, conn...)...); code != 0 || out != "" {
		t.Errorf("audit -o jsonl = %d %q %q, want nothing", code, out, errOut)
	}
	if _, errOut, code = run(t, "", append([]string{"audit", "--since", "yesterday"}, conn...)...); code != 1 ||
		!strings.Contains(errOut, `since: "yesterday" is neither`) || !strings.Contains(errOut, "code invalid_request") {
		t.Errorf("audit --since yesterday = %d %q, want invalid_request naming since", code, errOut)
	}
}

func TestWriteAuditTable(t *testing.T) {
	at := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	err := writeAuditTable(&buf, []audit.Record{
		{ID: "A1", Time: at, Kind: "tool", Agent: "impact", Target: "crm.get_order", Decision: "allowed", Status: "ok", DurationMS: 12.34},
		{ID: "A2", Time: at, Kind: "tool", Target: "crm.get_order", Decision: "denied", Code: "unauthenticated", Status: "refused", DurationMS: 0.05},
		{ID: "A3", Time: at, Kind: "tool", Target: "crm", Event: "drift"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := at.Local().Format(auditTimeLayout)
	want := strings.Join([]string{
		"TIME                 AGENT   TOOL           DECISION     CODE             STATUS   DURATION  AUDIT ID",
		ts + "  impact  crm.get_order  allowed      -                ok       12.3ms    A1",
		ts + "  -       crm.get_order  denied       unauthenticated  refused  50µs      A2",
		ts + "  -       crm            event:drift  -                -        -         A3",
		"",
	}, "\n")
	if buf.String() != want {
		t.Errorf("writeAuditTable =\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestAuditDuration(t *testing.T) {
	tests := []struct {
		ms   float64
		want string
	}{
		{0, "-"},
		{0.25, "250µs"},
		{1, "1.0ms"},
		{999.94, "999.9ms"},
		{4213, "4.21s"},
		{125000, "2m5s"},
	}
	for _, tt := range tests {
		if got := auditDuration(tt.ms); got != tt.want {
			t.Errorf("auditDuration(%v) = %q, want %q", tt.ms, got, tt.want)
		}
	}
}
