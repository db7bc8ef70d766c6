package llm

import "testing"

// SetMaxAnswer lowers the bound on answers until the test ends, so that
// tests of the bound need not move 16 MiB.
func SetMaxAnswer(t testing.TB, n int) {
	old := maxAnswer
	maxAnswer = n
	t.Cleanup(func() { maxAnswer = old })
}
