package orchestrator

import (
	"context"
	"crypto/sha256"

	"go.opentelemetry.io/otel/trace"
)

// Every step of a task tree is traced in one trace, whatever replica or
// restart runs it: the trace id is derived from the tree's root task, so
// nothing needs storing and a worker that takes a task over from its
// journal goes on in the same trace. A step's action span is a child of a
// span id derived from its task, which is not itself stored: `corral trace`
// shows each task's actions as trees of their own, in time order.

// TraceID is the trace of the task tree whose root task is root.
func TraceID(root string) trace.TraceID {
	sum := sha256.Sum256([]byte("corral/task-tree/" + root))
	var id trace.TraceID
	copy(id[:], sum[:16])
	return id
}

// maxTraceDepth bounds the walk up a task's parents to its root.
const maxTraceDepth = 100

// traceContext puts t's tree's trace into ctx as the remote parent of the
// actions its steps make.
func (w *Worker) traceContext(ctx context.Context, t *Task) context.Context {
	root := t
	for range maxTraceDepth {
		if root.Parent == "" {
			break
		}
		p, ok := w.store.Get(root.Parent)
		if !ok {
			break
		}
		root = p
	}
	sum := sha256.Sum256([]byte("corral/task/" + t.ID))
	var span trace.SpanID
	copy(span[:], sum[:8])
	return trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: TraceID(root.ID), SpanID: span, TraceFlags: trace.FlagsSampled, Remote: true,
	}))
}
