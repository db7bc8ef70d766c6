package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/redact"
	"github.com/corral-dev/corral/internal/telemetry"
)

// Tracing: every action is a span (named for the GenAI operation and the
// target, "execute_tool crm.get_order", "chat smart") under the caller's
// trace, with a child span for each stage that did work. Attributes are set
// when a span ends, from what the stage learned, and only when the span
// records: a trace that is not sampled costs next to nothing.

// startAction opens an action's span.
func (p *Pipeline) startAction(ctx context.Context, op, target string, a Action) (context.Context, trace.Span) {
	ctx, span := p.tracer.Start(ctx, telemetry.ActionSpanName(op, truncate(target, 256)))
	if span.IsRecording() {
		span.SetAttributes(
			telemetry.AttrGenAIOperationName.String(op),
			telemetry.AttrEdge.String(a.Edge),
		)
	}
	return ctx, span
}

// endAction closes an action's span with what its audit record says.
func endAction(span trace.Span, rec *audit.Record, err error) {
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 12)
		attrs = append(attrs, telemetry.AttrAuditID.String(rec.ID))
		if rec.Agent != "" {
			attrs = append(attrs, telemetry.AttrAgent.String(rec.Agent), telemetry.AttrGenAIAgentName.String(rec.Agent))
		}
		if rec.Principal != "" {
			attrs = append(attrs, telemetry.AttrPrincipal.String(rec.Principal))
		}
		if rec.Task != "" {
			attrs = append(attrs, telemetry.AttrTask.String(rec.Task))
		}
		switch rec.Kind {
		case "tool":
			attrs = append(attrs, telemetry.AttrGenAIToolName.String(rec.Target))
			if rec.Source != "" {
				attrs = append(attrs, telemetry.AttrToolSource.String(rec.Source))
			}
			if rec.Replayed {
				attrs = append(attrs, telemetry.AttrReplayed.Bool(true))
			}
		case "model":
			attrs = append(attrs, telemetry.AttrGenAIRequestModel.String(rec.Target))
			if m := rec.Model; m != nil && m.Target != "" {
				attrs = append(attrs,
					telemetry.AttrGenAIResponseModel.String(m.Target),
					telemetry.AttrGenAIUsageInputTokens.Int(m.PromptTokens),
					telemetry.AttrGenAIUsageOutputTokens.Int(m.CompletionTokens),
					telemetry.AttrCost.Float64(m.Cost),
				)
				if m.FinishReason != "" {
					attrs = append(attrs, telemetry.AttrGenAIResponseFinishReasons.StringSlice([]string{m.FinishReason}))
				}
			}
		}
		span.SetAttributes(attrs...)
		var pe *problem.Error
		switch {
		case err != nil && errors.As(err, &pe):
			telemetry.SetCode(span, pe.Code)
			span.SetStatus(codes.Error, pe.Code)
		case err != nil:
			span.SetStatus(codes.Error, "internal")
		case rec.Status == "error":
			span.SetStatus(codes.Error, rec.Reason)
		}
	}
	span.End()
}

// stageSpan is a stage's span, with what its duration metric needs.
type stageSpan struct {
	trace.Span
	name  string
	start time.Time
}

// stage opens a stage's span under the action's.
func (p *Pipeline) stage(ctx context.Context, name string) (context.Context, stageSpan) {
	ctx, span := p.tracer.Start(ctx, name)
	return ctx, stageSpan{Span: span, name: name, start: p.now()}
}

// stageDone records a stage that has already run, from start until now:
// for stages whose span is worth keeping only once they turn out to have
// done something (a budget that covered the call, a redaction that found
// values).
func (p *Pipeline) stageDone(ctx context.Context, name string, start time.Time, attrs ...attribute.KeyValue) {
	end := p.now()
	_, span := p.tracer.Start(ctx, name, trace.WithTimestamp(start), trace.WithAttributes(attrs...))
	span.End(trace.WithTimestamp(end))
	p.Metrics.stageTime(name, end.Sub(start))
}

// endStage closes a stage's span, marking it failed when err is set, and
// counts its duration.
func (p *Pipeline) endStage(span stageSpan, err error) {
	p.Metrics.stageTime(span.name, p.now().Sub(span.start))
	if err != nil && span.IsRecording() {
		var pe *problem.Error
		if errors.As(err, &pe) {
			telemetry.SetCode(span, pe.Code)
			span.SetStatus(codes.Error, pe.Code)
		} else {
			// Not err's text: a provider's error may quote a URL with its query.
			span.SetStatus(codes.Error, attemptError(err))
		}
	}
	span.End()
}

// redactCounts are a session's counts as span attributes.
func redactCounts(s *redact.Session) []attribute.KeyValue {
	counts := s.Counts()
	attrs := make([]attribute.KeyValue, 0, len(counts))
	for t, n := range counts {
		attrs = append(attrs, telemetry.RedactCount(string(t), n))
	}
	return attrs
}

// capture records content on a span, when the agent or the tool source
// asked for it: masked by the built-in detectors first, then capped.
func (p *Pipeline) capture(span trace.Span, on bool, key attribute.Key, v any) {
	if !on || !span.IsRecording() {
		return
	}
	raw, ok := v.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(v); err != nil {
			return
		}
	}
	s := p.masker.NewSession(redact.Mask)
	masked, err := s.RedactJSON(raw)
	if err != nil {
		masked = []byte(s.Redact(string(raw)))
	}
	telemetry.CaptureContent(span, key, string(masked), 0)
}
