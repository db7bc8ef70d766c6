package interop_test

// This file checks corral's model gateway with the official OpenAI SDKs,
// each changing only its base URL and key: openai.mjs (the openai npm
// package) lists models and streams completions with a tool call through
// corral from an OpenAI-compatible upstream the test starts, and openai-go
// makes a plain completion and an embeddings call.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/corral-dev/corral/internal/app/apptest"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/llm/llmtest"
	"github.com/corral-dev/corral/test/nodetest"
)

// The models the tests set up: the agent sdk may use allowedModel, which
// corral calls upstreamModel at the upstream, and not deniedModel.
const (
	allowedModel  = "gpt-eu"
	deniedModel   = "gpt-other"
	upstreamModel = "gpt-4o"
	sdkAgent      = "sdk"
)

// email is the personal data in openai.mjs's prompt; placeholder is what
// the upstream must see instead, and echoes back.
const (
	email       = "alice@example.com"
	placeholder = "<EMAIL_1>"
)

// gateway is a corral in front of one upstream, with allowedModel and
// deniedModel both on it and an agent key for sdkAgent.
type gateway struct {
	srv *apptest.Server
	up  *llmtest.Server
	key string
}

// startGateway starts an upstream answering as opts say and a corral in
// front of it, and returns once the agent sees its model.
func startGateway(t *testing.T, opts ...llmtest.Option) gateway {
	t.Helper()
	up := llmtest.Start(t, opts...)
	srv := apptest.Start(t)
	// deniedModel comes first: once the agent sees allowedModel, the
	// catalogue holds both, and a call of deniedModel is refused by policy
	// rather than not found. allowedModel restores tool-call arguments
	// (off by default, see docs/redaction.md), so that the SDK meets
	// placeholders restored across a stream's argument chunks.
	srv.Apply(t, fmt.Sprintf(`apiVersion: corral.dev/v1
kind: Model
metadata: {name: %[2]s}
spec: {provider: openai, baseURL: %[1]q, model: gpt-4o-mini, redact: reversible}
---
apiVersion: corral.dev/v1
kind: Model
metadata: {name: %[3]s}
spec: {provider: openai, baseURL: %[1]q, model: %[4]s, redact: reversible, restoreToolArguments: true, pricing: {inputPerMTok: 2.5, outputPerMTok: 10}}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: %[5]s}
spec: {description: "An agent built on an official OpenAI SDK.", models: [%[3]s]}
`, up.URL(), deniedModel, allowedModel, upstreamModel, sdkAgent))
	g := gateway{srv: srv, up: up, key: srv.Key(t, sdkAgent)}
	g.waitModel(t)
	return g
}

// waitModel polls the agent's model list until it shows allowedModel: the
// catalogue follows the registry in the background.
func (g gateway) waitModel(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		status, body := g.srv.Call(t, g.key, "GET", "/openai/v1/models", nil, nil)
		if status == http.StatusNotFound {
			t.Fatal("GET /openai/v1/models = 404: this corral does not serve the OpenAI edge (internal/app must register internal/edge/openai)")
		}
		if status == http.StatusOK && strings.Contains(string(body), `"id":"`+allowedModel+`"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("model %s not listed after %v: HTTP %d %s", allowedModel, readyTimeout, status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// auditRecord is what the tests read of an audit record.
type auditRecord struct {
	Kind, Target, Edge, Decision, Code, Status, Event string
	RequestID                                         string `json:"request_id"`
	Model                                             *struct {
		Target   string
		Stream   bool
		Redacted map[string]int
	}
}

// audit returns the agent's audit records.
func (g gateway) audit(t *testing.T) []auditRecord {
	t.Helper()
	var out struct{ Records []auditRecord }
	status, body := g.srv.Call(t, g.srv.Token, "GET", "/v1/audit?agent="+sdkAgent, nil, nil)
	if err := json.Unmarshal(body, &out); status != http.StatusOK || err != nil {
		t.Fatalf("GET /v1/audit: HTTP %d %s", status, body)
	}
	return out.Records
}

// TestOpenAINodeSDK runs openai.mjs: the openai npm package lists the
// agent's models, streams a completion with a tool call twice (the SDK's
// helper, then create({stream: true})), and meets refusals as APIError.
// The upstream answers with the placeholder corral put in the prompt, in
// the text and in the tool call's arguments, and the SDK must get the
// address back in both.
func TestOpenAINodeSDK(t *testing.T) {
	node := nodetest.Program(t, "node")
	nodetest.Install(t, "openai")

	g := startGateway(t,
		llmtest.WithContent("I will refund "+placeholder+" now."),
		llmtest.WithToolCalls(llm.ToolCall{Function: llm.FunctionCall{
			Name: "refund", Arguments: `{"email": "` + placeholder + `", "amount_cents": 4200}`,
		}}))

	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "openai.mjs")
	cmd.Env = append(os.Environ(),
		"CORRAL_URL="+g.srv.URL, "CORRAL_KEY="+g.key,
		"CORRAL_MODEL="+allowedModel, "CORRAL_DENIED_MODEL="+deniedModel, "CORRAL_EMAIL="+email)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node openai.mjs: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))

	// The upstream saw two streamed calls (the refused ones never reached
	// it), with the tool declared and the address replaced.
	sent := g.up.ChatRequests()
	if len(sent) != 2 {
		t.Fatalf("the upstream got %d chat requests, want 2 (the helper's and create's)", len(sent))
	}
	for i, req := range sent {
		prompt := req.Messages[len(req.Messages)-1].Content.String()
		if strings.Contains(prompt, email) || !strings.Contains(prompt, placeholder) {
			t.Errorf("request %d: the upstream's prompt is %q, want %s in place of %s", i, prompt, placeholder, email)
		}
		if !req.Stream || req.Model != upstreamModel || len(req.Tools) != 1 || req.Tools[0].Function.Name != "refund" {
			t.Errorf("request %d: stream %v, model %q, %d tools; want a stream of %s declaring refund", i, req.Stream, req.Model, len(req.Tools), upstreamModel)
		}
	}

	// The audit holds all four calls, edge openai: two answered with the
	// address redacted, two refused by policy.
	var got []string
	for _, r := range g.audit(t) {
		if r.Kind != "model" || r.Edge != "openai" || r.RequestID == "" {
			t.Errorf("audit record %+v, want kind model, edge openai and a request id", r)
		}
		if r.Decision == "allowed" && (r.Model == nil || !r.Model.Stream || r.Model.Redacted["EMAIL"] != 1) {
			t.Errorf("audit record %+v, want a stream with one EMAIL redacted", r)
		}
		got = append(got, r.Target+" "+r.Decision+" "+r.Code)
	}
	slices.Sort(got)
	want := []string{
		allowedModel + " allowed ", allowedModel + " allowed ",
		deniedModel + " denied policy_denied", deniedModel + " denied policy_denied",
	}
	if !slices.Equal(got, want) {
		t.Errorf("audit records (target decision code) = %q, want %q", got, want)
	}
}

// TestOpenAIGoSDK makes a plain completion and an embeddings call with
// openai-go, changing only its base URL and key.
func TestOpenAIGoSDK(t *testing.T) {
	const answer = "Your order 1042 ships today."
	usage := llm.Usage{PromptTokens: 31, CompletionTokens: 7, TotalTokens: 38}
	g := startGateway(t, llmtest.WithContent(answer), llmtest.WithUsage(usage))
	client := openai.NewClient(option.WithBaseURL(g.srv.URL+"/openai/v1"), option.WithAPIKey(g.key), option.WithMaxRetries(0))

	resp, err := client.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
		Model: allowedModel,
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("You answer questions about orders."),
			openai.UserMessage("When does order 1042 ship?"),
		},
	})
	if err != nil {
		t.Fatalf("Chat.Completions.New: %v", err)
	}
	if len(resp.Choices) != 1 || resp.Choices[0].Message.Content != answer || resp.Choices[0].FinishReason != "stop" {
		t.Errorf("Chat.Completions.New: choices %+v, want one, %q, stop", resp.Choices, answer)
	}
	if resp.Model != allowedModel {
		t.Errorf("Chat.Completions.New: model %q, want %q (the name the agent asked for)", resp.Model, allowedModel)
	}
	if resp.Usage.PromptTokens != int64(usage.PromptTokens) || resp.Usage.CompletionTokens != int64(usage.CompletionTokens) || resp.Usage.TotalTokens != int64(usage.TotalTokens) {
		t.Errorf("Chat.Completions.New: usage %+v, want the upstream's %+v", resp.Usage, usage)
	}
	if resp.ID == "" || resp.Object != "chat.completion" {
		t.Errorf("Chat.Completions.New: id %q, object %q, want an id and chat.completion", resp.ID, resp.Object)
	}

	inputs := []string{"order 1042", "refund policy"}
	emb, err := client.Embeddings.New(t.Context(), openai.EmbeddingNewParams{
		Model: allowedModel,
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs},
	})
	if err != nil {
		t.Fatalf("Embeddings.New: %v", err)
	}
	if emb.Model != allowedModel || len(emb.Data) != len(inputs) {
		t.Fatalf("Embeddings.New: model %q, %d vectors, want %s and %d", emb.Model, len(emb.Data), allowedModel, len(inputs))
	}
	for i, e := range emb.Data {
		if e.Index != int64(i) || len(e.Embedding) == 0 {
			t.Errorf("Embeddings.New: vector %d has index %d and %d dimensions", i, e.Index, len(e.Embedding))
		}
	}
	if slices.Equal(emb.Data[0].Embedding, emb.Data[1].Embedding) {
		t.Errorf("Embeddings.New: two inputs got the same vector")
	}

	// A model outside the agent's list: the SDK's error carries the status
	// and corral's code.
	_, err = client.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
		Model: deniedModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden || apiErr.Code != "policy_denied" || apiErr.Message == "" {
		t.Errorf("Chat.Completions.New(%s): %v, want a 403 openai.Error with code policy_denied and a message", deniedModel, err)
	}

	upstream := 0
	for _, r := range g.up.Requests() {
		if r.Path == "/v1/chat/completions" || r.Path == "/v1/embeddings" {
			upstream++
		}
	}
	if upstream != 2 {
		t.Errorf("the upstream got %d calls, want 2 (the refused one never reaches it)", upstream)
	}

	var got []string
	for _, r := range g.audit(t) {
		if r.Kind != "model" || r.Edge != "openai" || r.RequestID == "" {
			t.Errorf("audit record %+v, want kind model, edge openai and a request id", r)
		}
		got = append(got, r.Target+" "+r.Decision+" "+r.Event)
	}
	slices.Sort(got)
	want := []string{allowedModel + " allowed ", allowedModel + " allowed embeddings", deniedModel + " denied "}
	if !slices.Equal(got, want) {
		t.Errorf("audit records (target decision event) = %q, want %q", got, want)
	}
}
