package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinaryDependencies keeps test-only code out of the corral binary.
func TestBinaryDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	unwanted := []string{
		"testing",
		"github.com/corral-dev/corral/internal/app/apptest",
		"github.com/corral-dev/corral/internal/bus/bustest",
		"github.com/google/go-cmp/cmp",
	}
	deps := strings.Fields(string(out))
	for _, u := range unwanted {
		for _, d := range deps {
			if d == u {
				t.Errorf("the corral binary depends on %s, which is for tests only", u)
			}
		}
	}
}
