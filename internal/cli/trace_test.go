package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/telemetry"
)

// updateTraceGolden rewrites testdata/trace/*.golden: go test -run Trace -update.
var updateTraceGolden = func() *bool {
	if f := flag.Lookup("update"); f != nil { // another test file defined it
		v := f.Value.(flag.Getter).Get().(bool)
		return &v
	}
	return flag.Bool("update", false, "rewrite the golden files in testdata")
}()

const testTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"

var traceT0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func testSpan(id, parent, name string, startMS, durMS float64, attrs map[string]any) telemetry.Span {
	start := traceT0.Add(time.Duration(startMS * float64(time.Millisecond)))
	return telemetry.Span{
		TraceID: testTraceID, SpanID: id, ParentSpanID: parent, Name: name, Kind: "internal",
		Start: start, End: start.Add(time.Duration(durMS * float64(time.Millisecond))), DurationMS: durMS,
		Status: telemetry.Status{Code: "unset"}, Attributes: attrs, Service: "corral",
	}
}

// sampleTrace is a tool call as the pipeline traces it, under the caller's
// span (not stored), plus a replica's span and a broken parent cycle.
func sampleTrace() api.TraceResponse {
	action := testSpan("000000000000a001", "00f067aa0ba902b7", "execute_tool inventory.getItem", 0, 14.2, map[string]any{
		"corral.agent": "impact", "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "inventory.getItem",
		"corral.audit.id": "A1",
	})
	action.Kind = "server"
	policy := testSpan("000000000000a002", "000000000000a001", "policy", 0.3, 0.42, map[string]any{
		"corral.policy.effect": "allow", "corral.policy.reasons": []any{"tool in the agent's list", "business hours"},
		"corral.policy.revision": "sha256:abc",
	})
	validate := testSpan("000000000000a003", "000000000000a001", "validate", 0.8, 0.05, nil)
	invoke := testSpan("000000000000a004", "000000000000a001", "invoke", 1, 12.1, map[string]any{"corral.upstream.attempts": json.Number("2")})
	get1 := testSpan("000000000000a005", "000000000000a004", "GET", 1.1, 5, map[string]any{
		"http.response.status_code": json.Number("502"), "url.full": "http://127.0.0.1:8081/items/7", "error.type": "502",
	})
	get1.Status = telemetry.Status{Code: "error"}
	get2 := testSpan("000000000000a006", "000000000000a004", "GET", 7.2, 5.6, map[string]any{
		"http.response.status_code": json.Number("200"), "url.full": "http://127.0.0.1:8081/items/7",
	})
	audit := testSpan("000000000000a007", "000000000000a001", "audit", 13.2, 0.95, nil)
	model := testSpan("000000000000b001", "000000000000a001", "chat gpt-4o", 2, 900, map[string]any{
		"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": json.Number("1200"), "gen_ai.usage.output_tokens": json.Number("85"),
		"corral.cost": json.Number("0.0042"), "corral.code": "budget_exceeded", "corral.budget.exceeded": "team-month",
	})
	model.Status = telemetry.Status{Code: "error", Message: "budget_exceeded"}
	model.Service = "corral-eu"
	cycleA := testSpan("000000000000c001", "000000000000c002", "loop a", 20, 1, nil)
	cycleB := testSpan("000000000000c002", "000000000000c001", "loop b", 21, 1, map[string]any{"corral.code": "killed"})
	cycleB.Status = telemetry.Status{Code: "error", Message: "the agent was killed: looping"}
	return api.TraceResponse{TraceID: testTraceID, Spans: []telemetry.Span{action, policy, validate, invoke, get1, model, get2, audit, cycleA, cycleB}}
}

func TestWriteTraceTree(t *testing.T) {
	var buf bytes.Buffer
	if err := writeTraceTree(&buf, sampleTrace()); err != nil {
		t.Fatal(err)
	}
	golden(t, "tree.golden", buf.Bytes())

	buf.Reset()
	if err := writeTraceTree(&buf, api.TraceResponse{TraceID: testTraceID}); err != nil || buf.String() != "trace "+testTraceID+": no spans\n" {
		t.Errorf("writeTraceTree(no spans) = %q, %v", buf.String(), err)
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "trace", name)
	if *updateTraceGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run with -update to accept):\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}

func TestTraceArg(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{testTraceID, testTraceID, true},
		{strings.ToUpper(testTraceID), testTraceID, true},
		{" " + testTraceID + "\n", testTraceID, true},
		{"00-" + testTraceID + "-00f067aa0ba902b7-01", testTraceID, true},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "", false},
		{"abc", "", false},
		{testTraceID + "0", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := traceArg(tt.in)
		if ok != tt.ok || ok && got != tt.want {
			t.Errorf("traceArg(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzTraceArg(f *testing.F) {
	for _, s := range []string{testTraceID, "00-" + testTraceID + "-00f067aa0ba902b7-01", "abc", "----", "00--0-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := traceArg(s)
		if ok && !telemetry.ValidTraceID(id) {
			t.Fatalf("traceArg(%q) accepted %q", s, id)
		}
	})
}

// flakyTraces answers not found for the first misses calls, then the trace.
type flakyTraces struct {
	misses int32
	calls  atomic.Int32
	trace  []telemetry.Span
}

func (f *flakyTraces) Trace(_ context.Context, id string) ([]telemetry.Span, error) {
	if f.calls.Add(1) <= f.misses || id != testTraceID {
		return nil, telemetry.ErrTraceNotFound
	}
	return f.trace, nil
}

type testAdmin struct{ api.Credentials }

func (testAdmin) VerifyAdmin(token string) bool { return token == "corral_admin_t" }

func serveTraceAPI(t *testing.T, traces api.TraceReader) []string {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	mux := http.NewServeMux()
	api.New(logger, nil, testAdmin{}).WithTraces(traces).Register(mux)
	srv := httptest.NewServer(telemetry.NewHTTPMetrics(prometheus.NewRegistry()).Middleware(logger, mux))
	t.Cleanup(srv.Close)
	t.Chdir(t.TempDir()) // no ./.corral/admin.token
	return []string{"--server", srv.URL, "--token", "corral_admin_t"}
}

func TestTraceCommand(t *testing.T) {
	traces := &flakyTraces{misses: 2, trace: sampleTrace().Spans[:4]}
	conn := serveTraceAPI(t, traces)

	// Not there yet: without --wait, a 404 at once.
	_, errOut, code := run(t, "", append([]string{"trace", testTraceID}, conn...)...)
	if code != 1 || !strings.Contains(errOut, "no spans stored for trace "+testTraceID) || !strings.Contains(errOut, "code not_found") {
		t.Errorf("trace before it is stored = %d %q, want not_found", code, errOut)
	}
	// With --wait, it polls until the trace is there and settled. The wait
	// is long, so that "not the whole wait" holds with a wide margin on a
	// loaded machine (the answer takes about two seconds on a quiet one).
	const wait = 2 * time.Minute
	start := time.Now()
	out, errOut, code := run(t, "", append([]string{"trace", "00-" + testTraceID + "-00f067aa0ba902b7-01", "--wait", wait.String(), "-o", "json"}, conn...)...)
	if code != 0 {
		t.Fatalf("trace --wait = %d %q", code, errOut)
	}
	var got api.TraceResponse
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.TraceID != testTraceID || len(got.Spans) != 4 || got.Spans[1].ParentSpanID != got.Spans[0].SpanID {
		t.Errorf("trace -o json = %s (%v), want the 4 spans with parent ids", out, err)
	}
	if took := time.Since(start); took < traceSettle || took > wait/2 {
		t.Errorf("trace --wait took %v, want the settle time and not the whole wait", took)
	}
	out, errOut, code = run(t, "", append([]string{"trace", testTraceID}, conn...)...)
	if code != 0 || !strings.HasPrefix(out, "trace "+testTraceID+": 4 spans") || !strings.Contains(out, "├─ policy") {
		t.Errorf("trace = %d\n%s%s\nwant the tree", code, out, errOut)
	}
	// --wait gives up when the trace never comes.
	_, errOut, code = run(t, "", append([]string{"trace", "0af7651916cd43dd8448eb211c80319c", "--wait", "300ms"}, conn...)...)
	if code != 1 || !strings.Contains(errOut, "waited 300ms") {
		t.Errorf("trace --wait of a missing trace = %d %q, want not found after waiting", code, errOut)
	}
}

func TestTraceUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"trace"}, "accepts 1 arg(s), received 0"},
		{[]string{"trace", "abc"}, `"abc" is not a trace id`},
		{[]string{"trace", testTraceID, "--wait", "-1s"}, "--wait -1s: must not be negative"},
		{[]string{"trace", testTraceID, "-o", "yaml"}, "want one of tree, json"},
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
