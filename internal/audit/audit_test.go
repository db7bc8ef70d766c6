package audit

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
)

func open(t testing.TB, b *bus.Bus) *Log {
	t.Helper()
	l, err := Open(t.Context(), slog.New(slog.DiscardHandler), b, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func appendAll(t testing.TB, l *Log, records ...Record) []string {
	t.Helper()
	var ids []string
	for i := range records {
		id, err := l.Append(t.Context(), &records[i])
		if err != nil {
			t.Fatalf("Append(%+v): %v", records[i], err)
		}
		ids = append(ids, id)
	}
	return ids
}

func call(agent, tool string) Record {
	return Record{Kind: "tool", Agent: agent, Target: tool, Edge: "rest", Decision: "allowed", Status: "ok", DurationMS: 1.5}
}

// targets lists the agent/tool of each record, for compact comparisons.
func targets(rs []Record) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.Agent+"/"+r.Target)
	}
	return out
}

func TestAppendAssignsIDAndTime(t *testing.T) {
	l := open(t, bustest.Open(t))
	r := call("impact", "crm.get_order")
	before := time.Now()
	id, err := l.Append(t.Context(), &r)
	if err != nil {
		t.Fatal(err)
	}
	if id == "" || id != r.ID {
		t.Errorf("Append = %q, record ID %q; want the same, non-empty", id, r.ID)
	}
	if r.Time.Before(before.Add(-time.Second)) || r.Time.After(time.Now()) {
		t.Errorf("Append set Time %v, want about now", r.Time)
	}
	given := call("impact", "crm.get_order")
	given.ID, given.Time = "my-id", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if id, err := l.Append(t.Context(), &given); err != nil || id != "my-id" {
		t.Errorf("Append with an ID = %q, %v; want my-id", id, err)
	}
	got, err := l.Query(t.Context(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Record{r, given}, got); diff != "" {
		t.Errorf("Query (-want +got):\n%s", diff)
	}
}

func TestAppendSameIDStoredOnce(t *testing.T) {
	l := open(t, bustest.Open(t))
	r := call("impact", "crm.get_order")
	appendAll(t, l, r, r) // no ID: two records
	r.ID = "retried"
	appendAll(t, l, r, r) // the same ID: a retry, stored once
	got, err := l.Query(t.Context(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Errorf("Query after 2 appends and a retried one = %d records, want 3", len(got))
	}
}

func TestQuery(t *testing.T) {
	l := open(t, bustest.Open(t))
	if got, err := l.Query(t.Context(), Filter{}); err != nil || len(got) != 0 {
		t.Fatalf("Query of an empty audit = %v, %v; want none", got, err)
	}
	appendAll(t, l,
		call("impact", "crm.get_order"),
		call("mailer", "mail.send"),
		call("", "crm.get_order"), // authentication failed
		call("impact", "crm.delete_order"),
		call("odd.name *>", "mail.send"), // not a valid agent name; escaped in the subject
		call("", "bad\r\nX-Evil: 1"),     // not a header value; read from the record
	)
	since := time.Now()
	appendAll(t, l,
		call("impact", "mail.send"),
		call("mailer", "crm.get_order"),
	)

	tests := []struct {
		name string
		f    Filter
		want []string
	}{
		{"everything", Filter{}, []string{"impact/crm.get_order", "mailer/mail.send", "/crm.get_order", "impact/crm.delete_order", "odd.name *>/mail.send", "/bad\r\nX-Evil: 1", "impact/mail.send", "mailer/crm.get_order"}},
		{"agent", Filter{Agent: "impact"}, []string{"impact/crm.get_order", "impact/crm.delete_order", "impact/mail.send"}},
		{"escaped agent", Filter{Agent: "odd.name *>"}, []string{"odd.name *>/mail.send"}},
		{"agent with no records", Filter{Agent: "nobody"}, []string{}},
		{"tool exact", Filter{Tool: "mail.send"}, []string{"mailer/mail.send", "odd.name *>/mail.send", "impact/mail.send"}},
		{"tool glob", Filter{Tool: "crm.*"}, []string{"impact/crm.get_order", "/crm.get_order", "impact/crm.delete_order", "mailer/crm.get_order"}},
		{"tool glob in the middle", Filter{Tool: "*.delete_*"}, []string{"impact/crm.delete_order"}},
		{"tool matching nothing", Filter{Tool: "crm.get"}, []string{}},
		{"tool that is no header", Filter{Tool: "bad*"}, []string{"/bad\r\nX-Evil: 1"}},
		{"agent and tool", Filter{Agent: "impact", Tool: "crm.*"}, []string{"impact/crm.get_order", "impact/crm.delete_order"}},
		{"since", Filter{Since: since}, []string{"impact/mail.send", "mailer/crm.get_order"}},
		{"since and agent", Filter{Since: since, Agent: "mailer"}, []string{"mailer/crm.get_order"}},
		{"since and tool", Filter{Since: since, Tool: "crm.*"}, []string{"mailer/crm.get_order"}},
		{"since in the future", Filter{Since: time.Now().Add(time.Hour)}, []string{}},
		{"limit keeps the newest", Filter{Limit: 2}, []string{"impact/mail.send", "mailer/crm.get_order"}},
		{"limit with agent", Filter{Agent: "impact", Limit: 2}, []string{"impact/crm.delete_order", "impact/mail.send"}},
		{"limit with tool", Filter{Tool: "crm.*", Limit: 3}, []string{"/crm.get_order", "impact/crm.delete_order", "mailer/crm.get_order"}},
		{"limit larger than since allows", Filter{Since: since, Limit: 5}, []string{"impact/mail.send", "mailer/crm.get_order"}},
		{"limit above the maximum", Filter{Limit: MaxLimit + 1}, []string{"impact/crm.get_order", "mailer/mail.send", "/crm.get_order", "impact/crm.delete_order", "odd.name *>/mail.send", "/bad\r\nX-Evil: 1", "impact/mail.send", "mailer/crm.get_order"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := l.Query(t.Context(), tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, targets(got)); diff != "" {
				t.Errorf("Query(%+v) (-want +got):\n%s", tt.f, diff)
			}
		})
	}
	// Every query removed its consumer.
	info, err := l.stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Errorf("consumers left after %d queries = %d, want 0", len(tests), info.State.Consumers)
	}
}

func TestQueryDefaultLimit(t *testing.T) {
	l := open(t, bustest.Open(t))
	var rs []Record
	for i := range DefaultLimit + 5 {
		rs = append(rs, call("impact", fmt.Sprintf("t.n%03d", i)))
	}
	appendAll(t, l, rs...)
	for _, f := range []Filter{{}, {Agent: "impact"}, {Tool: "t.*"}} {
		got, err := l.Query(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != DefaultLimit || got[0].Target != "t.n005" || got[len(got)-1].Target != fmt.Sprintf("t.n%03d", DefaultLimit+4) {
			t.Errorf("Query(%+v) = %d records from %s; want the newest %d, from t.n005", f, len(got), got[0].Target, DefaultLimit)
		}
	}
}

func TestRestartKeepsRecords(t *testing.T) {
	dir := t.TempDir()
	first, err := bus.Open(t.Context(), slog.New(slog.DiscardHandler), bus.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ids := appendAll(t, open(t, first), call("impact", "crm.get_order"), call("mailer", "mail.send"))
	first.Close()

	l := open(t, bustest.OpenWith(t, bus.Options{DataDir: dir}))
	ids = append(ids, appendAll(t, l, call("impact", "mail.send"))...)
	got, err := l.Query(t.Context(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, r := range got {
		gotIDs = append(gotIDs, r.ID)
	}
	if diff := cmp.Diff(ids, gotIDs); diff != "" {
		t.Errorf("IDs after restart (-want +got):\n%s", diff)
	}
}

func TestOpenUpdatesMaxAge(t *testing.T) {
	b := bustest.Open(t)
	open(t, b)
	l, err := Open(t.Context(), slog.New(slog.DiscardHandler), b, Options{MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	info, err := l.stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != time.Hour || !info.Config.DenyDelete || !info.Config.DenyPurge {
		t.Errorf("stream config = max age %v, deny delete %v, deny purge %v; want 1h, true, true", info.Config.MaxAge, info.Config.DenyDelete, info.Config.DenyPurge)
	}
}

var validToken = regexp.MustCompile(`^[A-Za-z0-9_%-]+$`)

func TestToken(t *testing.T) {
	tests := []struct{ in, want string }{
		{"impact", "impact"},
		{"", "_"},
		{"_", "%5F"},
		{"a.b", "a%2Eb"},
		{"a b*>", "a%20b%2A%3E"},
		{"%", "%25"},
		{"é", "%C3%A9"},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		got := token(tt.in)
		if got != tt.want {
			t.Errorf("token(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if prev, ok := seen[got]; ok {
			t.Errorf("token(%q) = token(%q) = %q", tt.in, prev, got)
		}
		seen[got] = tt.in
	}
}

func FuzzToken(f *testing.F) {
	for _, s := range []string{"impact", "", "_", "a.b", "a b*>", "%", "é"} {
		f.Add(s, s+"x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ta, tb := token(a), token(b)
		if !validToken.MatchString(ta) {
			t.Errorf("token(%q) = %q, not a plain subject token", a, ta)
		}
		if a != b && ta == tb {
			t.Errorf("token(%q) = token(%q) = %q", a, b, ta)
		}
	})
}

func TestMatcher(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"", "crm.get_order", true},
		{"*", "crm.get_order", true},
		{"crm.get_order", "crm.get_order", true},
		{"crm.get", "crm.get_order", false},
		{"crm.*", "crm.get_order", true},
		{"crm.*", "crm.", true},
		{"crm.*", "mail.send", false},
		{"*.send", "mail.send", true},
		{"*_order", "crm.get_order", true},
		{"*.delete_*", "crm.delete_order", true},
		{"*.delete_*", "crm.get_order", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"a*b*c", "a-c-b-c", true},
		{"a*b*c", "a-c-c", false},
		{"**", "x", true},
		{"crm.[a]*", "crm.[a]x", true}, // only '*' is special
	}
	for _, tt := range tests {
		if got := matcher(tt.pattern)(tt.name); got != tt.want {
			t.Errorf("matcher(%q)(%q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestRecordJSON(t *testing.T) {
	r := call("impact", "crm.get_order")
	r.ID, r.Time = "x", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"x","time":"2026-01-02T03:04:05Z","kind":"tool","agent":"impact","target":"crm.get_order","edge":"rest","decision":"allowed","status":"ok","duration_ms":1.5}`
	if string(b) != want {
		t.Errorf("json.Marshal(record) = %s, want %s", b, want)
	}
}

// BenchmarkAppend measures one synchronous append on an embedded bus with the
// default (interval) sync: what every audited call pays before it answers.
func BenchmarkAppend(b *testing.B) {
	l := open(b, bustest.Open(b))
	r := call("impact", "crm.get_order")
	r.ArgsDigest = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	r.RequestID = "01J9Z3K6Q2W8X4Y5Z6A7B8C9D0"
	b.ReportAllocs()
	for b.Loop() {
		r.ID, r.Time = "", time.Time{}
		if _, err := l.Append(b.Context(), &r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendParallel is Append from many goroutines at once, as
// concurrent calls do: acknowledgements overlap.
func BenchmarkAppendParallel(b *testing.B) {
	l := open(b, bustest.Open(b))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := call("impact", "crm.get_order")
		for pb.Next() {
			r.ID, r.Time = "", time.Time{}
			if _, err := l.Append(b.Context(), &r); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkQueryScan is a query that must read every record: a tool pattern
// over 10000 records, keeping the newest 100.
func BenchmarkQueryScan(b *testing.B) {
	l := open(b, bustest.Open(b))
	for i := range 10000 {
		r := call("impact", fmt.Sprintf("crm.op%d", i%50))
		if _, err := l.Append(b.Context(), &r); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		got, err := l.Query(b.Context(), Filter{Tool: "crm.*"})
		if err != nil || len(got) != DefaultLimit {
			b.Fatalf("Query = %d records, %v", len(got), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10000, "ns/record")
}
