package demo

import (
	"net/http"
	"sync"
)

// ledger is how the demo world's writing systems honour Idempotency-Key:
// the first request with a key has its effect and its answer is kept; a
// request with a key already answered gets that answer again, with no
// effect. It counts both, so the demo can show that a retry after a crash
// reached the system and changed nothing.
type ledger struct {
	mu       sync.Mutex
	answers  map[string]answer
	requests map[string]int
}

type answer struct {
	status int
	body   any
}

// Count is what a system saw of one Idempotency-Key.
type Count struct {
	Key      string `json:"key"`
	Requests int    `json:"requests"` // requests that carried the key
	Effects  int    `json:"effects"`  // of those, the ones that acted (0 or 1)
}

// do answers a write: effect runs only for a key not seen before (or for a
// request without a key, which cannot be recognised again). Its answer is
// recorded, then pause (if set) runs before the answer is written.
func (l *ledger) do(w http.ResponseWriter, r *http.Request, effect func() (int, any), pause func()) {
	key := r.Header.Get("Idempotency-Key")
	l.mu.Lock()
	if l.answers == nil {
		l.answers, l.requests = map[string]answer{}, map[string]int{}
	}
	l.requests[key]++
	if a, ok := l.answers[key]; ok && key != "" {
		l.mu.Unlock()
		w.Header().Set("Idempotent-Replayed", "true")
		writeJSON(w, a.status, a.body)
		return
	}
	l.mu.Unlock()
	status, body := effect()
	l.mu.Lock()
	if status < 300 {
		l.answers[key] = answer{status, body}
	}
	l.mu.Unlock()
	if pause != nil {
		pause()
	}
	writeJSON(w, status, body)
}

// counts lists every key seen, in no particular order.
func (l *ledger) counts() []Count {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Count, 0, len(l.requests))
	for k, n := range l.requests {
		c := Count{Key: k, Requests: n}
		if _, ok := l.answers[k]; ok {
			c.Effects = 1
		}
		out = append(out, c)
	}
	return out
}
