package llm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/corral-dev/corral/internal/config"
)

// The Messages API request and answer, as much of them as corral writes or
// reads (https://docs.anthropic.com/en/api/messages).
type (
	anthropicRequest struct {
		Model         string               `json:"model"`
		MaxTokens     int                  `json:"max_tokens"`
		System        string               `json:"system,omitempty"`
		Messages      []anthropicMessage   `json:"messages"`
		Tools         []anthropicTool      `json:"tools,omitempty"`
		ToolChoice    *anthropicToolChoice `json:"tool_choice,omitempty"`
		Temperature   *float64             `json:"temperature,omitempty"`
		TopP          *float64             `json:"top_p,omitempty"`
		StopSequences []string             `json:"stop_sequences,omitempty"`
		Metadata      *anthropicMetadata   `json:"metadata,omitempty"`
		Stream        bool                 `json:"stream,omitempty"`
	}

	anthropicMessage struct {
		Role    string           `json:"role"` // "user" or "assistant"
		Content []anthropicBlock `json:"content"`
	}

	// anthropicBlock is a content block: text, image, tool_use or
	// tool_result in requests; text, tool_use and others in answers.
	anthropicBlock struct {
		Type   string                `json:"type"`
		Text   string                `json:"text,omitempty"`
		Source *anthropicImageSource `json:"source,omitempty"`
		// tool_use
		ID    string          `json:"id,omitempty"`
		Name  string          `json:"name,omitempty"`
		Input json.RawMessage `json:"input,omitempty"`
		// tool_result
		ToolUseID string           `json:"tool_use_id,omitempty"`
		Content   []anthropicBlock `json:"content,omitempty"`
	}

	anthropicImageSource struct {
		Type      string `json:"type"` // "base64" or "url"
		MediaType string `json:"media_type,omitempty"`
		Data      string `json:"data,omitempty"`
		URL       string `json:"url,omitempty"`
	}

	anthropicTool struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		InputSchema json.RawMessage `json:"input_schema"`
	}

	anthropicToolChoice struct {
		Type                   string `json:"type"` // "auto", "any", "tool" or "none"
		Name                   string `json:"name,omitempty"`
		DisableParallelToolUse bool   `json:"disable_parallel_tool_use,omitempty"`
	}

	anthropicMetadata struct {
		UserID string `json:"user_id"`
	}

	anthropicResponse struct {
		ID         string           `json:"id"`
		Type       string           `json:"type"` // "message"
		Model      string           `json:"model"`
		Content    []anthropicBlock `json:"content"`
		StopReason string           `json:"stop_reason"`
		Usage      anthropicUsage   `json:"usage"`
	}

	anthropicUsage struct {
		InputTokens              int `json:"input_tokens"`
		OutputTokens             int `json:"output_tokens"`
		CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
		CacheReadInputTokens     int `json:"cache_read_input_tokens"`
	}
)

// anthropicJSONInstruction is added to the system prompt when the request
// asks for JSON output: the Messages API has no response_format, so the
// model is asked in words.
const anthropicJSONInstruction = "Respond with one valid JSON object and nothing else: no prose before or after it, no Markdown code fences."

// anthropicTranslate turns an OpenAI chat request into a Messages API
// request for ep's model. What cannot be expressed is an error wrapping
// ErrBadRequest that names the field. Fields of req.Extra other than
// parallel_tool_calls have no Anthropic equivalent and are dropped.
func anthropicTranslate(req *ChatRequest, ep Endpoint) (*anthropicRequest, error) {
	out := &anthropicRequest{
		Model:     ep.Model,
		MaxTokens: anthropicMaxTokens(req, ep),
		TopP:      req.TopP,
	}
	if out.Model == "" {
		out.Model = req.Model
	}
	if t := req.Temperature; t != nil {
		// OpenAI's temperature runs to 2, Anthropic's to 1, which is as
		// random as Claude gets: send 1 rather than have the call refused.
		out.Temperature = new(min(*t, 1))
	}
	if req.User != "" {
		out.Metadata = &anthropicMetadata{UserID: req.User}
	}
	var err error
	if out.StopSequences, err = anthropicStop(req.Stop); err != nil {
		return nil, err
	}
	var system []string
	for i, m := range req.Messages {
		switch m.Role {
		case "system", "developer":
			text, err := anthropicPlainText(m.Content)
			if err != nil {
				return nil, fmt.Errorf("messages[%d].%w", i, err)
			}
			if text != "" {
				system = append(system, text)
			}
		case "user":
			blocks, err := anthropicContent(m.Content)
			if err != nil {
				return nil, fmt.Errorf("messages[%d].%w", i, err)
			}
			out.Messages = anthropicAppend(out.Messages, "user", blocks)
		case "assistant":
			blocks, err := anthropicContent(m.Content)
			if err != nil {
				return nil, fmt.Errorf("messages[%d].%w", i, err)
			}
			calls, err := anthropicToolUses(m.ToolCalls)
			if err != nil {
				return nil, fmt.Errorf("messages[%d].%w", i, err)
			}
			out.Messages = anthropicAppend(out.Messages, "assistant", append(blocks, calls...))
		case "tool":
			if m.ToolCallID == "" {
				return nil, fmt.Errorf("messages[%d].tool_call_id: a tool message must name the call it answers: %w", i, ErrBadRequest)
			}
			blocks, err := anthropicContent(m.Content)
			if err != nil {
				return nil, fmt.Errorf("messages[%d].%w", i, err)
			}
			// Consecutive tool messages merge into one user message of
			// tool_result blocks, as Anthropic expects them.
			result := anthropicBlock{Type: "tool_result", ToolUseID: m.ToolCallID, Content: blocks}
			out.Messages = anthropicAppend(out.Messages, "user", []anthropicBlock{result})
		default:
			return nil, fmt.Errorf("messages[%d].role: %q has no Anthropic equivalent: %w", i, m.Role, ErrBadRequest)
		}
	}
	instruction, err := anthropicFormatInstruction(req.ResponseFormat)
	if err != nil {
		return nil, err
	}
	if instruction != "" {
		system = append(system, instruction)
	}
	out.System = strings.Join(system, "\n\n")
	if out.Tools, err = anthropicTools(req.Tools); err != nil {
		return nil, err
	}
	if out.ToolChoice, err = anthropicChoice(req.ToolChoice, req.Extra["parallel_tool_calls"]); err != nil {
		return nil, err
	}
	if len(out.Tools) == 0 {
		// Anthropic refuses a tool_choice without tools; with no tools
		// there is nothing to choose anyway.
		out.ToolChoice = nil
	}
	return out, nil
}

// anthropicMaxTokens is the request's limit, or the Model's: Anthropic
// requires one.
func anthropicMaxTokens(req *ChatRequest, ep Endpoint) int {
	for _, n := range []*int{req.MaxCompletionTokens, req.MaxTokens, &ep.MaxOutputTokens} {
		if n != nil && *n > 0 {
			return *n
		}
	}
	return config.DefaultMaxOutputTokens
}

// anthropicAppend adds a message, merging it into the last one when both
// have the same role: Anthropic requires user and assistant to alternate.
// A message with no blocks (empty text) is left out, as Anthropic refuses
// empty content.
func anthropicAppend(msgs []anthropicMessage, role string, blocks []anthropicBlock) []anthropicMessage {
	if len(blocks) == 0 {
		return msgs
	}
	if n := len(msgs); n > 0 && msgs[n-1].Role == role {
		msgs[n-1].Content = append(msgs[n-1].Content, blocks...)
		return msgs
	}
	return append(msgs, anthropicMessage{Role: role, Content: blocks})
}

// anthropicContent translates a message's content into blocks: text parts
// to text blocks, image_url parts to image blocks. Empty text is dropped.
// Errors start with the field ("content[2]: ...") for the caller to prefix.
func anthropicContent(c *Content) ([]anthropicBlock, error) {
	if c == nil {
		return nil, nil
	}
	if c.Parts == nil {
		if c.Text == "" {
			return nil, nil
		}
		return []anthropicBlock{{Type: "text", Text: c.Text}}, nil
	}
	var blocks []anthropicBlock
	for j, part := range c.Parts {
		switch part.Type {
		case "text":
			if part.Text != "" {
				blocks = append(blocks, anthropicBlock{Type: "text", Text: part.Text})
			}
		case "image_url":
			src, err := anthropicImage(part.Raw)
			if err != nil {
				return nil, fmt.Errorf("content[%d].image_url: %w", j, err)
			}
			blocks = append(blocks, anthropicBlock{Type: "image", Source: src})
		default:
			return nil, fmt.Errorf("content[%d]: a %q part has no Anthropic equivalent: %w", j, part.Type, ErrBadRequest)
		}
	}
	return blocks, nil
}

// anthropicPlainText joins the text of a system message; it may hold
// nothing but text.
func anthropicPlainText(c *Content) (string, error) {
	if c == nil {
		return "", nil
	}
	if c.Parts == nil {
		return c.Text, nil
	}
	var texts []string
	for j, part := range c.Parts {
		if part.Type != "text" {
			return "", fmt.Errorf("content[%d]: a system message can hold only text, not %q: %w", j, part.Type, ErrBadRequest)
		}
		texts = append(texts, part.Text)
	}
	return strings.Join(texts, ""), nil
}

// anthropicImage translates an image_url part: a data: URL becomes a base64
// source, an http(s) URL a url source, which Anthropic fetches itself.
func anthropicImage(raw json.RawMessage) (*anthropicImageSource, error) {
	var part struct {
		ImageURL struct {
			URL string `json:"url"`
		} `json:"image_url"`
	}
	if err := json.Unmarshal(raw, &part); err != nil {
		return nil, fmt.Errorf("not an image_url part: %w: %v", ErrBadRequest, err)
	}
	url := part.ImageURL.URL
	switch {
	case strings.HasPrefix(url, "data:"):
		// data:<media type>;base64,<data>
		meta, data, ok := strings.Cut(strings.TrimPrefix(url, "data:"), ",")
		mediaType, isBase64 := strings.CutSuffix(meta, ";base64")
		if !ok || !isBase64 || mediaType == "" || data == "" {
			return nil, fmt.Errorf("a data: URL must be data:<media type>;base64,<data>: %w", ErrBadRequest)
		}
		return &anthropicImageSource{Type: "base64", MediaType: mediaType, Data: data}, nil
	case strings.HasPrefix(url, "https://"), strings.HasPrefix(url, "http://"):
		return &anthropicImageSource{Type: "url", URL: url}, nil
	}
	return nil, fmt.Errorf("url: want a data:, http: or https: URL: %w", ErrBadRequest)
}

// anthropicToolUses translates an assistant's tool calls into tool_use
// blocks; the arguments, a JSON string in OpenAI, become the input object.
func anthropicToolUses(calls []ToolCall) ([]anthropicBlock, error) {
	var blocks []anthropicBlock
	for j, call := range calls {
		if call.Type != "" && call.Type != "function" {
			return nil, fmt.Errorf("tool_calls[%d].type: %q has no Anthropic equivalent: %w", j, call.Type, ErrBadRequest)
		}
		if call.ID == "" || call.Function.Name == "" {
			return nil, fmt.Errorf("tool_calls[%d]: a call needs an id and a function name: %w", j, ErrBadRequest)
		}
		args := strings.TrimSpace(call.Function.Arguments)
		if args == "" {
			args = "{}" // a call of a function without parameters
		}
		if !json.Valid([]byte(args)) || args[0] != '{' {
			return nil, fmt.Errorf("tool_calls[%d].function.arguments: not a JSON object: %w", j, ErrBadRequest)
		}
		blocks = append(blocks, anthropicBlock{Type: "tool_use", ID: call.ID, Name: call.Function.Name, Input: json.RawMessage(args)})
	}
	return blocks, nil
}

// anthropicTools translates function tools; a function without parameters
// takes an empty object, as Anthropic requires an input_schema.
func anthropicTools(tools []Tool) ([]anthropicTool, error) {
	var out []anthropicTool
	for i, t := range tools {
		if t.Type != "" && t.Type != "function" {
			return nil, fmt.Errorf("tools[%d].type: %q has no Anthropic equivalent: %w", i, t.Type, ErrBadRequest)
		}
		if t.Function.Name == "" {
			return nil, fmt.Errorf("tools[%d].function.name: missing: %w", i, ErrBadRequest)
		}
		schema := t.Function.Parameters
		if len(bytes.TrimSpace(schema)) == 0 || string(schema) == "null" {
			schema = json.RawMessage(`{"type":"object"}`)
		}
		out = append(out, anthropicTool{Name: t.Function.Name, Description: t.Function.Description, InputSchema: schema})
	}
	return out, nil
}

// anthropicChoice translates tool_choice: "auto", "none", "required" (any
// tool) or a named function; parallel_tool_calls false becomes
// disable_parallel_tool_use.
func anthropicChoice(raw, parallel json.RawMessage) (*anthropicToolChoice, error) {
	var choice *anthropicToolChoice
	if len(raw) > 0 && string(raw) != "null" {
		var mode string
		var named struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		switch {
		case json.Unmarshal(raw, &mode) == nil:
			switch mode {
			case "auto":
				choice = &anthropicToolChoice{Type: "auto"}
			case "none":
				choice = &anthropicToolChoice{Type: "none"}
			case "required":
				choice = &anthropicToolChoice{Type: "any"}
			default:
				return nil, fmt.Errorf("tool_choice: %q is not auto, none or required: %w", mode, ErrBadRequest)
			}
		case json.Unmarshal(raw, &named) == nil && named.Type == "function" && named.Function.Name != "":
			choice = &anthropicToolChoice{Type: "tool", Name: named.Function.Name}
		default:
			return nil, fmt.Errorf(`tool_choice: want "auto", "none", "required" or {"type":"function","function":{"name":...}}: %w`, ErrBadRequest)
		}
	}
	if string(bytes.TrimSpace(parallel)) == "false" {
		if choice == nil {
			choice = &anthropicToolChoice{Type: "auto"}
		}
		if choice.Type != "none" {
			choice.DisableParallelToolUse = true
		}
	}
	return choice, nil
}

// anthropicStop translates stop, a string or a list of strings, into stop
// sequences.
func anthropicStop(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		if one == "" {
			return nil, nil
		}
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("stop: want a string or a list of strings: %w", ErrBadRequest)
	}
	var out []string
	for _, s := range list {
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// anthropicFormatInstruction is the system instruction standing in for
// response_format: none for text, a request for JSON for json_object, and
// for json_schema a request for JSON that conforms to the schema.
func anthropicFormatInstruction(rf *ResponseFormat) (string, error) {
	if rf == nil {
		return "", nil
	}
	switch rf.Type {
	case "", "text":
		return "", nil
	case "json_object":
		return anthropicJSONInstruction, nil
	case "json_schema":
		var spec struct {
			Schema json.RawMessage `json:"schema"`
		}
		if len(rf.JSONSchema) > 0 {
			if err := json.Unmarshal(rf.JSONSchema, &spec); err != nil {
				return "", fmt.Errorf("response_format.json_schema: %w: %v", ErrBadRequest, err)
			}
		}
		var schema bytes.Buffer
		if len(spec.Schema) == 0 || json.Compact(&schema, spec.Schema) != nil || schema.String() == "null" {
			return anthropicJSONInstruction, nil
		}
		return anthropicJSONInstruction + " The object must conform to this JSON Schema: " + schema.String(), nil
	}
	return "", fmt.Errorf("response_format.type: %q is not text, json_object or json_schema: %w", rf.Type, ErrBadRequest)
}

// toOpenAI translates a whole answer: text blocks joined into the content,
// tool_use blocks into tool calls; other blocks (thinking) are left out.
func (r *anthropicResponse) toOpenAI(now time.Time) (*ChatResponse, error) {
	if r.Type != "message" {
		return nil, fmt.Errorf("answer of type %q, want message: %w", r.Type, ErrInvalidAnswer)
	}
	var text strings.Builder
	var calls []ToolCall
	for i, b := range r.Content {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
		case "tool_use":
			args, err := anthropicArguments(b.Input)
			if err != nil {
				return nil, fmt.Errorf("content[%d].input: %w", i, err)
			}
			calls = append(calls, ToolCall{ID: b.ID, Type: "function", Function: FunctionCall{Name: b.Name, Arguments: args}})
		}
	}
	msg := Message{Role: "assistant", ToolCalls: calls}
	// OpenAI sends null content beside tool calls and a string otherwise.
	if text.Len() > 0 || len(calls) == 0 {
		msg.Content = &Content{Text: text.String()}
	}
	return &ChatResponse{
		ID:      r.ID,
		Object:  "chat.completion",
		Created: now.Unix(),
		Model:   r.Model,
		Choices: []Choice{{Index: 0, Message: msg, FinishReason: anthropicFinish(r.StopReason)}},
		Usage:   r.Usage.toOpenAI(),
	}, nil
}

// anthropicArguments is a tool_use input as OpenAI's arguments: compact
// JSON, "{}" when absent.
func anthropicArguments(input json.RawMessage) (string, error) {
	if len(input) == 0 || string(input) == "null" {
		return "{}", nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, input); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidAnswer, err)
	}
	return buf.String(), nil
}

// anthropicFinish maps a stop_reason to an OpenAI finish_reason. Reasons
// OpenAI has no word for (pause_turn) end the turn, as "stop".
func anthropicFinish(stopReason string) string {
	switch stopReason {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	}
	return "stop"
}

// toOpenAI counts tokens as OpenAI does: prompt tokens include those
// written to and read from Anthropic's prompt cache.
func (u anthropicUsage) toOpenAI() *Usage {
	prompt := u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
	return &Usage{PromptTokens: prompt, CompletionTokens: u.OutputTokens, TotalTokens: prompt + u.OutputTokens}
}
