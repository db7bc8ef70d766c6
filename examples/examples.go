// Package examples holds resource files to start from; `corral demo` applies
// the same files, embedded in the binary.
package examples

import "embed"

// Files are the example resource files (*.yaml).
//
//go:embed *.yaml
var Files embed.FS
