package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/llm/llmtest"
)

// idemGateway is a corral in front of one OpenAI-compatible upstream,
// with model gpt on it and two agents that may use it: alpha, whose calls
// a budget of five counts, and beta.
type idemGateway struct {
	srv         *apptest.Server
	up          *llmtest.Server
	alpha, beta string
}

func startIdemGateway(t *testing.T, opts ...llmtest.Option) idemGateway {
	t.Helper()
	up := llmtest.Start(t, opts...)
	srv := apptest.Start(t)
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: gpt}
spec: {provider: openai, baseURL: %q, model: gpt-4o, pricing: {inputPerMTok: 1000, outputPerMTok: 1000}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: alpha}
spec: {models: [gpt]}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: beta}
spec: {models: [gpt]}
---
apiVersion: corral.dev/v1
kind: Budget
metadata: {name: alpha-calls}
spec: {scope: {agent: alpha}, window: total, limit: {calls: 5}}
`, up.URL()))
	g := idemGateway{srv: srv, up: up, alpha: srv.Key(t, "alpha"), beta: srv.Key(t, "beta")}
	waitModel(t, srv, g.alpha, "gpt")
	waitModel(t, srv, g.beta, "gpt")
	waitBudget(t, srv, "alpha-calls")
	return g
}

// post sends body to path as the agent with key, with one Idempotency-Key
// header per value in keys, and returns the answer read in full.
func (g idemGateway) post(t *testing.T, ctx context.Context, key, path, body string, keys ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "POST", g.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, k := range keys {
		req.Header.Add("Idempotency-Key", k)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: reading the answer: %v", path, err)
	}
	return resp, out
}

// upstreamCalls counts the requests the upstream got on path.
func (g idemGateway) upstreamCalls(path string) int {
	n := 0
	for _, r := range g.up.Requests() {
		if r.Path == path {
			n++
		}
	}
	return n
}

// budgetUsed is what alpha's budget has counted.
func (g idemGateway) budgetUsed(t *testing.T) (calls int64, cost float64) {
	t.Helper()
	status, body := g.srv.Call(t, g.srv.Token, "GET", "/v1/budgets", nil, nil)
	var list struct {
		Items []struct {
			Budget string
			Used   struct {
				Calls int64
				Cost  float64
			}
		}
	}
	if err := json.Unmarshal(body, &list); status != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/budgets: HTTP %d %s %v", status, body, err)
	}
	for _, b := range list.Items {
		if b.Budget == "alpha-calls" {
			return b.Used.Calls, b.Used.Cost
		}
	}
	t.Fatalf("GET /v1/budgets lists no alpha-calls: %s", body)
	return 0, 0
}

// sseData is the data of each server-sent event in body, [DONE] included,
// with the event's name when it had one.
func sseData(t *testing.T, body []byte) (names, data []string) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 4<<20)
	name := ""
	for sc.Scan() {
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "event: "); ok {
			name = n
			continue
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			names, data = append(names, name), append(data, d)
			name = ""
		}
	}
	return names, data
}

// chatStreamAnswer folds a chat completions stream into its answer, and
// says whether it carried a usage chunk and ended with [DONE].
func chatStreamAnswer(t *testing.T, body []byte) (*llm.ChatResponse, bool, bool) {
	t.Helper()
	_, data := sseData(t, body)
	var acc llm.Accumulator
	usage, done := false, false
	for _, d := range data {
		if d == "[DONE]" {
			done = true
			continue
		}
		var c llm.ChatChunk
		if err := json.Unmarshal([]byte(d), &c); err != nil {
			t.Fatalf("chunk %s: %v", d, err)
		}
		usage = usage || llm.IsUsageChunk(&c)
		acc.Add(&c)
	}
	return acc.Response(), usage, done
}

// completedResponse is the response object of a Responses API stream's
// response.completed event.
func completedResponse(t *testing.T, body []byte) string {
	t.Helper()
	names, data := sseData(t, body)
	for i, n := range names {
		if n != "response.completed" {
			continue
		}
		var ev struct{ Response json.RawMessage }
		if err := json.Unmarshal([]byte(data[i]), &ev); err != nil {
			t.Fatal(err)
		}
		return string(ev.Response)
	}
	t.Fatalf("no response.completed in the stream:\n%s", body)
	return ""
}

func isReplay(resp *http.Response) bool {
	return resp.Header.Get("Idempotent-Replayed") == "true" && resp.Header.Get("Idempotency-Replayed") == "true"
}

// TestModelIdempotencyReplay: on every model endpoint, whole and streamed,
// a retry with the first call's Idempotency-Key and request gets the first
// answer again, marked replayed, without a second provider call or a
// second charge, even once the budget is spent; the same key with another
// request is 409 idempotency_conflict naming the key.
func TestModelIdempotencyReplay(t *testing.T) {
	g := startIdemGateway(t, llmtest.WithContent("The refund of order 1042 is on its way."))
	ctx := t.Context()
	chatBody := `{"model":"gpt","messages":[{"role":"user","content":"refund 1042"}]}`
	// The same request written otherwise: keys reordered, spaced.
	chatBodyAgain := "{ \"messages\": [ {\"content\": \"refund 1042\", \"role\": \"user\"} ],\n  \"model\": \"gpt\" }"
	chatStream := `{"model":"gpt","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"refund 1042"}]}`
	respBody := `{"model":"gpt","input":"refund 1042","metadata":{"order":"1042"}}`
	respStream := `{"model":"gpt","input":"refund 1042","stream":true}`
	embedBody := `{"model":"gpt","input":["refund 1042","order 1042"]}`

	type call struct {
		name, path, body, again, key string
		same                         func(t *testing.T, first, again []byte)
	}
	bytesEqual := func(t *testing.T, first, again []byte) {
		if !bytes.Equal(first, again) {
			t.Errorf("the replay differs from the first answer:\nfirst %s\nagain %s", first, again)
		}
	}
	calls := []call{
		{"chat", "/openai/v1/chat/completions", chatBody, chatBodyAgain, "chat-1", bytesEqual},
		{"chat stream", "/openai/v1/chat/completions", chatStream, chatStream, "chat-stream-1", func(t *testing.T, first, again []byte) {
			a, ua, da := chatStreamAnswer(t, first)
			b, ub, db := chatStreamAnswer(t, again)
			if diff := cmp.Diff(a, b); diff != "" {
				t.Errorf("the replayed stream's answer differs (-first +replay):\n%s", diff)
			}
			if !ua || !ub || !da || !db || a.Choices[0].Message.Content.String() == "" {
				t.Errorf("usage chunk %v/%v, [DONE] %v/%v, answer %+v: want both streams whole, with usage", ua, ub, da, db, a)
			}
		}},
		{"responses", "/openai/v1/responses", respBody, respBody, "responses-1", bytesEqual},
		{"responses stream", "/openai/v1/responses", respStream, respStream, "responses-stream-1", func(t *testing.T, first, again []byte) {
			a, b := completedResponse(t, first), completedResponse(t, again)
			if a != b || !strings.Contains(a, "on its way") {
				t.Errorf("the replayed stream completes another response:\nfirst %s\nagain %s", a, b)
			}
		}},
		{"embeddings", "/openai/v1/embeddings", embedBody, embedBody, "embeddings-1", bytesEqual},
	}
	firsts := map[string][]byte{}
	for _, c := range calls {
		resp, body := g.post(t, ctx, g.alpha, c.path, c.body, c.key)
		if resp.StatusCode != http.StatusOK || isReplay(resp) || resp.Header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("%s: first call HTTP %d replayed %q: %s", c.name, resp.StatusCode, resp.Header.Get("Idempotent-Replayed"), body)
		}
		firsts[c.name] = body
	}
	wantChat, wantEmbed := 4, 1
	if n, m := g.upstreamCalls("/v1/chat/completions"), g.upstreamCalls("/v1/embeddings"); n != wantChat || m != wantEmbed {
		t.Fatalf("the upstream got %d chat and %d embeddings requests, want %d and %d", n, m, wantChat, wantEmbed)
	}
	calls0, cost0 := g.budgetUsed(t)
	if calls0 != 5 || cost0 <= 0 {
		t.Fatalf("alpha's budget counted %d calls costing %v, want 5 with a cost", calls0, cost0)
	}
	// The budget is spent: a new call is refused, a replay is not.
	if resp, body := g.post(t, ctx, g.alpha, "/openai/v1/chat/completions", chatBody, "chat-2"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a sixth call: HTTP %d %s, want 429 budget_exceeded", resp.StatusCode, body)
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			resp, body := g.post(t, ctx, g.alpha, c.path, c.again, c.key)
			if resp.StatusCode != http.StatusOK || !isReplay(resp) {
				t.Fatalf("retry: HTTP %d, Idempotent-Replayed %q, Idempotency-Replayed %q: %s, want 200 marked replayed",
					resp.StatusCode, resp.Header.Get("Idempotent-Replayed"), resp.Header.Get("Idempotency-Replayed"), body)
			}
			if resp.Header.Get("Corral-Audit-Id") == "" || resp.Header.Get("Corral-Model-Target") != "gpt" {
				t.Errorf("retry: headers %v, want Corral-Audit-Id and Corral-Model-Target: gpt", resp.Header)
			}
			c.same(t, firsts[c.name], body)

			other := strings.Replace(c.body, "refund 1042", "refund 1043", 1)
			resp, body = g.post(t, ctx, g.alpha, c.path, other, c.key)
			if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), `"code":"idempotency_conflict"`) ||
				!strings.Contains(string(body), `\"`+c.key+`\"`) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
				t.Errorf("the key with another request: HTTP %d %s, want 409 problem+json idempotency_conflict naming %s", resp.StatusCode, body, c.key)
			}
		})
	}
	if n, m := g.upstreamCalls("/v1/chat/completions"), g.upstreamCalls("/v1/embeddings"); n != wantChat || m != wantEmbed {
		t.Errorf("after the retries the upstream got %d chat and %d embeddings requests, want still %d and %d", n, m, wantChat, wantEmbed)
	}
	if calls, cost := g.budgetUsed(t); calls != calls0 || cost != cost0 {
		t.Errorf("after the retries alpha's budget counted %d calls costing %v, want still %d and %v", calls, cost, calls0, cost0)
	}
	// Each replay is audited as one, naming the call it replays.
	_, audit := g.srv.Call(t, g.srv.Token, "GET", "/v1/audit?agent=alpha", nil, nil)
	var records struct {
		Records []struct {
			Phase, Status, Reason string
			Replayed              bool
			IdempotencyKey        string `json:"idempotency_key"`
		}
	}
	if err := json.Unmarshal(audit, &records); err != nil {
		t.Fatal(err)
	}
	replays := 0
	for _, r := range records.Records {
		if r.Replayed {
			replays++
			if r.Status != "ok" || r.IdempotencyKey == "" || !strings.Contains(r.Reason, "replayed the answer") {
				t.Errorf("replay record %+v, want status ok, its key and the call it replays", r)
			}
		}
	}
	if replays != len(calls) {
		t.Errorf("the audit holds %d replayed records, want %d", replays, len(calls))
	}
}

// TestModelIdempotencyInFlight: while a call with a key runs, a retry with
// the key is 409 idempotency_conflict with Retry-After, as on the tool
// edge; a call whose agent went away runs to its answer, which the retry
// then gets, from one provider call.
func TestModelIdempotencyInFlight(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	g := startIdemGateway(t, llmtest.WithHandler(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default: // a second call reached the provider: the test says so
		}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"chatcmpl-slow","object":"chat.completion","created":1700000000,"model":"gpt-4o",`+
			`"choices":[{"index":0,"message":{"role":"assistant","content":"Thought long about it."},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`)
	}))
	const body = `{"model":"gpt","messages":[{"role":"user","content":"think hard"}]}`
	const path = "/openai/v1/chat/completions"

	// The agent gives up (its client timed out) while the provider thinks.
	gone, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(gone, "POST", g.srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+g.alpha)
		req.Header.Set("Idempotency-Key", "slow-1")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		first <- err
	}()
	<-arrived
	// Bounded: were the retry sent on, it would wait for release.
	retry, stop := context.WithTimeout(t.Context(), 30*time.Second)
	defer stop()
	resp, answer := g.post(t, retry, g.alpha, path, body, "slow-1")
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(answer), `"code":"idempotency_conflict"`) ||
		!strings.Contains(string(answer), "still running") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a retry while the call runs: HTTP %d Retry-After %q %s, want 409 idempotency_conflict with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"), answer)
	}
	cancel()
	if err := <-first; err == nil {
		t.Fatal("the first call was answered before the agent gave up")
	}
	close(release)
	// The call goes on without its agent; the retry gets its answer once it
	// is recorded (409 until then).
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, answer = g.post(t, t.Context(), g.alpha, path, body, "slow-1")
		if resp.StatusCode != http.StatusConflict || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp.StatusCode != http.StatusOK || !isReplay(resp) || !strings.Contains(string(answer), "Thought long about it.") {
		t.Fatalf("the retry after the call ended: HTTP %d replayed %v %s, want the recorded answer", resp.StatusCode, isReplay(resp), answer)
	}
	if n := g.upstreamCalls("/v1/chat/completions"); n != 1 {
		t.Errorf("the provider was called %d times, want once", n)
	}
	if calls, _ := g.budgetUsed(t); calls != 1 {
		t.Errorf("alpha's budget counted %d calls, want 1", calls)
	}
}

// TestModelIdempotencyStreamCut: a stream cut before its end is not
// recorded, so its retry runs again (and is charged again: the provider
// ran both); a stream that completed is replayed.
func TestModelIdempotencyStreamCut(t *testing.T) {
	var calls atomic.Int32
	cut := make(chan struct{})
	g := startIdemGateway(t, llmtest.WithHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		chunk := func(content, finish string) {
			c := llm.ChatChunk{ID: "chatcmpl-s", Object: "chat.completion.chunk", Created: 1, Model: "gpt-4o",
				Choices: []llm.ChunkChoice{{Delta: llm.Delta{Content: &content}}}}
			if finish != "" {
				c.Choices[0].FinishReason = &finish
			}
			b, _ := json.Marshal(c)
			fmt.Fprintf(w, "data: %s\n\n", b)
			w.(http.Flusher).Flush()
		}
		chunk("Part one. ", "")
		if calls.Add(1) == 1 {
			// The first stream never ends by itself: corral cuts it when
			// its agent goes.
			<-r.Context().Done()
			close(cut)
			return
		}
		chunk("Part two.", "stop")
		fmt.Fprint(w, `data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":4,"total_tokens":8}}`+"\n\n")
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	const body = `{"model":"gpt","stream":true,"messages":[{"role":"user","content":"in two parts"}]}`
	const path = "/openai/v1/chat/completions"

	// The agent reads the first part and hangs up.
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "POST", g.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+g.alpha)
	req.Header.Set("Idempotency-Key", "stream-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, "Part one.") {
		t.Fatalf("the first event: %q %v", line, err)
	}
	cancel()
	resp.Body.Close()

	// Its retry runs again once corral has seen it go (409 until then).
	<-cut
	deadline := time.Now().Add(30 * time.Second)
	var answer []byte
	for {
		resp, answer = g.post(t, t.Context(), g.alpha, path, body, "stream-1")
		if resp.StatusCode != http.StatusConflict || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	got, _, done := chatStreamAnswer(t, answer)
	if resp.StatusCode != http.StatusOK || isReplay(resp) || !done || got.Choices[0].Message.Content.String() != "Part one. Part two." {
		t.Fatalf("the retry of a cut stream: HTTP %d replayed %v %s, want the call made again, whole", resp.StatusCode, isReplay(resp), answer)
	}
	if n := g.upstreamCalls("/v1/chat/completions"); n != 2 {
		t.Errorf("the provider was called %d times, want twice (the cut stream is not recorded)", n)
	}
	// That one completed: it is replayed, in the same shape.
	resp, again := g.post(t, t.Context(), g.alpha, path, body, "stream-1")
	replayed, _, done := chatStreamAnswer(t, again)
	if resp.StatusCode != http.StatusOK || !isReplay(resp) || !done || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("a retry of the completed stream: HTTP %d replayed %v %q %s, want a replayed event stream", resp.StatusCode, isReplay(resp), resp.Header.Get("Content-Type"), again)
	}
	if diff := cmp.Diff(got, replayed); diff != "" {
		t.Errorf("the replayed stream's answer differs (-first +replay):\n%s", diff)
	}
	if n := g.upstreamCalls("/v1/chat/completions"); n != 2 {
		t.Errorf("after the replay the provider was called %d times, want still twice", n)
	}
	if calls, _ := g.budgetUsed(t); calls != 2 {
		t.Errorf("alpha's budget counted %d calls, want 2 (the cut stream and its retry ran)", calls)
	}
}

// TestModelIdempotencyHostile: keys too long, not printable ASCII or sent
// twice are refused with 400 before anything is reserved or sent; a key
// is its caller's: another agent's call with the same key and request is
// a call of its own, never the first agent's answer.
func TestModelIdempotencyHostile(t *testing.T) {
	g := startIdemGateway(t)
	ctx := t.Context()
	const path = "/openai/v1/chat/completions"
	const body = `{"model":"gpt","messages":[{"role":"user","content":"hello"}]}`

	refused := []struct {
		name string
		keys []string
		want string
	}{
		{"256 characters", []string{strings.Repeat("k", 256)}, "longer than 255"},
		{"64 KiB", []string{strings.Repeat("k", 64<<10)}, "longer than 255"},
		{"unicode", []string{"ключ-🔑"}, "printable ASCII"},
		{"space inside", []string{"a key"}, "printable ASCII"},
		{"tab inside", []string{"a\tkey"}, "printable ASCII"},
		{"two headers", []string{"k1", "k2"}, "not several"},
		{"two equal headers", []string{"k1", "k1"}, "not several"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			resp, answer := g.post(t, ctx, g.alpha, path, body, tc.keys...)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(answer), `"code":"invalid_request"`) || !strings.Contains(string(answer), tc.want) {
				t.Errorf("HTTP %d %.300s, want 400 invalid_request saying %q", resp.StatusCode, answer, tc.want)
			}
		})
	}
	// A header past the server's limit never reaches the edge.
	resp, answer := g.post(t, ctx, g.alpha, path, body, strings.Repeat("k", 2<<20))
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 2 MiB key: HTTP %d %.200s, want 431", resp.StatusCode, answer)
	}
	// Without a credential the key is not even looked at.
	if resp, answer := g.post(t, ctx, "", path, body, "shared"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a key without a credential: HTTP %d %s, want 401", resp.StatusCode, answer)
	}
	if n := g.upstreamCalls("/v1/chat/completions"); n != 0 {
		t.Fatalf("refused calls reached the provider %d times", n)
	}
	if calls, _ := g.budgetUsed(t); calls != 0 {
		t.Fatalf("refused calls were charged: %d calls", calls)
	}

	// The same key and request from two agents: two calls, two answers.
	respA, answerA := g.post(t, ctx, g.alpha, path, body, "shared")
	respB, answerB := g.post(t, ctx, g.beta, path, body, "shared")
	if respA.StatusCode != http.StatusOK || respB.StatusCode != http.StatusOK || isReplay(respB) || bytes.Equal(answerA, answerB) {
		t.Fatalf("alpha then beta with one key: HTTP %d, %d (beta replayed %v):\n%s\n%s\nwant two calls of their own", respA.StatusCode, respB.StatusCode, isReplay(respB), answerA, answerB)
	}
	var a, b llm.ChatResponse
	if err := json.Unmarshal(answerA, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(answerB, &b); err != nil {
		t.Fatal(err)
	}
	if a.ID == b.ID {
		t.Errorf("beta got alpha's answer %s", a.ID)
	}
	// Each one's retry gets its own answer.
	for _, tc := range []struct {
		agent, key string
		want       []byte
	}{{"alpha", g.alpha, answerA}, {"beta", g.beta, answerB}} {
		resp, again := g.post(t, ctx, tc.key, path, body, "shared")
		if resp.StatusCode != http.StatusOK || !isReplay(resp) || !bytes.Equal(again, tc.want) {
			t.Errorf("%s's retry: HTTP %d replayed %v %s, want its own answer %s", tc.agent, resp.StatusCode, isReplay(resp), again, tc.want)
		}
	}
	if n := g.upstreamCalls("/v1/chat/completions"); n != 2 {
		t.Errorf("the provider was called %d times, want twice (once per agent)", n)
	}
	// Keys are case-sensitive and compared whole: a near miss is a new call.
	if resp, answer := g.post(t, ctx, g.alpha, path, body, "Shared"); resp.StatusCode != http.StatusOK || isReplay(resp) {
		t.Errorf("another key's call: HTTP %d replayed %v %s, want a call of its own", resp.StatusCode, isReplay(resp), answer)
	}
}
