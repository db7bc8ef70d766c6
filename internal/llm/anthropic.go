package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// anthropicVersion is the Messages API version corral's translation is
// written against; a Model's headers may set another.
const anthropicVersion = "2023-06-01"

// anthropicProvider serves OpenAI chat requests from Anthropic's Messages
// API, translating the request, the answer and the stream.
type anthropicProvider struct {
	ep     Endpoint
	client *http.Client
}

var _ Provider = (*anthropicProvider)(nil)

// NewAnthropic returns a provider that calls Anthropic's Messages API at
// ep.BaseURL + "/messages". Agents keep speaking OpenAI chat completions:
// requests, answers and streams are translated both ways, tool calls
// included. ep.Auth supplies the x-api-key header.
func NewAnthropic(ep Endpoint) Provider {
	client := ep.Client
	if client == nil {
		client = defaultClient // follows no redirect, which would carry the x-api-key elsewhere
	}
	return &anthropicProvider{ep: ep, client: client}
}

// Chat sends one request and translates the whole answer. ep.Timeout bounds
// the call up to the end of the answer.
func (p *anthropicProvider) Chat(ctx context.Context, req *ChatRequest) (*ChatResponse, error) {
	body, err := p.encode(req, false)
	if err != nil {
		return nil, err
	}
	ctx, d := watch(ctx, p.ep.Timeout)
	defer d.stop()
	resp, err := p.post(ctx, body, "application/json", d)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswerBytes+1))
	if err != nil {
		return nil, transportError("anthropic", "read answer", err, d)
	}
	if len(data) > MaxAnswerBytes {
		return nil, &ProviderError{Err: fmt.Errorf("anthropic: answer over %d bytes: %w", MaxAnswerBytes, ErrInvalidAnswer)}
	}
	var msg anthropicResponse
	if err := json.Unmarshal(data, &msg); err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("anthropic: decode answer: %w: %v", ErrInvalidAnswer, err)}
	}
	out, err := msg.toOpenAI(time.Now())
	if err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("anthropic: %w", err)}
	}
	return out, nil
}

// ChatStream starts a streamed call. ep.Timeout bounds the wait for the
// first event and then for each next one, not the whole stream: a long
// answer that keeps coming is not a time-out.
func (p *anthropicProvider) ChatStream(ctx context.Context, req *ChatRequest) (Stream, error) {
	body, err := p.encode(req, true)
	if err != nil {
		return nil, err
	}
	ctx, d := watch(ctx, p.ep.Timeout)
	resp, err := p.post(ctx, body, "text/event-stream", d)
	if err != nil {
		d.stop()
		return nil, err
	}
	return newAnthropicStream(resp.Body, d, time.Now()), nil
}

// Embed fails: Anthropic has no embeddings API.
func (p *anthropicProvider) Embed(context.Context, *EmbeddingRequest) (*EmbeddingResponse, error) {
	return nil, &ProviderError{Err: fmt.Errorf("anthropic: Anthropic has no embeddings API: %w", ErrUnsupported)}
}

// encode translates the request and marshals it.
func (p *anthropicProvider) encode(req *ChatRequest, stream bool) ([]byte, error) {
	areq, err := anthropicTranslate(req, p.ep)
	if err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("anthropic: %w", err)}
	}
	areq.Stream = stream
	body, err := json.Marshal(areq)
	if err != nil {
		// Only a value encoding/json rejects (a NaN temperature) gets here.
		return nil, &ProviderError{Err: fmt.Errorf("anthropic: encode request: %w: %v", ErrBadRequest, err)}
	}
	return body, nil
}

// post sends the body to /messages and returns a 2xx response, whose body
// the caller must close; any other answer becomes a *ProviderError.
func (p *anthropicProvider) post(ctx context.Context, body []byte, accept string, d *deadline) (*http.Response, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.ep.BaseURL+"/messages", bytes.NewReader(body))
	if err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("anthropic: build request: %w: %v", ErrConnection, err)}
	}
	if err := setHeaders(ctx, hreq, p.ep, "anthropic"); err != nil {
		return nil, err
	}
	if hreq.Header.Get("anthropic-version") == "" {
		hreq.Header.Set("anthropic-version", anthropicVersion)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", accept)
	resp, err := p.client.Do(hreq)
	if err != nil {
		return nil, transportError("anthropic", "send request", err, d)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// statusError reads Anthropic's {"type":"error","error":{"type",
		// "message"}} as it reads OpenAI's {"error":{...}}.
		defer resp.Body.Close()
		return nil, statusError(resp, time.Now())
	}
	return resp, nil
}

// anthropicErrorStatus is the HTTP status Anthropic gives each error type
// (https://docs.anthropic.com/en/api/errors), for errors that arrive inside
// a stream after the 200 has been sent. An unknown type counts as the
// server's failure.
func anthropicErrorStatus(errType string) int {
	switch errType {
	case "invalid_request_error":
		return http.StatusBadRequest
	case "authentication_error":
		return http.StatusUnauthorized
	case "billing_error":
		return http.StatusPaymentRequired
	case "permission_error":
		return http.StatusForbidden
	case "not_found_error":
		return http.StatusNotFound
	case "request_too_large":
		return http.StatusRequestEntityTooLarge
	case "rate_limit_error":
		return http.StatusTooManyRequests
	case "timeout_error":
		return http.StatusGatewayTimeout
	case "overloaded_error":
		return 529
	}
	return http.StatusInternalServerError
}
