package api

import (
	"strconv"
	"testing"

	"github.com/corral-dev/corral/internal/orchestrator"
)

func TestIfMatch(t *testing.T) {
	for _, tt := range []struct {
		in   []string
		want int64
		ok   bool
	}{
		{[]string{`"7"`}, 7, true},
		{[]string{`W/"0"`}, 0, true},
		{[]string{"*"}, orchestrator.AnyVersion, true},
		{nil, 0, false},
		{[]string{"7"}, 0, false},
		{[]string{`"-1"`}, 0, false},
		{[]string{`""`}, 0, false},
		{[]string{`"1"`, `"2"`}, 0, false},
		{[]string{`"99999999999999999999"`}, 0, false},
	} {
		got, err := ifMatch(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ifMatch(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// FuzzIfMatch: any header is a version, *, or a 4xx; never a panic.
func FuzzIfMatch(f *testing.F) {
	for _, s := range []string{`"7"`, "*", `W/"3"`, `"`, "", `"1", "2"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ifMatch([]string{s})
		if err == nil && v != orchestrator.AnyVersion && etag(uint64(v)) != strconv.Quote(strconv.FormatInt(v, 10)) {
			t.Fatalf("ifMatch(%q) = %d", s, v)
		}
	})
}
