package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/openapi"
)

func startWorld(t *testing.T, scripts map[string][]Turn) *World {
	t.Helper()
	w, err := Start(scripts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

func call(t *testing.T, method, url, key, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// TestSystemsMatchTheirSpecs keeps the mocks and their documents in step:
// every document imports, and every operation answers as it says.
func TestSystemsMatchTheirSpecs(t *testing.T) {
	want := map[string]int{"logistics": 3, "erp": 3, "carriers": 3, "notifications": 1, "billing": 1}
	for _, s := range Systems {
		tools, err := openapi.Import(s.Name, s.Spec, openapi.Options{})
		if err != nil {
			t.Fatalf("Import(%s): %v", s.Name, err)
		}
		if len(tools) != want[s.Name] {
			t.Errorf("Import(%s) = %d tools, want %d", s.Name, len(tools), want[s.Name])
		}
	}
	w := startWorld(t, nil)
	for _, tt := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/logistics/shipments/delayed?min_hours=24", "", 200},
		{"GET", "/logistics/orders/ORD-1001", "", 200},
		{"GET", "/logistics/orders/ORD-9999", "", 404},
		{"DELETE", "/logistics/orders/ORD-1003", "", 204},
		{"GET", "/erp/orders?shipment=SHP-17", "", 200},
		{"GET", "/erp/customers/C-1", "", 200},
		{"GET", "/erp/customers/C-9", "", 404},
		{"POST", "/erp/orders/reroute", `{"orders":["ORD-9999"],"route_id":"RT-ANR-RAIL"}`, 404},
		{"POST", "/erp/orders/reroute", `{"orders":["ORD-1001"],"route_id":"RT-ANR-RAIL"}`, 200},
		{"POST", "/erp/orders/reroute", `not json`, 400},
		{"GET", "/carriers/shipments/SHP-17/alternatives", "", 200},
		{"GET", "/carriers/shipments/SHP-17/eta", "", 200},
		{"POST", "/carriers/quotes", `{"route_id":"RT-ANR-RAIL","orders":["ORD-1001"]}`, 200},
		{"POST", "/carriers/quotes", `{"route_id":"RT-NOPE","orders":["ORD-1001"]}`, 404},
		{"POST", "/notifications-api/notifications", `{"to":"a@example.com","order_id":"ORD-1001","message":"hi"}`, 201},
		{"POST", "/billing/invoices", `{"customer_id":"C-1","order_id":"ORD-1001","amount":190,"currency":"EUR"}`, 201},
		{"GET", "/billing/nope", "", 404},
	} {
		if got, body := call(t, tt.method, w.URL+tt.path, "", tt.body); got != tt.want {
			t.Errorf("%s %s = %d, want %d (%s)", tt.method, tt.path, got, tt.want, body)
		}
	}
	if status, route := w.ERP.Order("ORD-1001"); status != "rerouted" || route != "RT-ANR-RAIL" {
		t.Errorf("ERP.Order(ORD-1001) = %s %s, want rerouted RT-ANR-RAIL", status, route)
	}
}

// TestWritesHappenOncePerKey is what the demo counts on: a repeated key
// gets the first answer and no second effect; no key, no memory.
func TestWritesHappenOncePerKey(t *testing.T) {
	w := startWorld(t, nil)
	body := `{"customer_id":"C-2","order_id":"ORD-1002","amount":190,"currency":"EUR"}`
	_, first := call(t, "POST", w.URL+"/billing/invoices", "k1", body)
	_, again := call(t, "POST", w.URL+"/billing/invoices", "k1", body)
	call(t, "POST", w.URL+"/billing/invoices", "k2", body)
	if first != again {
		t.Errorf("a repeated key answered %s, want the first answer %s", again, first)
	}
	if n := len(w.Billing.Invoices()); n != 2 {
		t.Errorf("invoices = %d, want 2 (k1 once, k2 once)", n)
	}
	counts := w.Billing.Counts()
	i := slices.IndexFunc(counts, func(c Count) bool { return c.Key == "k1" })
	if i < 0 || counts[i].Requests != 2 || counts[i].Effects != 1 {
		t.Errorf("Counts() = %+v, want k1 with 2 requests and 1 effect", counts)
	}
}

// TestHeldNotificationIsSentOnce: the held request acts, never answers,
// and its retry with the same key is answered from the record.
func TestHeldNotificationIsSentOnce(t *testing.T) {
	w := startWorld(t, nil)
	w.Notifications.HoldFirst()
	body := `{"to":"ana.lima@example.com","order_id":"ORD-1001","message":"late"}`
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", w.URL+"/notifications-api/notifications", strings.NewReader(body))
		req.Header.Set("Idempotency-Key", "n1")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-w.Notifications.Held()
	cancel()
	if err := <-done; err == nil {
		t.Error("the held request got an answer, want none")
	}
	if status, _ := call(t, "POST", w.URL+"/notifications-api/notifications", "n1", body); status != 201 {
		t.Errorf("retry = %d, want 201", status)
	}
	if sent := w.Notifications.Sent(); len(sent) != 1 {
		t.Errorf("sent %d notifications, want 1", len(sent))
	}
}

// TestModelsPlayTheirScripts: turns follow the conversation, keys are
// counted, and a conversation past its script is refused.
func TestModelsPlayTheirScripts(t *testing.T) {
	w := startWorld(t, map[string][]Turn{"m": {{Say: "one", Calls: []Call{{Function: "erp__list_orders"}}}, {Say: "two"}}})
	ask := func(key string, msgs ...llm.Message) (int, llm.ChatResponse) {
		b, _ := json.Marshal(llm.ChatRequest{Model: "m", Messages: msgs})
		req, _ := http.NewRequestWithContext(t.Context(), "POST", w.ModelsURL()+"/chat/completions", bytes.NewReader(b))
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out llm.ChatResponse
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	user := llm.Message{Role: "user", Content: llm.TextContent("Hi <EMAIL_1>")}
	status, first := ask("a", user)
	if status != 200 || len(first.Choices) != 1 || len(first.Choices[0].Message.ToolCalls) != 1 {
		t.Fatalf("turn 0 = %d %+v", status, first)
	}
	asst := first.Choices[0].Message
	tool := llm.Message{Role: "tool", ToolCallID: asst.ToolCalls[0].ID, Content: llm.TextContent("[]")}
	if _, second := ask("b", user, asst, tool); second.Choices[0].Message.Content.String() != "two" {
		t.Errorf("turn 1 = %+v, want two", second)
	}
	ask("b", user, asst, tool)
	if status, _ := ask("c", user, asst, tool, llm.Message{Role: "assistant", Content: llm.TextContent("two")}); status != 400 {
		t.Errorf("past the script = %d, want 400", status)
	}
	if got := w.Models.Received("m")[0].Content.String(); got != "Hi <EMAIL_1>" {
		t.Errorf("Received = %q", got)
	}
	for _, tt := range []struct {
		body string
		want int
	}{
		{`not json`, 400},
		{`{"model":"m","messages":[]}`, 400},
		{`{"model":"nope","messages":[{"role":"user","content":"hi"}]}`, 404},
		{`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`, 400},
	} {
		if status, _ := call(t, "POST", w.ModelsURL()+"/chat/completions", "", tt.body); status != tt.want {
			t.Errorf("POST %s = %d, want %d", tt.body, status, tt.want)
		}
	}
	if status, _ := call(t, "GET", w.ModelsURL()+"/models", "", ""); status != 404 {
		t.Errorf("GET /v1/models = %d, want 404", status)
	}
	calls := w.Models.Calls()
	if len(calls) != 3 || calls[1].Key != "b" || calls[1].Requests != 2 {
		t.Errorf("Calls() = %+v, want a:1 b:2 c:1", calls)
	}
}

// TestStoryRenders: with corral's functions for agents the story hands
// off and delegates; without them each agent ends with what it would hand
// on, and no function names an agent.
func TestStoryRenders(t *testing.T) {
	with := StoryScripts(Features{Agents: true, State: "write_state"})
	fns := Functions(with)
	for _, want := range []string{"handoff_to_impact", "handoff_to_negotiation", "handoff_to_execution", "delegate_to_impact", "delegate_to_chaser", "delegate_to_broker", "write_state", "erp__reroute_orders"} {
		if !slices.Contains(fns, want) {
			t.Errorf("Functions(with agents) lacks %s: %v", want, fns)
		}
	}
	for _, turns := range with {
		for _, tn := range turns {
			for _, c := range tn.Calls {
				if _, ok := c.Args["patch"]; c.Function == "write_state" && !ok {
					t.Errorf("a state write's arguments = %v, want a merge patch under \"patch\"", c.Args)
				}
			}
		}
	}
	without := StoryScripts(Features{})
	for _, f := range Functions(without) {
		if strings.HasPrefix(f, "handoff_") || strings.HasPrefix(f, "delegate_") || strings.Contains(f, "state") {
			t.Errorf("Functions(without agents) has %s", f)
		}
	}
	for agent, turns := range without {
		if last := turns[len(turns)-1]; len(last.Calls) != 0 || last.Say == "" {
			t.Errorf("%s's last turn without agents = %+v, want a final answer", agent, last)
		}
	}
	if got := without[Impact][len(without[Impact])-1].Say; !strings.Contains(got, AnaEmail) {
		t.Errorf("impact's final answer without agents = %q, want the brief with the customers", got)
	}
	if Handoffs()[Monitor] != Impact || Handoffs()[Impact] != Negotiation || Handoffs()[Negotiation] != Execution {
		t.Errorf("Handoffs() = %v", Handoffs())
	}
	// Every tool the story calls is an operation of a system.
	var ops []string
	for _, s := range Systems {
		tools, _ := openapi.Import(s.Name, s.Spec, openapi.Options{})
		for _, tl := range tools {
			ops = append(ops, ToolFunction(s.Name+"."+tl.OperationID))
		}
	}
	for _, f := range Functions(without) {
		if !slices.Contains(ops, f) {
			t.Errorf("the story calls %s, which no system has", f)
		}
	}
}
