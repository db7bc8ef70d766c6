package upstream

import (
	"sync"
	"time"
)

// State is a circuit breaker's state.
type State int

// The breaker states: closed lets calls through, open refuses them, half-open
// lets one probe through to learn whether the upstream is back.
const (
	Closed State = iota
	Open
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	}
	return "half-open"
}

// breaker opens after a run of consecutive failures, refuses calls while open,
// and after a cool-down lets a single probe through: its success closes the
// breaker, its failure opens it again. It takes a clock so tests need not wait.
type breaker struct {
	threshold int           // consecutive failures that open it
	cooldown  time.Duration // how long it stays open before a probe
	now       func() time.Time
	onChange  func(from, to State)

	mu       sync.Mutex
	state    State
	failures int
	openedAt time.Time
	probing  bool // a half-open probe is in flight
}

// allow reports whether a call may go ahead. A caller that got true must
// report the outcome with done.
func (b *breaker) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case Open:
		if b.now().Sub(b.openedAt) < b.cooldown {
			return false
		}
		b.set(HalfOpen)
		fallthrough
	case HalfOpen:
		if b.probing {
			return false
		}
		b.probing = true
	}
	return true
}

// done records the outcome of an allowed call.
func (b *breaker) done(ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	wasProbe := b.state == HalfOpen
	b.probing = false
	switch {
	case ok:
		b.failures = 0
		b.set(Closed)
	case wasProbe:
		b.open()
	default:
		b.failures++
		if b.failures >= b.threshold {
			b.open()
		}
	}
}

// release ends an allowed call whose outcome says nothing about the
// upstream (the caller gave up), freeing a half-open probe slot.
func (b *breaker) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
}

func (b *breaker) open() {
	b.openedAt = b.now()
	b.failures = 0
	b.set(Open)
}

func (b *breaker) set(s State) {
	if s == b.state {
		return
	}
	from := b.state
	b.state = s
	if b.onChange != nil {
		b.onChange(from, s)
	}
}

// current returns the state.
func (b *breaker) current() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}
