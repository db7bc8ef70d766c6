// Package examples holds resource files to start from (corral apply -f
// examples/), embedded so that tests can check them. `corral demo` builds
// its own resources: see internal/cli/demomodels.go.
package examples

import "embed"

// Files are the example resource files (*.yaml).
//
//go:embed *.yaml
var Files embed.FS
