package demo

import (
	"fmt"
	"net/http"
	"sync"
)

// Notification is one message the service sent.
type Notification struct {
	ID      string `json:"id"`
	To      string `json:"to"`
	OrderID string `json:"order_id"`
	Message string `json:"message"`
}

// Notifications is the customer messaging service. It sends a message once
// per Idempotency-Key and counts every request, so the demo can show that
// a step repeated after corral was killed sent nothing twice.
//
// HoldFirst makes it hold the first request it acts on: the message is
// sent (counted), Held is closed, and the answer never comes: the request
// waits until its caller gives up (corral stopped) or Release is called,
// then the connection is dropped. That is the moment the demo kills corral:
// the side effect happened, corral does not know.
type Notifications struct {
	mu       sync.Mutex
	sent     []Notification
	ledger   ledger
	hold     bool
	held     chan struct{}
	release  chan struct{}
	heldOnce sync.Once
}

// NewNotifications returns the service.
func NewNotifications() *Notifications {
	return &Notifications{held: make(chan struct{}), release: make(chan struct{})}
}

// HoldFirst arms the hold described on Notifications; call it before the
// first request.
func (n *Notifications) HoldFirst() {
	n.mu.Lock()
	n.hold = true
	n.mu.Unlock()
}

// Held is closed once the first request is held.
func (n *Notifications) Held() <-chan struct{} { return n.held }

// Release drops the held request's connection, if it still waits.
func (n *Notifications) Release() {
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case <-n.release:
	default:
		close(n.release)
	}
}

// Sent lists the messages sent, in order.
func (n *Notifications) Sent() []Notification {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Notification(nil), n.sent...)
}

// Counts lists the requests and sends per Idempotency-Key.
func (n *Notifications) Counts() []Count { return n.ledger.counts() }

// ServeHTTP answers the operations of NotificationsSpec.
func (n *Notifications) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/notifications" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such operation"})
		return
	}
	var req Notification
	if !readJSON(w, r, &req) {
		return
	}
	hold := false
	n.ledger.do(w, r, func() (int, any) {
		n.mu.Lock()
		defer n.mu.Unlock()
		req.ID = fmt.Sprintf("MSG-%d", len(n.sent)+1)
		n.sent = append(n.sent, req)
		hold, n.hold = n.hold, false
		return http.StatusCreated, map[string]string{"id": req.ID, "status": "sent"}
	}, func() {
		if !hold {
			return
		}
		n.heldOnce.Do(func() { close(n.held) })
		select {
		case <-r.Context().Done():
		case <-n.release:
		}
		// No answer: the sender cannot tell whether it was sent.
		panic(http.ErrAbortHandler)
	})
}
