// Package nodetest is what corral's tests that run Node.js programs share:
// finding node and npm, and installing the packages a test's package.json
// pins (npm ci, from the npm registry, only when node_modules is missing or
// holds another version).
package nodetest

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// installTimeout bounds npm ci on a shared machine: it catches a hang.
const installTimeout = 5 * time.Minute

// Program finds a program on PATH, or skips the test saying what to install.
func Program(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed: this test runs a Node.js program (install Node.js 20 or later with npm to run it)", name)
	}
	return path
}

// Install runs npm ci in the test's directory unless node_modules already
// holds the version of pkg that package.json pins.
func Install(t testing.TB, pkg string) {
	t.Helper()
	b, err := os.ReadFile("package.json")
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct{ Dependencies map[string]string }
	if err := json.Unmarshal(b, &manifest); err != nil {
		t.Fatalf("package.json: %v", err)
	}
	var installed struct{ Version string }
	b, err = os.ReadFile(filepath.Join("node_modules", filepath.FromSlash(pkg), "package.json"))
	if err == nil && json.Unmarshal(b, &installed) == nil && installed.Version == manifest.Dependencies[pkg] {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, Program(t, "npm"), "ci", "--no-audit", "--no-fund").CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
}
