package rest

import (
	"testing"
	"time"
)

var preferCases = []struct {
	in   string
	want time.Duration
}{
	{"", 0},
	{"wait=10", 10 * time.Second},
	{"respond-async, wait=5", 5 * time.Second},
	{"WAIT = 3", 3 * time.Second},
	{`wait="7"`, 7 * time.Second},
	{"wait=600", MaxWait},
	{"wait=99999999999999999999", MaxWait},
	{"wait=-1", 0},
	{"wait=abc", 0},
	{"wait", 0},
	{"return=minimal", 0},
	{"wait=2;foo=bar", 2 * time.Second},
}

func TestPreferWait(t *testing.T) {
	for _, tc := range preferCases {
		if got := preferWait([]string{tc.in}); got != tc.want {
			t.Errorf("preferWait(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func FuzzPreferWait(f *testing.F) {
	for _, tc := range preferCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if got := preferWait([]string{in}); got < 0 || got > MaxWait {
			t.Fatalf("preferWait(%q) = %v, out of [0, %v]", in, got, MaxWait)
		}
	})
}
