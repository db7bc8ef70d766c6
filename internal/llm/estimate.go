package llm

import "unicode/utf8"

// Token estimates stand in for a tokenizer where corral needs a count before
// the provider gives one: budget reservations before a call, and the usage
// the scripted provider reports. They are deliberately simple and generous
// for every script: ASCII text runs at about four characters per token in
// the GPT and Claude tokenizers, but other scripts run at far more tokens
// per character (Chinese and Japanese at about 0.7–1.5, emoji at 1–3 per
// code point), because those tokenizers work on UTF-8 bytes and have fewer
// merges for them. So ASCII counts a quarter token a character and any other
// character one token for each UTF-8 byte past its first: 1 for Latin
// accents, Greek, Cyrillic, Hebrew, Arabic; 2 for CJK, kana, Hangul, Indic
// and Thai; 3 for emoji and the rarer CJK. (A byte-level tokenizer never
// spends more than one token a byte, the hard ceiling; the estimate stays
// below it to not over-reserve everyday text threefold.) The provider's own
// usage, when it comes, is what budgets are settled with.
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

// EstimateTokens estimates the tokens of s: a quarter for each ASCII
// character and, for any other character, one for each of its UTF-8 bytes
// past the first, rounded up, so at least 1 for any non-empty string and 0
// for "". An invalid byte counts as a non-ASCII character of one byte: one
// token.
func EstimateTokens(s string) int {
	quarters := 0
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			quarters++
			i++
			continue
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		quarters += 4 * max(size-1, 1)
		i += size
	}
	return (quarters + 3) / 4
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
