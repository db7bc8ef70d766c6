package llm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// anthropicStream translates the Messages API's stream of events into
// OpenAI chunks: a first chunk with the assistant role, text deltas as
// content, each tool_use block as a tool call with its own OpenAI index and
// its input_json_delta pieces as argument pieces, a chunk with the finish
// reason, and then always a chunk with the usage, which the pipeline needs
// to settle budgets (the edge drops it if the agent did not ask for it).
type anthropicStream struct {
	body     io.ReadCloser
	events   *SSEReader
	deadline *deadline
	created  int64
	read     int // bytes of event data so far

	id, model string
	started   bool                         // message_start seen
	blocks    map[int]*anthropicBlockState // by Anthropic's content block index
	tools     int                          // tool_use blocks so far: the next OpenAI index
	usage     anthropicUsage
	finished  bool // the finish chunk was queued

	pending []*ChatChunk // translated, not yet returned
	err     error        // returned once pending is drained: io.EOF or the failure
}

// anthropicBlockState is what the stream remembers of a content block.
type anthropicBlockState struct {
	kind string // "text", "tool_use" or another block type, ignored
	tool int    // the OpenAI tool call index, for tool_use
	args bool   // some arguments were sent, for tool_use
}

// anthropicEvent is the data of any stream event; each type fills some of
// the fields.
type anthropicEvent struct {
	Type         string             `json:"type"`
	Message      *anthropicResponse `json:"message"`       // message_start
	Index        *int               `json:"index"`         // content_block_*
	ContentBlock *anthropicBlock    `json:"content_block"` // content_block_start
	Delta        struct {
		Type        string `json:"type"`         // content_block_delta: text_delta, input_json_delta, ...
		Text        string `json:"text"`         // text_delta
		PartialJSON string `json:"partial_json"` // input_json_delta
		StopReason  string `json:"stop_reason"`  // message_delta
	} `json:"delta"`
	Usage *anthropicUsage `json:"usage"` // message_delta
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"` // error
}

func newAnthropicStream(body io.ReadCloser, d *deadline, now time.Time) *anthropicStream {
	return &anthropicStream{
		body:     body,
		events:   NewSSEReader(body, MaxAnswerBytes),
		deadline: d,
		created:  now.Unix(),
		blocks:   map[int]*anthropicBlockState{},
	}
}

// Recv returns the next chunk, io.EOF after the usage chunk, or the
// failure: a *ProviderError, with the status of Anthropic's error type when
// the stream carried an error event.
func (s *anthropicStream) Recv() (*ChatChunk, error) {
	for len(s.pending) == 0 {
		if s.err != nil {
			return nil, s.err
		}
		event, data, err := s.events.Next()
		if err != nil {
			s.err = s.readFailure(err)
			continue
		}
		s.deadline.reset()
		if s.read += len(data); s.read > MaxAnswerBytes {
			s.err = &ProviderError{Err: fmt.Errorf("anthropic: stream over %d bytes: %w", MaxAnswerBytes, ErrInvalidAnswer)}
			continue
		}
		if err := s.handle(event, data); err != nil {
			s.err = err
		}
	}
	chunk := s.pending[0]
	s.pending = s.pending[1:]
	return chunk, nil
}

// Close ends the call and releases its connection.
func (s *anthropicStream) Close() error {
	s.deadline.stop()
	return s.body.Close()
}

func (s *anthropicStream) readFailure(err error) error {
	switch {
	case errors.Is(err, io.EOF):
		return &ProviderError{Err: fmt.Errorf("anthropic: stream ended before message_stop: %w", ErrInvalidAnswer)}
	case errors.Is(err, ErrEventTooLarge):
		return &ProviderError{Err: fmt.Errorf("anthropic: stream: %w: %v", ErrInvalidAnswer, err)}
	}
	return transportError("anthropic", "read stream", err, s.deadline)
}

// handle translates one event, queueing the chunks it makes; after
// message_stop it sets s.err to io.EOF.
func (s *anthropicStream) handle(name string, data []byte) error {
	var ev anthropicEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return s.invalid("event %q: %v", name, err)
	}
	if ev.Type == "" {
		ev.Type = name
	}
	if !s.started && ev.Type != "message_start" && ev.Type != "ping" && ev.Type != "error" {
		return s.invalid("%s before message_start", ev.Type)
	}
	switch ev.Type {
	case "message_start":
		if s.started || ev.Message == nil {
			return s.invalid("message_start repeated or without a message")
		}
		s.started = true
		s.id, s.model, s.usage = ev.Message.ID, ev.Message.Model, ev.Message.Usage
		s.queue(Delta{Role: "assistant", Content: new("")}, nil)
	case "content_block_start":
		if ev.Index == nil || ev.ContentBlock == nil || s.blocks[*ev.Index] != nil {
			return s.invalid("content_block_start without an index or a block, or repeated")
		}
		block := &anthropicBlockState{kind: ev.ContentBlock.Type}
		s.blocks[*ev.Index] = block
		switch block.kind {
		case "tool_use":
			if ev.ContentBlock.ID == "" || ev.ContentBlock.Name == "" {
				return s.invalid("tool_use block without an id or a name")
			}
			block.tool = s.tools
			s.tools++
			s.queue(Delta{ToolCalls: []ToolCallDelta{{
				Index: block.tool, ID: ev.ContentBlock.ID, Type: "function",
				Function: FunctionCallDelta{Name: ev.ContentBlock.Name},
			}}}, nil)
		case "text":
			if ev.ContentBlock.Text != "" {
				s.queue(Delta{Content: new(ev.ContentBlock.Text)}, nil)
			}
		}
	case "content_block_delta":
		block, err := s.block(ev.Index)
		if err != nil {
			return err
		}
		switch {
		case block.kind == "text" && ev.Delta.Type == "text_delta" && ev.Delta.Text != "":
			s.queue(Delta{Content: new(ev.Delta.Text)}, nil)
		case block.kind == "tool_use" && ev.Delta.Type == "input_json_delta" && ev.Delta.PartialJSON != "":
			block.args = true
			s.queue(Delta{ToolCalls: []ToolCallDelta{{Index: block.tool, Function: FunctionCallDelta{Arguments: ev.Delta.PartialJSON}}}}, nil)
		}
	case "content_block_stop":
		block, err := s.block(ev.Index)
		if err != nil {
			return err
		}
		if block.kind == "tool_use" && !block.args {
			// A call without parameters streams no input: OpenAI's
			// arguments are still an object.
			block.args = true
			s.queue(Delta{ToolCalls: []ToolCallDelta{{Index: block.tool, Function: FunctionCallDelta{Arguments: "{}"}}}}, nil)
		}
	case "message_delta":
		if u := ev.Usage; u != nil {
			// The counts are cumulative; input counts come in
			// message_start and only sometimes again here.
			s.usage.OutputTokens = u.OutputTokens
			s.usage.InputTokens = max(s.usage.InputTokens, u.InputTokens)
			s.usage.CacheCreationInputTokens = max(s.usage.CacheCreationInputTokens, u.CacheCreationInputTokens)
			s.usage.CacheReadInputTokens = max(s.usage.CacheReadInputTokens, u.CacheReadInputTokens)
		}
		if ev.Delta.StopReason != "" && !s.finished {
			s.finished = true
			s.queue(Delta{}, new(anthropicFinish(ev.Delta.StopReason)))
		}
	case "message_stop":
		if !s.finished {
			s.finished = true
			s.queue(Delta{}, new("stop"))
		}
		s.pending = append(s.pending, &ChatChunk{
			ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
			Choices: []ChunkChoice{},
			Usage:   s.usage.toOpenAI(),
		})
		s.err = io.EOF
	case "error":
		return &ProviderError{Status: anthropicErrorStatus(ev.Error.Type), Type: ev.Error.Type, Message: ev.Error.Message}
	}
	// ping, and event types added after this was written, carry nothing
	// corral needs.
	return nil
}

// block finds a started content block.
func (s *anthropicStream) block(index *int) (*anthropicBlockState, error) {
	if index == nil || s.blocks[*index] == nil {
		return nil, s.invalid("an event for a content block that has not started")
	}
	return s.blocks[*index], nil
}

func (s *anthropicStream) queue(delta Delta, finish *string) {
	s.pending = append(s.pending, &ChatChunk{
		ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
		Choices: []ChunkChoice{{Index: 0, Delta: delta, FinishReason: finish}},
	})
}

func (s *anthropicStream) invalid(format string, args ...any) error {
	return &ProviderError{Err: fmt.Errorf("anthropic: stream: %s: %w", fmt.Sprintf(format, args...), ErrInvalidAnswer)}
}
