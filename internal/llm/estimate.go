package llm

import "unicode/utf8"

// Token estimates stand in for a tokenizer where corral needs a count before
// the provider gives one: budget reservations before a call, and the usage
// the scripted provider reports. They are deliberately simple and slightly
// generous: English text runs at about four characters per token in the
// GPT and Claude tokenizers, code and other languages at fewer, so a
// reservation made from them is rarely too small. The provider's own usage,
// when it comes, is what budgets are settled with.
const (
	// perMessageTokens is the framing each message costs (role, separators),
	// as OpenAI documents for its chat format.
	perMessageTokens = 4
	// replyTokens primes the assistant's answer.
	replyTokens = 3
	// nonTextPartTokens is charged for an image or audio part, whatever its
	// size: a high-detail 1024×1024 image costs 765 tokens at OpenAI. Counting
	// a base64 image by its characters would overstate it a hundredfold.
	nonTextPartTokens = 765
)

// EstimateTokens estimates the tokens of s: a quarter of its characters
// (runes), rounded up, so at least 1 for any non-empty string and 0 for "".
func EstimateTokens(s string) int {
	return (utf8.RuneCountInString(s) + 3) / 4
}

// EstimatePrompt estimates the prompt tokens of a request, for budget
// reservations: every message's text, name and tool calls with their
// framing, a fixed amount per image or audio part, and the tools' names,
// descriptions and parameter schemas.
func EstimatePrompt(req *ChatRequest) int {
	n := replyTokens
	for _, m := range req.Messages {
		n += perMessageTokens + EstimateTokens(m.Name) + EstimateTokens(m.ToolCallID)
		if c := m.Content; c != nil {
			if c.Parts == nil {
				n += EstimateTokens(c.Text)
			}
			for _, p := range c.Parts {
				if p.Type == "text" {
					n += EstimateTokens(p.Text)
				} else {
					n += nonTextPartTokens
				}
			}
		}
		for _, tc := range m.ToolCalls {
			n += EstimateTokens(tc.Function.Name) + EstimateTokens(tc.Function.Arguments)
		}
	}
	for _, t := range req.Tools {
		n += EstimateTokens(t.Function.Name) + EstimateTokens(t.Function.Description) + EstimateTokens(string(t.Function.Parameters))
	}
	return n
}
