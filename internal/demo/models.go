package demo

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/internal/llm"
)

// Turn is one answer of a scripted model: what it says, and the functions
// it calls (none: the turn is its final answer).
type Turn struct {
	Say   string
	Calls []Call
}

// Call is a function call a scripted model makes: a tool
// ("erp__list_orders", a tool's name as corral offers it) or one of
// corral's functions for agents ("handoff_to_impact").
type Call struct {
	Function string
	Args     map[string]any
}

// Models is the demo world's model provider: an OpenAI-compatible server
// (POST /v1/chat/completions, not streamed) that answers each model with
// its script, the turn chosen by the assistant messages already in the
// conversation (as corral's scripted provider does), so a conversation
// replayed after a crash gets the same answers. It remembers what each
// model last received, to show what redaction left a provider to see, and
// counts requests per Idempotency-Key, to show that no model call was paid
// twice.
type Models struct {
	mu       sync.Mutex
	scripts  map[string][]Turn
	received map[string][]llm.Message
	answered map[string][]string
	ledger   map[string]int
	order    []string
}

// NewModels serves scripts, keyed by the model name requests carry.
func NewModels(scripts map[string][]Turn) *Models {
	return &Models{scripts: scripts, received: map[string][]llm.Message{}, answered: map[string][]string{}, ledger: map[string]int{}}
}

// Received is the conversation model last received, as it arrived.
func (m *Models) Received(model string) []llm.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.received[model]
}

// Answered is what model said (the text of its answers), in order.
func (m *Models) Answered(model string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.answered[model]...)
}

// Calls counts the requests per Idempotency-Key, in the order the keys
// were first seen.
func (m *Models) Calls() []Count {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Count, 0, len(m.order))
	for _, k := range m.order {
		out = append(out, Count{Key: k, Requests: m.ledger[k], Effects: 1})
	}
	return out
}

// ServeHTTP answers POST /v1/chat/completions.
func (m *Models) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
		modelError(w, http.StatusNotFound, "not found")
		return
	}
	var req llm.ChatRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<20)).Decode(&req); err != nil || len(req.Messages) == 0 {
		modelError(w, http.StatusBadRequest, "bad request")
		return
	}
	if req.Stream {
		modelError(w, http.StatusBadRequest, "the demo models do not stream")
		return
	}
	script, ok := m.scripts[req.Model]
	if !ok {
		modelError(w, http.StatusNotFound, fmt.Sprintf("no model %q", req.Model))
		return
	}
	turn := 0
	for _, msg := range req.Messages {
		if msg.Role == "assistant" {
			turn++
		}
	}
	m.mu.Lock()
	m.received[req.Model] = req.Messages
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		if m.ledger[key] == 0 {
			m.order = append(m.order, key)
		}
		m.ledger[key]++
	}
	m.mu.Unlock()
	if turn >= len(script) {
		modelError(w, http.StatusBadRequest, fmt.Sprintf("the script of %s has %d turns; this conversation is at turn %d", req.Model, len(script), turn))
		return
	}
	t := script[turn]
	m.mu.Lock()
	m.answered[req.Model] = append(m.answered[req.Model], t.Say)
	m.mu.Unlock()
	msg := llm.Message{Role: "assistant"}
	if t.Say != "" {
		msg.Content = llm.TextContent(t.Say)
	}
	finish := "stop"
	for i, c := range t.Calls {
		args, err := json.Marshal(orEmptyArgs(c.Args))
		if err != nil {
			modelError(w, http.StatusInternalServerError, err.Error())
			return
		}
		msg.ToolCalls = append(msg.ToolCalls, llm.ToolCall{ID: fmt.Sprintf("call_%d_%d", turn+1, i+1), Type: "function",
			Function: llm.FunctionCall{Name: c.Function, Arguments: string(args)}})
		finish = "tool_calls"
	}
	in := 3
	for _, x := range req.Messages {
		in += 4 + llm.EstimateTokens(x.Content.String())
	}
	out := llm.EstimateTokens(t.Say) + 10*len(t.Calls)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(llm.ChatResponse{
		ID: fmt.Sprintf("chatcmpl-demo-%s-%d", req.Model, turn), Object: "chat.completion", Created: time.Now().Unix(), Model: req.Model,
		Choices: []llm.Choice{{Message: msg, FinishReason: finish}},
		Usage:   &llm.Usage{PromptTokens: in, CompletionTokens: out, TotalTokens: in + out},
	})
}

func orEmptyArgs(a map[string]any) map[string]any {
	if a == nil {
		return map[string]any{}
	}
	return a
}

func modelError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"message": msg, "type": "invalid_request_error"}})
}

// Functions lists the functions the scripts call, sorted, for checks.
func Functions(scripts map[string][]Turn) []string {
	seen := map[string]bool{}
	for _, s := range scripts {
		for _, t := range s {
			for _, c := range t.Calls {
				seen[c.Function] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for f := range seen {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// ToolFunction is the function name corral offers a tool under:
// "erp.list_orders" is "erp__list_orders".
func ToolFunction(tool string) string { return strings.ReplaceAll(tool, ".", "__") }
