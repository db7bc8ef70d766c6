// Package llm holds the OpenAI-compatible chat types that corral speaks at
// its edge and inside the pipeline, and the providers that carry a request to
// a model: any OpenAI-compatible server, Anthropic's Messages API (translated
// both ways) and a scripted provider for tests and demos.
//
// The types keep what corral must read or change (messages, tools, usage,
// max tokens, stream) as fields, and carry every other field of a request
// through unchanged in Extra, so a parameter corral does not know still
// reaches an OpenAI-compatible provider.
package llm

import (
	"context"
	"encoding/json"
)

// ChatRequest is an OpenAI chat completions request.
type ChatRequest struct {
	Model    string    `json:"model"`
	Messages []Message `json:"messages"`
	Tools    []Tool    `json:"tools,omitempty"`
	// ToolChoice is "none", "auto", "required" or an object naming a function.
	ToolChoice json.RawMessage `json:"tool_choice,omitempty"`
	// ResponseFormat is {"type":"text"|"json_object"|"json_schema", ...}.
	ResponseFormat      *ResponseFormat `json:"response_format,omitempty"`
	MaxTokens           *int            `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int            `json:"max_completion_tokens,omitempty"`
	Temperature         *float64        `json:"temperature,omitempty"`
	TopP                *float64        `json:"top_p,omitempty"`
	// Stop is a string or a list of strings.
	Stop          json.RawMessage `json:"stop,omitempty"`
	Stream        bool            `json:"stream,omitempty"`
	StreamOptions *StreamOptions  `json:"stream_options,omitempty"`
	User          string          `json:"user,omitempty"`

	// Extra holds the request's other fields, passed through as they came.
	Extra map[string]json.RawMessage `json:"-"`
}

// StreamOptions asks for a final chunk carrying the usage.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage,omitempty"`
}

// ResponseFormat asks for JSON output.
type ResponseFormat struct {
	Type       string          `json:"type"`
	JSONSchema json.RawMessage `json:"json_schema,omitempty"`
}

// Message is one message of a conversation.
type Message struct {
	// Role is "system", "developer", "user", "assistant" or "tool".
	Role    string   `json:"role"`
	Content *Content `json:"content,omitempty"`
	Name    string   `json:"name,omitempty"`
	// ToolCalls are an assistant's calls.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID answers a call, in a "tool" message.
	ToolCallID string `json:"tool_call_id,omitempty"`
	Refusal    string `json:"refusal,omitempty"`

	// Extra holds the message's other fields (audio, annotations, a
	// provider's reasoning_content), passed through as they came.
	Extra map[string]json.RawMessage `json:"-"`
	// Reasoning holds an assistant's Responses API reasoning items, as
	// they came: a provider speaking the Responses API sends them back
	// before the message; chat completions has no place for them, and the
	// other providers never see them (they are not encoded).
	Reasoning []json.RawMessage `json:"-"`
}

// Content is a message's content: a plain string (Parts nil) or a list of
// parts. It marshals back to the form it came in.
type Content struct {
	Text  string
	Parts []ContentPart
}

// ContentPart is one part of a multi-part content: {"type":"text","text":...}
// or another type (an image, audio) carried through in Raw.
type ContentPart struct {
	Type string `json:"type"`
	Text string `json:"text,omitempty"`
	// Raw is the part as it came, for types other than "text".
	Raw json.RawMessage `json:"-"`
}

// Tool is a function the model may call.
type Tool struct {
	Type     string   `json:"type"` // "function"
	Function Function `json:"function"`
}

// Function declares a callable function.
type Function struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// ToolCall is a model's call of a function.
type ToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"` // "function"
	Function FunctionCall `json:"function"`
}

// FunctionCall names the function and carries its arguments as a JSON
// string, as OpenAI sends them.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// ChatResponse is a whole (not streamed) completion.
type ChatResponse struct {
	ID                string   `json:"id"`
	Object            string   `json:"object"` // "chat.completion"
	Created           int64    `json:"created"`
	Model             string   `json:"model"`
	Choices           []Choice `json:"choices"`
	Usage             *Usage   `json:"usage,omitempty"`
	SystemFingerprint string   `json:"system_fingerprint,omitempty"`
}

// Choice is one answer.
type Choice struct {
	Index   int     `json:"index"`
	Message Message `json:"message"`
	// FinishReason is "stop", "length", "tool_calls" or "content_filter".
	FinishReason string `json:"finish_reason"`
}

// Usage counts tokens.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
	// The details, when the provider gave them: prompt tokens read from its
	// cache, output tokens spent reasoning (counted in CompletionTokens).
	PromptTokensDetails     *PromptTokensDetails     `json:"prompt_tokens_details,omitempty"`
	CompletionTokensDetails *CompletionTokensDetails `json:"completion_tokens_details,omitempty"`
}

// PromptTokensDetails details a usage's prompt tokens.
type PromptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// CompletionTokensDetails details a usage's completion tokens.
type CompletionTokensDetails struct {
	ReasoningTokens int `json:"reasoning_tokens"`
}

// ChatChunk is one server-sent event of a streamed completion.
type ChatChunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"` // "chat.completion.chunk"
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []ChunkChoice `json:"choices"`
	// Usage is set on the last chunk when the request asked for it.
	Usage *Usage `json:"usage,omitempty"`
}

// ChunkChoice is one choice's piece of a chunk.
type ChunkChoice struct {
	Index        int     `json:"index"`
	Delta        Delta   `json:"delta"`
	FinishReason *string `json:"finish_reason"`
}

// Delta is what a chunk adds to the message.
type Delta struct {
	Role      string          `json:"role,omitempty"`
	Content   *string         `json:"content,omitempty"`
	ToolCalls []ToolCallDelta `json:"tool_calls,omitempty"`
	Refusal   *string         `json:"refusal,omitempty"`
	// Reasoning holds Responses API reasoning items a stream produced,
	// whole (Message.Reasoning).
	Reasoning []json.RawMessage `json:"-"`
}

// ToolCallDelta is a piece of a tool call: the first piece of a call has its
// ID, type and name; later ones add to its arguments.
type ToolCallDelta struct {
	Index    int               `json:"index"`
	ID       string            `json:"id,omitempty"`
	Type     string            `json:"type,omitempty"`
	Function FunctionCallDelta `json:"function"`
}

// FunctionCallDelta is a piece of a function call.
type FunctionCallDelta struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
}

// EmbeddingRequest is an OpenAI embeddings request.
type EmbeddingRequest struct {
	Model string `json:"model"`
	// Input is a string, a list of strings, or token arrays.
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format,omitempty"`
	Dimensions     *int            `json:"dimensions,omitempty"`
	User           string          `json:"user,omitempty"`
}

// EmbeddingResponse is the answer to an EmbeddingRequest.
type EmbeddingResponse struct {
	Object string      `json:"object"` // "list"
	Data   []Embedding `json:"data"`
	Model  string      `json:"model"`
	Usage  *Usage      `json:"usage,omitempty"`
}

// Embedding is one vector; Embedding is a list of floats, or a base64
// string when the request asked for encoding_format "base64".
type Embedding struct {
	Object    string          `json:"object"` // "embedding"
	Index     int             `json:"index"`
	Embedding json.RawMessage `json:"embedding"`
}

// Provider carries requests to one concrete model. The request's Model is
// already the provider's own model name.
type Provider interface {
	Chat(ctx context.Context, req *ChatRequest) (*ChatResponse, error)
	// ChatStream starts a streamed completion. The caller must Close the
	// stream.
	ChatStream(ctx context.Context, req *ChatRequest) (Stream, error)
	Embed(ctx context.Context, req *EmbeddingRequest) (*EmbeddingResponse, error)
}

// Stream yields the chunks of a streamed completion.
type Stream interface {
	// Recv returns the next chunk, or io.EOF after the last one.
	Recv() (*ChatChunk, error)
	Close() error
}
