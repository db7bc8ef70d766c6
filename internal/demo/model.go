package demo

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/corral-dev/corral/internal/llm"
)

// Model is the demo world's language model: an OpenAI-compatible server
// that drafts a reply quoting the prompt it was given, and remembers that
// prompt, so the tour can show what a provider sees behind corral.
type Model struct {
	mu   sync.Mutex
	last string
}

// NewModel returns the demo model.
func NewModel() *Model { return &Model{} }

// LastPrompt is the last user message the model received.
func (m *Model) LastPrompt() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// ServeHTTP answers POST /v1/chat/completions (not streamed).
func (m *Model) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
		http.Error(w, `{"error":{"message":"not found","type":"invalid_request_error"}}`, http.StatusNotFound)
		return
	}
	var req llm.ChatRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil || len(req.Messages) == 0 {
		http.Error(w, `{"error":{"message":"bad request","type":"invalid_request_error"}}`, http.StatusBadRequest)
		return
	}
	prompt := req.Messages[len(req.Messages)-1].Content.String()
	m.mu.Lock()
	m.last = prompt
	m.mu.Unlock()
	answer := fmt.Sprintf("Draft: We are sorry for the delay. We will write to the customer as asked (%q).", prompt)
	in, out := llm.EstimateTokens(prompt), llm.EstimateTokens(answer)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(llm.ChatResponse{
		ID: "chatcmpl-demo", Object: "chat.completion", Created: time.Now().Unix(), Model: req.Model,
		Choices: []llm.Choice{{Message: llm.Message{Role: "assistant", Content: llm.TextContent(answer)}, FinishReason: "stop"}},
		Usage:   &llm.Usage{PromptTokens: in, CompletionTokens: out, TotalTokens: in + out},
	})
}
