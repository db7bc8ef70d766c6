package llm

import (
	"context"
	"net/http"
	"time"
)

// Endpoint is how a provider reaches its server: everything the Model
// resource said, resolved.
type Endpoint struct {
	// BaseURL is the server's base, without a trailing slash
	// ("https://api.openai.com/v1").
	BaseURL string
	// Model is the provider's name for the model, sent in every request in
	// place of the name the agent asked for.
	Model string
	// Headers are sent with every request.
	Headers http.Header
	// Auth returns the credential headers for one request; it is called
	// per request so that a rotated Secret takes effect at once. Nil: none.
	Auth func(ctx context.Context) (http.Header, error)
	// Timeout bounds a call up to its answer, or up to the first event of a
	// stream and then between events.
	Timeout time.Duration
	// MaxOutputTokens is used where a provider needs a max_tokens and the
	// request has none (Anthropic).
	MaxOutputTokens int
	// Client sends the requests; it may carry a tracing transport.
	Client *http.Client
}
