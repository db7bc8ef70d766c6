package redact

import (
	"strings"
	"testing"
)

// prompt2KB is a realistic 2 KB support prompt with a few personal values.
var prompt2KB = func() string {
	const body = `You are a support assistant for Acme Payments. Answer politely and keep it short.

Customer message (ticket #58213, received 2024-03-18 09:42 UTC):
"Hello, my name is Dana and I was charged twice for my subscription last month. The card on file is
4111 1111 1111 1111 and the refund should go to my account DE89 3704 0044 0532 0130 00. You can reach
me at dana.k+billing@example.com or on +49 30 1234567 between 9 and 5. I logged in from 203.0.113.42
yesterday and the dashboard showed version 4.12.0 with an error code E-1042. My previous ticket was
#57991 and it was closed without an answer. Please fix this before the 25th, otherwise I will cancel.
Thanks, Dana"

Internal notes:
- Plan: Pro (annual), 12 seats, renewal on 2025-01-01, invoice INV-2024-000318 for 1,188.00 EUR.
- Risk score 0.12; no chargebacks; account created 2019-06-03; region eu-central-1.
- Last deploy of billing service: build 2024.03.17-rc2, commit 9f2c1ab, rollout 100%.

Instructions: summarise the problem in two sentences, say what refund applies under policy R-7
(duplicate charges are refunded in full within 5 business days), and draft a reply to the customer.
Do not promise anything the policy does not allow. Do not repeat full card numbers or IBANs.
`
	var b strings.Builder
	for b.Len() < 2048 {
		b.WriteString(body)
	}
	return b.String()[:2048]
}()

func BenchmarkFind2KB(b *testing.B) {
	r := newTestRedactor(b)
	b.SetBytes(int64(len(prompt2KB)))
	for b.Loop() {
		r.Find(prompt2KB)
	}
}

func BenchmarkRedact2KB(b *testing.B) {
	r := newTestRedactor(b)
	if got := len(r.Find(prompt2KB)); got < 5 {
		b.Fatalf("Find found %d values in the prompt, want at least 5", got)
	}
	b.SetBytes(int64(len(prompt2KB)))
	for b.Loop() {
		r.NewSession(Reversible).Redact(prompt2KB)
	}
}

func BenchmarkRestorer(b *testing.B) {
	r := newTestRedactor(b)
	s := r.NewSession(Reversible)
	answer := s.Redact(prompt2KB)
	var pieces []string
	for i := 0; i < len(answer); i += 16 {
		pieces = append(pieces, answer[i:min(i+16, len(answer))])
	}
	b.SetBytes(int64(len(answer)))
	for b.Loop() {
		rs := s.NewRestorer()
		for _, p := range pieces {
			rs.Write(p)
		}
		rs.Flush()
	}
}
