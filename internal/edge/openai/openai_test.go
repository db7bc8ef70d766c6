package openaiedge

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/corral-dev/corral/internal/pipeline"
)

// TestCallContext: a plain call made with an Idempotency-Key outlives its
// agent, so that its answer is recorded for the retry; any other call, and
// every stream, ends with its agent.
func TestCallContext(t *testing.T) {
	e := New(slog.New(slog.DiscardHandler), nil, Limits{})
	for _, tc := range []struct {
		name     string
		key      string
		stream   bool
		outlives bool
	}{
		{"plain with a key", "k1", false, true},
		{"plain without a key", "", false, false},
		{"stream with a key", "k1", true, false},
		{"stream without a key", "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agent, leave := context.WithCancel(t.Context())
			r := httptest.NewRequestWithContext(agent, "POST", "/openai/v1/chat/completions", nil)
			ctx, cancel := e.callContext(r, pipeline.Action{IdempotencyKey: tc.key}, tc.stream)
			defer cancel()
			leave()
			if outlived := ctx.Err() == nil; outlived != tc.outlives {
				t.Errorf("after the agent left, the call's context err = %v; want it to outlive the agent: %v", ctx.Err(), tc.outlives)
			}
		})
	}
}
