package orchestrator

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/llm"
)

func TestIDs(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	var ids []string
	for i := range 50 {
		id := newID(now.Add(time.Duration(i) * time.Millisecond))
		if !ValidID(id) {
			t.Fatalf("newID = %q, not ValidID", id)
		}
		ids = append(ids, id)
	}
	if !slices.IsSorted(ids) {
		t.Errorf("ids made a millisecond apart do not sort by time: %v", ids)
	}
	a, b := idFor("agent\x00uid=1", "order-42"), idFor("agent\x00uid=1", "order-42")
	if a != b || !ValidID(a) {
		t.Errorf("idFor is %q then %q; want the same valid id", a, b)
	}
	if idFor("agent\x00uid=2", "order-42") == a || idFor("agent\x00uid=1", "order-43") == a {
		t.Error("idFor gives two owners, or two keys, the same task")
	}
	for _, bad := range []string{"", "task_", "task_01M98F27RWTFCHSVM4RWM7H3H6", "task_01m98f27rwtfchsvm4rwm7h3h", "task_01m98f27rwtfchsvm4rwm7h3h6x",
		"task_01m98f27rwtfchsvm4rwm7h3hu", "job_01m98f27rwtfchsvm4rwm7h3h6", "task_../../../etc/passwd000", "task_01m98f27rwtfchsvm4rwm7h3h*"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

var functionShape = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func TestFunctionName(t *testing.T) {
	for tool, want := range map[string]string{
		"notes.createNote":     "notes__createNote",
		"erp.get_order":        "erp__get_order",
		"files.GET_/files/{n}": "files__GET__files__n_",
		"crm.créer-client":     "crm__cr_er-client",
	} {
		if got := FunctionName(tool); got != want {
			t.Errorf("FunctionName(%q) = %q, want %q", tool, got, want)
		}
	}
	long := "source." + strings.Repeat("x", 100)
	a, b := FunctionName(long), FunctionName(long+"y")
	if len(a) != 64 || !functionShape.MatchString(a) || a == b {
		t.Errorf("long names map to %q and %q: want 64 valid characters, distinct", a, b)
	}
}

func FuzzFunctionName(f *testing.F) {
	for _, s := range []string{"a.b", "erp.get_order", "x.é", "s." + strings.Repeat("z", 80), "..", "a.b/c{d}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tool string) {
		if tool == "" {
			return
		}
		got := FunctionName(tool)
		if !functionShape.MatchString(got) {
			t.Fatalf("FunctionName(%q) = %q, not a valid function name", tool, got)
		}
		if FunctionName(tool) != got {
			t.Fatal("FunctionName is not deterministic")
		}
	})
}

func TestPlacement(t *testing.T) {
	eu := map[string]string{"region": "eu"}
	euAWS := map[string]string{"region": "eu", "cloud": "aws"}
	if placementKey(nil) != "any" || placementKey(eu) == placementKey(euAWS) {
		t.Error("placement keys do not tell placements apart")
	}
	if placementKey(map[string]string{"cloud": "aws", "region": "eu"}) != placementKey(euAWS) {
		t.Error("the placement key depends on map order")
	}
	if placementKey(map[string]string{"a": "b\nc=d"}) == placementKey(map[string]string{"a": "b", "c": "d"}) {
		t.Error("a value holding the separator collides with two labels")
	}
	for _, tt := range []struct {
		worker, placement map[string]string
		want              bool
	}{
		{euAWS, eu, true}, {euAWS, nil, true}, {eu, euAWS, false}, {nil, eu, false},
		{map[string]string{"region": "us"}, eu, false},
	} {
		if got := matches(tt.worker, tt.placement); got != tt.want {
			t.Errorf("matches(%v, %v) = %v", tt.worker, tt.placement, got)
		}
	}
}

func mustJSON(t testing.TB, v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReplay rebuilds a conversation from a journal cut at each entry: the
// steps begun but not finished are the ones a worker must repeat.
func TestReplay(t *testing.T) {
	call := llm.ToolCall{ID: "call_1", Type: "function", Function: llm.FunctionCall{Name: "notes__createNote", Arguments: `{"text":"x"}`}}
	answer1 := llm.Message{Role: "assistant", ToolCalls: []llm.ToolCall{call}}
	answer2 := llm.Message{Role: "assistant", Content: llm.TextContent("done")}
	journal := []Event{
		{Seq: 1, Type: EvState, State: Submitted},
		{Seq: 2, Type: EvStarted, Worker: "w1", Time: time.Unix(100, 0)},
		{Seq: 3, Type: EvModelCall, Step: 1, Turn: 1},
		{Seq: 4, Type: EvModelAnswer, Step: 1, Turn: 1, Message: mustJSON(t, answer1), Usage: &Usage{InputTokens: 10, OutputTokens: 2, Cost: 0.5}},
		{Seq: 5, Type: EvToolCall, Step: 2, Tool: "notes.createNote", CallID: "call_1", Detail: argsDigest(`{"text":"x"}`)},
		{Seq: 6, Type: EvStarted, Worker: "w2", Time: time.Unix(200, 0)},
		{Seq: 7, Type: EvToolResult, Step: 2, Tool: "notes.createNote", CallID: "call_1", Content: `{"status":200}`},
		{Seq: 8, Type: EvModelCall, Step: 3, Turn: 2},
		{Seq: 9, Type: EvModelAnswer, Step: 3, Turn: 2, Message: mustJSON(t, answer2)},
	}
	task := &Task{ID: "task_x", Input: json.RawMessage(`"write it down"`), State: Working}
	noStore := func(_ context.Context, ev *Event) (string, error) {
		if ev.Ref != "" {
			t.Fatal("no payload is stored")
		}
		return ev.Content, nil
	}
	for cut, want := range map[int]struct {
		pendingModel, pendingTool bool
		unanswered                int
		done                      bool
		messages, step, turn      int
	}{
		3: {pendingModel: true, messages: 2, step: 1},
		4: {unanswered: 1, messages: 3, step: 1, turn: 1},
		5: {pendingTool: true, unanswered: 1, messages: 3, step: 2, turn: 1},
		7: {messages: 4, step: 2, turn: 1},
		8: {pendingModel: true, messages: 4, step: 3, turn: 1},
		9: {done: true, messages: 5, step: 3, turn: 2},
	} {
		c, err := replay(t.Context(), task, "be brief", journal[:cut], noStore)
		if err != nil {
			t.Fatal(err)
		}
		got := struct {
			pendingModel, pendingTool bool
			unanswered                int
			done                      bool
			messages, step, turn      int
		}{c.pendingModel != nil, len(c.pendingTools) > 0, len(c.unanswered()), c.done(), len(c.messages), c.step, c.turn}
		if got != want {
			t.Errorf("journal cut at %d: %+v, want %+v", cut, got, want)
		}
		if c.last != journal[cut-1].Seq {
			t.Errorf("cut at %d: last = %d", cut, c.last)
		}
	}
	c, _ := replay(t.Context(), task, "", journal, noStore)
	if c.starts != 2 || !c.firstRun.Equal(time.Unix(100, 0)) || c.usage.Cost != 0.5 || c.usage.ToolCalls != 1 || c.usage.ModelCalls != 2 {
		t.Errorf("replay: starts %d first %v usage %+v", c.starts, c.firstRun, c.usage)
	}
	if c.messages[0].Role != "user" || c.messages[0].Content.String() != "write it down" {
		t.Errorf("the input is not the first user message: %+v", c.messages[0])
	}
}

func FuzzReplay(f *testing.F) {
	f.Add([]byte(`[{"type":"model.answer","message":{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"x","arguments":"{}"}}]}},{"type":"tool.call","call_id":"a"},{"type":"message","call_id":"a","message":{"role":"user","content":"hi"}}]`))
	f.Add([]byte(`[{"type":"tool.result","call_id":"zz"},{"type":"state","state":"completed"}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var events []Event
		if json.Unmarshal(data, &events) != nil {
			return
		}
		c, err := replay(context.Background(), &Task{Input: json.RawMessage(`{"a":1}`)}, "", events, func(_ context.Context, ev *Event) (string, error) { return ev.Content, nil })
		if err != nil {
			return
		}
		_ = c.unanswered()
		_ = c.done()
	})
}

func TestCheckOutput(t *testing.T) {
	schema := json.RawMessage(`{"type":"object","required":["port","delay_days"],"properties":{"port":{"type":"string"},"delay_days":{"type":"integer","minimum":0}}}`)
	for text, ok := range map[string]bool{
		`{"port":"Rotterdam","delay_days":3}`:                     true,
		"```json\n{\"port\":\"Rotterdam\",\"delay_days\":3}\n```": true,
		`{"port":"Rotterdam"}`:                                    false,
		`{"port":"Rotterdam","delay_days":-1}`:                    false,
		`The port is Rotterdam`:                                   false,
		``:                                                        false,
	} {
		out, problem := checkOutput(schema, text)
		if (problem == "") != ok || (ok && !json.Valid(out)) {
			t.Errorf("checkOutput(%q) = %s, %q; want ok=%v", text, out, problem, ok)
		}
	}
}

func TestLoopDetection(t *testing.T) {
	c := &convo{}
	for _, args := range []string{`{"a":1,"b":2}`, `{"b":2, "a":1}`, "{\n\"a\": 1, \"b\": 2}"} {
		c.noteCall("erp.retry", argsDigest(args))
	}
	if c.repeats != 3 {
		t.Errorf("the same arguments in three spellings count %d repeats, want 3", c.repeats)
	}
	c.noteCall("erp.retry", argsDigest(`{"a":2}`))
	if c.repeats != 1 {
		t.Errorf("other arguments count %d repeats, want 1", c.repeats)
	}
}
