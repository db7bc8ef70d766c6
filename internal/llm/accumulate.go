package llm

import (
	"cmp"
	"encoding/json"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Accumulator folds the chunks of a stream into the ChatResponse the same
// call would have answered unstreamed: content and refusal concatenated,
// Responses API reasoning items kept in order, tool calls assembled by
// index, the last finish reason and usage. corral uses it to audit and
// account streamed answers, to record shadow answers and the answers of
// streams made with an Idempotency-Key. The zero value is ready to use; it is not safe for concurrent use.
type Accumulator struct {
	id      string
	model   string
	created int64
	usage   *Usage
	choices map[int]*choiceParts
}

// choiceParts is one choice being assembled.
type choiceParts struct {
	role       string
	content    strings.Builder
	sawContent bool
	refusal    strings.Builder
	reasoning  []json.RawMessage
	calls      []ToolCall
	args       []*strings.Builder // each call's arguments, beside calls
	// callAt maps a delta's tool call index to its place in calls.
	callAt map[int]int
	finish string
}

// Add folds one chunk in.
func (a *Accumulator) Add(c *ChatChunk) {
	if c == nil {
		return
	}
	if a.id == "" {
		a.id = c.ID
	}
	if a.model == "" {
		a.model = c.Model
	}
	if a.created == 0 {
		a.created = c.Created
	}
	if c.Usage != nil {
		u := *c.Usage
		a.usage = &u
	}
	for _, cc := range c.Choices {
		a.choice(cc.Index).add(cc)
	}
}

func (a *Accumulator) choice(index int) *choiceParts {
	if a.choices == nil {
		a.choices = map[int]*choiceParts{}
	}
	p := a.choices[index]
	if p == nil {
		p = &choiceParts{callAt: map[int]int{}}
		a.choices[index] = p
	}
	return p
}

func (p *choiceParts) add(cc ChunkChoice) {
	d := cc.Delta
	if d.Role != "" {
		p.role = d.Role
	}
	if d.Content != nil {
		p.sawContent = true
		p.content.WriteString(*d.Content)
	}
	if d.Refusal != nil {
		p.refusal.WriteString(*d.Refusal)
	}
	p.reasoning = append(p.reasoning, d.Reasoning...)
	for _, tc := range d.ToolCalls {
		p.addCall(tc)
	}
	if cc.FinishReason != nil && *cc.FinishReason != "" {
		p.finish = *cc.FinishReason
	}
}

// addCall folds a piece of a tool call in. OpenAI gives the id, type and
// name in a call's first piece and argument text in the next ones; some
// servers send a whole call at once, or repeat the id and name in every
// piece. A piece with a new id at an index already taken starts a new call,
// for servers that leave every index at 0.
func (p *choiceParts) addCall(tc ToolCallDelta) {
	at, ok := p.callAt[tc.Index]
	if ok && tc.ID != "" && p.calls[at].ID != "" && tc.ID != p.calls[at].ID {
		ok = false
	}
	if !ok {
		p.calls = append(p.calls, ToolCall{})
		p.args = append(p.args, new(strings.Builder))
		at = len(p.calls) - 1
		p.callAt[tc.Index] = at
	}
	call := &p.calls[at]
	if call.ID == "" {
		call.ID = tc.ID
	}
	if call.Type == "" {
		call.Type = tc.Type
	}
	if name := tc.Function.Name; name != "" && name != call.Function.Name && len(call.Function.Name) < maxNameBytes {
		call.Function.Name += name
	}
	p.args[at].WriteString(tc.Function.Arguments) // a Builder: pieces may be many and small
}

// maxNameBytes bounds a function name assembled from pieces.
const maxNameBytes = 1024

// Response returns the answer assembled so far. An assistant message that
// only calls tools has a nil Content, as OpenAI answers it unstreamed.
func (a *Accumulator) Response() *ChatResponse {
	out := &ChatResponse{ID: a.id, Object: "chat.completion", Created: a.created, Model: a.model, Choices: []Choice{}}
	if a.usage != nil {
		u := *a.usage
		out.Usage = &u
	}
	for index, p := range a.choices {
		m := Message{Role: cmp.Or(p.role, "assistant"), Refusal: p.refusal.String(), Reasoning: p.reasoning}
		for i, call := range p.calls {
			call.Type = cmp.Or(call.Type, "function")
			call.Function.Arguments = p.args[i].String()
			m.ToolCalls = append(m.ToolCalls, call)
		}
		if text := p.content.String(); text != "" || p.sawContent && len(m.ToolCalls) == 0 {
			m.Content = TextContent(text)
		}
		out.Choices = append(out.Choices, Choice{Index: index, Message: m, FinishReason: p.finish})
	}
	slices.SortFunc(out.Choices, func(x, y Choice) int { return cmp.Compare(x.Index, y.Index) })
	return out
}

// IsUsageChunk reports whether c is the final chunk that only carries the
// usage (stream_options.include_usage): providers always send it to corral,
// and the edge forwards it only to agents that asked.
func IsUsageChunk(c *ChatChunk) bool { return len(c.Choices) == 0 && c.Usage != nil }

// Chunks splits a whole answer into the chunks a provider would have
// streamed: per choice, a first chunk with the role, its reasoning items
// (Message.Reasoning) whole, the content a few words at a time, each tool
// call's id and name then its arguments in pieces, a last chunk with the
// finish reason; then, if includeUsage, a usage chunk. Accumulating them
// gives resp back (but for a message with neither content nor tool calls,
// whose content comes back ""). The scripted provider and the test
// upstream stream this way, and the edge replays a recorded answer so.
func Chunks(resp *ChatResponse, includeUsage bool) []*ChatChunk {
	var out []*ChatChunk
	emit := func(index int, d Delta, finish *string) {
		out = append(out, &ChatChunk{ID: resp.ID, Object: "chat.completion.chunk", Created: resp.Created, Model: resp.Model,
			Choices: []ChunkChoice{{Index: index, Delta: d, FinishReason: finish}}})
	}
	for _, c := range resp.Choices {
		m := c.Message
		first := Delta{Role: cmp.Or(m.Role, "assistant")}
		text := m.Content.String()
		if m.Content != nil || len(m.ToolCalls) == 0 {
			first.Content = new(string)
		}
		emit(c.Index, first, nil)
		if len(m.Reasoning) > 0 {
			emit(c.Index, Delta{Reasoning: m.Reasoning}, nil)
		}
		for _, piece := range splitWords(text, 3) {
			emit(c.Index, Delta{Content: &piece}, nil)
		}
		if m.Refusal != "" {
			emit(c.Index, Delta{Refusal: &m.Refusal}, nil)
		}
		for i, call := range m.ToolCalls {
			emit(c.Index, Delta{ToolCalls: []ToolCallDelta{{Index: i, ID: call.ID, Type: cmp.Or(call.Type, "function"),
				Function: FunctionCallDelta{Name: call.Function.Name}}}}, nil)
			for _, piece := range splitBytes(call.Function.Arguments, 12) {
				emit(c.Index, Delta{ToolCalls: []ToolCallDelta{{Index: i, Function: FunctionCallDelta{Arguments: piece}}}}, nil)
			}
		}
		finish := cmp.Or(c.FinishReason, "stop")
		emit(c.Index, Delta{}, &finish)
	}
	if includeUsage && resp.Usage != nil {
		u := *resp.Usage
		out = append(out, &ChatChunk{ID: resp.ID, Object: "chat.completion.chunk", Created: resp.Created, Model: resp.Model,
			Choices: []ChunkChoice{}, Usage: &u})
	}
	return out
}

// splitWords cuts s into pieces of n words, each with the spaces after
// it, so that the pieces join back into s.
func splitWords(s string, n int) []string {
	var out []string
	start, words := 0, 0
	inWord := false
	for i, r := range s {
		space := unicode.IsSpace(r)
		if !space && !inWord {
			if words == n {
				out = append(out, s[start:i])
				start, words = i, 0
			}
			words++
		}
		inWord = !space
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// splitBytes cuts s into pieces of about n bytes, never inside a rune.
func splitBytes(s string, n int) []string {
	var out []string
	for len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		if cut == 0 {
			_, cut = utf8.DecodeRuneInString(s)
		}
		out = append(out, s[:cut])
		s = s[cut:]
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}
