package llm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"
)

// RequestError is a request corral cannot read or will not send. Field
// locates the value at fault the way a person would write it
// ("messages[2].content"); the edge answers it with a 400 whose param is
// Field.
type RequestError struct {
	Field   string
	Message string
}

func (e *RequestError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// DecodeRequest reads a chat completions request: one JSON object, nothing
// after it. Fields corral does not know are kept in Extra (and Message.Extra)
// and written back by MarshalJSON.
func DecodeRequest(data []byte) (*ChatRequest, error) {
	var req ChatRequest
	if err := json.Unmarshal(data, &req); err != nil {
		var re *RequestError
		if errors.As(err, &re) {
			return nil, re
		}
		return nil, &RequestError{Message: "the body is not valid JSON: " + err.Error()}
	}
	return &req, nil
}

// requestFields are the JSON names of ChatRequest's own fields, which
// MarshalJSON writes from the struct and never from Extra.
var requestFields = []string{
	"model", "messages", "tools", "tool_choice", "response_format", "max_tokens",
	"max_completion_tokens", "temperature", "top_p", "stop", "stream", "stream_options", "user",
}

// UnmarshalJSON reads the request's own fields, naming the field at fault
// in a *RequestError, and keeps every other field in Extra. A null value is
// taken as absent.
func (r *ChatRequest) UnmarshalJSON(data []byte) error {
	fields, err := object(data)
	if err != nil {
		return &RequestError{Message: "the request must be a JSON object"}
	}
	*r = ChatRequest{Extra: extra(fields, requestFields)}
	// Known fields in a fixed order, so that of several faults the same one
	// is always reported.
	for _, key := range requestFields {
		raw, ok := fields[key]
		if !ok || isNull(raw) {
			continue
		}
		switch key {
		case "model":
			err = str(key, raw, &r.Model)
		case "messages":
			err = r.decodeMessages(raw)
		case "tools":
			r.Tools, err = list[Tool](key, raw)
		case "tool_choice":
			r.ToolChoice = raw
		case "response_format":
			err = field(key, raw, &r.ResponseFormat)
		case "max_tokens":
			err = field(key, raw, &r.MaxTokens)
		case "max_completion_tokens":
			err = field(key, raw, &r.MaxCompletionTokens)
		case "temperature":
			err = field(key, raw, &r.Temperature)
		case "top_p":
			err = field(key, raw, &r.TopP)
		case "stop":
			r.Stop = raw
		case "stream":
			err = field(key, raw, &r.Stream)
		case "stream_options":
			err = field(key, raw, &r.StreamOptions)
		case "user":
			err = str(key, raw, &r.User)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *ChatRequest) decodeMessages(raw json.RawMessage) error {
	if json.Unmarshal(raw, &r.Messages) == nil {
		return nil
	}
	// Again element by element, to say which message is at fault.
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return &RequestError{Field: "messages", Message: "must be a list of messages"}
	}
	r.Messages = make([]Message, len(list))
	for i, m := range list {
		if err := r.Messages[i].UnmarshalJSON(m); err != nil {
			return within(fmt.Sprintf("messages[%d]", i), err)
		}
	}
	return &RequestError{Field: "messages", Message: "must be a list of messages"}
}

// chatRequestFields is ChatRequest without its methods, for MarshalJSON.
type chatRequestFields ChatRequest

// MarshalJSON writes the request's own fields, then Extra's, sorted by name.
func (r ChatRequest) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(chatRequestFields(r))
	if err != nil {
		return nil, err
	}
	return appendExtra(b, r.Extra, requestFields)
}

// messageFields are the JSON names of Message's own fields.
var messageFields = []string{"role", "content", "name", "tool_calls", "tool_call_id", "refusal"}

// UnmarshalJSON reads a message, naming the field at fault in a
// *RequestError, and keeps its other fields in Extra. Content null or
// absent leaves Content nil.
func (m *Message) UnmarshalJSON(data []byte) error {
	fields, err := object(data)
	if err != nil {
		return &RequestError{Message: "must be an object with a role"}
	}
	*m = Message{Extra: extra(fields, messageFields)}
	for _, key := range messageFields {
		raw, ok := fields[key]
		if !ok || isNull(raw) {
			continue
		}
		switch key {
		case "role":
			err = str(key, raw, &m.Role)
		case "content":
			m.Content = new(Content)
			if err = m.Content.UnmarshalJSON(raw); err != nil {
				err = within(key, err)
			}
		case "name":
			err = str(key, raw, &m.Name)
		case "tool_calls":
			m.ToolCalls, err = list[ToolCall](key, raw)
		case "tool_call_id":
			err = str(key, raw, &m.ToolCallID)
		case "refusal":
			err = str(key, raw, &m.Refusal)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// wireMessage is how a Message is written: content is always present,
// null when Content is nil, as OpenAI writes an assistant message that only
// calls tools.
type wireMessage struct {
	Role       string     `json:"role"`
	Content    *Content   `json:"content"`
	Name       string     `json:"name,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	Refusal    string     `json:"refusal,omitempty"`
}

// MarshalJSON writes the message's own fields, then Extra's, sorted by name.
func (m Message) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(wireMessage{
		Role: m.Role, Content: m.Content, Name: m.Name,
		ToolCalls: m.ToolCalls, ToolCallID: m.ToolCallID, Refusal: m.Refusal,
	})
	if err != nil {
		return nil, err
	}
	return appendExtra(b, m.Extra, messageFields)
}

// TextContent returns a plain-string content.
func TextContent(s string) *Content { return &Content{Text: s} }

// String returns the content's text: Text for a plain string, or the text
// parts joined by newlines. Other parts (images, audio) are left out.
func (c *Content) String() string {
	if c == nil {
		return ""
	}
	if c.Parts == nil {
		return c.Text
	}
	var texts []string
	for _, p := range c.Parts {
		if p.Type == "text" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n")
}

// UnmarshalJSON reads a string, or a list of parts each with a type: text
// parts are decoded, others kept as they came in Raw.
func (c *Content) UnmarshalJSON(data []byte) error {
	*c = Content{}
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		if !unquote(data, &c.Text) {
			return &RequestError{Message: "must be a string or a list of parts"}
		}
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(data, &list); err != nil || list == nil {
		return &RequestError{Message: "must be a string or a list of parts"}
	}
	c.Parts = make([]ContentPart, len(list))
	for i, raw := range list {
		if err := c.Parts[i].UnmarshalJSON(raw); err != nil {
			return within(fmt.Sprintf("[%d]", i), err)
		}
	}
	return nil
}

// MarshalJSON writes the content in the form it came in: a string when
// Parts is nil, else a list.
func (c Content) MarshalJSON() ([]byte, error) {
	if c.Parts == nil {
		return json.Marshal(c.Text)
	}
	return json.Marshal(c.Parts)
}

// UnmarshalJSON reads a part: an object with a type; a text part must have
// its text.
func (p *ContentPart) UnmarshalJSON(data []byte) error {
	fields, err := object(data)
	if err != nil {
		return &RequestError{Message: "must be an object with a type"}
	}
	*p = ContentPart{}
	typ, ok := fields["type"]
	if !ok {
		return &RequestError{Field: "type", Message: "required"}
	}
	if err := str("type", typ, &p.Type); err != nil {
		return err
	}
	if p.Type != "text" {
		p.Raw = slices.Clone(json.RawMessage(bytes.TrimSpace(data)))
		return nil
	}
	text, ok := fields["text"]
	if !ok {
		return &RequestError{Field: "text", Message: "required in a text part"}
	}
	return str("text", text, &p.Text)
}

// MarshalJSON writes a text part from Type and Text, any other as it came.
func (p ContentPart) MarshalJSON() ([]byte, error) {
	if p.Type != "text" && len(p.Raw) > 0 {
		return p.Raw, nil
	}
	return json.Marshal(struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}{p.Type, p.Text})
}

// Roles corral knows; any other is refused, since policy and redaction must
// know who speaks.
var roles = []string{"system", "developer", "user", "assistant", "tool"}

// Validate checks what corral needs before it governs a request: a model,
// at least one message, known roles, tool messages that say which call
// they answer, and at most one choice. n > 1 is refused because corral
// audits, accounts, redacts back and falls back one answer per call; a
// caller wanting several answers sends several requests.
func (r *ChatRequest) Validate() error {
	if r.Model == "" {
		return &RequestError{Field: "model", Message: "required"}
	}
	if len(r.Messages) == 0 {
		return &RequestError{Field: "messages", Message: "at least one message is required"}
	}
	for i, m := range r.Messages {
		at := fmt.Sprintf("messages[%d]", i)
		switch {
		case m.Role == "":
			return &RequestError{Field: at + ".role", Message: "required"}
		case !slices.Contains(roles, m.Role):
			return &RequestError{Field: at + ".role", Message: fmt.Sprintf("unknown role %q; use %s", m.Role, strings.Join(roles, ", "))}
		case m.Role == "tool" && m.ToolCallID == "":
			return &RequestError{Field: at + ".tool_call_id", Message: "required in a tool message: the id of the call it answers"}
		}
	}
	// Budgets reserve the output a request allows: it must be some.
	if r.MaxTokens != nil && *r.MaxTokens < 1 {
		return &RequestError{Field: "max_tokens", Message: "must be at least 1"}
	}
	if r.MaxCompletionTokens != nil && *r.MaxCompletionTokens < 1 {
		return &RequestError{Field: "max_completion_tokens", Message: "must be at least 1"}
	}
	return r.validateGeneration()
}

// oneChoice is why a request may not ask for more than one sequence.
const oneChoice = "corral returns one choice per call; send one request per answer you want"

// validateGeneration refuses the pass-through controls that would make a
// call generate more than its reservation counts: more than one sequence
// (n, best_of, use_beam_search: a server generates them all, and may not
// report the discarded ones in its usage), an output limit in a field
// corral does not cap (max_new_tokens, num_predict), and a min_tokens
// above the request's own output limit.
func (r *ChatRequest) validateGeneration() error {
	for _, f := range []struct {
		name string
		want float64
	}{{"n", 1}, {"best_of", 1}} {
		raw, ok := r.Extra[f.name]
		if !ok || isNull(raw) {
			continue
		}
		var n float64
		if err := json.Unmarshal(raw, &n); err != nil {
			return &RequestError{Field: f.name, Message: "must be a number"}
		}
		if n != f.want {
			return &RequestError{Field: f.name, Message: oneChoice}
		}
	}
	if raw, ok := r.Extra["use_beam_search"]; ok && !isNull(raw) {
		var beams bool
		if err := json.Unmarshal(raw, &beams); err != nil {
			return &RequestError{Field: "use_beam_search", Message: "must be a boolean"}
		}
		if beams {
			return &RequestError{Field: "use_beam_search", Message: oneChoice}
		}
	}
	for _, name := range []string{"max_new_tokens", "num_predict"} {
		if raw, ok := r.Extra[name]; ok && !isNull(raw) {
			return &RequestError{Field: name, Message: "corral caps output with max_tokens or max_completion_tokens, which budgets reserve; use one of those"}
		}
	}
	if raw, ok := r.Extra["min_tokens"]; ok && !isNull(raw) {
		var n float64
		if err := json.Unmarshal(raw, &n); err != nil {
			return &RequestError{Field: "min_tokens", Message: "must be a number"}
		}
		limit := 0
		for _, l := range []*int{r.MaxTokens, r.MaxCompletionTokens} {
			if l != nil {
				limit = max(limit, *l)
			}
		}
		if n > float64(limit) {
			return &RequestError{Field: "min_tokens", Message: "must be at most the request's max_tokens or max_completion_tokens (set one)"}
		}
	}
	return nil
}

// object decodes a JSON object into its fields; anything else is an error.
func object(data []byte) (map[string]json.RawMessage, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, err
	}
	if fields == nil {
		return nil, errors.New("null")
	}
	return fields, nil
}

// extra returns the fields not named in own, or nil if there are none.
func extra(fields map[string]json.RawMessage, own []string) map[string]json.RawMessage {
	var out map[string]json.RawMessage
	for k, v := range fields {
		if slices.Contains(own, k) {
			continue
		}
		if out == nil {
			out = map[string]json.RawMessage{}
		}
		out[k] = v
	}
	return out
}

// str decodes a string field, naming it in the error.
func str(name string, raw json.RawMessage, s *string) error {
	if unquote(raw, s) {
		return nil
	}
	return field(name, raw, s)
}

// unquote decodes a JSON string into s. Strings without escapes, which are
// most of them, are copied as they are, saving a pass of encoding/json
// over text it has already checked; the others go through it.
func unquote(raw []byte, s *string) bool {
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' {
		inner := raw[1 : n-1]
		if bytes.IndexByte(inner, '\\') < 0 && bytes.IndexByte(inner, '"') < 0 && !hasControl(inner) && utf8.Valid(inner) {
			*s = string(inner)
			return true
		}
	}
	return json.Unmarshal(raw, s) == nil
}

func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}

// list decodes a list element by element, so that an error names the
// element at fault ("tools[3].function.name").
func list[T any](name string, raw json.RawMessage) ([]T, error) {
	var all []T
	if json.Unmarshal(raw, &all) == nil {
		return all, nil
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, &RequestError{Field: name, Message: "must be a list"}
	}
	out := make([]T, len(elems))
	for i, e := range elems {
		if err := field(fmt.Sprintf("%s[%d]", name, i), e, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// field decodes one field's value into v, naming the field in the error.
func field(name string, raw json.RawMessage, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return within(name, describe(err, reflect.TypeOf(v).Elem()))
	}
	return nil
}

// describe turns a decoding error into a *RequestError located inside the
// value that was decoded (want is its Go type).
func describe(err error, want reflect.Type) error {
	var re *RequestError
	if errors.As(err, &re) {
		return re
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &RequestError{Field: te.Field, Message: fmt.Sprintf("must be %s, got %s", jsonKind(te.Type), te.Value)}
	}
	return &RequestError{Message: fmt.Sprintf("must be %s", jsonKind(want))}
}

// within locates err inside the field at: "messages[2]" + "content" gives
// "messages[2].content", "content" + "[1]" gives "content[1]".
func within(at string, err error) error {
	var re *RequestError
	if !errors.As(err, &re) {
		return &RequestError{Field: at, Message: err.Error()}
	}
	switch {
	case re.Field == "":
		return &RequestError{Field: at, Message: re.Message}
	case strings.HasPrefix(re.Field, "["):
		return &RequestError{Field: at + re.Field, Message: re.Message}
	}
	return &RequestError{Field: at + "." + re.Field, Message: re.Message}
}

// jsonKind names a Go type's JSON form for messages.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	}
	return "an object"
}

// appendExtra adds the extra fields to the JSON object b, sorted by name,
// leaving out those named in own (the struct wrote them).
func appendExtra(b []byte, extra map[string]json.RawMessage, own []string) ([]byte, error) {
	if len(extra) == 0 {
		return b, nil
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		if !slices.Contains(own, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	b = b[:len(b)-1] // the closing brace
	empty := len(b) == 1
	for _, k := range keys {
		name, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		if !empty {
			b = append(b, ',')
		}
		empty = false
		b = append(append(b, name...), ':')
		var value bytes.Buffer
		if err := json.Compact(&value, extra[k]); err != nil {
			return nil, fmt.Errorf("extra field %s: %w", name, err)
		}
		b = append(b, value.Bytes()...)
	}
	return append(b, '}'), nil
}
