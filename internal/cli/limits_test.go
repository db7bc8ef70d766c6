package cli

import (
	"bytes"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/ratelimit"
)

func TestWriteLimitTable(t *testing.T) {
	items := []ratelimit.Status{
		{Limit: "broken", Rate: &config.Rate{Requests: 1, Per: "hour"}, Error: `not enforced: unknown period "hour"`},
		{Limit: "erp-writes", Scope: config.RateLimitScope{ToolSource: "erp", Tool: "erp.create_*"},
			Rate: &config.Rate{Requests: 5, Per: "second"}, InFlight: ptrTo[int64](2),
			Counters: []ratelimit.Counter{{Available: ptrTo[int64](0), InFlight: 2}}, Replica: ratelimit.ReplicaCounts{Admitted: 14, Refused: 3412}},
		{Limit: "per-agent", Each: "agent", InFlight: ptrTo[int64](3),
			Counters: []ratelimit.Counter{{Value: "impact", InFlight: 1}, {Value: "bad\nname", InFlight: 0}}},
		{Limit: "unused", InFlight: ptrTo[int64](3), Each: "agent", Counters: []ratelimit.Counter{}},
	}
	var buf bytes.Buffer
	if err := writeLimitTable(&buf, items); err != nil {
		t.Fatal(err)
	}
	want := `LIMIT       SCOPE                             EACH            RATE              AVAILABLE  IN FLIGHT  ADMITTED  REFUSED
broken      all                               -               1/hour burst 1    -          -          0         0
erp-writes  toolSource=erp,tool=erp.create_*  -               5/second burst 5  0          2/2        14        3412
per-agent   all                               agent=impact    -                 -          1/3        0         0
per-agent   all                               agent=bad name  -                 -          0/3        0         0
unused      all                               agent           -                 -          0/3        0         0
`
	if buf.String() != want {
		t.Errorf("writeLimitTable =\n%s\nwant\n%s", buf.String(), want)
	}
	buf.Reset()
	now := time.Date(2026, 11, 21, 14, 30, 0, 0, time.UTC)
	writeThrottleTable(&buf, now, []ratelimit.ThrottleStatus{{Kind: "model", Name: "gpt", Until: now.Add(1500 * time.Millisecond)}, {Kind: "tool", Name: "erp", Until: now.Add(-time.Second)}})
	if want := "THROTTLED    NAME  FOR\nmodel        gpt   2s\ntool source  erp   0s\n"; buf.String() != want {
		t.Errorf("writeThrottleTable =\n%q\nwant\n%q", buf.String(), want)
	}
}
