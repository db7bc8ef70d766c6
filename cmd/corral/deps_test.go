package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestBinaryDependencies keeps test-only code out of the corral binary.
func TestBinaryDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	unwanted := []string{
		"testing",
		"github.com/corral-dev/corral/internal/app/apptest",
		"github.com/corral-dev/corral/internal/bus/bustest",
		"github.com/google/go-cmp/cmp",
	}
	// OPA's test runner, behind `corral policy test`, imports testing for
	// its benchmark mode; nothing else may.
	allowed := map[string][]string{"testing": {"github.com/open-policy-agent/opa/v1/tester"}}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		for _, u := range unwanted {
			if slices.Contains(imports, u) && !slices.Contains(allowed[u], pkg) {
				t.Errorf("the corral binary depends on %s (through %s), which is for tests only", u, pkg)
			}
		}
	}
}
