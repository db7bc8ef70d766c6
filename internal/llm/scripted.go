package llm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/corral-dev/corral/internal/config"
)

// Embedding bounds of the scripted provider (and of the test upstream,
// which uses it).
const (
	// DefaultEmbeddingDimensions is the length of a scripted vector when the
	// request sets no dimensions: short, since nothing reads them but tests.
	DefaultEmbeddingDimensions = 8
	maxEmbeddingDimensions     = 4096
	maxEmbeddingInputs         = 2048 // as OpenAI
)

// scripted answers from a script, for tests and demos.
type scripted struct {
	ep      Endpoint
	answers []scriptedAnswer
}

type scriptedAnswer struct {
	message Message
	finish  string
}

var _ Provider = (*scripted)(nil)

// NewScripted returns a provider that answers from script. A call is
// answered with the turn numbered by the assistant messages already in
// its conversation: the first call with turn 0, the call after one answer
// with turn 1, and so on, so a conversation replayed after a crash gets
// the same answers. A turn's tool calls get ids call_1, call_2, ...
// counted across the whole script, the same every time the turn is
// answered, and each distinct within a conversation. A conversation past
// the script's end is refused with a 400.
//
// Usage is estimated with EstimatePrompt and EstimateTokens. Streams end
// with a usage chunk, as openai streams do. Embeddings are unit vectors
// derived from a hash of each input.
func NewScripted(ep Endpoint, script []config.ScriptTurn) Provider {
	p := &scripted{ep: ep}
	next := 1
	for _, turn := range script {
		a := scriptedAnswer{message: Message{Role: "assistant"}, finish: "stop"}
		if turn.Content != "" || len(turn.ToolCalls) == 0 {
			a.message.Content = TextContent(turn.Content)
		}
		for _, tc := range turn.ToolCalls {
			a.message.ToolCalls = append(a.message.ToolCalls, ToolCall{
				ID: fmt.Sprintf("call_%d", next), Type: "function",
				Function: FunctionCall{Name: tc.Name, Arguments: arguments(tc.Arguments)},
			})
			next++
			a.finish = "tool_calls"
		}
		p.answers = append(p.answers, a)
	}
	return p
}

// arguments writes a scripted call's arguments as the JSON string OpenAI
// sends: compact, "{}" when there are none.
func arguments(raw json.RawMessage) string {
	if len(bytes.TrimSpace(raw)) == 0 {
		return "{}"
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw) // config validation keeps this from happening
	}
	return b.String()
}

// Chat answers with the conversation's turn of the script.
func (p *scripted) Chat(ctx context.Context, req *ChatRequest) (*ChatResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("scripted: %w", err)}
	}
	turn := 0
	for _, m := range req.Messages {
		if m.Role == "assistant" {
			turn++
		}
	}
	if turn >= len(p.answers) {
		return nil, &ProviderError{Status: 400, Type: "invalid_request_error",
			Message: fmt.Sprintf("the script has %d turns; this conversation is at turn %d", len(p.answers), turn+1)}
	}
	a := p.answers[turn]
	msg := a.message
	msg.ToolCalls = slices.Clone(msg.ToolCalls)
	if msg.Content != nil {
		msg.Content = TextContent(msg.Content.Text)
	}
	completion := EstimateTokens(msg.Content.String())
	for _, tc := range msg.ToolCalls {
		completion += EstimateTokens(tc.Function.Name) + EstimateTokens(tc.Function.Arguments)
	}
	prompt := EstimatePrompt(req)
	return &ChatResponse{
		ID: "chatcmpl-" + rand.Text(), Object: "chat.completion", Created: time.Now().Unix(),
		Model:   p.model(req.Model),
		Choices: []Choice{{Index: 0, Message: msg, FinishReason: a.finish}},
		Usage:   &Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion},
	}, nil
}

func (p *scripted) model(asked string) string {
	if p.ep.Model != "" {
		return p.ep.Model
	}
	return asked
}

// ChatStream streams the same answer as Chat, a few words per chunk, with
// tool call arguments split across chunks and the usage chunk last.
func (p *scripted) ChatStream(ctx context.Context, req *ChatRequest) (Stream, error) {
	resp, err := p.Chat(ctx, req)
	if err != nil {
		return nil, err
	}
	return &chunkStream{chunks: Chunks(resp, true)}, nil
}

// chunkStream yields chunks held in memory.
type chunkStream struct {
	chunks []*ChatChunk
	closed bool
}

func (s *chunkStream) Recv() (*ChatChunk, error) {
	if s.closed || len(s.chunks) == 0 {
		return nil, io.EOF
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	return c, nil
}

func (s *chunkStream) Close() error {
	s.closed = true
	return nil
}

// Embed answers a deterministic unit vector per input, derived from a
// hash of it: the same input always gets the same vector. The length is the
// request's dimensions, or DefaultEmbeddingDimensions.
func (p *scripted) Embed(ctx context.Context, req *EmbeddingRequest) (*EmbeddingResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, &ProviderError{Err: fmt.Errorf("scripted: %w", err)}
	}
	invalid := func(msg string) error {
		return &ProviderError{Status: 400, Type: "invalid_request_error", Message: msg}
	}
	inputs, err := embeddingInputs(req.Input)
	if err != nil {
		return nil, invalid(err.Error())
	}
	dims := DefaultEmbeddingDimensions
	if req.Dimensions != nil {
		dims = *req.Dimensions
	}
	if dims < 1 || dims > maxEmbeddingDimensions {
		return nil, invalid(fmt.Sprintf("dimensions must be between 1 and %d", maxEmbeddingDimensions))
	}
	if req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64" {
		return nil, invalid(`encoding_format must be "float" or "base64"`)
	}
	out := &EmbeddingResponse{Object: "list", Model: p.model(req.Model), Data: make([]Embedding, len(inputs)), Usage: &Usage{}}
	for i, in := range inputs {
		vec := hashVector(in.key, dims)
		var encoded []byte
		if req.EncodingFormat == "base64" {
			raw := make([]byte, 0, 4*len(vec))
			for _, f := range vec {
				raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
			}
			encoded, err = json.Marshal(base64.StdEncoding.EncodeToString(raw))
		} else {
			encoded, err = json.Marshal(vec)
		}
		if err != nil {
			return nil, &ProviderError{Err: fmt.Errorf("scripted: encode vector: %w", err)}
		}
		out.Data[i] = Embedding{Object: "embedding", Index: i, Embedding: encoded}
		out.Usage.PromptTokens += in.tokens
	}
	out.Usage.TotalTokens = out.Usage.PromptTokens
	return out, nil
}

// embeddingInput is one input to embed: what its vector is derived from,
// and its estimated tokens.
type embeddingInput struct {
	key    []byte
	tokens int
}

// embeddingInputs reads an embeddings input: a string, a list of strings,
// a list of tokens or a list of lists of tokens.
func embeddingInputs(raw json.RawMessage) ([]embeddingInput, error) {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []embeddingInput{{key: []byte(one), tokens: EstimateTokens(one)}}, nil
	}
	var strs []string
	if json.Unmarshal(raw, &strs) == nil && strs != nil {
		out := make([]embeddingInput, len(strs))
		for i, s := range strs {
			out[i] = embeddingInput{key: []byte(s), tokens: EstimateTokens(s)}
		}
		return bounded(out)
	}
	var tokens []int64
	if json.Unmarshal(raw, &tokens) == nil && tokens != nil {
		key, _ := json.Marshal(tokens)
		return []embeddingInput{{key: key, tokens: len(tokens)}}, nil
	}
	var lists [][]int64
	if json.Unmarshal(raw, &lists) == nil && lists != nil {
		out := make([]embeddingInput, len(lists))
		for i, l := range lists {
			key, _ := json.Marshal(l)
			out[i] = embeddingInput{key: key, tokens: len(l)}
		}
		return bounded(out)
	}
	return nil, fmt.Errorf("input must be a string, a list of strings, or token arrays")
}

func bounded(in []embeddingInput) ([]embeddingInput, error) {
	switch {
	case len(in) == 0:
		return nil, fmt.Errorf("input must not be empty")
	case len(in) > maxEmbeddingInputs:
		return nil, fmt.Errorf("input has %d items; at most %d", len(in), maxEmbeddingInputs)
	}
	return in, nil
}

// hashVector derives a unit vector of dims components from key: SHA-256 of
// a block counter and the key gives 8 components per block, each mapped
// into [-1, 1], and the whole is scaled to length 1 as OpenAI's are.
func hashVector(key []byte, dims int) []float32 {
	vec := make([]float32, dims)
	var norm float64
	for i := 0; i < dims; i += 8 {
		h := sha256.New()
		_ = binary.Write(h, binary.LittleEndian, uint32(i/8))
		h.Write(key)
		sum := h.Sum(nil)
		for j := 0; j < 8 && i+j < dims; j++ {
			u := binary.LittleEndian.Uint32(sum[4*j:])
			f := float64(u)/math.MaxUint32*2 - 1
			vec[i+j] = float32(f)
			norm += f * f
		}
	}
	if norm == 0 {
		vec[0], norm = 1, 1
	}
	scale := 1 / math.Sqrt(norm)
	for i := range vec {
		vec[i] = float32(float64(vec[i]) * scale)
	}
	return vec
}
