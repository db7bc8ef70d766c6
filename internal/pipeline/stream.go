package pipeline

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/redact"
	"github.com/corral-dev/corral/internal/telemetry"
)

// chatStream starts a streamed completion on the first target that gives a
// first chunk: a failure before it falls back like a plain call; after it,
// the agent has part of an answer and the stream ends with the error.
func (p *Pipeline) chatStream(ctx context.Context, span trace.Span, rec *audit.Record, start time.Time, mc *modelCall, req *llm.ChatRequest) (*ChatOutcome, error) {
	for i, target := range mc.plan.Attempts {
		preq, sess, err := p.prepareAttempt(ctx, target, mc, rec, req)
		if err != nil {
			return nil, err
		}
		// Usage comes last, whatever the agent asked: budgets settle from it.
		preq.StreamOptions = &llm.StreamOptions{IncludeUsage: true}
		ictx, ispan := p.attemptSpan(ctx, target)
		src, err := target.Provider.ChatStream(ictx, preq)
		var first *llm.ChatChunk
		if err == nil {
			if first, err = src.Recv(); err != nil && !errors.Is(err, io.EOF) {
				_ = src.Close()
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			p.endStage(ispan, err)
			if err := mc.attemptFailed(ctx, rec, target, err, i == len(mc.plan.Attempts)-1); err != nil {
				return nil, err
			}
			continue
		}
		mc.sent = true
		s := &ChatStream{
			p: p, ctx: ctx, span: span, invokeSpan: ispan, rec: rec, start: start, mc: mc, target: target, req: req, preq: preq, sess: sess, src: src,
			wantUsage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage,
			text:      map[int]*redact.Restorer{},
			args:      map[[2]int]*strings.Builder{},
		}
		if first != nil {
			s.take(first)
		} else {
			s.end(nil)
		}
		return &ChatOutcome{Target: target.Name, Stream: s}, nil
	}
	return nil, problem.New(http.StatusServiceUnavailable, problem.UpstreamUnavailable, "model "+mc.model.Name+" has no target to call")
}

// ChatStream is a streamed answer on its way to the agent: placeholders are
// restored as the text flows (a placeholder split across chunks is held back
// until it is whole), tool call arguments are restored whole, when their
// choice finishes, and when the stream ends the call is settled from the
// final usage and audited. The edge must Close it.
type ChatStream struct {
	p   *Pipeline
	ctx context.Context
	// span is the action's, invokeSpan the answering target's: both end
	// with the stream.
	span       trace.Span
	invokeSpan stageSpan
	rec        *audit.Record
	start      time.Time
	mc         *modelCall
	target     *llm.Model
	req        *llm.ChatRequest // as the agent sent it
	preq       *llm.ChatRequest // as the provider got it
	sess       *redact.Session  // nil: nothing redacted, chunks pass as they are
	src        llm.Stream

	acc llm.Accumulator // the provider's chunks, for usage and the audit
	// out is the chunks as the agent gets them (restored), folded into the
	// answer an Idempotency-Key's record keeps.
	out       llm.Accumulator
	id        string
	created   int64
	wantUsage bool
	text      map[int]*redact.Restorer    // by choice
	args      map[[2]int]*strings.Builder // by choice and tool call: redacted arguments so far
	queue     []*llm.ChatChunk
	ended     bool
	err       error
	auditID   string
}

// Recv returns the next chunk for the agent, or io.EOF at the end. An
// error after the stream started is a *problem.Error.
func (s *ChatStream) Recv() (*llm.ChatChunk, error) {
	for len(s.queue) == 0 {
		if s.ended {
			if s.err != nil {
				return nil, s.err
			}
			return nil, io.EOF
		}
		c, err := s.src.Recv()
		switch {
		case errors.Is(err, io.EOF):
			s.flush()
			s.end(nil)
		case err != nil && errors.Is(s.ctx.Err(), context.Canceled):
			// The agent went away: nothing failed but the connection.
			s.Abandon("the agent closed the stream before its end")
		case err != nil && s.ctx.Err() != nil:
			s.end(callEnded(s.ctx, s.target.Name))
		case err != nil:
			s.end(modelProblem(s.target.Name, err))
		default:
			s.take(c)
		}
	}
	c := s.queue[0]
	s.queue = s.queue[1:]
	return c, nil
}

// Close ends the stream. Closing before the end (the agent went away)
// still settles what was used and writes the audit record.
func (s *ChatStream) Close() error {
	s.Abandon("the agent closed the stream before its end")
	return s.src.Close()
}

// Abandon ends a stream the agent left before its end, saying why in the
// audit record (code client_closed: not the provider's failure). Unless the
// provider already reported its usage, the worst case stays charged. It
// does nothing once the stream has ended.
func (s *ChatStream) Abandon(why string) {
	if s.ended {
		return
	}
	s.rec.Status, s.rec.Code, s.rec.Reason = "error", problem.ClientClosed, why
	s.end(nil)
}

// AuditID names the call's audit record once the stream has ended.
func (s *ChatStream) AuditID() string { return s.auditID }

// Target is the concrete model that answers.
func (s *ChatStream) Target() string { return s.target.Name }

// take turns a provider chunk into the chunks the agent gets.
func (s *ChatStream) take(c *llm.ChatChunk) {
	s.acc.Add(c)
	if s.id == "" {
		s.id, s.created = c.ID, c.Created
	}
	c.Model = s.mc.model.Name
	if len(c.Choices) == 0 {
		if c.Usage == nil || s.wantUsage {
			s.push(c)
		}
		return
	}
	if !s.wantUsage {
		c.Usage = nil
	}
	if s.sess == nil {
		s.push(c)
		return
	}
	for i := range c.Choices {
		ch := &c.Choices[i]
		if ch.Delta.Content != nil {
			text := s.restorer(ch.Index).Write(*ch.Delta.Content)
			ch.Delta.Content = &text
		}
		if len(ch.Delta.ToolCalls) > 0 {
			kept := ch.Delta.ToolCalls[:0]
			for _, tc := range ch.Delta.ToolCalls {
				key := [2]int{ch.Index, tc.Index}
				b := s.args[key]
				if b == nil {
					b = new(strings.Builder)
					s.args[key] = b
				}
				b.WriteString(tc.Function.Arguments)
				if tc.ID == "" && tc.Function.Name == "" {
					continue // arguments only: sent whole at the end
				}
				tc.Function.Arguments = ""
				kept = append(kept, tc)
			}
			ch.Delta.ToolCalls = kept
		}
		if ch.FinishReason != nil {
			if rest := s.rest(ch.Index); rest != nil {
				s.push(rest)
			}
		}
	}
	s.push(c)
}

// push queues a chunk for the agent.
func (s *ChatStream) push(c *llm.ChatChunk) {
	s.queue = append(s.queue, c)
	if s.mc.claim != nil {
		s.out.Add(c)
	}
}

// restorer returns the choice's streaming restorer.
func (s *ChatStream) restorer(choice int) *redact.Restorer {
	r := s.text[choice]
	if r == nil {
		r = s.sess.NewRestorer()
		s.text[choice] = r
	}
	return r
}

// rest is a chunk with what a choice still holds back: text a restorer
// kept and the tool calls' arguments, restored. Nil when there is none.
func (s *ChatStream) rest(choice int) *llm.ChatChunk {
	var d llm.Delta
	if r := s.text[choice]; r != nil {
		if text := r.Flush(); text != "" {
			d.Content = &text
		}
		delete(s.text, choice)
	}
	for key, b := range s.args {
		if key[0] != choice {
			continue
		}
		d.ToolCalls = append(d.ToolCalls, llm.ToolCallDelta{Index: key[1], Function: llm.FunctionCallDelta{Arguments: restoreArguments(s.sess, s.target, b.String())}})
		delete(s.args, key)
	}
	if d.Content == nil && d.ToolCalls == nil {
		return nil
	}
	slices.SortFunc(d.ToolCalls, func(a, b llm.ToolCallDelta) int { return cmp.Compare(a.Index, b.Index) })
	return &llm.ChatChunk{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.mc.model.Name,
		Choices: []llm.ChunkChoice{{Index: choice, Delta: d}}}
}

// flush queues what every choice still holds back, at the stream's end.
func (s *ChatStream) flush() {
	if s.sess == nil {
		return
	}
	choices := map[int]bool{}
	for c := range s.text {
		choices[c] = true
	}
	for key := range s.args {
		choices[key[0]] = true
	}
	for c := range choices {
		if rest := s.rest(c); rest != nil {
			s.push(rest)
		}
	}
}

// end settles the call and writes its audit record, once.
func (s *ChatStream) end(err error) {
	if s.ended {
		return
	}
	s.ended, s.err = true, err
	s.p.endStage(s.invokeSpan, err)
	resp := s.acc.Response()
	s.p.capture(s.span, s.mc.capture, telemetry.AttrGenAIInputMessages, s.preq.Messages)
	s.p.capture(s.span, s.mc.capture, telemetry.AttrGenAIOutputMessages, resp.Choices)
	// However it ended, the stream was generated up to here: charge what
	// the provider reported, or an estimate of what was streamed.
	usage, estimated := responseUsage(resp, s.preq)
	s.p.settle(s.ctx, s.rec, s.mc, s.target, usage, estimated)
	if len(resp.Choices) > 0 {
		s.rec.Model.FinishReason = resp.Choices[0].FinishReason
	}
	if err == nil && s.rec.Status == "" {
		s.p.shadow(s.ctx, s.mc, s.req, s.target.Name, resp)
	}
	s.rec.Source, s.rec.Model.Target = s.target.Name, s.target.Name
	switch {
	case s.mc.claim == nil:
	case err == nil && s.rec.Status == "":
		// Complete: a retry with its Idempotency-Key replays it, whatever
		// becomes of its delivery.
		answer := s.out.Response()
		answer.Usage = resp.Usage
		s.p.recordModel(s.ctx, s.mc, s.rec, recordChat(s.target.Name, answer, s.rec.Model.Cost, s.start))
	default:
		// Cut or failed: nothing whole to replay, and the agent has at most
		// part of an answer; a retry runs the call again.
		s.p.releaseModel(s.ctx, s.mc, false)
	}
	s.auditID, s.err = s.p.finishRecord(s.ctx, s.rec, s.start, err)
	endAction(s.span, s.rec, s.err)
}
