package llm

// This file is the provider for OpenAI-compatible models that are called
// through OpenAI's Responses API (Model spec.api: responses): the pipeline's
// chat request, already redacted, is sent to {baseURL}/responses as the
// Responses API request it came from (or would have been), and the response
// object or its events come back as a chat answer or chunks, with the
// reasoning items carried along (Message.Reasoning, Delta.Reasoning).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// openAIResponses speaks to a server's Responses API; embeddings go to its
// chat provider's /embeddings.
type openAIResponses struct {
	chat   *openAI
	url    string
	urlErr error
}

var _ Provider = (*openAIResponses)(nil)

// NewOpenAIResponses returns a provider that POSTs to ep.BaseURL +
// "/responses". Responses are never stored at the provider (store: false):
// corral sends the whole conversation every time. Reasoning items go back
// with their encrypted content, which corral asks for whenever a request
// carries reasoning.
func NewOpenAIResponses(ep Endpoint) Provider {
	p := &openAIResponses{chat: NewOpenAI(ep).(*openAI)}
	p.url, p.urlErr = endpointURL(ep.BaseURL, "/responses")
	return p
}

// Embed sends an embeddings request to the server's /embeddings.
func (p *openAIResponses) Embed(ctx context.Context, req *EmbeddingRequest) (*EmbeddingResponse, error) {
	return p.chat.Embed(ctx, req)
}

// Chat sends the request to /responses and reads the whole answer.
func (p *openAIResponses) Chat(ctx context.Context, req *ChatRequest) (*ChatResponse, error) {
	body, err := p.encode(req, false)
	if err != nil {
		return nil, err
	}
	ctx, d := watch(ctx, p.chat.ep.Timeout)
	defer d.stop()
	resp, err := p.post(ctx, body, "application/json", d)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := readAnswer(resp.Body, d)
	if err != nil {
		return nil, err
	}
	var out wireResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("openai responses: decode answer: %w: %v", ErrInvalidAnswer, err)}
	}
	if out.Status == "failed" {
		return nil, out.failure()
	}
	return out.chat(), nil
}

// ChatStream starts a streamed response and reads its events as chunks.
func (p *openAIResponses) ChatStream(ctx context.Context, req *ChatRequest) (Stream, error) {
	body, err := p.encode(req, true)
	if err != nil {
		return nil, err
	}
	ctx, d := watch(ctx, p.chat.ep.Timeout)
	resp, err := p.post(ctx, body, "text/event-stream", d)
	if err != nil {
		d.stop()
		return nil, err
	}
	return &responsesStream{body: resp.Body, events: NewSSEReader(resp.Body, maxAnswer), deadline: d, calls: map[string]int{}}, nil
}

func (p *openAIResponses) post(ctx context.Context, body []byte, accept string, d *deadline) (*http.Response, error) {
	if p.urlErr != nil {
		return nil, &ProviderError{Err: p.urlErr}
	}
	return p.chat.post(ctx, p.url, body, accept, d)
}

// encode writes req as a Responses API request for the provider.
func (p *openAIResponses) encode(req *ChatRequest, stream bool) ([]byte, error) {
	r, err := ChatToResponses(req)
	if err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("openai responses: %w: %v", ErrBadRequest, err)}
	}
	if p.chat.ep.Model != "" {
		r["model"] = p.chat.ep.Model
	}
	r["stream"] = stream
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // placeholders (<EMAIL_1>) as they are
	if err := enc.Encode(r); err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("openai responses: encode request: %w: %v", ErrBadRequest, err)}
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ChatToResponses is the Responses API request that carries a chat
// request: system and developer messages, user messages (text, images,
// files), assistant messages with their reasoning items, text, refusal and
// function calls, tool messages as function call outputs; tools, the tool
// choice, the output limit, the response format, and the chat fields the
// Responses API shares. It is the inverse of ResponsesRequest.ToChat.
func ChatToResponses(req *ChatRequest) (map[string]any, error) {
	out := map[string]any{"model": req.Model, "store": false}
	var input []any
	reasoning := false
	for i, m := range req.Messages {
		switch m.Role {
		case "system", "developer", "user":
			content, err := responsesContent(m.Content, m.Role)
			if err != nil {
				return nil, fmt.Errorf("messages[%d].content: %w", i, err)
			}
			input = append(input, map[string]any{"type": "message", "role": m.Role, "content": content})
		case "assistant":
			for _, r := range m.Reasoning {
				input = append(input, r)
				reasoning = true
			}
			var parts []any
			if text := m.Content.String(); text != "" {
				parts = append(parts, map[string]any{"type": "output_text", "text": text, "annotations": []any{}})
			}
			if m.Refusal != "" {
				parts = append(parts, map[string]any{"type": "refusal", "refusal": m.Refusal})
			}
			if len(parts) > 0 {
				input = append(input, map[string]any{"type": "message", "role": "assistant", "content": parts})
			}
			for _, tc := range m.ToolCalls {
				input = append(input, map[string]any{"type": "function_call", "call_id": tc.ID, "name": tc.Function.Name, "arguments": tc.Function.Arguments})
			}
		case "tool":
			input = append(input, map[string]any{"type": "function_call_output", "call_id": m.ToolCallID, "output": m.Content.String()})
		default:
			return nil, fmt.Errorf("messages[%d].role: %q has no Responses API equivalent", i, m.Role)
		}
	}
	out["input"] = input
	if len(req.Tools) > 0 {
		tools := make([]any, len(req.Tools))
		for i, t := range req.Tools {
			tool := map[string]any{"type": "function", "name": t.Function.Name}
			if t.Function.Description != "" {
				tool["description"] = t.Function.Description
			}
			if len(t.Function.Parameters) > 0 {
				tool["parameters"] = t.Function.Parameters
			}
			if t.Function.Strict != nil {
				tool["strict"] = *t.Function.Strict
			}
			tools[i] = tool
		}
		out["tools"] = tools
	}
	if len(req.ToolChoice) > 0 {
		choice, err := responsesToolChoice(req.ToolChoice)
		if err != nil {
			return nil, err
		}
		out["tool_choice"] = choice
	}
	if n := max(deref(req.MaxTokens), deref(req.MaxCompletionTokens)); n > 0 {
		out["max_output_tokens"] = n
	}
	if req.Temperature != nil {
		out["temperature"] = *req.Temperature
	}
	if req.TopP != nil {
		out["top_p"] = *req.TopP
	}
	if req.User != "" {
		out["user"] = req.User
	}
	if f := req.ResponseFormat; f != nil {
		format := map[string]any{"type": f.Type}
		if f.Type == "json_schema" && len(f.JSONSchema) > 0 {
			var schema map[string]json.RawMessage
			if err := json.Unmarshal(f.JSONSchema, &schema); err != nil {
				return nil, fmt.Errorf("response_format.json_schema: must be an object")
			}
			for k, v := range schema {
				if !isNull(v) && string(v) != `""` {
					format[k] = v
				}
			}
		}
		out["text"] = map[string]any{"format": format}
	}
	for k, v := range req.Extra {
		switch k {
		case "parallel_tool_calls", "service_tier", "safety_identifier", "prompt_cache_key", "metadata":
			out[k] = v
		case "reasoning_effort":
			out["reasoning"] = map[string]json.RawMessage{"effort": v}
			reasoning = true
		}
	}
	if reasoning {
		// Not stored at the provider, a reasoning item can only be sent
		// back with its encrypted content.
		out["include"] = []string{"reasoning.encrypted_content"}
	}
	return out, nil
}

func deref(n *int) int {
	if n == nil {
		return 0
	}
	return *n
}

// responsesContent is a chat content as Responses API input parts.
func responsesContent(c *Content, role string) (any, error) {
	if c == nil {
		return "", nil
	}
	if c.Parts == nil {
		return c.Text, nil
	}
	parts := make([]any, 0, len(c.Parts))
	for i, p := range c.Parts {
		switch p.Type {
		case "text":
			parts = append(parts, map[string]any{"type": "input_text", "text": p.Text})
		case "image_url":
			var img struct {
				ImageURL struct {
					URL    string `json:"url"`
					Detail string `json:"detail"`
				} `json:"image_url"`
			}
			if err := json.Unmarshal(p.Raw, &img); err != nil || img.ImageURL.URL == "" {
				return nil, fmt.Errorf("[%d]: an image_url part needs image_url.url", i)
			}
			part := map[string]any{"type": "input_image", "image_url": img.ImageURL.URL, "detail": "auto"}
			if img.ImageURL.Detail != "" {
				part["detail"] = img.ImageURL.Detail
			}
			parts = append(parts, part)
		case "file":
			var f struct {
				File map[string]json.RawMessage `json:"file"`
			}
			if err := json.Unmarshal(p.Raw, &f); err != nil || len(f.File) == 0 {
				return nil, fmt.Errorf("[%d]: a file part needs its file", i)
			}
			part := map[string]any{"type": "input_file"}
			for k, v := range f.File {
				part[k] = v
			}
			parts = append(parts, part)
		default:
			return nil, fmt.Errorf("[%d].type: %q parts have no Responses API equivalent (in a %s message)", i, p.Type, role)
		}
	}
	return parts, nil
}

// responsesToolChoice is a chat tool_choice in the Responses API's form.
func responsesToolChoice(raw json.RawMessage) (any, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var choice struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &choice); err != nil || choice.Type != "function" || choice.Function.Name == "" {
		return nil, errors.New(`tool_choice: want "none", "auto", "required" or {"type": "function", "function": {"name": ...}}`)
	}
	return map[string]string{"type": "function", "name": choice.Function.Name}, nil
}

// wireResponse is what corral reads of a Responses API response object.
type wireResponse struct {
	ID                string           `json:"id"`
	CreatedAt         int64            `json:"created_at"`
	Model             string           `json:"model"`
	Status            string           `json:"status"`
	Output            []wireOutputItem `json:"output"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Usage *wireUsage `json:"usage"`
}

// wireUsage is a response's usage.
type wireUsage struct {
	InputTokens        int `json:"input_tokens"`
	OutputTokens       int `json:"output_tokens"`
	TotalTokens        int `json:"total_tokens"`
	InputTokensDetails *struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokensDetails *struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
}

// chat is the usage as chat completions count it.
func (u *wireUsage) chat() *Usage {
	out := &Usage{PromptTokens: u.InputTokens, CompletionTokens: u.OutputTokens, TotalTokens: u.TotalTokens}
	if d := u.InputTokensDetails; d != nil {
		out.PromptTokensDetails = &PromptTokensDetails{CachedTokens: d.CachedTokens}
	}
	if d := u.OutputTokensDetails; d != nil {
		out.CompletionTokensDetails = &CompletionTokensDetails{ReasoningTokens: d.ReasoningTokens}
	}
	return out
}

// wireOutputItem is one output item; Raw is the item as it came.
type wireOutputItem struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
	Content   []struct {
		Type    string `json:"type"`
		Text    string `json:"text"`
		Refusal string `json:"refusal"`
	} `json:"content"`
	Raw json.RawMessage `json:"-"`
}

func (it *wireOutputItem) UnmarshalJSON(data []byte) error {
	type plain wireOutputItem
	if err := json.Unmarshal(data, (*plain)(it)); err != nil {
		return err
	}
	it.Raw = append(json.RawMessage(nil), data...)
	return nil
}

// failure is a failed response's error.
func (r *wireResponse) failure() error {
	pe := &ProviderError{Type: "response_failed", Message: "the response failed", Err: fmt.Errorf("openai responses: the response failed: %w", ErrInvalidAnswer)}
	if r.Error != nil {
		pe.Type, pe.Message = r.Error.Code, truncateMessage(r.Error.Message)
	}
	return pe
}

func truncateMessage(s string) string {
	if len(s) > maxErrorMessage {
		return s[:maxErrorMessage]
	}
	return s
}

// chat is the response as a chat completion.
func (r *wireResponse) chat() *ChatResponse {
	msg := Message{Role: "assistant"}
	var text, refusal strings.Builder
	sawText := false
	for _, it := range r.Output {
		switch it.Type {
		case "message":
			for _, c := range it.Content {
				switch c.Type {
				case "output_text":
					text.WriteString(c.Text)
					sawText = true
				case "refusal":
					refusal.WriteString(c.Refusal)
				}
			}
		case "function_call":
			msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: it.CallID, Type: "function", Function: FunctionCall{Name: it.Name, Arguments: it.Arguments}})
		case "reasoning":
			msg.Reasoning = append(msg.Reasoning, it.Raw)
		}
	}
	if sawText || len(msg.ToolCalls) == 0 {
		msg.Content = TextContent(text.String())
	}
	msg.Refusal = refusal.String()
	out := &ChatResponse{ID: r.ID, Object: "chat.completion", Created: r.CreatedAt, Model: r.Model,
		Choices: []Choice{{Message: msg, FinishReason: r.finishReason(len(msg.ToolCalls) > 0)}}}
	if r.Usage != nil {
		out.Usage = r.Usage.chat()
	}
	return out
}

// finishReason is the chat finish reason of a response that ended so.
func (r *wireResponse) finishReason(calls bool) string {
	switch {
	case r.Status == "incomplete" && r.IncompleteDetails != nil && r.IncompleteDetails.Reason == "content_filter":
		return "content_filter"
	case r.Status == "incomplete":
		return "length"
	case calls:
		return "tool_calls"
	}
	return "stop"
}

// responsesStream reads a streamed response's events as chat chunks.
type responsesStream struct {
	body     io.ReadCloser
	events   *SSEReader
	deadline *deadline
	read     int
	id       string
	created  int64
	model    string
	// calls maps a function call item's id to its tool call index.
	calls map[string]int
	queue []*ChatChunk
	done  bool
	err   error
	close sync.Once
}

// Recv returns the next chunk, io.EOF after the response completed, or the
// error that ended the stream (again on every later call).
func (s *responsesStream) Recv() (*ChatChunk, error) {
	for len(s.queue) == 0 {
		if s.err != nil {
			return nil, s.err
		}
		if s.done {
			return nil, io.EOF
		}
		if err := s.next(); err != nil {
			s.err = err
		}
	}
	c := s.queue[0]
	s.queue = s.queue[1:]
	return c, nil
}

// chunk queues a chunk with one choice's delta (and finish reason).
func (s *responsesStream) chunk(d Delta, finish *string) {
	s.queue = append(s.queue, &ChatChunk{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
		Choices: []ChunkChoice{{Delta: d, FinishReason: finish}}})
}

// next reads one event and queues what it says.
func (s *responsesStream) next() error {
	_, data, err := s.events.Next()
	switch {
	case err == io.EOF:
		return &ProviderError{Err: fmt.Errorf("openai responses: the stream ended before the response did: %w", ErrInvalidAnswer)}
	case errors.Is(err, ErrEventTooLarge):
		return &ProviderError{Err: fmt.Errorf("openai responses: %w: %v", ErrInvalidAnswer, err)}
	case err != nil:
		return transportError("openai responses", "read stream", err, s.deadline)
	}
	s.deadline.reset()
	s.read += len(data)
	if s.read > maxAnswer {
		return &ProviderError{Err: fmt.Errorf("openai responses: stream over %d bytes: %w", maxAnswer, ErrInvalidAnswer)}
	}
	var ev struct {
		Type     string          `json:"type"`
		Response *wireResponse   `json:"response"`
		Item     *wireOutputItem `json:"item"`
		ItemID   string          `json:"item_id"`
		Delta    string          `json:"delta"`
		Code     string          `json:"code"`
		Message  string          `json:"message"`
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		return &ProviderError{Err: fmt.Errorf("openai responses: decode event: %w: %v", ErrInvalidAnswer, err)}
	}
	switch ev.Type {
	case "response.created":
		if r := ev.Response; r != nil {
			s.id, s.created, s.model = r.ID, r.CreatedAt, r.Model
		}
		s.chunk(Delta{Role: "assistant"}, nil)
	case "response.output_text.delta":
		if ev.Delta != "" {
			s.chunk(Delta{Content: new(ev.Delta)}, nil)
		}
	case "response.refusal.delta":
		if ev.Delta != "" {
			s.chunk(Delta{Refusal: new(ev.Delta)}, nil)
		}
	case "response.output_item.added":
		if it := ev.Item; it != nil && it.Type == "function_call" {
			i := len(s.calls)
			s.calls[it.ID] = i
			s.chunk(Delta{ToolCalls: []ToolCallDelta{{Index: i, ID: it.CallID, Type: "function", Function: FunctionCallDelta{Name: it.Name, Arguments: it.Arguments}}}}, nil)
		}
	case "response.function_call_arguments.delta":
		i, ok := s.calls[ev.ItemID]
		if !ok {
			return &ProviderError{Err: fmt.Errorf("openai responses: arguments of an unknown function call %q: %w", ev.ItemID, ErrInvalidAnswer)}
		}
		if ev.Delta != "" {
			s.chunk(Delta{ToolCalls: []ToolCallDelta{{Index: i, Function: FunctionCallDelta{Arguments: ev.Delta}}}}, nil)
		}
	case "response.output_item.done":
		if it := ev.Item; it != nil && it.Type == "reasoning" {
			s.chunk(Delta{Reasoning: []json.RawMessage{it.Raw}}, nil)
		}
	case "response.completed", "response.incomplete":
		r := ev.Response
		if r == nil {
			return &ProviderError{Err: fmt.Errorf("openai responses: %s without its response: %w", ev.Type, ErrInvalidAnswer)}
		}
		s.chunk(Delta{}, new(r.finishReason(len(s.calls) > 0)))
		if r.Usage != nil {
			s.queue = append(s.queue, &ChatChunk{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model, Choices: []ChunkChoice{},
				Usage: r.Usage.chat()})
		}
		s.done = true
	case "response.failed":
		if ev.Response != nil {
			return ev.Response.failure()
		}
		return (&wireResponse{}).failure()
	case "error":
		return &ProviderError{Type: ev.Code, Message: truncateMessage(ev.Message), Err: fmt.Errorf("openai responses: the provider ended the stream with an error: %w", ErrInvalidAnswer)}
	}
	return nil
}

// Close ends the stream and releases its connection.
func (s *responsesStream) Close() error {
	var err error
	s.close.Do(func() {
		s.deadline.stop()
		err = s.body.Close()
	})
	return err
}
