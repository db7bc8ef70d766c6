package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// MaxAnswerBytes bounds what corral reads of one answer, or of one whole
// stream, so that a broken or hostile provider cannot exhaust its memory.
const MaxAnswerBytes = 16 << 20

// maxAnswer is MaxAnswerBytes, lowered by tests.
var maxAnswer = MaxAnswerBytes

// maxErrorBody bounds what is read of an error answer: enough for any
// provider's error object, not a whole HTML page.
const maxErrorBody = 64 << 10

// maxErrorMessage bounds the provider's error message kept in a
// ProviderError, which ends up in logs and, worded by the edge, in answers.
const maxErrorMessage = 1024

// maxRetryAfter caps a provider's Retry-After: a larger one is more likely
// a mistake than a plan.
const maxRetryAfter = 24 * time.Hour

// openAI speaks to an OpenAI-compatible server.
type openAI struct {
	ep       Endpoint
	client   *http.Client
	chatURL  string
	embedURL string
	urlErr   error // BaseURL is unusable; every call fails with it
}

var _ Provider = (*openAI)(nil)

// NewOpenAI returns a provider for any server that speaks OpenAI's chat
// completions and embeddings APIs: OpenAI itself, Azure OpenAI, vLLM,
// Ollama, LiteLLM and the like. It POSTs to ep.BaseURL + "/chat/completions"
// and "/embeddings"; a query in BaseURL (Azure's api-version) is kept.
// Streams ask for the usage chunk (stream_options.include_usage), so that
// every streamed call can be accounted.
func NewOpenAI(ep Endpoint) Provider {
	p := &openAI{ep: ep, client: ep.Client}
	if p.client == nil {
		p.client = defaultClient
	}
	p.chatURL, p.urlErr = endpointURL(ep.BaseURL, "/chat/completions")
	if p.urlErr == nil {
		p.embedURL, p.urlErr = endpointURL(ep.BaseURL, "/embeddings")
	}
	return p
}

// defaultClient serves providers built without a client. It keeps enough
// idle connections for a busy provider (the standard transport keeps 2 per
// host), and does not follow redirects: a redirect is the provider's answer,
// and following it would carry the credentials to another host.
var defaultClient = NewClient(nil)

// NewClient returns the HTTP client providers use: keep-alive to each
// provider, and no redirects (a redirect could carry a key elsewhere).
// wrap, when set, wraps its transport (tracing does).
func NewClient(wrap func(http.RoundTripper) http.RoundTripper) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64
	var rt http.RoundTripper = transport
	if wrap != nil {
		rt = wrap(rt)
	}
	return &http.Client{
		Transport:     rt,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// endpointURL appends path to base's path, keeping base's query.
func endpointURL(base, path string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("openai: base URL %q: must be an http or https URL: %w", base, ErrBadRequest)
	}
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawPath = ""
	return u.String(), nil
}

// Chat sends a request and reads the whole answer; ep.Timeout bounds both.
func (p *openAI) Chat(ctx context.Context, req *ChatRequest) (*ChatResponse, error) {
	body, err := p.encodeChat(req, false)
	if err != nil {
		return nil, err
	}
	ctx, d := watch(ctx, p.ep.Timeout)
	defer d.stop()
	resp, err := p.post(ctx, p.chatURL, body, "application/json", d)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := readAnswer(resp.Body, d)
	if err != nil {
		return nil, err
	}
	var out ChatResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("openai: decode answer: %w: %v", ErrInvalidAnswer, err)}
	}
	if len(out.Choices) == 0 {
		return nil, &ProviderError{Err: fmt.Errorf("openai: the answer has no choices: %w", ErrInvalidAnswer)}
	}
	return &out, nil
}

// ChatStream starts a streamed completion. ep.Timeout bounds the wait for
// the first event, then for each next one: a long answer that keeps coming
// is not a time-out.
func (p *openAI) ChatStream(ctx context.Context, req *ChatRequest) (Stream, error) {
	body, err := p.encodeChat(req, true)
	if err != nil {
		return nil, err
	}
	ctx, d := watch(ctx, p.ep.Timeout)
	resp, err := p.post(ctx, p.chatURL, body, "text/event-stream", d)
	if err != nil {
		d.stop()
		return nil, err
	}
	return &openAIStream{body: resp.Body, events: NewSSEReader(resp.Body, maxAnswer), deadline: d}, nil
}

// Embed sends an embeddings request.
func (p *openAI) Embed(ctx context.Context, req *EmbeddingRequest) (*EmbeddingResponse, error) {
	r := *req
	if p.ep.Model != "" {
		r.Model = p.ep.Model
	}
	body, err := json.Marshal(&r)
	if err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("openai: encode request: %w: %v", ErrBadRequest, err)}
	}
	ctx, d := watch(ctx, p.ep.Timeout)
	defer d.stop()
	resp, err := p.post(ctx, p.embedURL, body, "application/json", d)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := readAnswer(resp.Body, d)
	if err != nil {
		return nil, err
	}
	var out EmbeddingResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("openai: decode answer: %w: %v", ErrInvalidAnswer, err)}
	}
	return &out, nil
}

// encodeChat writes the request as the provider receives it: its model
// name, and for a stream the request for a final usage chunk. The caller's
// request is not modified.
func (p *openAI) encodeChat(req *ChatRequest, stream bool) ([]byte, error) {
	r := *req
	if p.ep.Model != "" {
		r.Model = p.ep.Model
	}
	r.Stream = stream
	r.StreamOptions = nil
	if stream {
		r.StreamOptions = &StreamOptions{IncludeUsage: true}
	}
	body, err := json.Marshal(&r)
	if err != nil {
		// Only a value encoding/json rejects (a NaN temperature, an invalid
		// Extra) gets here.
		return nil, &ProviderError{Err: fmt.Errorf("openai: encode request: %w: %v", ErrBadRequest, err)}
	}
	return body, nil
}

// post sends body and returns a 2xx answer, whose body the caller closes;
// any other answer becomes a *ProviderError.
func (p *openAI) post(ctx context.Context, target string, body []byte, accept string, d *deadline) (*http.Response, error) {
	if p.urlErr != nil {
		return nil, &ProviderError{Err: p.urlErr}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("openai: build request: %w: %v", ErrBadRequest, err)}
	}
	if err := setHeaders(ctx, req, p.ep, "openai"); err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, transportError("openai", "send request", err, d)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, statusError(resp, time.Now())
	}
	return resp, nil
}

// readAnswer reads a whole answer, at most MaxAnswerBytes.
func readAnswer(body io.Reader, d *deadline) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(body, int64(maxAnswer)+1))
	if err != nil {
		return nil, transportError("openai", "read answer", err, d)
	}
	if len(data) > maxAnswer {
		return nil, &ProviderError{Err: fmt.Errorf("openai: answer over %d bytes: %w", maxAnswer, ErrInvalidAnswer)}
	}
	return data, nil
}

// openAIStream reads a streamed completion's chunks.
type openAIStream struct {
	body     io.ReadCloser
	events   *SSEReader
	deadline *deadline
	read     int  // bytes of event data so far
	finished bool // a choice had its finish_reason
	err      error
	close    sync.Once
}

// Recv returns the next chunk, io.EOF after [DONE], or the error that ended
// the stream (again on every later call).
func (s *openAIStream) Recv() (*ChatChunk, error) {
	if s.err != nil {
		return nil, s.err
	}
	chunk, err := s.next()
	if err != nil {
		s.err = err
		return nil, err
	}
	return chunk, nil
}

func (s *openAIStream) next() (*ChatChunk, error) {
	_, data, err := s.events.Next()
	switch {
	case err == io.EOF && s.finished:
		return nil, io.EOF // a server that forgot [DONE] after a complete answer
	case err == io.EOF:
		return nil, &ProviderError{Err: fmt.Errorf("openai: the stream ended before [DONE]: %w", ErrInvalidAnswer)}
	case errors.Is(err, ErrEventTooLarge):
		return nil, &ProviderError{Err: fmt.Errorf("openai: %w: %v", ErrInvalidAnswer, err)}
	case err != nil:
		return nil, transportError("openai", "read stream", err, s.deadline)
	}
	s.deadline.reset()
	s.read += len(data)
	if s.read > maxAnswer {
		return nil, &ProviderError{Err: fmt.Errorf("openai: stream over %d bytes: %w", maxAnswer, ErrInvalidAnswer)}
	}
	if string(bytes.TrimSpace(data)) == "[DONE]" {
		return nil, io.EOF
	}
	var event struct {
		ChatChunk
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(data, &event); err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("openai: decode chunk: %w: %v", ErrInvalidAnswer, err)}
	}
	if len(event.Error) > 0 && !isNull(event.Error) {
		typ, msg := errorBody(data)
		return nil, &ProviderError{Type: typ, Message: msg, Err: fmt.Errorf("openai: the provider ended the stream with an error: %w", ErrInvalidAnswer)}
	}
	for _, c := range event.Choices {
		if c.FinishReason != nil {
			s.finished = true
		}
	}
	return &event.ChatChunk, nil
}

// Close ends the stream and releases its connection.
func (s *openAIStream) Close() error {
	var err error
	s.close.Do(func() {
		s.deadline.stop()
		err = s.body.Close()
	})
	return err
}

// deadline cancels a call's context when the provider stays silent for
// longer than its limit; reset restarts the count after each event.
type deadline struct {
	limit  time.Duration
	timer  *time.Timer // nil: no limit
	cancel context.CancelFunc
	fired  atomic.Bool
}

// watch returns ctx with a deadline that fires limit from now unless
// reset; limit 0 sets none. The caller must stop it.
func watch(ctx context.Context, limit time.Duration) (context.Context, *deadline) {
	ctx, cancel := context.WithCancel(ctx)
	d := &deadline{limit: limit, cancel: cancel}
	if limit > 0 {
		d.timer = time.AfterFunc(limit, func() {
			d.fired.Store(true)
			cancel()
		})
	}
	return ctx, d
}

func (d *deadline) reset() {
	if d.timer != nil && !d.fired.Load() {
		d.timer.Reset(d.limit)
	}
}

func (d *deadline) stop() {
	if d.timer != nil {
		d.timer.Stop()
	}
	d.cancel()
}

// transportError classifies a failure to send or to read, for the
// provider named: a time-out (ours or the network's), the caller giving
// up, or a connection error.
func transportError(provider, what string, err error, d *deadline) error {
	var ne net.Error
	switch {
	case d.fired.Load():
		return &ProviderError{Err: fmt.Errorf("%s: %s: %w: silent for %s", provider, what, ErrTimeout, d.limit)}
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// The caller gave up or ran out of time: say so, not that the
		// provider failed.
		return &ProviderError{Err: fmt.Errorf("%s: %s: %w", provider, what, err)}
	case errors.As(err, &ne) && ne.Timeout():
		return &ProviderError{Err: fmt.Errorf("%s: %s: %w: %v", provider, what, ErrTimeout, err)}
	case !notDialed(err):
		// The request may have reached the provider before the connection
		// broke: it may run (and be billed) all the same.
		return &ProviderError{Err: fmt.Errorf("%s: %s: %w: %v", provider, what, ErrBroken, err)}
	}
	return &ProviderError{Err: fmt.Errorf("%s: %s: %w: %v", provider, what, ErrConnection, err)}
}

// notDialed reports whether err is a failure to connect (resolve, dial):
// nothing of the request left.
func notDialed(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &dns) || (errors.As(err, &op) && op.Op == "dial")
}

// setHeaders puts the endpoint's headers and credentials on req.
func setHeaders(ctx context.Context, req *http.Request, ep Endpoint, provider string) error {
	for name, values := range ep.Headers {
		for _, v := range values {
			req.Header.Add(name, v)
		}
	}
	if key, ok := ctx.Value(idempotencyKey{}).(string); ok && key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if ep.Auth == nil {
		return nil
	}
	auth, err := ep.Auth(ctx)
	if err != nil {
		return &ProviderError{Err: fmt.Errorf("%s: %w: %w", provider, ErrCredentials, err)}
	}
	for name, values := range auth {
		req.Header[http.CanonicalHeaderKey(name)] = values
	}
	return nil
}

// statusError reads a non-2xx answer into a *ProviderError.
func statusError(resp *http.Response, now time.Time) *ProviderError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	pe := &ProviderError{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header, now)}
	pe.Type, pe.Message = errorBody(body)
	return pe
}

// errorBody finds the type and message in an error answer: OpenAI's
// {"error":{"type","message"}}, {"error":"text"}, vLLM's older top-level
// {"type","message"}, or FastAPI's {"detail"}; failing those, a short
// plain-text body.
func errorBody(body []byte) (typ, msg string) {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Type    string          `json:"type"`
		Message string          `json:"message"`
		Detail  json.RawMessage `json:"detail"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		text := strings.TrimSpace(string(body))
		if text != "" && !strings.HasPrefix(text, "<") && utf8.ValidString(text) {
			msg = text
		}
		return "", bound(msg)
	}
	var inner struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	}
	var text string
	switch {
	case json.Unmarshal(e.Error, &inner) == nil && (inner.Message != "" || inner.Type != ""):
		typ, msg = inner.Type, inner.Message
	case json.Unmarshal(e.Error, &text) == nil && text != "":
		msg = text
	case e.Message != "":
		typ, msg = e.Type, e.Message
	case json.Unmarshal(e.Detail, &text) == nil && text != "":
		msg = text
	}
	return bound(typ), bound(msg)
}

// bound cuts s to maxErrorMessage bytes on a rune boundary and drops
// control characters, which have no place in a log line.
func bound(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) <= maxErrorMessage {
		return s
	}
	cut := maxErrorMessage
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// retryAfter reads how long the provider asks to wait: retry-after-ms
// (OpenAI, Azure), else Retry-After in seconds or as an HTTP date.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil {
			return wait(ms / 1000)
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		return wait(s)
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// wait turns seconds into a duration between 0 and maxRetryAfter; NaN is 0.
func wait(seconds float64) time.Duration {
	switch {
	case !(seconds > 0):
		return 0
	case seconds >= maxRetryAfter.Seconds():
		return maxRetryAfter
	}
	return time.Duration(seconds * float64(time.Second))
}

type idempotencyKey struct{}

// WithIdempotencyKey returns a context whose provider calls carry key as
// their Idempotency-Key header: a provider (or a gateway in front of it)
// that honours the header answers a retry of the same call once.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idempotencyKey{}, key)
}
