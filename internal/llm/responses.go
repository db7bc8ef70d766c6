package llm

// This file holds OpenAI's Responses API (POST /responses) as corral reads
// and writes it: the request an agent sends, the response object and the
// streamed events it gets back. responses_bridge.go turns a request into a
// chat completions request, which every provider serves, and the chat answer
// (whole or streamed) back into a response. The shapes follow the official
// openai package's types (resources/responses/responses.d.ts).

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Bounds of a Responses request, checked before anything else reads it: a
// hostile caller cannot make corral walk a million items.
const (
	maxResponseItems    = 10_000
	maxResponseParts    = 1_000
	maxResponseTools    = 512
	maxResponseMetadata = 16 // keys, as OpenAI
	maxMetadataKey      = 64
	maxMetadataValue    = 512
)

// ResponsesRequest is a Responses API request, decoded and checked. Input
// keeps the items in order; Instructions becomes the conversation's first
// system message when bridged.
type ResponsesRequest struct {
	Model        string
	Instructions string
	Input        []ResponseItem
	Tools        []ResponseTool
	// ToolChoice is "none", "auto", "required" or the name of a function
	// (ToolChoiceName).
	ToolChoice      string
	ToolChoiceName  string
	Temperature     *float64
	TopP            *float64
	MaxOutputTokens *int
	// ParallelToolCalls is nil when the agent did not say.
	ParallelToolCalls *bool
	Metadata          map[string]string
	// Store is what the agent asked; corral never stores a response
	// (docs/responses.md).
	Store  *bool
	Stream bool
	User   string
	// Text is the "text" parameter as it came ({format, verbosity}), echoed
	// in the response; Format is its format, translated.
	Text   json.RawMessage
	Format *ResponseFormat
	// Reasoning is the "reasoning" parameter as it came ({effort,
	// summary}), echoed; ReasoningEffort is its effort.
	Reasoning       json.RawMessage
	ReasoningEffort string
	// Raw is the request's other accepted fields, echoed where the response
	// object has them (truncation, service_tier).
	Truncation string
}

// ResponseItem is one input item: a message, a function call the model
// made, a function call's output, or a reasoning item.
type ResponseItem struct {
	// Type is "message", "function_call", "function_call_output" or
	// "reasoning".
	Type string
	// Role and Content, for a message. Content holds text parts (Type
	// "text") and media parts in chat form (image_url, file).
	Role    string
	Content *Content
	// Refusal is an assistant message's refusal.
	Refusal string
	// CallID, Name and Arguments, for a function call; CallID and Output
	// for its output.
	CallID    string
	Name      string
	Arguments string
	Output    string
	// Raw is a reasoning item as it came.
	Raw json.RawMessage
}

// ResponseTool is a function the model may call.
type ResponseTool struct {
	Type        string          `json:"type"` // "function"
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// responsesFields are the fields a request may carry. Those in ignored are
// hints corral takes and does nothing with (docs/responses.md); those in
// refused need state corral does not keep and are refused when set.
var (
	responsesFields = []string{
		"model", "input", "instructions", "tools", "tool_choice", "temperature", "top_p",
		"max_output_tokens", "parallel_tool_calls", "metadata", "store", "stream", "user",
		"text", "reasoning", "truncation",
	}
	responsesIgnored = []string{
		"include", "stream_options", "service_tier", "safety_identifier", "prompt_cache_key",
		"prompt_cache_retention", "prompt_cache_options", "top_logprobs",
	}
	responsesRefused = map[string]string{
		"previous_response_id": "corral does not store responses, so it cannot continue one: send the whole conversation as input (the OpenAI Agents SDK does unless previousResponseId is set)",
		"conversation":         "corral does not store conversations: send the whole conversation as input",
		"prompt":               "corral does not serve stored prompt templates: send instructions and input",
		"background":           "corral does not run responses in the background: call it, or stream it",
		"context_management":   "corral does not compact stored context: send the conversation as input",
		"max_tool_calls":       "corral does not run hosted tools, so it has no tool calls to cap",
	}
)

// DecodeResponsesRequest reads and checks a Responses API request: one JSON
// object, every field of the right type, nothing corral would drop
// silently. A fault is a *RequestError naming the field ("input[2].role").
func DecodeResponsesRequest(data []byte) (*ResponsesRequest, error) {
	fields, err := object(data)
	if err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) || err.Error() == "null" {
			return nil, &RequestError{Message: "the request must be a JSON object"}
		}
		return nil, &RequestError{Message: "the body is not valid JSON: " + err.Error()}
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the same fault is reported every time
	for _, k := range keys {
		if isNull(fields[k]) || slices.Contains(responsesFields, k) || slices.Contains(responsesIgnored, k) {
			continue
		}
		if why, ok := responsesRefused[k]; ok {
			if k == "background" && string(fields[k]) == "false" {
				continue
			}
			return nil, &RequestError{Field: k, Message: why}
		}
		return nil, &RequestError{Field: k, Message: "corral's Responses API does not take this field (docs/responses.md lists those it does)"}
	}
	r := &ResponsesRequest{}
	for _, key := range responsesFields {
		raw, ok := fields[key]
		if !ok || isNull(raw) {
			continue
		}
		switch key {
		case "model":
			err = str(key, raw, &r.Model)
		case "input":
			err = r.decodeInput(raw)
		case "instructions":
			err = str(key, raw, &r.Instructions)
		case "tools":
			err = r.decodeTools(raw)
		case "tool_choice":
			err = r.decodeToolChoice(raw)
		case "temperature":
			err = field(key, raw, &r.Temperature)
		case "top_p":
			err = field(key, raw, &r.TopP)
		case "max_output_tokens":
			err = field(key, raw, &r.MaxOutputTokens)
			if err == nil && *r.MaxOutputTokens < 1 {
				err = &RequestError{Field: key, Message: "must be at least 1"}
			}
		case "parallel_tool_calls":
			err = field(key, raw, &r.ParallelToolCalls)
		case "metadata":
			err = r.decodeMetadata(raw)
		case "store":
			err = field(key, raw, &r.Store)
		case "stream":
			err = field(key, raw, &r.Stream)
		case "user":
			err = str(key, raw, &r.User)
		case "text":
			err = r.decodeText(raw)
		case "reasoning":
			err = r.decodeReasoning(raw)
		case "truncation":
			err = str(key, raw, &r.Truncation)
			if err == nil && r.Truncation != "auto" && r.Truncation != "disabled" {
				err = &RequestError{Field: key, Message: `must be "auto" or "disabled"`}
			}
		}
		if err != nil {
			return nil, err
		}
	}
	switch {
	case r.Model == "":
		return nil, &RequestError{Field: "model", Message: "required"}
	case len(r.Input) == 0:
		return nil, &RequestError{Field: "input", Message: "required: a string or a list of items"}
	case r.Instructions == "" && !slices.ContainsFunc(r.Input, func(it ResponseItem) bool { return it.Type != "reasoning" }):
		return nil, &RequestError{Field: "input", Message: "needs a message, a function call or its output: reasoning items alone are no conversation"}
	}
	return r, nil
}

// decodeInput reads input: a string (one user message) or a list of items.
func (r *ResponsesRequest) decodeInput(raw json.RawMessage) error {
	var text string
	if unquote(raw, &text) {
		r.Input = []ResponseItem{{Type: "message", Role: "user", Content: TextContent(text)}}
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return &RequestError{Field: "input", Message: "must be a string or a list of items"}
	}
	if len(items) > maxResponseItems {
		return &RequestError{Field: "input", Message: fmt.Sprintf("at most %d items", maxResponseItems)}
	}
	r.Input = make([]ResponseItem, 0, len(items))
	for i, item := range items {
		it, err := decodeItem(item)
		if err != nil {
			return within(fmt.Sprintf("input[%d]", i), err)
		}
		r.Input = append(r.Input, it)
	}
	return nil
}

// inputRoles are the roles an input message may have.
var inputRoles = []string{"user", "system", "developer", "assistant"}

// decodeItem reads one input item.
func decodeItem(raw json.RawMessage) (ResponseItem, error) {
	var it ResponseItem
	fields, err := object(raw)
	if err != nil {
		return it, &RequestError{Message: "must be an object (an item with a type, or a message with a role)"}
	}
	if t, ok := fields["type"]; ok && !isNull(t) {
		if err := str("type", t, &it.Type); err != nil {
			return it, err
		}
	} else if _, ok := fields["role"]; ok {
		it.Type = "message" // an easy input message: {role, content}
	} else {
		return it, &RequestError{Field: "type", Message: "required"}
	}
	need := func(name string, s *string) error {
		v, ok := fields[name]
		if !ok || isNull(v) {
			return &RequestError{Field: name, Message: "required in a " + it.Type + " item"}
		}
		if err := str(name, v, s); err != nil {
			return err
		}
		if *s == "" && name != "arguments" {
			return &RequestError{Field: name, Message: "must not be empty"}
		}
		return nil
	}
	switch it.Type {
	case "message":
		if err := need("role", &it.Role); err != nil {
			return it, err
		}
		if !slices.Contains(inputRoles, it.Role) {
			return it, &RequestError{Field: "role", Message: fmt.Sprintf("unknown role %q; use %s", it.Role, strings.Join(inputRoles, ", "))}
		}
		c, ok := fields["content"]
		if !ok || isNull(c) {
			return it, &RequestError{Field: "content", Message: "required in a message"}
		}
		if err := it.decodeContent(c); err != nil {
			return it, within("content", err)
		}
	case "function_call":
		for _, f := range []struct {
			name string
			to   *string
		}{{"call_id", &it.CallID}, {"name", &it.Name}, {"arguments", &it.Arguments}} {
			if err := need(f.name, f.to); err != nil {
				return it, err
			}
		}
	case "function_call_output":
		if err := need("call_id", &it.CallID); err != nil {
			return it, err
		}
		out, ok := fields["output"]
		if !ok || isNull(out) {
			return it, &RequestError{Field: "output", Message: "required in a function_call_output item"}
		}
		if err := it.decodeOutput(out); err != nil {
			return it, within("output", err)
		}
	case "reasoning":
		it.Raw = raw
	case "item_reference":
		return it, &RequestError{Field: "type", Message: "item_reference needs stored responses, which corral does not keep: send the item itself"}
	default:
		return it, &RequestError{Field: "type", Message: fmt.Sprintf("%q items are not served by corral (it serves message, function_call, function_call_output and reasoning)", it.Type)}
	}
	return it, nil
}

// decodeContent reads a message's content: a string or a list of parts.
// Text parts (input_text, output_text) become text; a refusal part becomes
// the message's refusal; images and files become chat's media parts.
func (it *ResponseItem) decodeContent(raw json.RawMessage) error {
	var text string
	if unquote(raw, &text) {
		it.Content = TextContent(text)
		return nil
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return &RequestError{Message: "must be a string or a list of parts"}
	}
	if len(parts) > maxResponseParts {
		return &RequestError{Message: fmt.Sprintf("at most %d parts", maxResponseParts)}
	}
	c := &Content{Parts: []ContentPart{}}
	for i, p := range parts {
		part, refusal, err := decodePart(p, it.Role)
		if err != nil {
			return within(fmt.Sprintf("[%d]", i), err)
		}
		if refusal != "" {
			it.Refusal += refusal
			continue
		}
		c.Parts = append(c.Parts, part)
	}
	it.Content = c
	return nil
}

// decodePart reads one content part; a refusal part returns its text apart.
func decodePart(raw json.RawMessage, role string) (ContentPart, string, error) {
	fields, err := object(raw)
	if err != nil {
		return ContentPart{}, "", &RequestError{Message: "must be an object with a type"}
	}
	var typ string
	if t, ok := fields["type"]; !ok {
		return ContentPart{}, "", &RequestError{Field: "type", Message: "required"}
	} else if err := str("type", t, &typ); err != nil {
		return ContentPart{}, "", err
	}
	text := func(name string) (string, error) {
		v, ok := fields[name]
		if !ok {
			return "", &RequestError{Field: name, Message: "required in an " + typ + " part"}
		}
		var s string
		return s, str(name, v, &s)
	}
	switch typ {
	case "input_text", "output_text":
		s, err := text("text")
		return ContentPart{Type: "text", Text: s}, "", err
	case "refusal":
		if role != "assistant" {
			return ContentPart{}, "", &RequestError{Field: "type", Message: "a refusal part belongs to an assistant message"}
		}
		s, err := text("refusal")
		if err == nil && s == "" {
			s = " " // an empty refusal is still one
		}
		return ContentPart{}, s, err
	case "input_image":
		var img struct {
			ImageURL string `json:"image_url"`
			FileID   string `json:"file_id"`
			Detail   string `json:"detail"`
		}
		if err := json.Unmarshal(raw, &img); err != nil {
			return ContentPart{}, "", describe(err, reflect.TypeFor[struct{}]())
		}
		if img.ImageURL == "" {
			return ContentPart{}, "", &RequestError{Field: "image_url", Message: "required: corral does not hold uploaded files, so file_id cannot be used"}
		}
		b, _ := json.Marshal(map[string]any{"type": "image_url", "image_url": map[string]string{"url": img.ImageURL, "detail": cmp.Or(img.Detail, "auto")}})
		return ContentPart{Type: "image_url", Raw: b}, "", nil
	case "input_file":
		var f struct {
			FileData string `json:"file_data"`
			FileID   string `json:"file_id"`
			Filename string `json:"filename"`
		}
		if err := json.Unmarshal(raw, &f); err != nil {
			return ContentPart{}, "", describe(err, reflect.TypeFor[struct{}]())
		}
		if f.FileData == "" && f.FileID == "" {
			return ContentPart{}, "", &RequestError{Field: "file_data", Message: "required (or file_id)"}
		}
		file := map[string]string{}
		for k, v := range map[string]string{"file_data": f.FileData, "file_id": f.FileID, "filename": f.Filename} {
			if v != "" {
				file[k] = v
			}
		}
		b, _ := json.Marshal(map[string]any{"type": "file", "file": file})
		return ContentPart{Type: "file", Raw: b}, "", nil
	}
	return ContentPart{}, "", &RequestError{Field: "type", Message: fmt.Sprintf("unknown part type %q; use input_text, output_text, refusal, input_image or input_file", typ)}
}

// decodeOutput reads a function call's output: a string, or a list of
// parts of which the text ones are kept (joined).
func (it *ResponseItem) decodeOutput(raw json.RawMessage) error {
	if unquote(raw, &it.Output) {
		return nil
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return &RequestError{Message: "must be a string or a list of parts"}
	}
	if len(parts) > maxResponseParts {
		return &RequestError{Message: fmt.Sprintf("at most %d parts", maxResponseParts)}
	}
	var texts []string
	for i, p := range parts {
		part, _, err := decodePart(p, "tool")
		if err != nil {
			return within(fmt.Sprintf("[%d]", i), err)
		}
		if part.Type != "text" {
			return &RequestError{Field: fmt.Sprintf("[%d].type", i), Message: "corral passes text outputs of function calls only"}
		}
		texts = append(texts, part.Text)
	}
	it.Output = strings.Join(texts, "\n")
	return nil
}

// hostedTools are OpenAI's built-in tools, which run at OpenAI: corral
// cannot govern what they do, so it refuses them by name.
var hostedTools = []string{
	"web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11",
	"file_search", "computer_use", "computer_use_preview", "computer", "code_interpreter", "image_generation",
	"mcp", "local_shell", "shell", "apply_patch", "custom",
}

func (r *ResponsesRequest) decodeTools(raw json.RawMessage) error {
	var tools []json.RawMessage
	if err := json.Unmarshal(raw, &tools); err != nil {
		return &RequestError{Field: "tools", Message: "must be a list of tools"}
	}
	if len(tools) > maxResponseTools {
		return &RequestError{Field: "tools", Message: fmt.Sprintf("at most %d tools", maxResponseTools)}
	}
	for i, t := range tools {
		at := fmt.Sprintf("tools[%d]", i)
		fields, err := object(t)
		if err != nil {
			return &RequestError{Field: at, Message: "must be an object with a type"}
		}
		var typ string
		if v, ok := fields["type"]; !ok {
			return &RequestError{Field: at + ".type", Message: "required"}
		} else if err := str(at+".type", v, &typ); err != nil {
			return err
		}
		if typ != "function" {
			why := "unknown tool type %q: corral serves function tools"
			if slices.Contains(hostedTools, typ) || strings.HasPrefix(typ, "web_search") {
				why = "%q is a tool hosted by OpenAI, which corral cannot govern, so it is refused: declare a function tool, or give the agent a corral tool (its MCP edge, /mcp)"
			}
			return &RequestError{Field: at + ".type", Message: fmt.Sprintf(why, typ)}
		}
		var tool ResponseTool
		if err := field(at, t, &tool); err != nil {
			return err
		}
		if tool.Name == "" {
			return &RequestError{Field: at + ".name", Message: "required"}
		}
		if len(tool.Parameters) > 0 && !isNull(tool.Parameters) {
			if p := strings.TrimSpace(string(tool.Parameters)); !strings.HasPrefix(p, "{") {
				return &RequestError{Field: at + ".parameters", Message: "must be a JSON Schema object"}
			}
		} else {
			tool.Parameters = nil
		}
		r.Tools = append(r.Tools, tool)
	}
	return nil
}

// decodeToolChoice reads "none", "auto", "required" or {"type":
// "function", "name": ...}.
func (r *ResponsesRequest) decodeToolChoice(raw json.RawMessage) error {
	var s string
	if unquote(raw, &s) {
		if s != "none" && s != "auto" && s != "required" {
			return &RequestError{Field: "tool_choice", Message: `must be "none", "auto", "required" or {"type": "function", "name": ...}`}
		}
		r.ToolChoice = s
		return nil
	}
	var choice struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	if err := field("tool_choice", raw, &choice); err != nil {
		return err
	}
	if choice.Type != "function" {
		return &RequestError{Field: "tool_choice.type", Message: fmt.Sprintf("%q: corral serves function tools only, so a choice names a function", choice.Type)}
	}
	if choice.Name == "" {
		return &RequestError{Field: "tool_choice.name", Message: "required"}
	}
	r.ToolChoice, r.ToolChoiceName = "function", choice.Name
	return nil
}

func (r *ResponsesRequest) decodeMetadata(raw json.RawMessage) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return &RequestError{Field: "metadata", Message: "must be an object of strings"}
	}
	if len(m) > maxResponseMetadata {
		return &RequestError{Field: "metadata", Message: fmt.Sprintf("at most %d keys", maxResponseMetadata)}
	}
	r.Metadata = make(map[string]string, len(m))
	for k, v := range m {
		var s string
		if err := str("metadata."+k, v, &s); err != nil {
			return err
		}
		if len(k) > maxMetadataKey || len(s) > maxMetadataValue {
			return &RequestError{Field: "metadata", Message: fmt.Sprintf("keys of at most %d characters, values of at most %d", maxMetadataKey, maxMetadataValue)}
		}
		r.Metadata[k] = s
	}
	return nil
}

// decodeText reads text: {format: {type: text|json_object|json_schema,
// ...}, verbosity}.
func (r *ResponsesRequest) decodeText(raw json.RawMessage) error {
	var text struct {
		Format *struct {
			Type        string          `json:"type"`
			Name        string          `json:"name"`
			Schema      json.RawMessage `json:"schema"`
			Strict      *bool           `json:"strict"`
			Description string          `json:"description"`
		} `json:"format"`
		Verbosity string `json:"verbosity"`
	}
	if err := field("text", raw, &text); err != nil {
		return err
	}
	r.Text = raw
	if text.Format == nil {
		return nil
	}
	switch f := text.Format; f.Type {
	case "text":
	case "json_object":
		r.Format = &ResponseFormat{Type: "json_object"}
	case "json_schema":
		if f.Name == "" {
			return &RequestError{Field: "text.format.name", Message: "required for json_schema"}
		}
		if len(f.Schema) == 0 || isNull(f.Schema) {
			return &RequestError{Field: "text.format.schema", Message: "required for json_schema"}
		}
		b, err := json.Marshal(map[string]any{"name": f.Name, "schema": f.Schema, "strict": f.Strict, "description": f.Description})
		if err != nil {
			return &RequestError{Field: "text.format.schema", Message: "must be a JSON Schema object"}
		}
		r.Format = &ResponseFormat{Type: "json_schema", JSONSchema: b}
	default:
		return &RequestError{Field: "text.format.type", Message: `must be "text", "json_object" or "json_schema"`}
	}
	return nil
}

func (r *ResponsesRequest) decodeReasoning(raw json.RawMessage) error {
	var reasoning struct {
		Effort string `json:"effort"`
	}
	if err := field("reasoning", raw, &reasoning); err != nil {
		return err
	}
	r.Reasoning, r.ReasoningEffort = raw, reasoning.Effort
	return nil
}
