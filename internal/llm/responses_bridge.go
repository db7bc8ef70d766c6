package llm

// This file bridges the Responses API to chat completions: a request
// becomes a chat request (which every provider serves, and which the
// pipeline governs), and a chat answer, whole or streamed, becomes a
// response object or the Responses API's events.

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"strings"
	"time"
)

// Response is a Responses API response object.
type Response struct {
	ID                 string             `json:"id"`
	Object             string             `json:"object"` // "response"
	CreatedAt          int64              `json:"created_at"`
	Status             string             `json:"status"` // in_progress, completed, incomplete, failed
	Error              *ResponseError     `json:"error"`
	IncompleteDetails  *IncompleteDetails `json:"incomplete_details"`
	Instructions       *string            `json:"instructions"`
	MaxOutputTokens    *int               `json:"max_output_tokens"`
	Metadata           map[string]string  `json:"metadata"`
	Model              string             `json:"model"`
	Output             []OutputItem       `json:"output"`
	ParallelToolCalls  bool               `json:"parallel_tool_calls"`
	PreviousResponseID *string            `json:"previous_response_id"`
	Reasoning          json.RawMessage    `json:"reasoning"`
	// Store is always false: corral keeps no response to fetch later.
	Store       bool            `json:"store"`
	Temperature *float64        `json:"temperature"`
	Text        json.RawMessage `json:"text"`
	ToolChoice  json.RawMessage `json:"tool_choice"`
	Tools       []ResponseTool  `json:"tools"`
	TopP        *float64        `json:"top_p"`
	Truncation  string          `json:"truncation"`
	Usage       *ResponseUsage  `json:"usage"`
	User        string          `json:"user,omitempty"`

	// ids derives the response's item ids (DeriveIDs); nil: random.
	ids *idSeq
}

// ResponseError is why a response failed.
type ResponseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// IncompleteDetails says why a response is incomplete: "max_output_tokens"
// or "content_filter".
type IncompleteDetails struct {
	Reason string `json:"reason"`
}

// ResponseUsage counts a response's tokens.
type ResponseUsage struct {
	InputTokens         int                 `json:"input_tokens"`
	InputTokensDetails  InputTokensDetails  `json:"input_tokens_details"`
	OutputTokens        int                 `json:"output_tokens"`
	OutputTokensDetails OutputTokensDetails `json:"output_tokens_details"`
	TotalTokens         int                 `json:"total_tokens"`
}

// InputTokensDetails and OutputTokensDetails are the usage's details: the
// provider's, or zero when it gave none.
type (
	InputTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	}
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	}
)

// OutputItem is one output item: a message ("message", with Content), a
// function call ("function_call", with CallID, Name and Arguments), or a
// reasoning item as the provider sent it ("reasoning", Raw).
type OutputItem struct {
	Type      string
	ID        string
	Status    string
	Content   []OutputContent
	CallID    string
	Name      string
	Arguments string
	Raw       json.RawMessage
}

// MarshalJSON writes the item in its type's shape.
func (it OutputItem) MarshalJSON() ([]byte, error) {
	if it.Type == "reasoning" && len(it.Raw) > 0 {
		return it.Raw, nil
	}
	if it.Type == "function_call" {
		return json.Marshal(struct {
			Type      string `json:"type"`
			ID        string `json:"id"`
			CallID    string `json:"call_id"`
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
			Status    string `json:"status"`
		}{it.Type, it.ID, it.CallID, it.Name, it.Arguments, it.Status})
	}
	content := it.Content
	if content == nil {
		content = []OutputContent{}
	}
	return json.Marshal(struct {
		Type    string          `json:"type"`
		ID      string          `json:"id"`
		Status  string          `json:"status"`
		Role    string          `json:"role"`
		Content []OutputContent `json:"content"`
	}{it.Type, it.ID, it.Status, "assistant", content})
}

// OutputContent is a part of an output message: "output_text" (Text) or
// "refusal" (Refusal).
type OutputContent struct {
	Type    string
	Text    string
	Refusal string
}

// MarshalJSON writes the part in its type's shape.
func (c OutputContent) MarshalJSON() ([]byte, error) {
	if c.Type == "refusal" {
		return json.Marshal(struct {
			Type    string `json:"type"`
			Refusal string `json:"refusal"`
		}{c.Type, c.Refusal})
	}
	return json.Marshal(struct {
		Type        string `json:"type"`
		Text        string `json:"text"`
		Annotations []any  `json:"annotations"`
		Logprobs    []any  `json:"logprobs"`
	}{c.Type, c.Text, []any{}, []any{}})
}

// ToChat is the chat completions request that carries r: instructions as
// the first system message; messages as messages; function calls as an
// assistant's tool calls (merged into the assistant message before them);
// function call outputs as tool messages. Reasoning items are dropped:
// chat completions has no place for them (docs/responses.md).
func (r *ResponsesRequest) ToChat() *ChatRequest {
	out := &ChatRequest{
		Model: r.Model, Temperature: r.Temperature, TopP: r.TopP, MaxCompletionTokens: r.MaxOutputTokens,
		Stream: r.Stream, User: r.User, ResponseFormat: r.Format,
	}
	if r.Stream {
		// The usage chunk becomes the response's usage.
		out.StreamOptions = &StreamOptions{IncludeUsage: true}
	}
	if r.Instructions != "" {
		out.Messages = append(out.Messages, Message{Role: "system", Content: TextContent(r.Instructions)})
	}
	// Reasoning items go with the assistant message or function call that
	// follows them; one followed by anything else is dropped.
	var reasoning []json.RawMessage
	for _, it := range r.Input {
		switch it.Type {
		case "reasoning":
			reasoning = append(reasoning, it.Raw)
		case "message":
			m := Message{Role: it.Role, Content: plainText(it.Content), Refusal: it.Refusal}
			if m.Role == "assistant" && m.Content != nil && m.Content.Parts == nil && m.Content.Text == "" && m.Refusal != "" {
				m.Content = nil
			}
			if m.Role == "assistant" {
				m.Reasoning = reasoning
			}
			reasoning = nil
			out.Messages = append(out.Messages, m)
		case "function_call":
			call := ToolCall{ID: it.CallID, Type: "function", Function: FunctionCall{Name: it.Name, Arguments: it.Arguments}}
			if n := len(out.Messages); n > 0 && out.Messages[n-1].Role == "assistant" {
				last := &out.Messages[n-1]
				last.ToolCalls = append(last.ToolCalls, call)
				last.Reasoning, reasoning = append(last.Reasoning, reasoning...), nil
				continue
			}
			out.Messages = append(out.Messages, Message{Role: "assistant", ToolCalls: []ToolCall{call}, Reasoning: reasoning})
			reasoning = nil
		case "function_call_output":
			reasoning = nil
			out.Messages = append(out.Messages, Message{Role: "tool", ToolCallID: it.CallID, Content: TextContent(it.Output)})
		}
	}
	for _, t := range r.Tools {
		out.Tools = append(out.Tools, Tool{Type: "function", Function: Function{Name: t.Name, Description: t.Description, Parameters: t.Parameters, Strict: t.Strict}})
	}
	switch r.ToolChoice {
	case "":
	case "function":
		out.ToolChoice, _ = json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": r.ToolChoiceName}})
	default:
		out.ToolChoice, _ = json.Marshal(r.ToolChoice)
	}
	if r.ParallelToolCalls != nil && len(r.Tools) > 0 {
		out.Extra = map[string]json.RawMessage{"parallel_tool_calls": json.RawMessage(boolJSON(*r.ParallelToolCalls))}
	}
	if r.ReasoningEffort != "" {
		if out.Extra == nil {
			out.Extra = map[string]json.RawMessage{}
		}
		out.Extra["reasoning_effort"], _ = json.Marshal(r.ReasoningEffort)
	}
	return out
}

// plainText is c with only text parts as one string, which every chat
// server reads; content with media keeps its parts.
func plainText(c *Content) *Content {
	if c == nil || c.Parts == nil {
		return c
	}
	var texts []string
	for _, p := range c.Parts {
		if p.Type != "text" {
			return c
		}
		texts = append(texts, p.Text)
	}
	return TextContent(strings.Join(texts, "\n"))
}

func boolJSON(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// NewResponse is the response object for r before it has output: status
// in_progress, the request's settings echoed, model the name the agent
// asked for.
func NewResponse(r *ResponsesRequest, now time.Time) *Response {
	resp := &Response{
		ID: "resp_" + newID(), Object: "response", CreatedAt: now.Unix(), Status: "in_progress",
		MaxOutputTokens: r.MaxOutputTokens, Metadata: r.Metadata, Model: r.Model, Output: []OutputItem{},
		ParallelToolCalls: r.ParallelToolCalls == nil || *r.ParallelToolCalls,
		Reasoning:         r.Reasoning, Temperature: r.Temperature, Text: r.Text, TopP: r.TopP,
		Tools: r.Tools, Truncation: cmp.Or(r.Truncation, "disabled"), User: r.User,
	}
	if resp.Metadata == nil {
		resp.Metadata = map[string]string{}
	}
	if resp.Tools == nil {
		resp.Tools = []ResponseTool{}
	}
	if r.Instructions != "" {
		resp.Instructions = &r.Instructions
	}
	if resp.Reasoning == nil {
		resp.Reasoning = json.RawMessage(`null`)
	}
	if resp.Text == nil {
		resp.Text = json.RawMessage(`{"format":{"type":"text"}}`)
	}
	switch r.ToolChoice {
	case "":
		resp.ToolChoice = json.RawMessage(`"auto"`)
	case "function":
		resp.ToolChoice, _ = json.Marshal(map[string]string{"type": "function", "name": r.ToolChoiceName})
	default:
		resp.ToolChoice, _ = json.Marshal(r.ToolChoice)
	}
	return resp
}

// newID is a random item id suffix.
func newID() string { return strings.ToLower(rand.Text()) }

// DeriveIDs gives the response, and the items Complete or the events add
// to it afterwards, ids derived from seed instead of random ones: the same
// seed and the same answer give the same ids, so that an answer replayed
// for an Idempotency-Key carries the ids it was first sent with.
func (resp *Response) DeriveIDs(seed string) {
	resp.ids = &idSeq{seed: seed}
	resp.ID = "resp_" + resp.ids.next()
}

// itemID is the id of the next item added to the response.
func (resp *Response) itemID(prefix string) string {
	if resp.ids == nil {
		return prefix + newID()
	}
	return prefix + resp.ids.next()
}

// idSeq derives a sequence of id suffixes from a seed, shaped as newID's.
type idSeq struct {
	seed string
	n    uint64
}

func (s *idSeq) next() string {
	h := sha256.New()
	h.Write([]byte("corral response id\x00" + s.seed + "\x00"))
	_ = binary.Write(h, binary.BigEndian, s.n)
	s.n++
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h.Sum(nil)[:16]))
}

// Complete fills resp from a whole chat answer: its output items, status
// and usage.
func (resp *Response) Complete(chat *ChatResponse) {
	var msg Message
	finish := "stop"
	if len(chat.Choices) > 0 {
		msg, finish = chat.Choices[0].Message, chat.Choices[0].FinishReason
	}
	status := itemStatus(finish)
	for _, r := range msg.Reasoning {
		resp.Output = append(resp.Output, reasoningItem(r))
	}
	text := msg.Content.String()
	if text != "" || msg.Refusal != "" || len(msg.ToolCalls) == 0 {
		item := OutputItem{Type: "message", ID: resp.itemID("msg_"), Status: status}
		if text != "" || msg.Refusal == "" {
			item.Content = append(item.Content, OutputContent{Type: "output_text", Text: text})
		}
		if msg.Refusal != "" {
			item.Content = append(item.Content, OutputContent{Type: "refusal", Refusal: msg.Refusal})
		}
		resp.Output = append(resp.Output, item)
	}
	for _, tc := range msg.ToolCalls {
		resp.Output = append(resp.Output, OutputItem{Type: "function_call", ID: resp.itemID("fc_"), Status: status,
			CallID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
	}
	resp.finish(finish, chat.Usage)
}

// reasoningItem is a provider's reasoning item as an output item.
func reasoningItem(raw json.RawMessage) OutputItem {
	var head struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	_ = json.Unmarshal(raw, &head)
	return OutputItem{Type: "reasoning", ID: head.ID, Status: head.Status, Raw: raw}
}

// itemStatus is the status of the items of an answer that finished so.
func itemStatus(finish string) string {
	if finish == "length" || finish == "content_filter" {
		return "incomplete"
	}
	return "completed"
}

// finish sets the response's status from the chat finish reason, and its
// usage.
func (resp *Response) finish(reason string, u *Usage) {
	resp.Status = "completed"
	switch reason {
	case "length":
		resp.Status, resp.IncompleteDetails = "incomplete", &IncompleteDetails{Reason: "max_output_tokens"}
	case "content_filter":
		resp.Status, resp.IncompleteDetails = "incomplete", &IncompleteDetails{Reason: "content_filter"}
	}
	if u != nil {
		resp.Usage = &ResponseUsage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
		if d := u.PromptTokensDetails; d != nil {
			resp.Usage.InputTokensDetails.CachedTokens = d.CachedTokens
		}
		if d := u.CompletionTokensDetails; d != nil {
			resp.Usage.OutputTokensDetails.ReasoningTokens = d.ReasoningTokens
		}
		if resp.Usage.TotalTokens == 0 {
			resp.Usage.TotalTokens = u.PromptTokens + u.CompletionTokens
		}
	}
}

// ResponseEvent is one streamed event. Type says which of the other
// fields it has.
type ResponseEvent struct {
	Type           string          `json:"type"`
	SequenceNumber int             `json:"sequence_number"`
	Response       *Response       `json:"response,omitempty"`
	OutputIndex    *int            `json:"output_index,omitempty"`
	ItemID         string          `json:"item_id,omitempty"`
	ContentIndex   *int            `json:"content_index,omitempty"`
	Item           *OutputItem     `json:"item,omitempty"`
	Part           *OutputContent  `json:"part,omitempty"`
	Delta          *string         `json:"delta,omitempty"`
	Text           *string         `json:"text,omitempty"`
	Refusal        *string         `json:"refusal,omitempty"`
	Arguments      *string         `json:"arguments,omitempty"`
	Logprobs       json.RawMessage `json:"logprobs,omitempty"`
	// Code, Message and Param, for an "error" event.
	Code    string          `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
	Param   json.RawMessage `json:"param,omitempty"`
}

// ResponseEvents turns the chunks of a streamed chat answer into the
// Responses API's events: response.created and response.in_progress first;
// for text, a message item with one output_text part and its deltas; for
// each tool call, a function_call item and its arguments' deltas; at the end
// every open item done and response.completed (or response.incomplete), or
// error and response.failed. Sequence numbers count from 0. It is not safe
// for concurrent use.
type ResponseEvents struct {
	resp   *Response
	seq    int
	items  []*streamItem
	msg    *streamItem // the message being written, if any
	calls  map[int]*streamItem
	finish string
	usage  *Usage
	done   bool
}

// streamItem is an output item being streamed.
type streamItem struct {
	index   int
	item    OutputItem
	text    strings.Builder
	refusal strings.Builder
	args    strings.Builder
	closed  bool
}

// NewResponseEvents starts the events of resp, a response NewResponse made.
func NewResponseEvents(resp *Response) *ResponseEvents {
	return &ResponseEvents{resp: resp, calls: map[int]*streamItem{}}
}

// Response is the response as it stands.
func (e *ResponseEvents) Response() *Response { return e.resp }

func (e *ResponseEvents) event(ev ResponseEvent) ResponseEvent {
	ev.SequenceNumber = e.seq
	e.seq++
	return ev
}

// snapshot is a copy of the response as it stands, for an event.
func (e *ResponseEvents) snapshot() *Response {
	r := *e.resp
	r.Output = make([]OutputItem, 0, len(e.items))
	for _, it := range e.items {
		r.Output = append(r.Output, it.current())
	}
	return &r
}

// current is the item with what it has so far.
func (it *streamItem) current() OutputItem {
	out := it.item
	if out.Type == "reasoning" {
		return out
	}
	if out.Type == "function_call" {
		out.Arguments = it.args.String()
		return out
	}
	out.Content = nil
	if it.text.Len() > 0 || it.refusal.Len() == 0 {
		out.Content = append(out.Content, OutputContent{Type: "output_text", Text: it.text.String()})
	}
	if it.refusal.Len() > 0 {
		out.Content = append(out.Content, OutputContent{Type: "refusal", Refusal: it.refusal.String()})
	}
	return out
}

// Start is the stream's first events.
func (e *ResponseEvents) Start() []ResponseEvent {
	return []ResponseEvent{
		e.event(ResponseEvent{Type: "response.created", Response: e.snapshot()}),
		e.event(ResponseEvent{Type: "response.in_progress", Response: e.snapshot()}),
	}
}

var emptyList = json.RawMessage(`[]`)

// Chunk is the events one chat chunk makes.
func (e *ResponseEvents) Chunk(c *ChatChunk) []ResponseEvent {
	if e.done || c == nil {
		return nil
	}
	var out []ResponseEvent
	if c.Usage != nil {
		u := *c.Usage
		e.usage = &u
	}
	for _, ch := range c.Choices {
		if ch.Index != 0 {
			continue // corral asks for one choice
		}
		if d := ch.Delta.Content; d != nil && *d != "" {
			out = e.openMessage(out)
			e.msg.text.WriteString(*d)
			out = append(out, e.event(ResponseEvent{Type: "response.output_text.delta", ItemID: e.msg.item.ID,
				OutputIndex: new(e.msg.index), ContentIndex: new(0), Delta: new(*d), Logprobs: emptyList}))
		}
		for _, r := range ch.Delta.Reasoning {
			// A reasoning item comes whole: added and done at once.
			out = e.closeMessage(out)
			it := &streamItem{index: len(e.items), item: reasoningItem(r), closed: true}
			e.items = append(e.items, it)
			item := it.item
			out = append(out,
				e.event(ResponseEvent{Type: "response.output_item.added", OutputIndex: new(it.index), Item: &item}),
				e.event(ResponseEvent{Type: "response.output_item.done", OutputIndex: new(it.index), Item: &item}))
		}
		if d := ch.Delta.Refusal; d != nil && *d != "" {
			out = e.openMessage(out)
			e.msg.refusal.WriteString(*d)
		}
		for _, tc := range ch.Delta.ToolCalls {
			it := e.calls[tc.Index]
			if it == nil {
				out = e.closeMessage(out)
				it = &streamItem{index: len(e.items), item: OutputItem{Type: "function_call", ID: e.resp.itemID("fc_"), Status: "in_progress", CallID: tc.ID, Name: tc.Function.Name}}
				e.items = append(e.items, it)
				e.calls[tc.Index] = it
				added := it.current()
				out = append(out, e.event(ResponseEvent{Type: "response.output_item.added", OutputIndex: new(it.index), Item: &added}))
			}
			if tc.ID != "" && it.item.CallID == "" {
				it.item.CallID = tc.ID
			}
			if tc.Function.Name != "" && it.item.Name == "" {
				it.item.Name = tc.Function.Name
			}
			if a := tc.Function.Arguments; a != "" {
				it.args.WriteString(a)
				out = append(out, e.event(ResponseEvent{Type: "response.function_call_arguments.delta", ItemID: it.item.ID,
					OutputIndex: new(it.index), Delta: new(a)}))
			}
		}
		if ch.FinishReason != nil {
			e.finish = *ch.FinishReason
		}
	}
	return out
}

// openMessage opens a message item unless one is open.
func (e *ResponseEvents) openMessage(out []ResponseEvent) []ResponseEvent {
	if e.msg != nil && !e.msg.closed {
		return out
	}
	e.msg = &streamItem{index: len(e.items), item: OutputItem{Type: "message", ID: e.resp.itemID("msg_"), Status: "in_progress"}}
	e.items = append(e.items, e.msg)
	added := e.msg.item
	added.Content = []OutputContent{}
	return append(out,
		e.event(ResponseEvent{Type: "response.output_item.added", OutputIndex: new(e.msg.index), Item: &added}),
		e.event(ResponseEvent{Type: "response.content_part.added", ItemID: e.msg.item.ID, OutputIndex: new(e.msg.index),
			ContentIndex: new(0), Part: &OutputContent{Type: "output_text"}}))
}

// closeMessage closes the open message item, if any.
func (e *ResponseEvents) closeMessage(out []ResponseEvent) []ResponseEvent {
	m := e.msg
	if m == nil || m.closed {
		return out
	}
	m.closed = true
	m.item.Status = itemStatus(e.finish)
	text := m.text.String()
	out = append(out,
		e.event(ResponseEvent{Type: "response.output_text.done", ItemID: m.item.ID, OutputIndex: new(m.index), ContentIndex: new(0),
			Text: new(text), Logprobs: emptyList}),
		e.event(ResponseEvent{Type: "response.content_part.done", ItemID: m.item.ID, OutputIndex: new(m.index), ContentIndex: new(0),
			Part: &OutputContent{Type: "output_text", Text: text}}))
	if m.refusal.Len() > 0 {
		r := m.refusal.String()
		out = append(out,
			e.event(ResponseEvent{Type: "response.content_part.added", ItemID: m.item.ID, OutputIndex: new(m.index), ContentIndex: new(1),
				Part: &OutputContent{Type: "refusal"}}),
			e.event(ResponseEvent{Type: "response.refusal.done", ItemID: m.item.ID, OutputIndex: new(m.index), ContentIndex: new(1), Refusal: new(r)}),
			e.event(ResponseEvent{Type: "response.content_part.done", ItemID: m.item.ID, OutputIndex: new(m.index), ContentIndex: new(1),
				Part: &OutputContent{Type: "refusal", Refusal: r}}))
	}
	done := m.current()
	return append(out, e.event(ResponseEvent{Type: "response.output_item.done", OutputIndex: new(m.index), Item: &done}))
}

// Finish is the events of a stream that ended well: every open item done,
// then response.completed, or response.incomplete when the answer was cut
// (the output limit, a content filter).
func (e *ResponseEvents) Finish() []ResponseEvent {
	if e.done {
		return nil
	}
	out := e.closeMessage(nil)
	for _, it := range e.items {
		if it.closed {
			continue
		}
		it.closed = true
		it.item.Status = itemStatus(e.finish)
		args := it.args.String()
		out = append(out, e.event(ResponseEvent{Type: "response.function_call_arguments.done", ItemID: it.item.ID,
			OutputIndex: new(it.index), Arguments: new(args)}))
		done := it.current()
		out = append(out, e.event(ResponseEvent{Type: "response.output_item.done", OutputIndex: new(it.index), Item: &done}))
	}
	e.done = true
	e.resp.Output = e.snapshot().Output
	e.resp.finish(e.finish, e.usage)
	typ := "response.completed"
	if e.resp.Status == "incomplete" {
		typ = "response.incomplete"
	}
	return append(out, e.event(ResponseEvent{Type: typ, Response: e.snapshot()}))
}

// Fail is the events of a stream that broke: an error event with code and
// message, then response.failed carrying the same error and what was
// output before it.
func (e *ResponseEvents) Fail(code, message string) []ResponseEvent {
	if e.done {
		return nil
	}
	e.done = true
	e.resp.Output = e.snapshot().Output
	e.resp.Status, e.resp.Error = "failed", &ResponseError{Code: code, Message: message}
	if e.usage != nil {
		e.resp.finish(e.finish, e.usage)
		e.resp.Status, e.resp.IncompleteDetails = "failed", nil
	}
	return []ResponseEvent{
		e.event(ResponseEvent{Type: "error", Code: code, Message: message, Param: json.RawMessage(`null`)}),
		e.event(ResponseEvent{Type: "response.failed", Response: e.snapshot()}),
	}
}
