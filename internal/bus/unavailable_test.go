package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/bus"
)

func TestUnavailable(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"timeout", fmt.Errorf("read: %w", nats.ErrTimeout), true},
		{"deadline", fmt.Errorf("read: %w", context.DeadlineExceeded), true},
		{"no responders", fmt.Errorf("read: %w", nats.ErrNoResponders), true},
		{"reconnecting", nats.ErrConnectionReconnecting, true},
		{"no meta leader", fmt.Errorf("stream info: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008}), true},
		{"jetstream not enabled", jetstream.ErrJetStreamNotEnabled, true},
		{"key not found", jetstream.ErrKeyNotFound, false},
		{"wrong revision", bus.ErrWrongRevision, false},
		{"bad request", &jetstream.APIError{Code: 400, ErrorCode: 10071}, false},
		{"other", errors.New("counter is unreadable"), false},
	} {
		if got := bus.Unavailable(c.err); got != c.want {
			t.Errorf("Unavailable(%s: %v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
