package upstream

import (
	"testing"
	"time"
)

var retryAfterTests = []struct {
	in   string
	want time.Duration
}{
	{"", 0},
	{"2", 2 * time.Second},
	{" 120 ", 2 * time.Minute},
	{"0", 0},
	{"-1", 0},
	{"1.5", 0},
	{"abc", 0},
	{"99999999999999999999999", maxRetryAfter},
	{"86401", maxRetryAfter},
	{"Wed, 21 Oct 2015 07:28:10 GMT", 10 * time.Second},
	{"Wed, 21 Oct 2015 07:27:00 GMT", 0},
	{"Wed, 21 Oct 2016 07:28:00 GMT", maxRetryAfter},
	{"Wednesday", 0},
}

var retryAfterNow = time.Date(2015, 10, 21, 7, 28, 0, 0, time.UTC)

func TestRetryAfter(t *testing.T) {
	for _, tt := range retryAfterTests {
		if got := RetryAfter(tt.in, retryAfterNow); got != tt.want {
			t.Errorf("RetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func FuzzRetryAfter(f *testing.F) {
	for _, tt := range retryAfterTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if got := RetryAfter(v, retryAfterNow); got < 0 || got > maxRetryAfter {
			t.Fatalf("RetryAfter(%q) = %v, want between 0 and %v", v, got, maxRetryAfter)
		}
	})
}
