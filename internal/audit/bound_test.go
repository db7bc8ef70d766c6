package audit

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/corral-dev/corral/internal/bus/bustest"
)

// TestAppendBoundsHostileRecords appends the records of issue 12's attacks:
// a 1 MiB Idempotency-Key, a 2 MB model name quoted in the reason, 4 MB of
// arguments, escaped-heavy names. Each is stored, cut to its bounds, and the
// log keeps taking records afterwards. At d7dc022 each failed with "maximum
// payload exceeded".
func TestAppendBoundsHostileRecords(t *testing.T) {
	l := open(t, bustest.Open(t))
	big := func(n int, c string) string { return strings.Repeat(c, n) }
	args, _ := json.Marshal(map[string]string{"blob": big(4<<20, "a")})
	reasons := make([]string, 1000)
	for i := range reasons {
		reasons[i] = big(10000, "r")
	}
	tests := []struct {
		name string
		rec  Record
		cut  []string
	}{
		{"1 MiB idempotency key", Record{Kind: "tool", Target: "erp.get", IdempotencyKey: big(1<<20, "k"), Code: "unauthenticated"}, []string{"idempotency_key"}},
		{"2 MB model name", Record{Kind: "model", Target: big(2<<20, "m"), Reason: "no model named " + big(2<<20, "m")}, []string{"target", "reason"}},
		{"4 MB arguments", Record{Kind: "tool", Target: "erp.put", Agent: "impact", Arguments: args}, []string{"arguments"}},
		{"control characters escape to six bytes", Record{Kind: "tool", Target: big(1<<20, "\x01"), Agent: big(1<<20, "\x02"), Reason: big(1<<20, "\x03"),
			Policy: &PolicyDecision{Effect: "deny", Reasons: reasons}, Detail: json.RawMessage(`"` + big(1<<20, `\u0001`) + `"`)}, []string{"agent", "target", "reason", "detail", "policy.reasons"}},
		{"a cut keeps whole characters", Record{Kind: "tool", Target: big(MaxName, "é")}, []string{"target"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.rec
			id, err := l.Append(t.Context(), &r)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			for _, f := range tt.cut {
				if !slices.Contains(r.Truncated, f) {
					t.Errorf("Truncated = %v, want it to name %s", r.Truncated, f)
				}
			}
			got, err := l.Query(t.Context(), Filter{Limit: 1})
			if err != nil || len(got) != 1 || got[0].ID != id {
				t.Fatalf("Query = %v, %v; want the record %s", got, err, id)
			}
			for _, s := range []string{got[0].Target, got[0].Agent, got[0].IdempotencyKey} {
				if len(s) > MaxName || !utf8.ValidString(s) {
					t.Errorf("stored field of %d bytes (valid UTF-8 %v), want at most %d", len(s), utf8.ValidString(s), MaxName)
				}
			}
			if len(got[0].Reason) > MaxReason || len(got[0].Arguments) > MaxArguments {
				t.Errorf("stored reason %d bytes, arguments %d; want at most %d, %d", len(got[0].Reason), len(got[0].Arguments), MaxReason, MaxArguments)
			}
		})
	}
	if _, err := l.Append(t.Context(), &Record{Kind: "tool", Target: "erp.get"}); err != nil {
		t.Errorf("Append after the hostile records: %v", err)
	}
	if rep, err := l.Verify(t.Context(), time.Time{}, nil); err != nil || !rep.OK {
		t.Errorf("Verify = %+v, %v; want OK", rep, err)
	}
}

func TestCut(t *testing.T) {
	tests := []struct {
		in      string
		max     int
		want    string
		wantCut bool
	}{
		{"abc", 3, "abc", false},
		{"abcd", 3, "abc", true},
		{"aé", 2, "a", true},
		{"日本", 4, "日", true},
		{"", 0, "", false},
	}
	for _, tt := range tests {
		if got, cut := Cut(tt.in, tt.max); got != tt.want || cut != tt.wantCut {
			t.Errorf("Cut(%q, %d) = %q, %v; want %q, %v", tt.in, tt.max, got, cut, tt.want, tt.wantCut)
		}
	}
}

// FuzzBound: whatever a caller puts in a record's fields, the bounded record
// encodes to valid JSON within the limit, and every name stays valid UTF-8
// within its bound when it was valid before.
func FuzzBound(f *testing.F) {
	f.Add("erp.get", "no tool named x", "k", []byte(`{"id":1}`), 1000)
	f.Add(strings.Repeat("é", 300), strings.Repeat("\x01", 5000), strings.Repeat("k", 1<<12), []byte(`"<<<>>>"`), 4096)
	f.Add("日本", "", "", []byte(`{}`), 200)
	f.Fuzz(func(t *testing.T, name, reason, key string, args []byte, limit int) {
		if !json.Valid(args) {
			args = nil
		}
		limit = 2048 + int(uint(limit)%uint(MaxRecord-2048))
		r := Record{ID: "x", Kind: "tool", Target: name, Agent: name, Reason: reason, IdempotencyKey: key, Arguments: args,
			Policy: &PolicyDecision{Reasons: []string{reason, reason}}, Model: &ModelCall{Attempts: []string{name, reason}}}
		body, err := r.encode(limit)
		if err != nil {
			return // only when even the bounded names do not fit a tiny limit
		}
		if len(body) > limit || !json.Valid(body) {
			t.Fatalf("encode = %d bytes (valid JSON %v), limit %d", len(body), json.Valid(body), limit)
		}
		if len(r.Target) > MaxName || utf8.ValidString(name) && !utf8.ValidString(r.Target) {
			t.Fatalf("Target %q: not bounded to whole characters", r.Target)
		}
	})
}
