package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/orchestrator"
)

// renderStream reads a recorded event stream as follow does and renders
// it at width; it returns the lines and how the stream ended.
func renderStream(ctx context.Context, data []byte, width int) (string, string) {
	events := make(chan orchestrator.Event)
	type result struct {
		final bool
		last  uint64
		err   error
	}
	done := make(chan result, 1)
	go func() {
		defer close(events)
		final, last, err := readEvents(ctx, bytes.NewReader(data), 0, events)
		done <- result{final, last, err}
	}()
	r := newRenderer(width)
	var out strings.Builder
	for ev := range events {
		lines, busy := r.render(ev)
		for _, l := range lines {
			out.WriteString(l + "\n")
		}
		if busy != "" {
			out.WriteString("  (spinner: " + busy + ")\n")
		}
	}
	res := <-done
	return out.String(), fmt.Sprintf("final %v, last event %d, error %v", res.final, res.last, res.err)
}

// TestRenderEvents renders recorded event streams (scribe and asker from
// real runs, hostile by hand: escape sequences, unknown types, unreadable
// answers) and compares them with testdata/tasks/*.golden. Rewrite the
// goldens with go test -run RenderEvents -update.
func TestRenderEvents(t *testing.T) {
	files, err := filepath.Glob("testdata/tasks/*.sse")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recorded streams: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			lines, end := renderStream(t.Context(), data, 80)
			got := lines + "-- " + end + "\n"
			golden := strings.TrimSuffix(file, ".sse") + ".golden"
			if *updateTraceGolden {
				if err := os.WriteFile(golden, []byte(got), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -run RenderEvents -update writes it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("render %s (-want +got):\n%s", file, diff)
			}
			checkLines(t, lines, 80)
		})
	}
}

// checkLines fails if a rendered line is wider than width or carries a
// control character a terminal would act on.
func checkLines(t testing.TB, lines string, width int) {
	t.Helper()
	for l := range strings.SplitSeq(strings.TrimSuffix(lines, "\n"), "\n") {
		limit := width
		if strings.HasPrefix(l, "  (spinner: ") {
			limit = 200 // fit to the width when drawn
		}
		if n := len([]rune(l)); n > limit {
			t.Errorf("line of %d characters, over %d: %q", n, limit, l)
		}
		if strings.ContainsFunc(l, unicode.IsControl) {
			t.Errorf("line carries a control character: %q", l)
		}
	}
}

func TestRenderWidth(t *testing.T) {
	r := newRenderer(30)
	lines, _ := r.render(orchestrator.Event{Type: orchestrator.EvState, State: orchestrator.Failed, Reason: "max_turns", Detail: strings.Repeat("x", 100)})
	if len(lines) != 1 || len([]rune(lines[0])) != 30 || !strings.HasSuffix(lines[0], "…") {
		t.Errorf("render at width 30 = %q, want one line of 30 ending in …", lines)
	}
	if got := newRenderer(0).width; got < 20 {
		t.Errorf("newRenderer(0).width = %d, want a usable minimum", got)
	}
}

func TestLiveViewSpinner(t *testing.T) {
	var b bytes.Buffer
	v := &liveView{w: &b, r: newRenderer(80), tty: true}
	v.show(orchestrator.Event{Type: orchestrator.EvModelCall, Turn: 1, Model: "brain"})
	v.tick()
	v.show(orchestrator.Event{Type: orchestrator.EvModelAnswer, Turn: 1, Message: []byte(`{"role":"assistant","content":"Hi."}`)})
	v.idle()
	want := "⠋ brain is thinking (turn 1)" + "\r\x1b[K" + "⠙ brain is thinking (turn 1)" + "\r\x1b[K" + "  brain, turn 1: Hi.\n"
	if b.String() != want {
		t.Errorf("terminal view wrote %q, want %q", b.String(), want)
	}
	b.Reset()
	plain := &liveView{w: &b, r: newRenderer(80)}
	plain.show(orchestrator.Event{Type: orchestrator.EvModelCall, Turn: 1, Model: "brain"})
	plain.tick()
	plain.show(orchestrator.Event{Type: orchestrator.EvModelAnswer, Turn: 1, Message: []byte(`{"role":"assistant","content":"Hi."}`)})
	if b.String() != "  brain, turn 1: Hi.\n" {
		t.Errorf("plain view wrote %q, want the answer line alone", b.String())
	}
}

// flakyEvents serves a task's events, breaking the connection after
// every second event, and records the Last-Event-ID of each request.
type flakyEvents struct {
	mu     sync.Mutex
	events []string
	asked  []string
	status int // answered instead of events, when set
}

func (f *flakyEvents) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.asked = append(f.asked, r.Header.Get("Last-Event-ID"))
	status := f.status
	f.mu.Unlock()
	if r.URL.Path != "/v1/tasks/"+testTaskID+"/events" {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id": %q, "state": "completed"}`, testTaskID)
		return
	}
	if status != 0 {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"status": %d, "code": "x", "detail": "go away"}`, status)
		return
	}
	after := 0
	fmt.Sscan(r.Header.Get("Last-Event-ID"), &after)
	w.Header().Set("Content-Type", "text/event-stream")
	sent := 0
	for i, ev := range f.events {
		if i+1 <= after {
			continue
		}
		fmt.Fprint(w, ev)
		if sent++; sent == 2 {
			return // the connection breaks
		}
	}
}

const testTaskID = "task_0000000000000000000000000z"

func sseEvent(seq int, typ, data string) string {
	return fmt.Sprintf("id: %d\nevent: %s\ndata: {\"seq\":%d,\"type\":%q%s}\n\n", seq, typ, seq, typ, data)
}

func TestFollowReconnects(t *testing.T) {
	f := &flakyEvents{events: []string{
		sseEvent(1, "state", `,"state":"submitted"`),
		sseEvent(2, "started", `,"worker":"w"`),
		sseEvent(3, "model.call", `,"turn":1`),
		sseEvent(4, "model.answer", `,"message":{"role":"assistant","content":"done"}`),
		sseEvent(5, "state", `,"state":"completed"`),
	}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	var seen []uint64
	var notes []string
	fl := &follower{c: newClient(srv.URL, "t").untimed(), id: testTaskID, retryWait: time.Millisecond, poll: time.Millisecond,
		onEvent: func(ev orchestrator.Event) { seen = append(seen, ev.Seq) },
		note:    func(s string) { notes = append(notes, s) }}
	end, err := fl.follow(t.Context())
	if err != nil || end.State != orchestrator.Completed {
		t.Fatalf("follow = %v, %v", end, err)
	}
	if diff := cmp.Diff([]uint64{1, 2, 3, 4, 5}, seen); diff != "" {
		t.Errorf("events seen (-want +got):\n%s", diff)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff([]string{"", "2", "4", ""}, f.asked); diff != "" {
		t.Errorf("Last-Event-ID of each request (-want +got; the last is GET task):\n%s", diff)
	}
	if len(notes) != 2 || !strings.Contains(notes[0], "reconnecting after event 2") {
		t.Errorf("notes = %q, want one per reconnect", notes)
	}
}

func TestFollowGivesUp(t *testing.T) {
	t.Run("stream that never ends the task", func(t *testing.T) {
		f := &flakyEvents{events: []string{sseEvent(1, "state", `,"state":"working"`)}}
		srv := httptest.NewServer(f)
		t.Cleanup(srv.Close)
		fl := &follower{c: newClient(srv.URL, "t").untimed(), id: testTaskID, retryWait: time.Millisecond, onEvent: func(orchestrator.Event) {}}
		if _, err := fl.follow(t.Context()); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("broke off %d times in a row", maxReconnects+1)) {
			t.Errorf("follow of a stream that keeps breaking = %v, want it to give up", err)
		}
	})
	t.Run("refused", func(t *testing.T) {
		f := &flakyEvents{status: http.StatusNotFound}
		srv := httptest.NewServer(f)
		t.Cleanup(srv.Close)
		fl := &follower{c: newClient(srv.URL, "t").untimed(), id: testTaskID, retryWait: time.Millisecond, onEvent: func(orchestrator.Event) {}}
		if _, err := fl.follow(t.Context()); err == nil || !strings.Contains(err.Error(), "go away") || len(f.asked) != 1 {
			t.Errorf("follow refused with 404 = %v after %d requests, want the problem at once", err, len(f.asked))
		}
	})
	t.Run("not an event stream", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<html>")
		}))
		t.Cleanup(srv.Close)
		fl := &follower{c: newClient(srv.URL, "t").untimed(), id: testTaskID, retryWait: time.Millisecond, onEvent: func(orchestrator.Event) {}}
		if _, err := fl.follow(t.Context()); err == nil || !strings.Contains(err.Error(), "not an event stream") {
			t.Errorf("follow of an HTML page = %v", err)
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		block := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, sseEvent(1, "state", `,"state":"working"`))
			w.(http.Flusher).Flush()
			select {
			case <-block:
			case <-r.Context().Done():
			}
		}))
		t.Cleanup(func() { close(block); srv.Close() })
		ctx, cancel := context.WithCancel(t.Context())
		fl := &follower{c: newClient(srv.URL, "t").untimed(), id: testTaskID, retryWait: time.Millisecond,
			onEvent: func(orchestrator.Event) { cancel() }}
		_, err := fl.follow(ctx)
		if ec, ok := err.(taskExit); !ok || ec.code != exitInterrupted || !strings.Contains(ec.msg, "corral tasks cancel "+testTaskID) {
			t.Errorf("follow interrupted = %v, want exit %d saying how to stop the task", err, exitInterrupted)
		}
	})
}

// FuzzTaskEvents feeds arbitrary bytes to the event stream reader and
// renderer (context.Background: t.Context per input stalls the fuzz
// worker): no panic, and no line a terminal would act on or that runs
// past the width.
func FuzzTaskEvents(f *testing.F) {
	files, _ := filepath.Glob("testdata/tasks/*.sse")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("data: {\"seq\":1,\"type\":\"model.answer\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"\\u001b[2J\"}]}}\n\n"))
	f.Add([]byte("event: error\ndata: {\"code\":\"substrate_unavailable\"}\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lines, _ := renderStream(context.Background(), data, 40)
		checkLines(t, lines, 40)
	})
}

func TestReadEventsRefusesOversizedEvents(t *testing.T) {
	data := "id: 1\nevent: model.answer\ndata: {\"seq\":1,\"type\":\"model.answer\",\"detail\":\"" + strings.Repeat("x", maxEventBytes) + "\"}\n\n"
	_, end := renderStream(t.Context(), []byte(data), 80)
	if !strings.Contains(end, "too large") {
		t.Errorf("an event over %d bytes ended the stream with %q, want too large", maxEventBytes, end)
	}
	_, end = renderStream(t.Context(), []byte("data: [1, 2]\n\n"), 80)
	if !strings.Contains(end, "is not a task event") {
		t.Errorf("an event that is not a task event ended the stream with %q", end)
	}
}
