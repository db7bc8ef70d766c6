package cli

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/orchestrator"
)

// requestInput is the function a hosted agent calls to ask its user a
// question (orchestrator's built-in request_input).
const requestInput = "request_input"

// renderer turns a task's events into lines for people: one per step. It
// remembers what later events refer to: the model of the call in flight,
// and the arguments of each tool call the model made, by call id.
type renderer struct {
	// width is the most characters a line may have.
	width int
	model string
	turn  int
	// calls are the model's tool calls, by id, from its answers.
	calls  map[string]llm.ToolCall
	starts int
	// answered: a person answered since the last start, which is then
	// the task going on, not a worker taking it over.
	answered bool
}

func newRenderer(width int) *renderer {
	return &renderer{width: max(width, 20), calls: map[string]llm.ToolCall{}}
}

// render returns the lines for ev, and what the task is busy with after it
// (a model thinking, a tool running), or "" when it waits for nothing.
func (r *renderer) render(ev orchestrator.Event) (lines []string, busy string) {
	switch ev.Type {
	case orchestrator.EvState:
		return []string{r.fit(stateMark(ev.State)+" ", stateText(ev.State, ev.Reason, ev.Detail))}, ""
	case orchestrator.EvStarted:
		r.starts++
		what := "started"
		switch {
		case r.answered:
			what = "resumed with the answer"
		case r.starts > 1:
			// A worker died or lost its lease: another replays the journal.
			what = fmt.Sprintf("taken over from its journal (start %d)", r.starts)
		}
		r.answered = false
		if ev.Worker != "" {
			what += " on worker " + ev.Worker
		}
		return []string{r.fit("● ", what)}, ""
	case orchestrator.EvModelCall:
		r.model, r.turn = cmp.Or(ev.Model, r.model, "the model"), cmp.Or(ev.Turn, r.turn+1)
		return nil, fmt.Sprintf("%s is thinking (turn %d)", oneLine(r.model, 60), r.turn)
	case orchestrator.EvModelAnswer:
		return r.answer(ev), ""
	case orchestrator.EvToolCall:
		if ev.Tool == requestInput {
			return nil, ""
		}
		return nil, "running " + oneLine(ev.Tool, 80)
	case orchestrator.EvToolResult:
		return []string{r.toolLine(ev)}, ""
	case orchestrator.EvMessage:
		r.answered = r.answered || ev.Detail != "correction"
		return []string{r.messageLine(ev)}, ""
	case orchestrator.EvCall:
		target := cmp.Or(ev.Tool, ev.Model, "?")
		status := cmp.Or(ev.Code, ev.Detail, "ok")
		mark := "✓"
		if ev.Code != "" {
			mark = "✗"
		}
		return []string{r.fit("  "+mark+" ", fmt.Sprintf("%s called %s → %s", cmp.Or(ev.Agent, "the agent"), target, status))}, ""
	case orchestrator.EvWaiting:
		return []string{r.fit("  … ", cmp.Or(ev.Detail, "waiting"))}, ""
	}
	if lines, busy, ok := r.workflowLines(ev); ok {
		return lines, busy
	}
	// A type this corral does not know yet: say it rather than drop it.
	return []string{r.fit("  ", strings.TrimSpace(ev.Type+" "+ev.Detail))}, ""
}

// answer is the first line of what the model said; its tool calls are
// shown as their results come.
func (r *renderer) answer(ev orchestrator.Event) []string {
	var m llm.Message
	if err := json.Unmarshal(ev.Message, &m); err != nil {
		return []string{r.fit("  ", fmt.Sprintf("%s answered (unreadable: %v)", r.model, err))}
	}
	for _, tc := range m.ToolCalls {
		if tc.ID != "" {
			r.calls[tc.ID] = tc
		}
	}
	who := fmt.Sprintf("%s, turn %d: ", oneLine(cmp.Or(r.model, "the model"), 60), max(cmp.Or(ev.Turn, r.turn), 1))
	if m.Refusal != "" {
		return []string{r.fit("  ", who+"refused: "+firstLine(m.Refusal))}
	}
	text := firstLine(m.Content.String())
	if text == "" {
		return nil
	}
	return []string{r.fit("  ", who+text)}
}

func (r *renderer) toolLine(ev orchestrator.Event) string {
	args := ""
	if tc, ok := r.calls[ev.CallID]; ok {
		args = " " + compactJSON(json.RawMessage(tc.Function.Arguments))
	}
	if !ev.IsError {
		return r.fit("  ✓ ", ev.Tool+args)
	}
	return r.fit("  ✗ ", ev.Tool+args+" → "+cmp.Or(ev.Code, "error"))
}

func (r *renderer) messageLine(ev orchestrator.Event) string {
	var m struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(ev.Message, &m)
	var c llm.Content
	text := ""
	if json.Unmarshal(m.Content, &c) == nil {
		text = c.String()
	}
	if ev.Detail == "correction" {
		return r.fit("  ↺ ", "the answer did not match the agent's output schema; corral asked again")
	}
	return r.fit("  ↳ ", "answer: "+firstLine(text))
}

// fit is prefix and text on one line of at most r.width characters, with
// control characters (a terminal's escape sequences) made harmless.
func (r *renderer) fit(prefix, text string) string {
	return prefix + oneLine(text, max(r.width-len([]rune(prefix)), 8))
}

func stateMark(s orchestrator.State) string {
	switch s {
	case orchestrator.Completed:
		return "✓"
	case orchestrator.Failed, orchestrator.Rejected:
		return "✗"
	case orchestrator.Canceled:
		return "■"
	case orchestrator.InputRequired:
		return "?"
	}
	return "●"
}

// stateText is "failed (max_turns): the agent used 10 turns".
func stateText(s orchestrator.State, reason, detail string) string {
	out := string(s)
	if reason != "" {
		out += " (" + reason + ")"
	}
	if detail != "" {
		out += ": " + detail
	}
	return out
}

// firstLine is the first line of s that is not blank, marked when more follow.
func firstLine(s string) string {
	s = strings.TrimSpace(s)
	line, rest, more := strings.Cut(s, "\n")
	line = strings.TrimSpace(line)
	if more && strings.TrimSpace(rest) != "" {
		line += " …"
	}
	return line
}

// spinFrames animate the line of a step in flight.
var spinFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// liveView writes rendered lines to a terminal or a log. On a terminal it
// also keeps a spinner on the last line while a step is in flight, which
// each new line replaces.
type liveView struct {
	mu    sync.Mutex
	w     io.Writer
	r     *renderer
	tty   bool
	busy  string
	since time.Time
	frame int
	drawn bool
}

// show writes ev's lines and sets what the task is busy with.
func (v *liveView) show(ev orchestrator.Event) {
	lines, busy := v.r.render(ev)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clear()
	for _, l := range lines {
		fmt.Fprintln(v.w, l)
	}
	if busy != v.busy {
		v.busy, v.since, v.frame = busy, time.Now(), 0
	}
	v.draw()
}

// note writes a line of corral's own (reconnecting, a prompt's outcome).
func (v *liveView) note(text string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clear()
	fmt.Fprintln(v.w, v.r.fit("  ", text))
	v.draw()
}

// idle stops the spinner, before a prompt or the end.
func (v *liveView) idle() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.clear()
	v.busy = ""
}

// tick advances the spinner.
func (v *liveView) tick() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.frame++
	v.draw()
}

func (v *liveView) clear() {
	if v.drawn {
		fmt.Fprint(v.w, "\r\x1b[K")
		v.drawn = false
	}
}

func (v *liveView) draw() {
	if !v.tty || v.busy == "" {
		return
	}
	v.clear()
	text := v.busy
	if d := time.Since(v.since); d >= time.Second {
		text += fmt.Sprintf(" %ds", int(d.Seconds()))
	}
	fmt.Fprint(v.w, v.r.fit(spinFrames[v.frame%len(spinFrames)]+" ", text))
	v.drawn = true
}
