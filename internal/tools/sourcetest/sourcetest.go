// Package sourcetest is the conformance kit for tools.Source: every kind of
// tool source (OpenAPI, MCP over HTTP, MCP over stdio) runs Run against an
// upstream that offers the same three standard tools, so the catalogue and
// the gateway can rely on one behaviour whatever the source.
//
// The standard upstream tools a Fixture's source must offer:
//
//   - echo: input an object with a required string property "text"; answers
//     structured {"text": <the same text>}; annotated read-only and idempotent.
//   - fail: input an object with no required properties; the tool runs and
//     reports failure (Result.IsError), which is not a Go error.
//   - slow: input {"ms": integer}; waits that long, then answers {"ok": true},
//     or stops early when its request is cancelled.
package sourcetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/tools"
)

// Fixture builds a source named "t" (tools named "t.<tool>") whose upstream
// offers the standard tools, and cleans up with t.Cleanup. Run calls it once
// per check, so each check has a fresh source; the Close check closes its
// source itself, so the fixture's cleanup may close it a second time.
type Fixture func(t *testing.T) tools.Source

// slowCancelAfter is when the slow check cancels its call; promptly is how
// soon after that the call must have returned. The tool itself would take
// 5 s, so a source that ignores cancellation fails clearly.
const (
	slowCancelAfter = 50 * time.Millisecond
	promptly        = 2 * time.Second
	slowMillis      = 5000
	concurrentCalls = 20
)

// Run checks that the fixture's source lists the standard tools, calls them,
// honours cancellation, serves concurrent calls and closes cleanly.
func Run(t *testing.T, fixture Fixture) {
	t.Helper()
	t.Run("Tools", func(t *testing.T) { testTools(t, fixture(t)) })
	t.Run("Echo", func(t *testing.T) { testEcho(t, fixture(t)) })
	t.Run("Fail", func(t *testing.T) { testFail(t, fixture(t)) })
	t.Run("Slow", func(t *testing.T) { testSlow(t, fixture(t)) })
	t.Run("SlowCancelled", func(t *testing.T) { testSlowCancelled(t, fixture(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, fixture(t)) })
	t.Run("Close", func(t *testing.T) { testClose(t, fixture(t)) })
}

func testTools(t *testing.T, src tools.Source) {
	list := src.Tools()
	seen := make(map[string]bool, len(list))
	for _, tool := range list {
		if seen[tool.Name] {
			t.Errorf("Tools() lists %q twice", tool.Name)
		}
		seen[tool.Name] = true
		if !strings.HasPrefix(tool.Name, "t.") {
			t.Errorf("Tools() has %q, want every name to start with %q", tool.Name, "t.")
		}
	}
	for _, name := range []string{"t.echo", "t.fail", "t.slow"} {
		tool := find(t, src, name)
		if tool.Source != "t" {
			t.Errorf("tool %s: Source = %q, want %q", name, tool.Source, "t")
		}
		var schema map[string]any
		if err := json.Unmarshal(tool.InputSchema, &schema); err != nil {
			t.Errorf("tool %s: InputSchema %s is not a JSON object: %v", name, tool.InputSchema, err)
		} else if schema["type"] != "object" {
			t.Errorf("tool %s: InputSchema type = %v, want %q", name, schema["type"], "object")
		}
	}
	echo := find(t, src, "t.echo")
	if !echo.Annotations.ReadOnly || !echo.Annotations.Idempotent {
		t.Errorf("tool t.echo: Annotations = %+v, want ReadOnly and Idempotent", echo.Annotations)
	}
}

func testEcho(t *testing.T, src tools.Source) {
	const text = "héllo, corral \"quoted\""
	res := call(t, src, "t.echo", map[string]any{"text": text})
	if res.IsError {
		t.Errorf("Call(t.echo) IsError = true, want false (result %+v)", res)
	}
	if res.Size <= 0 {
		t.Errorf("Call(t.echo) Size = %d, want > 0", res.Size)
	}
	if diff := jsonDiff(map[string]any{"text": text}, res.Structured); diff != "" {
		t.Errorf("Call(t.echo) Structured mismatch (-want +got):\n%s", diff)
	}
}

func testFail(t *testing.T, src tools.Source) {
	res := call(t, src, "t.fail", map[string]any{})
	if !res.IsError {
		t.Errorf("Call(t.fail) IsError = false, want true (result %+v)", res)
	}
}

func testSlow(t *testing.T, src tools.Source) {
	res := call(t, src, "t.slow", map[string]any{"ms": 10})
	if res.IsError {
		t.Errorf("Call(t.slow, 10ms) IsError = true, want false (result %+v)", res)
	}
	if diff := jsonDiff(map[string]any{"ok": true}, res.Structured); diff != "" {
		t.Errorf("Call(t.slow, 10ms) Structured mismatch (-want +got):\n%s", diff)
	}
}

func testSlowCancelled(t *testing.T, src tools.Source) {
	tool := find(t, src, "t.slow")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	timer := time.AfterFunc(slowCancelAfter, cancel)
	defer timer.Stop()
	start := time.Now()
	res, err := src.Call(ctx, tools.Call{Tool: tool, Arguments: mustJSON(t, map[string]any{"ms": slowMillis})})
	elapsed := time.Since(start)
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Call(t.slow, cancelled) = %+v, %v; want an error that is context.Canceled or context.DeadlineExceeded", res, err)
	}
	if elapsed > slowCancelAfter+promptly {
		t.Errorf("Call(t.slow, cancelled after %v) returned after %v, want within %v of the cancellation", slowCancelAfter, elapsed, promptly)
	}
}

func testConcurrent(t *testing.T, src tools.Source) {
	tool := find(t, src, "t.echo")
	var wg sync.WaitGroup
	for i := range concurrentCalls {
		text := fmt.Sprintf("call %d", i)
		args := mustJSON(t, map[string]any{"text": text})
		wg.Go(func() {
			res, err := src.Call(t.Context(), tools.Call{Tool: tool, Arguments: args})
			if err != nil {
				t.Errorf("Call(t.echo, %q) error: %v", text, err)
				return
			}
			if res.IsError {
				t.Errorf("Call(t.echo, %q) IsError = true, want false", text)
			}
			if diff := jsonDiff(map[string]any{"text": text}, res.Structured); diff != "" {
				t.Errorf("Call(t.echo, %q) Structured mismatch (-want +got):\n%s", text, diff)
			}
		})
	}
	wg.Wait()
}

func testClose(t *testing.T, src tools.Source) {
	call(t, src, "t.echo", map[string]any{"text": "before close"})
	if err := src.Close(); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
}

// find returns the named tool or stops the test.
func find(t *testing.T, src tools.Source, name string) *tools.Tool {
	t.Helper()
	for _, tool := range src.Tools() {
		if tool.Name == name {
			return &tool
		}
	}
	var names []string
	for _, tool := range src.Tools() {
		names = append(names, tool.Name)
	}
	t.Fatalf("Tools() = %v, want one named %q", names, name)
	return nil
}

// call calls a tool and stops the test on a Go error.
func call(t *testing.T, src tools.Source, name string, args map[string]any) *tools.Result {
	t.Helper()
	tool := find(t, src, name)
	res, err := src.Call(t.Context(), tools.Call{Tool: tool, Arguments: mustJSON(t, args)})
	if err != nil {
		t.Fatalf("Call(%s, %v) error: %v", name, args, err)
	}
	if res == nil {
		t.Fatalf("Call(%s, %v) = nil result and no error", name, args)
	}
	return res
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %v: %v", v, err)
	}
	return b
}

// jsonDiff compares want with got as JSON values, so that key order and
// number spelling do not matter.
func jsonDiff(want any, got json.RawMessage) string {
	b, err := json.Marshal(want)
	if err != nil {
		return err.Error()
	}
	var w, g any
	if err := json.Unmarshal(b, &w); err != nil {
		return err.Error()
	}
	if err := json.Unmarshal(got, &g); err != nil {
		return fmt.Sprintf("got %q, not JSON: %v", got, err)
	}
	return cmp.Diff(w, g)
}
