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
	// A task whose record carries its trace is traced in it, whatever the
	// mirror knows of its parents.
	carried := &Task{ID: "task_carried", Parent: "task_unknown", TraceID: TraceID(root.ID).String()}
	if got := trace.SpanContextFromContext(w.traceContext(context.Background(), carried)).TraceID(); got != TraceID(root.ID) {
		t.Errorf("a task carrying the root's trace is traced in %v, want %v", got, TraceID(root.ID))
	}
}

// TestNewTrace: a task opened under a parent takes its parent's trace, as
// the parent's record carries it or, for a parent recorded before records
// carried it, as its worker derives it; with no parent it starts its
// root's.
func TestNewTrace(t *testing.T) {
	legacyRoot := &Task{ID: "task_legacy"}
	legacyChild := &Task{ID: "task_legacy_child", Parent: legacyRoot.ID}
	carrying := &Task{ID: "task_carrying", Parent: "task_gone", TraceID: TraceID("task_gone").String()}
	s := &Store{tasks: map[string]mirrored{}}
	for _, tk := range []*Task{legacyRoot, legacyChild, carrying} {
		s.tasks[tk.ID] = mirrored{task: tk}
	}
	for _, tt := range []struct {
		name, parent, root string
		want               trace.TraceID
	}{
		{"no parent", "", "task_new", TraceID("task_new")},
		{"a parent carrying its trace", carrying.ID, "task_gone", TraceID("task_gone")},
		{"a parent carrying its trace, whatever the root says", carrying.ID, "task_other", TraceID("task_gone")},
		{"a legacy parent", legacyChild.ID, legacyRoot.ID, TraceID(legacyRoot.ID)},
		{"a parent this replica has not seen", "task_unseen", "task_root", TraceID("task_root")},
	} {
		if got := s.newTrace(tt.parent, tt.root); got != tt.want.String() {
			t.Errorf("%s: newTrace(%q, %q) = %s, want %s", tt.name, tt.parent, tt.root, got, tt.want)
		}
	}
}
