package audit

// ModelCall is what the audit keeps of a model call.
type ModelCall struct {
	// Target is the concrete model that answered (the route's pick or a
	// fallback); Target of the Record is the model the agent asked for.
	Target string `json:"target,omitempty"`
	// Attempts lists the targets tried, in order, with why each failed:
	// "gpt-eu: HTTP 503".
	Attempts []string `json:"attempts,omitempty"`
	Stream   bool     `json:"stream,omitempty"`
	// Usage as the provider reported it (estimated when it did not).
	PromptTokens     int  `json:"prompt_tokens,omitempty"`
	CompletionTokens int  `json:"completion_tokens,omitempty"`
	Estimated        bool `json:"estimated,omitempty"`
	// Cost from the answering model's pricing.
	Cost float64 `json:"cost,omitempty"`
	// Redacted counts the values redacted from the prompt, by type.
	Redacted map[string]int `json:"redacted,omitempty"`
	// FinishReason is the first choice's.
	FinishReason string `json:"finish_reason,omitempty"`
}
