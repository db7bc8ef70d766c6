package pipeline

import (
	"context"
	"encoding/json"
	"unicode/utf8"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/redact"
)

// maxShadows bounds the shadow calls running at once; past it, shadows are
// skipped (and logged): comparing a candidate must never slow the answers.
const maxShadows = 32

// maxShadowText caps each answer kept in a shadow's audit record.
const maxShadowText = 4096

// shadow sends a copy of an answered call to each of the route's shadow
// targets, in the background. Their answers are recorded, never returned.
func (p *Pipeline) shadow(ctx context.Context, mc *modelCall, req *llm.ChatRequest, answered string, primary *llm.ChatResponse) {
	for _, t := range mc.plan.Shadows {
		select {
		case p.shadowSlot <- struct{}{}:
		default:
			p.logger.WarnContext(ctx, "too many shadow calls running; this one is skipped", "model", mc.model.Name, "shadow", t.Name)
			continue
		}
		p.shadows.Add(1)
		go func() {
			defer func() {
				<-p.shadowSlot
				p.shadows.Done()
			}()
			p.runShadow(context.WithoutCancel(ctx), mc, t, req, answered, primary)
		}()
	}
}

// shadowDetail is what a shadow's audit record keeps for comparison.
type shadowDetail struct {
	// Of is the model the agent asked for; Primary the target that answered it.
	Of      string `json:"of"`
	Primary string `json:"primary,omitempty"`
	// Answer is the shadow's answer as the model wrote it (placeholders
	// are not restored), with personal data masked and capped; only for
	// an agent whose captureContent is on. AnswerChars is its length in
	// characters, always kept, for comparison.
	Answer          string `json:"answer,omitempty"`
	AnswerChars     int    `json:"answer_chars,omitempty"`
	PrimaryTokens   int    `json:"primary_completion_tokens,omitempty"`
	PrimaryFinished string `json:"primary_finish_reason,omitempty"`
}

func (p *Pipeline) runShadow(ctx context.Context, mc *modelCall, t *llm.Model, req *llm.ChatRequest, answered string, primary *llm.ChatResponse) {
	start := p.now()
	rec := &audit.Record{
		Time: start.UTC(), Kind: "model", Event: "shadow", Target: t.Name, Source: t.Name, Agent: mc.caller.Agent,
		Credential: mc.caller.credential(), Edge: "shadow", Model: &audit.ModelCall{Target: t.Name},
	}
	if mc.caller.Principal != nil {
		rec.Principal = mc.caller.Principal.Subject
	}
	detail := shadowDetail{Of: mc.model.Name, Primary: answered}
	if primary != nil {
		if len(primary.Choices) > 0 {
			detail.PrimaryFinished = primary.Choices[0].FinishReason
		}
		if primary.Usage != nil {
			detail.PrimaryTokens = primary.Usage.CompletionTokens
		}
	}
	err := func() error {
		sub := mc.subject
		sub.Models = []string{mc.model.Name, t.Name}
		sc := &modelCall{prompt: mc.prompt, outCap: mc.outCap}
		if p.Budgets != nil {
			var err error
			if sc.reservation, err = p.Budgets.Reserve(ctx, sub, sc.worstOn(t)); err != nil {
				return budgetProblem(err)
			}
		}
		defer sc.settleFailed(ctx, p, rec) // a no-op once settled
		sess, err := p.session(t, mc.obligations, rec.Model)
		if err != nil {
			return err
		}
		preq := redactRequest(req, sess)
		preq.Stream, preq.StreamOptions = false, nil
		setOutputCap(preq, sc.outCap(t), t)
		noteRedactions(rec.Model, sess)
		cctx, cancel := context.WithTimeout(ctx, t.Spec.TimeoutOrDefault())
		defer cancel()
		resp, err := t.Provider.Chat(cctx, preq)
		if err != nil {
			return sc.attemptFailed(ctx, rec, t, err, true)
		}
		usage, estimated := responseUsage(resp, preq)
		p.settle(ctx, rec, sc, t, usage, estimated)
		if len(resp.Choices) > 0 {
			rec.Model.FinishReason = resp.Choices[0].FinishReason
			if c := resp.Choices[0].Message.Content; c != nil {
				detail.Answer, detail.AnswerChars = p.shadowAnswer(mc, c.String())
			}
		}
		return nil
	}()
	rec.Detail, _ = json.Marshal(detail)
	if _, err := p.finishRecord(ctx, rec, start, err); err != nil {
		p.logger.DebugContext(ctx, "shadow call failed", "shadow", t.Name, "err", err)
	}
}

// shadowAnswer is what the audit keeps of a shadow's answer: nothing of its
// text unless the agent's captureContent is on, and then masked by the
// built-in detectors before it is capped (so that no value is cut in two
// and missed). The audit is append-only and hash-chained: what is stored
// in clear cannot be removed later without breaking the chain.
func (p *Pipeline) shadowAnswer(mc *modelCall, answer string) (string, int) {
	n := utf8.RuneCountInString(answer)
	if !mc.agentCapture {
		return "", n
	}
	return truncate(p.masker.NewSession(redact.Mask).Redact(answer), maxShadowText), n
}
