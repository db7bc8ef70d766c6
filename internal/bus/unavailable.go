package bus

import (
	"context"
	"errors"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Unavailable reports whether err says the substrate did not answer, or
// answered that it cannot now (a stream or the meta group without a leader,
// as during an election, a lost quorum, a connection being re-established):
// a failure that retrying later may cure, unlike a refused or malformed
// request. Callers answer it as 503 substrate_unavailable with Retry-After.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	for _, e := range []error{
		context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders, nats.ErrConnectionClosed,
		nats.ErrConnectionReconnecting, nats.ErrDisconnected, jetstream.ErrNoStreamResponse,
		jetstream.ErrJetStreamNotEnabled,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	var api *jetstream.APIError
	if errors.As(err, &api) && api.Code == http.StatusServiceUnavailable {
		return true
	}
	var jsErr jetstream.JetStreamError
	return errors.As(err, &jsErr) && jsErr.APIError() != nil && jsErr.APIError().Code == http.StatusServiceUnavailable
}
