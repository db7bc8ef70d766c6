package main

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
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// The Model resources the bench applies, both in front of the same
// upstream: modelOff passes prompts as they are, modelRedacted replaces the
// personal data in them with placeholders and restores them in the answer.
// upstreamModel is the upstream's name for the model, which a path that does
// not go through corral asks for.
const (
	modelOff      = "bench-off"
	modelRedacted = "bench-eu"
	upstreamModel = "gpt-4o"
	modelAgent    = "bench-models"
)

// The personal data in benchPrompt, and the placeholder corral puts in
// place of the address (the first EMAIL of a call).
const (
	benchEmail       = "dana.k+billing@example.com"
	benchPlaceholder = "<EMAIL_1>"
)

// benchPrompt is a realistic 2 KB support message: a customer's complaint
// with an email address, a card number and an IBAN among order numbers,
// dates and amounts that must not be taken for personal data.
var benchPrompt = func() string {
	const body = `Customer message (ticket #58213, received 2026-03-18 09:42 UTC, channel: web form):

"Hello, my name is Dana and I was charged twice for my annual subscription last month. The card on
file is 4111 1111 1111 1111 and the refund should go to my account DE89 3704 0044 0532 0130 00,
not back to the card, because I am closing that card next week. You can reach me at
` + benchEmail + ` between 9 and 5 on weekdays. The dashboard showed version 4.12.0 with the
error code E-1042 when I tried to download the invoice myself. My previous ticket was #57991 and
it was closed without an answer, which is why I am writing again. Please fix this before the 25th,
otherwise I will cancel the subscription and ask my bank to reverse the second payment.
Thanks, Dana"

Internal notes:
- Plan: Pro (annual), 12 seats, renewal on 2027-01-01, invoice INV-2026-000318 for 1,188.00 EUR.
- Billing shows two captures of 1,188.00 EUR on 2026-02-14, eleven seconds apart (retry after a
  gateway time-out); the second capture has not been refunded.
- Risk score 0.12; no chargebacks; account created 2019-06-03; region eu-central-1.
- Last deploy of the billing service: build 2026.03.17-rc2, rollout 100%.

Instructions: summarise the problem in two sentences, say what refund applies under policy R-7
(duplicate charges are refunded in full within 5 business days), and draft a reply to the
customer that confirms where the refund goes. Do not promise anything the policy does not allow.
`
	var b strings.Builder
	for b.Len() < 2048 {
		b.WriteString(body)
	}
	return b.String()[:2048]
}()

// answerText is what the upstream answers, in 25 pieces of two words when
// streamed; %s is the customer's address, or the placeholder when that is
// what the prompt had.
const answerText = "Hello Dana, I am sorry you were charged twice. Under policy R-7 the duplicate payment of " +
	"1,188.00 EUR is refunded in full to your account within 5 business days, and we will confirm " +
	"by email to %s once it is sent. Your subscription stays active. Kind regards, Acme Support"

// benchModels measures a chat completion with the 2 KB prompt straight to
// an OpenAI-compatible upstream of the bench's own, through a bare reverse
// proxy, through corral with redaction off and with reversible redaction,
// and through the Portkey gateway when Node.js can run it: whole answers
// (latency and throughput) and streamed ones (time to the first content
// byte and to the end). Every answer is checked, and so is what the
// upstream saw and what corral audited; any mismatch fails the run.
func benchModels(ctx context.Context, c *corral, o options) error {
	up, err := startModelUpstream(ctx)
	if err != nil {
		return err
	}
	defer up.stop()
	proxy, err := startBufferingProxy(ctx, up.url)
	if err != nil {
		return err
	}
	defer proxy.stop()
	key, err := setupModels(ctx, c, up.url+"/v1")
	if err != nil {
		return err
	}
	peer, err := startPortkey(ctx, up.url+"/v1")
	if err != nil {
		fmt.Printf("peer: Portkey skipped: %v\n\n", err)
	} else {
		defer peer.stop()
		fmt.Printf("peer: Portkey (@portkey-ai/gateway %s with @hono/node-server %s, node %s) from %s\n\n", peer.version, honoNodeServer, peer.node, peer.dir)
	}
	auditBefore, err := auditCount(ctx, c)
	if err != nil {
		return err
	}

	bearer := http.Header{"Authorization": {"Bearer sk-bench"}}
	agent := http.Header{"Authorization": {"Bearer " + key}}
	portkey := http.Header{}
	if peer != nil {
		portkey.Set("Authorization", "Bearer sk-bench")
		portkey.Set("X-Portkey-Provider", "openai")
		portkey.Set("X-Portkey-Custom-Host", up.url+"/v1")
	}
	ways := func(stream bool) []*completion {
		p := []*completion{
			newCompletion("direct", up.url+"/v1/chat/completions", upstreamModel, bearer, stream),
			newCompletion("bare reverse proxy", proxy.url+"/v1/chat/completions", upstreamModel, bearer, stream),
			throughCorral(newCompletion("corral, redact off", c.url+"/openai/v1/chat/completions", modelOff, agent, stream)),
			throughCorral(newCompletion("corral, reversible", c.url+"/openai/v1/chat/completions", modelRedacted, agent, stream)),
		}
		if peer != nil {
			p = append(p, newCompletion("Portkey "+peer.version, peer.url+"/v1/chat/completions", upstreamModel, portkey, stream))
		}
		return p
	}
	plain, streamed := ways(false), ways(true)
	all := append(slices.Clone(plain), streamed...)

	lat := measureCompletions(ctx, all, o)
	fmt.Printf("model call, a %d-byte prompt with an email, a card and an IBAN, %d sequential calls per path after %d to warm up,\n"+
		"paths interleaved in blocks of %d (µs); added = path minus direct:\n", len(benchPrompt), o.calls, o.warmup, o.block)
	if err := printCompletions(plain, streamed, lat); err != nil {
		return err
	}
	if err := completionThroughput(ctx, plain, o); err != nil {
		return err
	}
	if o.cpuprofile != "" {
		// Whole answers with reversible redaction: the path with the most of
		// corral in it.
		redacted := plain[slices.IndexFunc(plain, func(p *completion) bool { return p.model == modelRedacted })]
		if err := profile(ctx, redacted.path, slices.Max(o.clients), o.duration, o.cpuprofile+".models"); err != nil {
			return err
		}
	}
	return verifyModels(ctx, c, up, all, auditBefore)
}

// printCompletions prints the latency of whole answers, then of streamed
// ones: lat holds plain's, then streamed's, in order.
func printCompletions(plain, streamed []*completion, lat []completionLatency) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "whole answer\tp50\tp90\tp99\tadded p50\tadded p99\t")
	for i, p := range plain {
		l, d := lat[i], lat[0]
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%s\t\n", p.name, us(l.end.p50), us(l.end.p90), us(l.end.p99), addedUS(i, l.end, d.end))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Println()
	fmt.Fprintln(tw, "streamed, 28 events\tfirst byte p50\tp90\tp99\tadded p50\tadded p99\tend p50\tp99\tadded p50\tadded p99\t")
	for i, p := range streamed {
		l, d := lat[len(plain)+i], lat[len(plain)]
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%s\t%.0f\t%.0f\t%s\t\n", p.name, us(l.first.p50), us(l.first.p90), us(l.first.p99),
			addedUS(i, l.first, d.first), us(l.end.p50), us(l.end.p99), addedUS(i, l.end, d.end))
	}
	return tw.Flush()
}

// completionThroughput prints the requests/s of each path at each of
// o.clients, and their ratio to the first path's.
func completionThroughput(ctx context.Context, paths []*completion, o options) error {
	fmt.Printf("\nthroughput, whole answers, requests/s, median of %d phase(s) of %s per path and concurrency, paths rotated; ratio to direct:\n", o.repeats, o.duration)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	header := "clients\t"
	for i, p := range paths {
		header += p.name + "\t"
		if i > 0 {
			header += "ratio\t"
		}
	}
	fmt.Fprintln(tw, header)
	for _, n := range o.clients {
		rates := make([][]float64, len(paths))
		for r := range o.repeats {
			for k := range paths {
				i := (k + r) % len(paths) // no path always goes first
				rates[i] = append(rates[i], measureThroughput(ctx, paths[i].path, n, o.duration))
			}
		}
		row := fmt.Sprintf("%d\t", n)
		d := median(rates[0])
		for i := range paths {
			m := median(rates[i])
			row += fmt.Sprintf("%.0f\t", m)
			if i > 0 {
				row += fmt.Sprintf("%.2f\t", m/d)
			}
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

// addedUS is "+p50 +p99" of l over the baseline d, in µs, or two empty
// cells for the baseline itself (row 0).
func addedUS(row int, l, d quantiles) string {
	if row == 0 {
		return "\t"
	}
	return fmt.Sprintf("%+.0f\t%+.0f", us(l.p50-d.p50), us(l.p99-d.p99))
}

// verifyModels fails the run if any call failed, if the upstream was called
// other than once per call, if it saw the customer's address in a prompt
// that corral was to redact (or a placeholder in one it was not), or if
// corral's audit stream did not grow by one record per call through it.
func verifyModels(ctx context.Context, c *corral, up *modelUpstream, paths []*completion, auditBefore uint64) error {
	var calls, failures, viaCorral, redacted int64
	var errs []error
	for _, p := range paths {
		calls += p.calls.Load()
		failures += p.failures.Load()
		if p.corral {
			viaCorral += p.calls.Load()
		}
		if p.model == modelRedacted {
			redacted += p.calls.Load()
		}
		if p.firstErr != nil {
			errs = append(errs, fmt.Errorf("%s: %d failed, the first: %w", p.label(), p.failures.Load(), p.firstErr))
		}
	}
	fmt.Printf("\nfailures: %d of %d calls\n", failures, calls)
	hits, raw, placeholders := up.hits.Load(), up.raw.Load(), up.placeholders.Load()
	fmt.Printf("upstream: answered %d requests for %d calls; %d prompts held the address, %d the placeholder instead (%d calls with reversible redaction)\n",
		hits, calls, raw, placeholders, redacted)
	if hits != calls {
		errs = append(errs, fmt.Errorf("upstream: %d requests for %d calls", hits, calls))
	}
	if placeholders != redacted || raw != calls-redacted {
		errs = append(errs, fmt.Errorf("upstream: %d prompts with the placeholder for %d redacted calls, %d with the address for %d others",
			placeholders, redacted, raw, calls-redacted))
	}
	after, err := auditCount(ctx, c)
	if err != nil {
		return err
	}
	stored := int64(after - auditBefore)
	fmt.Printf("audit: %d records stored for %d calls through corral\n", stored, viaCorral)
	if stored != viaCorral {
		errs = append(errs, fmt.Errorf("audit: %d records for %d calls", stored, viaCorral))
	}
	return errors.Join(errs...)
}

// completion is one way of getting a chat completion for benchPrompt. Its
// path counts the calls and failures and serves the throughput phases.
type completion struct {
	*path
	url    string
	header http.Header
	model  string
	stream bool
	body   []byte
	want   string // the answer's text, with the customer's address in it
	client *http.Client
	// first is the time to the first content byte of the latest call (to
	// the whole answer when not streamed), in ns: the latency phase, which
	// makes one call at a time, reads it after each call.
	first atomic.Int64
}

// newCompletion is a path that posts benchPrompt to url asking for model,
// streamed or not, with header.
func newCompletion(name, url, model string, header http.Header, stream bool) *completion {
	req := map[string]any{
		"model": model,
		"messages": []map[string]string{
			{"role": "system", "content": "You are a support agent for Acme Payments. Answer politely and keep it short."},
			{"role": "user", "content": benchPrompt},
		},
		"max_tokens": 400,
	}
	if stream {
		// Every path asks for the usage chunk, as corral always does of its
		// upstream, so that the upstream answers all paths alike.
		req["stream"] = true
		req["stream_options"] = map[string]bool{"include_usage": true}
	}
	body, _ := json.Marshal(req) // maps of strings, bools and ints: cannot fail
	c := &completion{
		url: url, header: header, model: model, stream: stream, body: body,
		want: fmt.Sprintf(answerText, benchEmail),
		// No compression: the bench measures the gateways, not gzip.
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute, DisableCompression: true,
		}},
	}
	c.path = &path{name: name, upstream: true}
	c.path.call = func(ctx context.Context, _ int64) error {
		start := time.Now()
		first, err := c.do(ctx)
		if first == 0 {
			first = time.Since(start)
		}
		c.first.Store(int64(first))
		return err
	}
	return c
}

// throughCorral marks c as a path through corral, whose calls corral audits.
func throughCorral(c *completion) *completion {
	c.corral = true
	return c
}

// label names the path with its mode, for errors.
func (c *completion) label() string {
	if c.stream {
		return c.name + " (streamed)"
	}
	return c.name
}

// do makes one call and checks its answer. For a stream it returns the
// time to the first chunk with content; for a whole answer, zero.
func (c *completion) do(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, "POST", c.url, bytes.NewReader(c.body))
	if err != nil {
		return 0, err
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	if !c.stream {
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, err
		}
		var out struct {
			Choices []struct {
				Message struct{ Content string }
			}
		}
		if err := json.Unmarshal(body, &out); err != nil || len(out.Choices) != 1 || out.Choices[0].Message.Content != c.want {
			return 0, fmt.Errorf("answer %.300s, want the text with %s in it", body, benchEmail)
		}
		return 0, nil
	}
	var first time.Duration
	var text strings.Builder
	done := false
	r := bufio.NewReader(resp.Body)
	for !done {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return first, fmt.Errorf("stream ended before [DONE] (%w), text so far %q", err, text.String())
		}
		data, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte("data: "))
		switch {
		case !ok:
			continue // blank lines between events; comments
		case string(data) == "[DONE]":
			done = true
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct{ Content string }
			}
			Error json.RawMessage
		}
		if err := json.Unmarshal(data, &chunk); err != nil || chunk.Error != nil {
			return first, fmt.Errorf("event %.300s: want a chunk (%v)", data, err)
		}
		for _, ch := range chunk.Choices {
			if ch.Delta.Content != "" && first == 0 {
				first = time.Since(start)
			}
			text.WriteString(ch.Delta.Content)
		}
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return first, err
	}
	if text.String() != c.want {
		return first, fmt.Errorf("streamed text %q, want %q", text.String(), c.want)
	}
	return first, nil
}

// quantiles of one measure of one path.
type quantiles struct{ p50, p90, p99 time.Duration }

// completionLatency is a path's sequential latency: to the first content
// byte (streams only) and to the end of the answer.
type completionLatency struct{ first, end quantiles }

// measureCompletions makes o.calls sequential calls on each path, switching
// path every o.block calls so that the machine's noise hits every path
// alike, after o.warmup calls on each.
func measureCompletions(ctx context.Context, paths []*completion, o options) []completionLatency {
	for range o.warmup {
		for _, p := range paths {
			_ = p.path.do(ctx)
		}
	}
	first := make([][]time.Duration, len(paths))
	end := make([][]time.Duration, len(paths))
	for done := 0; done < o.calls; done += o.block {
		n := min(o.block, o.calls-done)
		for i, p := range paths {
			for range n {
				start := time.Now()
				_ = p.path.do(ctx) // counted in p.failures
				end[i] = append(end[i], time.Since(start))
				first[i] = append(first[i], time.Duration(p.first.Load()))
			}
		}
	}
	out := make([]completionLatency, len(paths))
	for i := range paths {
		out[i] = completionLatency{first: quantilesOf(first[i]), end: quantilesOf(end[i])}
	}
	return out
}

func quantilesOf(d []time.Duration) quantiles {
	slices.Sort(d)
	return quantiles{p50: quantile(d, .5), p90: quantile(d, .9), p99: quantile(d, .99)}
}

// startBufferingProxy is startProxy's bare reverse proxy, reading each
// request's body whole before passing it on, as any gateway that looks at
// the body does. Streaming the body through instead races in net/http
// (golang/go issue 40747): when the upstream answers before the transport
// has read the inbound body to its end, the server closes that body, the
// transport's last read fails and it drops the upstream connection in the
// middle of a streamed answer, about once in a few thousand calls here.
func startBufferingProxy(ctx context.Context, target string) (*server, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	p := httputil.NewSingleHostReverseProxy(u)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	p.Transport = t
	return serve(ctx, "proxy", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "the request body could not be read", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		p.ServeHTTP(w, r)
	}))
}

// setupModels applies the two Models in front of baseURL and an Agent that
// may use both, waits until corral serves them to the agent, and returns a
// new key of the agent.
func setupModels(ctx context.Context, c *corral, baseURL string) (string, error) {
	pricing := map[string]float64{"inputPerMTok": 2.5, "outputPerMTok": 10}
	resources := []map[string]any{{
		"apiVersion": "corral.dev/v1", "kind": "Model", "metadata": map[string]any{"name": modelOff},
		"spec": map[string]any{"provider": "openai", "baseURL": baseURL, "model": upstreamModel, "redact": "off", "pricing": pricing},
	}, {
		"apiVersion": "corral.dev/v1", "kind": "Model", "metadata": map[string]any{"name": modelRedacted},
		"spec": map[string]any{"provider": "openai", "baseURL": baseURL, "model": upstreamModel, "redact": "reversible", "pricing": pricing},
	}, {
		"apiVersion": "corral.dev/v1", "kind": "Agent", "metadata": map[string]any{"name": modelAgent},
		"spec": map[string]any{"description": "calls the bench's model upstream", "models": []string{modelOff, modelRedacted}},
	}}
	key, err := c.applyWithKey(ctx, resources, modelAgent)
	if err != nil {
		return "", err
	}
	// The model catalogue follows the registry in the background.
	deadline := time.Now().Add(10 * time.Second)
	for {
		listed, err := agentModels(ctx, c.url, key.Secret)
		if err == nil && slices.Contains(listed, modelOff) && slices.Contains(listed, modelRedacted) {
			return key.Secret, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("models %s and %s not served to %s after 10s (listed %v): %v", modelOff, modelRedacted, modelAgent, listed, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// agentModels lists the models GET /openai/v1/models shows the key.
func agentModels(ctx context.Context, base, key string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/openai/v1/models", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	body, err := send(http.DefaultClient, req)
	if err != nil {
		return nil, err
	}
	var list struct{ Data []struct{ ID string } }
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, err
	}
	var names []string
	for _, m := range list.Data {
		names = append(names, m.ID)
	}
	return names, nil
}

// modelUpstream is an OpenAI-compatible upstream with a fixed answer, and
// what it saw.
type modelUpstream struct {
	*server
	hits         atomic.Int64 // chat completions answered
	raw          atomic.Int64 // prompts that held benchEmail
	placeholders atomic.Int64 // prompts that held benchPlaceholder instead
}

// startModelUpstream serves POST /v1/chat/completions on loopback: it
// decodes the request as a provider would, and answers answerText (with the
// placeholder when the prompt had it, so that corral has it to restore),
// whole or as server-sent events of 25 content pieces, flushed one
// by one, then the finish, the usage when asked and [DONE].
func startModelUpstream(ctx context.Context) (*modelUpstream, error) {
	u := &modelUpstream{}
	answers := map[bool]upstreamAnswer{false: newUpstreamAnswer(benchEmail), true: newUpstreamAnswer(benchPlaceholder)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model         string
			Stream        bool
			StreamOptions *struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
			Messages []struct{ Role, Content string }
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
			http.Error(w, `{"error": {"message": "want a chat completion request", "type": "invalid_request_error"}}`, http.StatusBadRequest)
			return
		}
		u.hits.Add(1)
		prompt := req.Messages[len(req.Messages)-1].Content
		redacted := strings.Contains(prompt, benchPlaceholder)
		switch {
		case strings.Contains(prompt, benchEmail):
			u.raw.Add(1)
		case redacted:
			u.placeholders.Add(1)
		}
		a := answers[redacted]
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(a.whole)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for _, e := range a.events {
			if _, err := w.Write(e); err != nil {
				return
			}
			_ = rc.Flush()
		}
		if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
			_, _ = w.Write(a.usage)
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	})
	s, err := serve(ctx, "upstream", mux)
	if err != nil {
		return nil, err
	}
	u.server = s
	return u, nil
}

// upstreamAnswer is one answer, encoded once: whole, and as the events of
// a stream (the usage event apart, sent only when asked for).
type upstreamAnswer struct {
	whole  []byte
	events [][]byte
	usage  []byte
}

func newUpstreamAnswer(email string) upstreamAnswer {
	const id, created = "chatcmpl-bench", 1767225600
	text := fmt.Sprintf(answerText, email)
	usage := map[string]int{"prompt_tokens": 560, "completion_tokens": 60, "total_tokens": 620}
	whole, _ := json.Marshal(map[string]any{
		"id": id, "object": "chat.completion", "created": created, "model": upstreamModel, "system_fingerprint": "fp_bench",
		"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text, "refusal": nil},
			"logprobs": nil, "finish_reason": "stop"}},
		"usage": usage,
	})
	event := func(delta map[string]any, finish any) []byte {
		b, _ := json.Marshal(map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": created, "model": upstreamModel, "system_fingerprint": "fp_bench",
			"choices": []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}},
		})
		return []byte("data: " + string(b) + "\n\n")
	}
	a := upstreamAnswer{whole: whole}
	a.events = append(a.events, event(map[string]any{"role": "assistant", "content": "", "refusal": nil}, nil))
	words := strings.SplitAfter(text, " ")
	for i := 0; i < len(words); i += 2 {
		a.events = append(a.events, event(map[string]any{"content": strings.Join(words[i:min(i+2, len(words))], "")}, nil))
	}
	a.events = append(a.events, event(map[string]any{}, "stop"))
	b, _ := json.Marshal(map[string]any{
		"id": id, "object": "chat.completion.chunk", "created": created, "model": upstreamModel, "system_fingerprint": "fp_bench",
		"choices": []any{}, "usage": usage,
	})
	a.usage = []byte("data: " + string(b) + "\n\n")
	return a
}

// portkeyVersion is the Portkey gateway the bench measures, pinned so that
// runs compare. honoNodeServer is pinned beside it: with the
// @hono/node-server that npm picks for it (1.19), Portkey answers every
// streamed completion with HTTP 500 "TypeError: immutable"
// (Portkey-AI/gateway issues 1389 and 1550); with 1.13.8 it streams.
const (
	portkeyVersion = "1.15.2"
	honoNodeServer = "1.13.8"
)

// portkeyManifest is the package.json of the Portkey install.
const portkeyManifest = `{
  "private": true,
  "description": "The Portkey gateway, for corral's bench (bench/models.go).",
  "dependencies": {"@portkey-ai/gateway": "` + portkeyVersion + `"},
  "overrides": {"@hono/node-server": "` + honoNodeServer + `"}
}
`

// loopbackPreload is loaded into node before the Portkey gateway: its
// start-server.js listens on every interface and has no option for the
// host, and the bench must listen on loopback only, so every listen is
// given 127.0.0.1.
const loopbackPreload = `// Written by corral's bench: every server listens on 127.0.0.1 only.
import net from "node:net";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[0] !== null && typeof args[0] === "object") {
    if (args[0].path == null) args[0] = { ...args[0], host: "127.0.0.1" };
  } else if (args[1] == null || typeof args[1] === "string") {
    args[1] = "127.0.0.1";
  } else {
    args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
`

// peer is a gateway of someone else's running beside corral.
type peer struct {
	url, version, node, dir string
	stop                    func()
}

// startPortkey installs the Portkey gateway (npm, into the user's cache
// directory, outside the repository; once) and runs it with node on a free
// loopback port. It needs nothing from the network at run time: the
// upstream is named by the x-portkey-custom-host header of each request. An
// error says why it cannot run; the bench then goes on without it.
func startPortkey(ctx context.Context, upstreamURL string) (*peer, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, errors.New("node is not installed (install Node.js 20 or later with npm to measure the Portkey gateway)")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return nil, errors.New("npm is not installed (install Node.js 20 or later with npm to measure the Portkey gateway)")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cache, "corral-bench", "portkey")
	if err := installPortkey(ctx, npm, dir); err != nil {
		return nil, err
	}
	preload := filepath.Join(dir, "loopback.mjs")
	if err := os.WriteFile(preload, []byte(loopbackPreload), 0o644); err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, node, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("node --version: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "portkey.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(node, "--import", preload, filepath.Join(dir, "node_modules", "@portkey-ai", "gateway", "build", "start-server.js"),
		"--port="+strconv.Itoa(port), "--headless")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NODE_ENV=production")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start the Portkey gateway: %w", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
		logFile.Close()
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if err := waitListening(ctx, addr, exited, &waitErr); err != nil {
		stop()
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("the Portkey gateway did not start: %w; its output (%s): %s", err, logPath, lastLines(log, 10))
	}
	return &peer{url: "http://" + addr, version: portkeyVersion, node: strings.TrimSpace(string(out)), dir: dir, stop: stop}, nil
}

// installPortkey runs npm install in dir unless it already holds
// portkeyVersion with honoNodeServer.
func installPortkey(ctx context.Context, npm, dir string) error {
	if installedVersion(dir, "@portkey-ai/gateway") == portkeyVersion && installedVersion(dir, "@hono/node-server") == honoNodeServer {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(portkeyManifest), 0o644); err != nil {
		return err
	}
	fmt.Printf("peer: installing @portkey-ai/gateway %s into %s (npm install, once)\n", portkeyVersion, dir)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--omit=dev")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm install @portkey-ai/gateway@%s in %s: %w: %s", portkeyVersion, dir, err, lastLines(out, 10))
	}
	return nil
}

// installedVersion is the version of the npm package pkg in dir's
// node_modules, or "" when it is not there.
func installedVersion(dir, pkg string) string {
	var installed struct{ Version string }
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", filepath.FromSlash(pkg), "package.json"))
	if err != nil || json.Unmarshal(b, &installed) != nil {
		return ""
	}
	return installed.Version
}

// freePort is a TCP port free on loopback a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitListening waits until addr accepts connections, the process exits
// (exited is closed, and *waitErr says how) or 30 s pass.
func waitListening(ctx context.Context, addr string, exited <-chan struct{}, waitErr *error) error {
	deadline := time.Now().Add(30 * time.Second)
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn.Close()
		}
		select {
		case <-exited:
			return fmt.Errorf("it exited: %v", *waitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after 30s", addr)
		}
	}
}

// lastLines is the last n lines of b, on one line.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}
