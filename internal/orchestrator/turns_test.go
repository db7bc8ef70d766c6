package orchestrator

import "testing"

func isOpen(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestTurns: waiters on one limit are let through in the order they came,
// one at a time; a waiter that gives up (its task stopped) mid-queue keeps
// nobody waiting; other limits are independent.
func TestTurns(t *testing.T) {
	var ts turns
	a, leaveA := ts.join("erp-writes")
	b, leaveB := ts.join("erp-writes")
	c, leaveC := ts.join("erp-writes")
	other, leaveOther := ts.join("crm-writes")
	if !isOpen(a) || isOpen(b) || isOpen(c) || !isOpen(other) {
		t.Fatal("only the first waiter of each limit may try")
	}
	leaveB() // gave up before its turn
	if isOpen(c) {
		t.Fatal("a waiter leaving from the middle let the last one jump the head")
	}
	leaveA()
	leaveA() // twice is harmless
	if !isOpen(c) {
		t.Fatal("the next waiter was not let through when the head left")
	}
	leaveC()
	leaveOther()
	if len(ts.queues) != 0 {
		t.Errorf("queues left behind: %v", ts.queues)
	}
}
