//go:build !unix

package bus

// lockDir does nothing where flock is not available: running two corral
// processes on one data directory there is the operator's mistake to avoid.
func lockDir(string) (func(), error) { return func() {}, nil }
