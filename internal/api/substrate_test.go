package api

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/registry"
)

// TestStoreErrorSubstrate: a write NATS did not answer is 503
// substrate_unavailable with Retry-After, not 500 internal (issue 20.5).
func TestStoreErrorSubstrate(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("registry: store: %w", nats.ErrTimeout), http.StatusServiceUnavailable, problem.SubstrateUnavailable},
		{fmt.Errorf("registry: read Agent/a: %w", nats.ErrNoResponders), http.StatusServiceUnavailable, problem.SubstrateUnavailable},
		{fmt.Errorf("Agent/a %w", registry.ErrNotFound), http.StatusNotFound, problem.ResourceNotFound},
	} {
		var pe *problem.Error
		if !errors.As(storeError(c.err), &pe) || pe.Status != c.status || pe.Code != c.code {
			t.Errorf("storeError(%v) = %v, want %d %s", c.err, storeError(c.err), c.status, c.code)
			continue
		}
		if c.status == http.StatusServiceUnavailable && pe.RetryAfter <= 0 {
			t.Errorf("storeError(%v) has no Retry-After", c.err)
		}
	}
}
