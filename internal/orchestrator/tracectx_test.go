package orchestrator

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// TestTraceContext: every task of a tree, however deep, is traced in the
// root's trace, each task under a span of its own; another tree has
// another trace.
func TestTraceContext(t *testing.T) {
	root := &Task{ID: "task_root"}
	child := &Task{ID: "task_child", Parent: root.ID}
	grandchild := &Task{ID: "task_grandchild", Parent: child.ID}
	other := &Task{ID: "task_other"}
	w := &Worker{store: &Store{tasks: map[string]mirrored{}}}
	for _, tk := range []*Task{root, child, grandchild, other} {
		w.store.tasks[tk.ID] = mirrored{task: tk}
	}
	spans := map[trace.SpanID]bool{}
	for _, tk := range []*Task{root, child, grandchild} {
		sc := trace.SpanContextFromContext(w.traceContext(context.Background(), tk))
		if sc.TraceID() != TraceID(root.ID) || !sc.IsSampled() || !sc.IsRemote() {
			t.Errorf("traceContext(%s) = %v, want the root's trace %v, sampled, remote", tk.ID, sc.TraceID(), TraceID(root.ID))
		}
		spans[sc.SpanID()] = true
	}
	if len(spans) != 3 {
		t.Errorf("three tasks share %d span ids, want 3", len(spans))
	}
	if got := trace.SpanContextFromContext(w.traceContext(context.Background(), other)).TraceID(); got == TraceID(root.ID) {
		t.Errorf("another tree got the root's trace %v", got)
	}
	// A parent the mirror has not seen yet: the task's own trace, not a panic.
	orphan := &Task{ID: "task_orphan", Parent: "task_unknown"}
	if got := trace.SpanContextFromContext(w.traceContext(context.Background(), orphan)).TraceID(); got != TraceID(orphan.ID) {
		t.Errorf("orphan's trace = %v, want its own %v", got, TraceID(orphan.ID))
	}
}
