package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/audit/audittest"
	"github.com/corral-dev/corral/internal/bus"
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
		{ID: "A4", Time: at, Kind: "tool", Agent: "impact", Target: "erp.pay", Decision: "allowed", Status: audit.StatusUnknown, Phase: audit.PhaseIntent},
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := at.Local().Format(auditTimeLayout)
	want := strings.Join([]string{
		"TIME                 AGENT   TOOL           DECISION     CODE             STATUS           DURATION  AUDIT ID",
		ts + "  impact  crm.get_order  allowed      -                ok               12.3ms    A1",
		ts + "  -       crm.get_order  denied       unauthenticated  refused          50µs      A2",
		ts + "  -       crm            event:drift  -                -                -         A3",
		ts + "  impact  erp.pay        allowed      -                outcome unknown  -         A4",
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

func TestAuditVerifyExportUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"audit", "verify", "--file", "a.jsonl", "--since", "1h"}, "--since goes with the server's audit, not --file\nSee 'corral audit verify --help'."},
		{[]string{"audit", "verify", "--checkpoints", "c.jsonl"}, "--checkpoints goes with --file"},
		{[]string{"audit", "verify", "-o", "yaml"}, "want one of text, json"},
		{[]string{"audit", "verify", "now"}, `unknown command "now" for "corral audit verify"`},
		{[]string{"audit", "export", "--format", "csv"}, `invalid argument "csv" for "--format" flag: want one of jsonl`},
		{[]string{"audit", "verify", "--file", "/nonexistent/a.jsonl"}, "no such file"},
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

// cancelledSeq is the record of the test audit that an attacker changes.
const cancelledSeq = 12

// writeAudit stores n records in the audit under dataDir, as a corral that
// ran there would have, and returns the one at cancelledSeq.
func writeAudit(t *testing.T, dataDir string, n int) audit.Record {
	t.Helper()
	b, err := bus.Open(t.Context(), slog.New(slog.DiscardHandler), bus.Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	l, err := audit.Open(t.Context(), slog.New(slog.DiscardHandler), b, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var kept audit.Record
	for i := 1; i <= n; i++ {
		r := audit.Record{Kind: "tool", Agent: "impact", Target: fmt.Sprintf("crm.get_order_%d", i), Edge: "rest", Decision: "allowed", Status: "ok"}
		if i == cancelledSeq {
			r.Target, r.Reason = "crm.cancel_order", "customer asked"
		}
		if _, err := l.Append(t.Context(), &r); err != nil {
			t.Fatal(err)
		}
		if i == cancelledSeq {
			kept = r
		}
	}
	return kept
}

// rewriteAudit changes the cancelled record under a stopped corral's
// dataDir, as an attacker with NATS admin rights can.
func rewriteAudit(t *testing.T, dataDir string) {
	t.Helper()
	b, err := bus.Open(t.Context(), slog.New(slog.DiscardHandler), bus.Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	audittest.Rewrite(t, b.JetStream(), func(seq uint64, data []byte) []byte {
		if seq == cancelledSeq {
			return bytes.Replace(data, []byte(`"reason":"customer asked"`), []byte(`"reason":"agent's choice"`), 1)
		}
		return data
	})
}

// TestAuditVerifyCatchesTampering is the demonstration: an untouched
// audit verifies; after one stored record is changed, 'corral audit verify'
// exits 1 naming it, and so does the offline check of an export.
func TestAuditVerifyCatchesTampering(t *testing.T) {
	dir := t.TempDir()
	cancelled := writeAudit(t, dir, 20)
	s := apptest.StartWith(t, app.Config{DataDir: dir})
	t.Chdir(t.TempDir())
	conn := []string{"--server", s.URL, "--token", s.Token}

	out, errOut, code := run(t, "", append([]string{"audit", "verify"}, conn...)...)
	if code != 0 || !strings.HasPrefix(out, "audit chain intact: 20 records checked (seq 1 to 20), 0 checkpoints matched\n") {
		t.Fatalf("audit verify of an untouched audit = %d %q %q", code, out, errOut)
	}
	archive, errOut, code := run(t, "", append([]string{"audit", "export", "--since", "2026-01-01"}, conn...)...)
	if code != 0 || strings.Count(archive, "\n") != 20 {
		t.Fatalf("audit export = %d, %d lines, %q; want 20 lines", code, strings.Count(archive, "\n"), errOut)
	}
	if out, errOut, code := run(t, archive, "audit", "verify", "--file", "-"); code != 0 || !strings.Contains(out, "audit chain intact: 20 records") {
		t.Errorf("audit verify --file of the export = %d %q %q", code, out, errOut)
	}

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	rewriteAudit(t, dir)
	s = apptest.StartWith(t, app.Config{DataDir: dir})
	conn = []string{"--server", s.URL, "--token", s.Token}

	named := fmt.Sprintf("seq 12 (id %s, %s, agent impact, target crm.cancel_order): changed after it was written: its digest does not match the prev stored in seq 13",
		cancelled.ID, cancelled.Time.Format(time.RFC3339Nano))
	out, errOut, code = run(t, "", append([]string{"audit", "verify"}, conn...)...)
	if code != 1 || !strings.Contains(out, "audit chain BROKEN: 20 records checked") || !strings.Contains(out, "problem: "+named) ||
		errOut != "corral: the audit chain is broken at "+named+"\n" {
		t.Errorf("audit verify after tampering = %d\nstdout %q\nstderr %q\nwant exit 1 naming %s", code, out, errOut, named)
	}
	out, _, code = run(t, "", append([]string{"audit", "verify", "-o", "json"}, conn...)...)
	var rep audit.Report
	if err := json.Unmarshal([]byte(out), &rep); code != 1 || err != nil || rep.OK || rep.Problems[0].ID != cancelled.ID {
		t.Errorf("audit verify -o json after tampering = %d %q, want exit 1 and the report", code, out)
	}
	tampered, _, _ := run(t, "", append([]string{"audit", "export"}, conn...)...)
	file := filepath.Join(t.TempDir(), "tampered.jsonl")
	if err := os.WriteFile(file, []byte(tampered), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := run(t, "", "audit", "verify", "--file", file); code != 1 || !strings.Contains(errOut, "seq 12 at line 12 (id "+cancelled.ID) {
		t.Errorf("audit verify --file of a tampered export = %d %q, want exit 1 naming seq 12", code, errOut)
	}
}

func TestAuditExportCheckpoints(t *testing.T) {
	s := apptest.Start(t)
	t.Chdir(t.TempDir())
	conn := []string{"--server", s.URL, "--token", s.Token}
	// The app has appended nothing, so there is nothing to checkpoint.
	if out, errOut, code := run(t, "", append([]string{"audit", "export", "--checkpoints", "--until", "1m"}, conn...)...); code != 0 || out != "" {
		t.Errorf("audit export --checkpoints = %d %q %q, want nothing", code, out, errOut)
	}
	if _, errOut, code := run(t, "", append([]string{"audit", "export", "--since", "soon"}, conn...)...); code != 1 || !strings.Contains(errOut, `since: "soon" is neither`) {
		t.Errorf("audit export --since soon = %d %q, want the server's refusal", code, errOut)
	}
}

func TestAuditExportCutShort(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"seq":1,"id":"a"}` + "\n"))
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer srv.Close()
	out, errOut, code := run(t, "", "audit", "export", "--server", srv.URL, "--token", "t")
	if code != 1 || out != `{"seq":1,"id":"a"}`+"\n" || !strings.Contains(errOut, "the export was cut short after 19 bytes: the output is incomplete") {
		t.Errorf("audit export cut short = %d %q %q, want exit 1 saying the output is incomplete", code, out, errOut)
	}
}
