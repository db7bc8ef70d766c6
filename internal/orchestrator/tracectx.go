package orchestrator

import (
	"context"
	"crypto/sha256"

	"go.opentelemetry.io/otel/trace"
)

// Every step of a task tree is traced in one trace, whatever replica or
// restart runs it: the trace id is derived from the tree's root task when
// the root is created, and every task opened under a parent takes its
// parent's, kept in the record (Task.TraceID) so that the API can link a
// task to its trace and a worker that takes a task over from its journal
// goes on in the same trace. A step's action span is a child of a span id
// derived from its task, which is not itself stored: `corral trace` shows
// each task's actions as trees of their own, in time order.

// TraceID is the trace of the task tree whose root task is root.
func TraceID(root string) trace.TraceID {
	sum := sha256.Sum256([]byte("corral/task-tree/" + root))
	var id trace.TraceID
	copy(id[:], sum[:16])
	return id
}

// maxTraceDepth bounds the walk up a task's parents to its root.
const maxTraceDepth = 100

// traceOf is the trace of t's tree: the one its record carries or, for a
// record from before tasks carried it, the one derived from the top of its
// tree as the mirror knows it.
func (s *Store) traceOf(t *Task) trace.TraceID {
	if id, err := trace.TraceIDFromHex(t.TraceID); err == nil {
		return id
	}
	root := t
	for range maxTraceDepth {
		if root.Parent == "" {
			break
		}
		p, ok := s.Get(root.Parent)
		if !ok {
			break
		}
		root = p
	}
	return TraceID(root.ID)
}

// newTrace is the trace of a task about to be opened under parent ("" for
// none) in the tree whose root is root: its parent's, so that a tree keeps
// one trace whatever later becomes of its records; else the root's.
func (s *Store) newTrace(parent, root string) string {
	if parent != "" {
		if p, ok := s.Get(parent); ok {
			return s.traceOf(p).String()
		}
	}
	return TraceID(root).String()
}

// traceContext puts t's tree's trace into ctx as the remote parent of the
// actions its steps make.
func (w *Worker) traceContext(ctx context.Context, t *Task) context.Context {
	sum := sha256.Sum256([]byte("corral/task/" + t.ID))
	var span trace.SpanID
	copy(span[:], sum[:8])
	return trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: w.store.traceOf(t), SpanID: span, TraceFlags: trace.FlagsSampled, Remote: true,
	}))
}
