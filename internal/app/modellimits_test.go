package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/app/apptest"
	openaiedge "github.com/corral-dev/corral/internal/edge/openai"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/llm/llmtest"
)

// hugeUsage is what the fake provider bills for one call in these tests.
var hugeUsage = llm.Usage{PromptTokens: 10, CompletionTokens: 1_000_000, TotalTokens: 1_000_010}

// budgetedModel applies a Model "m" at the upstream (maximum output
// maxOut), an Agent "spender" and a day Budget "spender-day" of tokens,
// and returns the agent's key once both are loaded.
func budgetedModel(t *testing.T, srv *apptest.Server, upstream string, maxOut, tokens int, extra string) string {
	t.Helper()
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: m}
spec: {provider: openai, baseURL: %q, redact: "off", maxOutputTokens: %d, pricing: {inputPerMTok: 1, outputPerMTok: 1}%s}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: spender}
spec: {models: [m]}
---
apiVersion: corral.dev/v1
kind: Budget
metadata: {name: spender-day}
spec: {scope: {agent: spender}, window: day, limit: {tokens: %d}}
`, upstream, maxOut, extra, tokens))
	key := srv.Key(t, "spender")
	waitModel(t, srv, key, "m")
	waitBudget(t, srv, "spender-day")
	return key
}

// usedTokens is what `corral budgets` shows spent on spender-day.
func usedTokens(t *testing.T, srv *apptest.Server) int64 {
	t.Helper()
	_, body := srv.Call(t, srv.Token, "GET", "/v1/budgets", nil, nil)
	var budgets struct {
		Items []struct {
			Budget string
			Used   struct{ Tokens int64 }
		}
	}
	if err := json.Unmarshal(body, &budgets); err != nil {
		t.Fatalf("GET /v1/budgets: %v: %s", err, body)
	}
	for _, b := range budgets.Items {
		if b.Budget == "spender-day" {
			return b.Used.Tokens
		}
	}
	t.Fatalf("GET /v1/budgets: no spender-day in %s", body)
	return 0
}

// auditRecord is the part of an audit record these tests read.
type auditRecord struct {
	Status, Code, Reason string
	Model                struct {
		Attempts         []string
		CompletionTokens int `json:"completion_tokens"`
	}
}

// waitRecords waits until the agent has n audit records of what happened
// and returns them. A call still running shows as its intent (status
// "unknown") until its outcome is appended, which for a call the agent left
// is after the provider answers.
func waitRecords(t *testing.T, srv *apptest.Server, agent string, n int) []auditRecord {
	t.Helper()
	deadline := time.Now().Add(apptest.Patience)
	for {
		_, body := srv.Call(t, srv.Token, "GET", "/v1/audit?agent="+agent, nil, nil)
		var out struct{ Records []auditRecord }
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatal(err)
		}
		if len(out.Records) >= n && !slices.ContainsFunc(out.Records, func(r auditRecord) bool { return r.Status == "unknown" }) {
			return out.Records
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit of %s: %d records, want %d: %s", agent, len(out.Records), n, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// postChat sends a chat completion with ctx and returns the answer, or the
// client's error.
func postChat(ctx context.Context, srv *apptest.Server, key, body string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", srv.URL+"/openai/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	return http.DefaultClient.Do(req)
}

// TestUnansweredCallsKeepTheirWorstCase (issue 22, item 1): a call the
// provider may have run but whose usage corral never learns (the agent gave
// up once the provider had it, the provider timed out) keeps its worst case charged, and
// the audit tells an agent that went away from a provider that failed.
// d7dc022 charged 0 tokens for both and blamed the provider for the first.
func TestUnansweredCallsKeepTheirWorstCase(t *testing.T) {
	const maxOut = 2000
	tests := []struct {
		name     string
		timeout  string // the Model's
		stream   bool
		wantCode string
	}{
		{name: "the agent went away", timeout: "60s", wantCode: "client_closed"},
		{name: "the agent left a stream", timeout: "60s", stream: true, wantCode: "client_closed"},
		{name: "the provider timed out", timeout: "1s", wantCode: "upstream_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := llmtest.Start(t, llmtest.WithDelay(time.Minute), llmtest.WithUsage(hugeUsage))
			srv := apptest.Start(t)
			key := budgetedModel(t, srv, up.URL(), maxOut, 100_000, ", timeout: "+tt.timeout)

			ctx, cancel := context.WithTimeout(t.Context(), apptest.Patience)
			defer cancel()
			if tt.wantCode == "client_closed" {
				// The agent gives up once the provider has the call, not
				// after a fixed time: on a loaded machine the call may not
				// even have reached the provider within a second.
				gaveUp := make(chan struct{})
				defer func() { cancel(); <-gaveUp }()
				go func() {
					defer close(gaveUp)
					defer cancel()
					for len(up.ChatRequests()) == 0 && ctx.Err() == nil {
						time.Sleep(5 * time.Millisecond) // polling: nothing to wait on from outside
					}
				}()
			}
			body := fmt.Sprintf(`{"model":"m","stream":%t,"messages":[{"role":"user","content":"write forever"}]}`, tt.stream)
			resp, err := postChat(ctx, srv, key, body)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if tt.wantCode == "client_closed" {
					t.Fatalf("the call answered HTTP %d %s before the agent gave up", resp.StatusCode, b)
				}
				if resp.StatusCode != http.StatusGatewayTimeout {
					t.Errorf("provider time-out: HTTP %d %s, want 504", resp.StatusCode, b)
				}
			}
			recs := waitRecords(t, srv, "spender", 1)
			if r := recs[0]; r.Code != tt.wantCode || r.Status != "error" {
				t.Errorf("audit record %+v, want status error code %s", r, tt.wantCode)
			}
			// The worst case: the prompt's estimate plus the model's maximum.
			if got := usedTokens(t, srv); got < maxOut {
				t.Errorf("budget used %d tokens, want at least the worst case reserved (> %d)", got, maxOut)
			}
			if n := len(up.ChatRequests()); n != 1 {
				t.Errorf("the provider got %d requests, want 1", n)
			}
		})
	}
}

// TestStreamCutKeepsWorstCase: an agent that hangs up on a stream before
// the provider's usage chunk leaves the worst case charged, not an
// estimate of the text it saw (hidden reasoning is not in the text).
func TestStreamCutKeepsWorstCase(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"thinking\"},\"finish_reason\":null}]}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the rest never comes
	}))
	srv := apptest.Start(t)
	key := budgetedModel(t, srv, up.URL(), 3000, 100_000, "")
	resp, err := postChat(t.Context(), srv, key, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && !strings.Contains(sc.Text(), "thinking") {
	}
	resp.Body.Close()
	recs := waitRecords(t, srv, "spender", 1)
	if r := recs[0]; r.Code != "client_closed" {
		t.Errorf("audit record %+v, want code client_closed", r)
	}
	if got := usedTokens(t, srv); got < 3000 {
		t.Errorf("budget used %d tokens after a cut stream, want at least the worst case (> 3000)", got)
	}
}

// TestOutputLimits (issue 22, items 2 and 3): an output limit above the
// model's maximum is refused (422 naming the field) before anything is
// reserved, so that no limit wraps the arithmetic or holds a shared budget
// hostage; the provider always gets one cap, the larger the agent gave, or
// the model's maximum when it gave none, in the field it reads.
func TestOutputLimits(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithUsage(llm.Usage{PromptTokens: 5, CompletionTokens: 5, TotalTokens: 10}))
	srv := apptest.Start(t)
	key := budgetedModel(t, srv, up.URL(), 2000, 10_000, "")

	refused := []struct{ name, limits, field string }{
		{"max_tokens at the int64 maximum", `"max_tokens":9223372036854775807`, "max_tokens"},
		{"max_tokens 1e12", `"max_tokens":1000000000000`, "max_tokens"},
		{"max_completion_tokens over the maximum", `"max_completion_tokens":2001,"max_tokens":5`, "max_completion_tokens"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			codes := map[int]int{}
			var last []byte
			for range 10 {
				wg.Go(func() {
					status, body, _ := chat(t, srv, key, json.RawMessage(`{"model":"m",`+tt.limits+`,"messages":[{"role":"user","content":"hi"}]}`))
					mu.Lock()
					defer mu.Unlock()
					codes[status]++
					last = body
				})
			}
			wg.Wait()
			if codes[http.StatusUnprocessableEntity] != 10 {
				t.Fatalf("10 calls with %s: %v, want 10 × 422", tt.limits, codes)
			}
			if !bytes.Contains(last, []byte(`"code":"output_limit_too_high"`)) || !bytes.Contains(last, []byte(tt.field+":")) {
				t.Errorf("refusal %s, want output_limit_too_high naming %s", last, tt.field)
			}
		})
	}
	if n := len(up.ChatRequests()); n != 0 {
		t.Fatalf("the provider got %d refused calls", n)
	}
	if got := usedTokens(t, srv); got != 0 {
		t.Errorf("refused calls left %d tokens charged, want 0", got)
	}

	forwarded := []struct {
		name, limits        string
		wantMax, wantMaxCmp *int
	}{
		// The provider is not OpenAI's own API: the cap goes in
		// max_tokens, which every OpenAI-compatible server reads (finding
		// 8: Ollama ignores max_completion_tokens).
		{"no limit: the model's maximum", ``, ptr(2000), nil},
		{"max_tokens only", `"max_tokens":50,`, ptr(50), nil},
		{"both: the larger, once", `"max_completion_tokens":1,"max_tokens":100,`, ptr(100), nil},
		{"max_completion_tokens only", `"max_completion_tokens":70,`, ptr(70), nil},
	}
	for _, tt := range forwarded {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.ChatRequests())
			status, body, _ := chat(t, srv, key, json.RawMessage(`{"model":"m",`+tt.limits+`"messages":[{"role":"user","content":"hi"}]}`))
			if status != http.StatusOK {
				t.Fatalf("HTTP %d %s", status, body)
			}
			got := up.ChatRequests()[before]
			if !equalPtr(got.MaxTokens, tt.wantMax) || !equalPtr(got.MaxCompletionTokens, tt.wantMaxCmp) {
				t.Errorf("provider got max_tokens %v max_completion_tokens %v, want %v and %v",
					deref(got.MaxTokens), deref(got.MaxCompletionTokens), deref(tt.wantMax), deref(tt.wantMaxCmp))
			}
		})
	}
}

func ptr(n int) *int { return &n }

func equalPtr(a, b *int) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

// streamLines reads a stream's data lines until [DONE] or its end.
func streamLines(t *testing.T, resp *http.Response) []string {
	t.Helper()
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, line)
			if line == "[DONE]" {
				break
			}
		}
	}
	return out
}

// TestStreamMaxDuration (issue 22, items 3 and 10): a provider trickling an
// event every 0.5 s cannot hold a stream (and its reservation) open past
// the edge's maximum duration: the stream ends with an error event and
// [DONE], and the call is settled and audited.
func TestStreamMaxDuration(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for {
			fmt.Fprint(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}))
	srv := apptest.StartWith(t, app.Config{ModelLimits: openaiedge.Limits{MaxStreamDuration: 2 * time.Second}})
	key := budgetedModel(t, srv, up.URL(), 1000, 100_000, "")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // the test's own bound, not the assertion
	defer cancel()
	resp, err := postChat(ctx, srv, key, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	lines := streamLines(t, resp)
	if len(lines) < 2 || lines[len(lines)-1] != "[DONE]" || !strings.Contains(lines[len(lines)-2], `"code":"upstream_timeout"`) {
		t.Fatalf("stream ended with %q, want an upstream_timeout error event and [DONE]", lines[max(len(lines)-2, 0):])
	}
	recs := waitRecords(t, srv, "spender", 1)
	if r := recs[0]; r.Code != "upstream_timeout" || !strings.Contains(r.Reason, "longest a call may take") {
		t.Errorf("audit record %+v, want the stream's time limit", r)
	}
	if got := usedTokens(t, srv); got < 1000 {
		t.Errorf("budget used %d tokens, want the worst case charged (no usage came)", got)
	}
}

// TestStreamWriteTimeout (issue 22, item 3): an agent that stops reading a
// stream is dropped after the write timeout, its call settled and audited
// as the agent's doing. d7dc022 had no write deadline: the stream, and its
// reservation, stayed as long as the agent held the connection.
func TestStreamWriteTimeout(t *testing.T) {
	piece := strings.Repeat("x", 64<<10)
	up := llmtest.Start(t, llmtest.WithHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		// 12 MiB: more than the socket buffers hold, less than the
		// provider's answer cap.
		for range 192 {
			if _, err := fmt.Fprintf(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", piece); err != nil {
				return
			}
		}
		<-r.Context().Done()
	}))
	srv := apptest.StartWith(t, app.Config{ModelLimits: openaiedge.Limits{WriteTimeout: time.Second}})
	key := budgetedModel(t, srv, up.URL(), 1000, 100_000, "")

	req, err := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/openai/v1/chat/completions",
		strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := stalledClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	recs := waitRecords(t, srv, "spender", 1)
	if r := recs[0]; r.Code != "client_closed" || !strings.Contains(r.Reason, "stopped reading") {
		t.Errorf("audit record %+v, want the agent that stopped reading", r)
	}
}

// TestModelCallAdmission (issue 12, item 9): a body over the model body cap
// is refused before it is read, however many come at once, and past the
// concurrency limits (all calls, and calls with large bodies) calls are
// answered 503 overloaded with Retry-After instead of being taken in.
func TestModelCallAdmission(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 16)
	up := llmtest.Start(t, llmtest.WithHandler(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
	}))
	srv := apptest.StartWith(t, app.Config{ModelLimits: openaiedge.Limits{MaxBody: 2 << 20, MaxConcurrent: 3, MaxConcurrentLarge: 1}})
	key := budgetedModel(t, srv, up.URL(), 1000, 1_000_000, "")

	// Four 31 MB prompts at once: each refused from its Content-Length.
	big := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 31<<20) + `"}]}`
	var wg sync.WaitGroup
	statuses := make([]int, 4)
	for i := range statuses {
		wg.Go(func() {
			resp, err := postChat(t.Context(), srv, key, big)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusRequestEntityTooLarge {
			t.Errorf("31 MB prompt #%d: HTTP %d, want 413", i, s)
		}
	}

	// A body of unknown length (chunked) is cut off at the cap.
	req, err := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/openai/v1/chat/completions", io.MultiReader(strings.NewReader(big)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if req.ContentLength != 0 || resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a chunked 31 MB prompt: HTTP %d, want 413", resp.StatusCode)
	}

	// One large call takes the one large slot, two small ones the rest;
	// the next of either kind is turned away.
	largeBody := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("b", 1<<20+10) + `"}]}`
	done := make(chan int, 3)
	send := func(body string) {
		go func() {
			resp, err := postChat(t.Context(), srv, key, body)
			if err != nil {
				done <- 0
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
		select {
		case <-arrived:
		case s := <-done:
			t.Fatalf("a call within the limits ended with HTTP %d before it reached the provider", s)
		}
	}
	send(largeBody)
	refuse := func(what, body string) {
		t.Helper()
		resp, err := postChat(t.Context(), srv, key, body)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !bytes.Contains(b, []byte(`"code":"overloaded"`)) {
			t.Errorf("%s past the limit: HTTP %d Retry-After %q %s, want 503 overloaded with Retry-After", what, resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
	}
	refuse("a large call", largeBody)
	small := `{"model":"m","messages":[{"role":"user","content":"hold"}]}`
	send(small)
	send(small)
	refuse("a small call", small)
	// A caller without a credential takes no slot and is not read: with
	// every slot held and a body over the cap, it is answered 401, so idle
	// unauthenticated sockets cannot hold the slots (found in review).
	overCap := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("c", 3<<20) + `"}]}`
	for _, body := range []string{small, overCap} {
		resp, err := postChat(t.Context(), srv, "corral_ak_nope", body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("an unauthenticated call of %d bytes with every slot held: HTTP %d, want 401", len(body), resp.StatusCode)
		}
	}
	close(release)
	for range 3 {
		if s := <-done; s != http.StatusOK {
			t.Errorf("a call within the limits: HTTP %d, want 200", s)
		}
	}
	if status, body, _ := chat(t, srv, key, userMessage("m", "after")); status != http.StatusOK {
		t.Errorf("a call once the slots are free: HTTP %d %s", status, body)
	}
}

// TestFallbackAfterTimeoutChargesBoth (issue 22, item 1): when a target
// times out after the request left and a fallback answers, the call is
// charged the fallback's usage plus the first target's worst case: the
// first provider may well have run the request.
func TestFallbackAfterTimeoutChargesBoth(t *testing.T) {
	slow := llmtest.Start(t, llmtest.WithDelay(time.Minute), llmtest.WithUsage(hugeUsage))
	fast := llmtest.Start(t, llmtest.WithUsage(llm.Usage{PromptTokens: 5, CompletionTokens: 5, TotalTokens: 10}))
	srv := apptest.Start(t)
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: slow}
spec: {provider: openai, baseURL: %q, redact: "off", timeout: 1s, maxOutputTokens: 3000}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: fast}
spec: {provider: openai, baseURL: %q, redact: "off", maxOutputTokens: 3000}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: m}
spec: {route: {targets: [{model: slow}], fallbacks: [fast]}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: spender}
spec: {models: [m]}
---
apiVersion: corral.dev/v1
kind: Budget
metadata: {name: spender-day}
spec: {scope: {agent: spender}, window: day, limit: {tokens: 100000}}
`, slow.URL(), fast.URL()))
	key := srv.Key(t, "spender")
	waitModel(t, srv, key, "m")
	waitBudget(t, srv, "spender-day")
	status, body, target := chat(t, srv, key, userMessage("m", "hi"))
	if status != http.StatusOK || target != "fast" {
		t.Fatalf("m: HTTP %d target %q %s, want fast's answer", status, target, body)
	}
	if got := usedTokens(t, srv); got < 3000+10 {
		t.Errorf("budget used %d tokens, want fast's 10 plus slow's worst case (> 3000)", got)
	}
	recs := waitRecords(t, srv, "spender", 1)
	if a := recs[0].Model.Attempts; len(a) != 1 || !strings.Contains(a[0], "slow: time-out (may have run") {
		t.Errorf("audit attempts %q, want slow's time-out charged", a)
	}
}

// stalledClient is an agent with a small receive window, for callers that
// read the headers and then nothing.
func stalledClient() *http.Client {
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	return &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
}

// TestUnreadAnswerFreesItsSlot: an agent that does not read a whole answer
// cannot keep its concurrency slot: the write times out and the next call
// gets in.
func TestUnreadAnswerFreesItsSlot(t *testing.T) {
	up := llmtest.Start(t, llmtest.WithContent(strings.Repeat("y", 12<<20)))
	srv := apptest.StartWith(t, app.Config{ModelLimits: openaiedge.Limits{MaxConcurrent: 1, WriteTimeout: time.Second}})
	key := budgetedModel(t, srv, up.URL(), 1000, 1_000_000_000, "")
	req, err := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/openai/v1/chat/completions",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"a long answer"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := stalledClient().Do(req) // headers only, then nothing
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	up.Set(llmtest.WithContent("short"))
	deadline := time.Now().Add(apptest.Patience)
	for {
		status, body, _ := chat(t, srv, key, userMessage("m", "next"))
		if status == http.StatusOK {
			return
		}
		if status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("the next call: HTTP %d %s, want 200 once the unread answer gave up its slot", status, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
