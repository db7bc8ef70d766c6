package orchestrator

import "sync"

// turns serves the tasks of one worker that wait on the same limit (a rate
// limit, an in-flight cap, a throttled backend) first come, first served:
// only the task at the head of a limit's queue tries again; the others
// wait until it is through. Workers on other replicas keep queues of their
// own, so across replicas the order is fair between queues, not strict.
type turns struct {
	mu     sync.Mutex
	queues map[string][]chan struct{}
}

// join puts a waiter at the end of limit's queue. The returned channel is
// closed when the waiter is at the head; leave takes it out, wherever it is,
// and lets the next one through. leave may be called more than once.
func (t *turns) join(limit string) (head <-chan struct{}, leave func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.queues == nil {
		t.queues = map[string][]chan struct{}{}
	}
	ch := make(chan struct{})
	q := append(t.queues[limit], ch)
	t.queues[limit] = q
	if len(q) == 1 {
		close(ch)
	}
	var once sync.Once
	return ch, func() { once.Do(func() { t.leave(limit, ch) }) }
}

func (t *turns) leave(limit string, ch chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	q := t.queues[limit]
	for i, c := range q {
		if c != ch {
			continue
		}
		q = append(q[:i:i], q[i+1:]...)
		if i == 0 && len(q) > 0 {
			close(q[0])
		}
		break
	}
	if len(q) == 0 {
		delete(t.queues, limit)
	} else {
		t.queues[limit] = q
	}
}
