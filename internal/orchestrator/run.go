package orchestrator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity"
	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/pipeline"
	"github.com/corral-dev/corral/internal/problem"
	"github.com/corral-dev/corral/internal/ratelimit"
	"github.com/corral-dev/corral/internal/tools"
)

// Gateway is the pipeline, the only way a hosted agent reaches a model or
// a tool.
type Gateway interface {
	Chat(ctx context.Context, a pipeline.Action, req *llm.ChatRequest) (*pipeline.ChatOutcome, error)
	Invoke(ctx context.Context, a pipeline.Action) (*pipeline.Outcome, error)
	Tools(ctx context.Context, c pipeline.Caller) ([]*tools.Entry, error)
	CallAgent(ctx context.Context, call pipeline.AgentCall) (*pipeline.AgentOutcome, error)
}

// Minter signs the tokens a hosted agent's steps are made with.
type Minter interface {
	Issuer() string
	Mint(c identity.Claims, ttl time.Duration) (string, error)
}

// Resources reads Agent resources.
type Resources interface {
	Get(kind, name string) (config.Resource, bool)
}

// requestInput is the function every hosted agent is offered to ask a
// person for input: the task waits in input-required, and the person's
// message is the call's result.
const requestInput = "request_input"

var requestInputTool = llm.Tool{Type: "function", Function: llm.Function{
	Name:        requestInput,
	Description: "Ask the person you work for a question and wait for the answer. Use it only when you cannot go on without them.",
	Parameters:  json.RawMessage(`{"type":"object","properties":{"question":{"type":"string","description":"What you need to know."}},"required":["question"],"additionalProperties":false}`),
}}

// tokenTTL is the life of the tokens a run mints; a run mints a new one
// when less than a third is left.
const tokenTTL = 10 * time.Minute

// modelRetries bounds the attempts of one model step that fails in a way
// a later attempt may cure (a provider outage, the audit briefly down).
const modelRetries = 4

// run is one worker's turn at a task: from taking it to its end, its
// parking in input-required, or the loss of it to another worker.
type run struct {
	w      *Worker
	task   *Task
	spec   *config.AgentSpec
	c      *convo
	logger *slog.Logger
	resume bool // the first step of this run repeats one begun before

	// tokenMu guards token and tokenExp: a workflow's parallel steps ask
	// for the credential at once.
	tokenMu  sync.Mutex
	token    string
	tokenExp time.Time
	// waitingStep is the step whose rate-limit wait is in the events.
	waitingStep int
	// leaveTurn takes the run out of the queue of turnLimit (Worker.turns).
	leaveTurn func()
	turnLimit string
	// inflight are the tool calls a stop did not wait for.
	inflight sync.WaitGroup
	// usageWritten is when the task's record last got its usage.
	usageWritten time.Time
	fnTools      map[string]string  // function name -> tool name, from the last listing
	fnAgents     map[string]agentFn // function name -> agent call, from the last listing
}

// stopCause ends a run's context: the task is to end so.
type stopCause struct {
	state          State
	reason, detail string
}

func (s *stopCause) Error() string { return string(s.state) + ": " + s.reason + ": " + s.detail }

// errParked: the task waits in input-required; no worker holds it.
var errParked = errors.New("task parked")

// errRetry: the task could not go on now (the substrate or audit is down,
// a step is still running elsewhere); it goes back on the queue.
type errRetry struct{ err error }

func (e *errRetry) Error() string { return "retry later: " + e.err.Error() }
func (e *errRetry) Unwrap() error { return e.err }

// execute runs the task until it ends, parks or is lost. It returns nil
// when the task ended, errParked, ErrFenced, or an error to retry on.
func (r *run) execute(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go r.watch(ctx, cancel)

	for {
		if c := r.c; c.state.Final() {
			return nil
		}
		// The watch stops a step in flight; this check, before each step,
		// keeps a step from starting past the deadline (or after a cancel
		// or a kill switch) when the watch has not looked since: a busy
		// machine can delay it past a tool's answer.
		if cause := r.w.stopFor(r.task.ID, r.task.Agent, r.task.Chain, r.deadline()); cause != nil {
			cancel(cause)
		}
		if cause, ok := context.Cause(ctx).(*stopCause); ok {
			return r.stopped(ctx, cause)
		}
		if ctx.Err() != nil {
			return &errRetry{ctx.Err()} // this worker is shutting down
		}
		var err error
		switch calls := r.c.unanswered(); {
		case r.c.waiting != "":
			return errParked
		case len(calls) > 0:
			err = r.callTool(ctx, calls[0])
		case r.c.done():
			err = r.finish(ctx)
		default:
			err = r.callModel(ctx)
		}
		if err != nil {
			if cause, ok := context.Cause(ctx).(*stopCause); ok && !errors.Is(err, ErrFenced) {
				return r.stopped(ctx, cause)
			}
			return err
		}
	}
}

// watch cancels the run when the task must stop: a cancel request in its
// record, a kill switch, its deadline. It checks at every change of a task
// record and at least every 100 ms.
func (r *run) watch(ctx context.Context, cancel context.CancelCauseFunc) {
	deadline := r.deadline()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if cause := r.w.stopFor(r.task.ID, r.task.Agent, r.task.Chain, deadline); cause != nil {
			cancel(cause)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-r.w.store.Changed():
		case <-tick.C:
		}
	}
}

// deadline is when the task must end: its limit after its first start.
func (r *run) deadline() time.Time {
	d, err := time.ParseDuration(r.task.Limits.Deadline)
	if err != nil || d <= 0 {
		d = config.DefaultTaskDeadline
	}
	return r.c.firstRun.Add(d)
}

// timePtr is t in UTC, or nil for the zero time.
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// appendEvent adds a step to the journal, guarded by the last entry this
// run knows: if another worker wrote since, the task is no longer this
// run's (ErrFenced).
func (r *run) appendEvent(ctx context.Context, ev *Event) error {
	seq, err := r.w.store.append(context.WithoutCancel(ctx), r.task.ID, ev, r.c.last, "")
	if err != nil {
		if errors.Is(err, ErrFenced) {
			return err
		}
		return &errRetry{err}
	}
	r.c.last = seq
	return nil
}

// stepKey is the Idempotency-Key of a step: the same for every attempt of
// it, on every worker, so a repeat is recognised as one.
func (r *run) stepKey(step int) string {
	return fmt.Sprintf("%s/step/%d", r.task.ID, step)
}

// credential returns a token bound to the task for the agent (delegated
// when the task acts for a user), minted anew as it nears its expiry.
func (r *run) credential() (string, error) {
	r.tokenMu.Lock()
	defer r.tokenMu.Unlock()
	now := r.w.now()
	if r.token != "" && now.Add(tokenTTL/3).Before(r.tokenExp) {
		return r.token, nil
	}
	c := identity.Claims{
		Subject:  r.task.Agent,
		ClientID: r.task.Agent,
		AgentUID: r.task.AgentUID,
		Audience: identity.Audience{r.w.mint.Issuer()},
		Task:     r.task.ID,
		Scope:    agentScope(r.spec),
	}
	if p := r.task.Principal; p != nil {
		c.Subject = p.Subject
		c.Act = &identity.Actor{Subject: r.task.Agent}
		c.Principal = &identity.PrincipalClaims{Issuer: p.Issuer, Groups: p.Groups, Roles: p.Roles}
	}
	tok, err := r.w.mint.Mint(c, tokenTTL)
	if err != nil {
		return "", fmt.Errorf("orchestrator: token for task %s: %w", r.task.ID, err)
	}
	r.token, r.tokenExp = tok, now.Add(tokenTTL)
	return tok, nil
}

func (r *run) caller() pipeline.Caller {
	c := pipeline.Caller{Agent: r.task.Agent, AgentUID: r.task.AgentUID}
	if p := r.task.Principal; p != nil {
		c.Principal = &pipeline.Principal{Subject: p.Subject, Issuer: p.Issuer, Groups: p.Groups, Roles: p.Roles}
	}
	return c
}

// agentScope is the scope of a hosted agent's tokens: what its spec names,
// as client_credentials would grant it; policy decides the rest.
func agentScope(spec *config.AgentSpec) string {
	items := make([]string, 0, len(spec.Tools)+len(spec.Models))
	for _, t := range spec.Tools {
		items = append(items, "tool:"+t)
	}
	for _, m := range spec.Models {
		items = append(items, "model:"+m)
	}
	for _, a := range spec.Agents {
		items = append(items, "agent:"+a)
	}
	return strings.Join(items, " ")
}

// functions lists the tools the agent may see now, as the functions the
// model is offered, and remembers which function is which tool.
func (r *run) functions(ctx context.Context) ([]llm.Tool, error) {
	entries, err := r.w.gateway.Tools(ctx, r.caller())
	if err != nil {
		return nil, err
	}
	out := make([]llm.Tool, 0, len(entries)+1)
	r.fnTools = make(map[string]string, len(entries))
	for _, e := range entries {
		name := FunctionName(e.Tool.Name)
		if _, taken := r.fnTools[name]; taken || name == requestInput || name == getState || name == updateState {
			continue // two tool names that map alike: the first keeps it
		}
		r.fnTools[name] = e.Tool.Name
		params := e.Tool.InputSchema
		if len(params) == 0 {
			params = json.RawMessage(`{"type":"object"}`)
		}
		out = append(out, llm.Tool{Type: "function", Function: llm.Function{Name: name, Description: e.Tool.Description, Parameters: params}})
	}
	out = append(out, r.agentFunctions()...)
	if r.inTree() {
		out = append(out, stateTools...)
	}
	return append(out, requestInputTool), nil
}

var unsafeFunction = regexp.MustCompile(`[^A-Za-z0-9_-]`)

// FunctionName is the function a model is offered for a tool: OpenAI
// allows [A-Za-z0-9_-]{1,64}, so "erp.get_order" becomes
// "erp__get_order", other characters "_", and a longer name keeps 55
// characters and a digest.
func FunctionName(tool string) string {
	name := unsafeFunction.ReplaceAllString(strings.ReplaceAll(tool, ".", "__"), "_")
	if len(name) > 64 {
		sum := sha256.Sum256([]byte(tool))
		name = name[:55] + "_" + hex.EncodeToString(sum[:4])
	}
	return name
}

// toolFor finds the tool a model's function call names: the function name
// offered, or a tool's own name.
func (r *run) toolFor(function string) string {
	if t, ok := r.fnTools[function]; ok {
		return t
	}
	return function
}

// callModel asks the model for its next turn.
func (r *run) callModel(ctx context.Context) error {
	c := r.c
	if c.turn >= r.task.Limits.MaxTurns {
		return r.limitReached(ctx, ReasonMaxTurns, fmt.Sprintf("the agent took %d turns without a final answer", c.turn))
	}
	if c.pendingModel == nil {
		if reason, detail := r.w.store.treeExceeded(r.task, c.usage); reason != "" {
			return r.limitReached(ctx, reason, detail)
		}
	}
	fns, err := r.functions(ctx)
	if err != nil {
		return r.stepFailed(ctx, err)
	}
	step, resume := c.step+1, r.resume
	if c.pendingModel != nil {
		step, resume = c.pendingModel.Step, true // begun before, by a worker now gone
	} else {
		if err := r.appendEvent(ctx, &Event{Type: EvModelCall, Step: step, Turn: c.turn + 1, Model: r.spec.Model}); err != nil {
			return err
		}
		c.step = step
		c.pendingModel = &Event{Step: step}
	}
	req := &llm.ChatRequest{Model: r.spec.Model, Messages: c.messages, Tools: fns}
	var out *pipeline.ChatOutcome
	defer r.endTurn() // through the limit, or refused for good: the next task's turn
	for attempt := 0; ; attempt++ {
		tok, err := r.credential()
		if err != nil {
			return &errRetry{err}
		}
		out, err = r.w.gateway.Chat(ctx, pipeline.Action{
			Credential: tok, Kind: "model", Target: r.spec.Model, IdempotencyKey: r.stepKey(step),
			Edge: "task", Step: fmt.Sprint(step), Resume: resume || attempt > 0,
		}, req)
		if err == nil {
			break
		}
		if pe := (*problem.Error)(nil); errors.As(err, &pe) && pe.Code == problem.ApprovalPending {
			return r.awaitApproval(ctx, pe)
		}
		if wait, ok := throttled(err); ok {
			if err := r.waitTurn(ctx, step, err, wait); err != nil {
				return r.stepFailed(ctx, err)
			}
			attempt = -1 // waiting its turn is not a failed attempt
			continue
		}
		if !transient(err) || attempt+1 >= modelRetries || ctx.Err() != nil {
			return r.stepFailed(ctx, err)
		}
		r.logger.WarnContext(ctx, "model step failed; trying again", "task", r.task.ID, "step", step, "err", err)
		if err := sleep(ctx, time.Duration(1<<attempt)*500*time.Millisecond); err != nil {
			return r.stepFailed(ctx, err)
		}
	}
	r.resume = false
	if len(out.Response.Choices) == 0 {
		return r.end(ctx, Failed, ReasonModelError, "the model answered with no choices", nil)
	}
	msg := out.Response.Choices[0].Message
	msg.Role = "assistant"
	raw, err := json.Marshal(msg)
	if err != nil {
		return r.end(ctx, Failed, ReasonModelError, "the model's answer cannot be encoded: "+err.Error(), nil)
	}
	// One answer per step reaches the journal: an answer replayed from
	// corral's idempotency record (its worker died before journaling it)
	// is the step's only one in the task's usage, with the cost recorded
	// with it; budgets were charged once, by the attempt that got it.
	u := &Usage{Cost: out.Cost}
	if ru := out.Response.Usage; ru != nil {
		u.InputTokens, u.OutputTokens = ru.PromptTokens, ru.CompletionTokens
	}
	if err := r.appendEvent(ctx, &Event{Type: EvModelAnswer, Step: step, Turn: c.turn + 1, Model: out.Target, Message: raw, Usage: u, AuditID: out.AuditID}); err != nil {
		return err
	}
	c.answer(msg, u)
	// The record's usage is the journal's, at most a second behind: a
	// write per turn would cost a fast task as much as its steps.
	// A tree with limits adds up its tasks' records: they are written
	// every turn then.
	treeBound := r.task.Limits.MaxTreeTurns > 0 || r.task.Limits.MaxTreeCost > 0
	if now := r.w.now(); treeBound || now.Sub(r.usageWritten) >= usageEvery {
		r.usageWritten = now
		_, err = r.w.store.update(context.WithoutCancel(ctx), r.task.ID, func(t *Task) error {
			if t.State.Final() {
				return errSkip
			}
			t.Usage = c.usage
			return nil
		})
		if err != nil {
			r.logger.WarnContext(ctx, "task usage not recorded; the journal has it", "task", r.task.ID, "err", err)
		}
	}
	return nil
}

// usageEvery is how often a running task's record gets its usage.
const usageEvery = time.Second

// callTool makes one of the model's tool calls.
func (r *run) callTool(ctx context.Context, tc llm.ToolCall) error {
	c := r.c
	if r.fnTools == nil {
		// A run resumed at a tool step has not listed the functions yet.
		if _, err := r.functions(ctx); err != nil {
			return r.stepFailed(ctx, err)
		}
	}
	tool := r.toolFor(tc.Function.Name)
	if tc.Function.Name == requestInput {
		tool = requestInput
	}
	fn, toAgent := r.fnAgents[tc.Function.Name]
	if toAgent {
		tool = fn.tool()
	}
	stateFn := (tc.Function.Name == getState || tc.Function.Name == updateState) && r.inTree()
	if stateFn {
		tool = tc.Function.Name
	}
	step, resume := c.step+1, r.resume
	if pending := c.pendingTools[tc.ID]; pending != nil {
		step, resume = pending.Step, true
	} else {
		digest := argsDigest(tc.Function.Arguments)
		if tool != requestInput {
			if c.usage.ToolCalls >= r.task.Limits.MaxToolCalls {
				return r.limitReached(ctx, ReasonMaxToolCalls, fmt.Sprintf("the agent made %d tool calls", c.usage.ToolCalls))
			}
			c.noteCall(tool, digest)
			if c.repeats >= r.task.Limits.RepeatedCalls {
				return r.limitReached(ctx, ReasonLoopDetected, fmt.Sprintf("the agent called %s with the same arguments %d times in a row", tool, c.repeats))
			}
		}
		ev := &Event{Type: EvToolCall, Step: step, Turn: c.turn, Tool: tool, CallID: tc.ID, Detail: digest}
		if err := r.appendEvent(ctx, ev); err != nil {
			return err
		}
		c.step = step
		c.pendingTools[tc.ID] = ev
	}
	if tool == requestInput {
		return r.park(ctx, tc)
	}
	if toAgent {
		return r.callAgent(ctx, tc, step, fn, resume)
	}
	if stateFn {
		return r.stateCall(ctx, tc, step, tool)
	}
	var (
		out *pipeline.Outcome
		err error
	)
	for {
		var tok string
		if tok, err = r.credential(); err != nil {
			return &errRetry{err}
		}
		out, err = r.invoke(ctx, pipeline.Action{
			Credential: tok, Kind: "tool", Target: tool, Arguments: json.RawMessage(orEmpty(tc.Function.Arguments)),
			IdempotencyKey: r.stepKey(step), Edge: "task", Step: fmt.Sprint(step), Resume: resume,
		})
		if errors.Is(err, errStopped) {
			return r.stopped(ctx, context.Cause(ctx).(*stopCause))
		}
		if wait, ok := throttled(err); ok {
			if werr := r.waitTurn(ctx, step, err, wait); werr != nil {
				return r.stepFailed(ctx, werr)
			}
			continue
		}
		break
	}
	r.endTurn() // through the limit, or refused for good: the next task's turn
	r.resume = false
	ev := &Event{Type: EvToolResult, Step: step, Turn: c.turn, Tool: tool, CallID: tc.ID}
	if err != nil {
		var pe *problem.Error
		if !errors.As(err, &pe) || ctx.Err() != nil || stops(pe.Code) || transient(err) {
			return r.stepFailed(ctx, err)
		}
		if pe.Code == problem.ApprovalPending {
			return r.awaitApproval(ctx, pe)
		}
		// A refusal the model can learn from (policy, arguments, no such
		// tool, the upstream's error, a human's no) is its call's result.
		ev.IsError, ev.Code, ev.AuditID = true, pe.Code, pe.AuditID
		ev.Content = fmt.Sprintf("error %s: %s", pe.Code, pe.Detail)
	} else {
		ev.AuditID = out.AuditID
		ev.IsError = out.Result != nil && out.Result.IsError
		ev.Content = resultText(out.Result)
	}
	content := ev.Content
	if err := r.appendEvent(ctx, ev); err != nil {
		return err
	}
	c.toolResult(tc.ID, content)
	return nil
}

// errStopped: the task was stopped while its tool call ran.
var errStopped = errors.New("stopped while a tool call ran")

// invoke makes a tool call. The pipeline lets a call that has left finish
// even when its caller goes (a side effect is not cut in half), so a stop
// (a cancel, a kill switch, the deadline) does not wait for it: the task
// ends at once, and the call finishes in the background, its outcome in
// the audit; the run waits for it before it hands its slot back.
func (r *run) invoke(ctx context.Context, a pipeline.Action) (*pipeline.Outcome, error) {
	type answer struct {
		out *pipeline.Outcome
		err error
	}
	done := make(chan answer, 1)
	r.inflight.Add(1)
	go func() {
		defer r.inflight.Done()
		out, err := r.w.gateway.Invoke(ctx, a)
		done <- answer{out, err}
	}()
	select {
	case ans := <-done:
		return ans.out, ans.err
	case <-ctx.Done():
		if _, stop := context.Cause(ctx).(*stopCause); stop {
			return nil, errStopped
		}
		// This worker is shutting down: the answer is on its way; record
		// it, so that nothing is repeated.
		ans := <-done
		return ans.out, ans.err
	}
}

func orEmpty(args string) string {
	if strings.TrimSpace(args) == "" {
		return "{}"
	}
	return args
}

// resultText is a tool result as the model is given it: its JSON.
func resultText(res *tools.Result) string {
	if res == nil {
		return "null"
	}
	b, err := json.Marshal(res)
	if err != nil {
		return "null"
	}
	return string(b)
}

// park puts the task in input-required with the model's question; the
// person's answer, posted as a message, is the call's result.
func (r *run) park(ctx context.Context, tc llm.ToolCall) error {
	var args struct {
		Question string `json:"question"`
	}
	_ = json.Unmarshal([]byte(tc.Function.Arguments), &args)
	question := strings.TrimSpace(args.Question)
	if question == "" {
		question = "the agent asks for input"
	}
	if err := r.setState(ctx, InputRequired, ReasonAskedForInput, question, r.deadline()); err != nil {
		return err
	}
	r.c.waiting = tc.ID
	return errParked
}

// awaitApproval parks the task while a human decides on its step: the step
// is in the journal without a result, so when the decision wakes the task
// (Service.Wake), its worker makes the same call again, which the pipeline
// then runs (approved) or refuses (denied, expired: the model is told).
func (r *run) awaitApproval(ctx context.Context, pe *problem.Error) error {
	if r.c.state != InputRequired || r.c.reason != ReasonAwaitingApproval {
		detail := pe.Detail
		if pe.ApprovalID != "" {
			detail = "approval " + pe.ApprovalID + ": " + detail
		}
		if err := r.setState(ctx, InputRequired, ReasonAwaitingApproval, detail, r.deadline()); err != nil {
			return err
		}
		r.c.reason = ReasonAwaitingApproval
	}
	return errParked
}

// finish ends the task with the model's final answer, checked against the
// agent's output schema when it has one.
func (r *run) finish(ctx context.Context) error {
	c := r.c
	text := c.messages[c.ai].Content.String()
	if len(r.spec.Output) == 0 {
		result, _ := json.Marshal(text)
		return r.end(ctx, Completed, "", "", result)
	}
	result, problemText := checkOutput(r.spec.Output, text)
	if problemText == "" {
		return r.end(ctx, Completed, "", "", result)
	}
	if c.turn >= r.task.Limits.MaxTurns {
		return r.end(ctx, Failed, ReasonOutputInvalid, "the final answer does not match the output schema: "+problemText, nil)
	}
	correction := llm.Message{Role: "user", Content: llm.TextContent(
		"Your answer does not match the required output schema: " + problemText + ". Answer again with JSON that matches it, and nothing else.")}
	raw, _ := json.Marshal(correction)
	if err := r.appendEvent(ctx, &Event{Type: EvMessage, Message: raw, Detail: "correction"}); err != nil {
		return err
	}
	c.messages = append(c.messages, correction)
	c.ai = -1
	return nil
}

// checkOutput validates a final answer against the output schema; it
// returns the answer as JSON, or what is wrong with it.
func checkOutput(schema json.RawMessage, text string) (json.RawMessage, string) {
	s, err := config.CompileSchema(schema)
	if err != nil {
		return nil, "the output schema does not compile: " + err.Error()
	}
	body := strings.TrimSpace(text)
	// Models like to fence JSON in markdown.
	if b, ok := strings.CutPrefix(body, "```json"); ok {
		body = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(b), "```"))
	} else if b, ok := strings.CutPrefix(body, "```"); ok {
		body = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(b), "```"))
	}
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		return nil, "it is not JSON"
	}
	if err := s.Validate(v); err != nil {
		msg := err.Error()
		if len(msg) > 500 {
			msg = msg[:500]
		}
		return nil, msg
	}
	out, _ := json.Marshal(v)
	return out, ""
}

// limitOf names what a throttled step waits on: the RateLimit, or the
// refusal's detail for a throttled backend.
func limitOf(err error) string {
	var ref *ratelimit.Refused
	if errors.As(err, &ref) {
		return "limit:" + ref.Limit
	}
	var pe *problem.Error
	if errors.As(err, &pe) {
		return pe.Code + ":" + pe.Detail
	}
	return ""
}

// endTurn leaves the queue of the limit the run waited on, letting the
// next task through.
func (r *run) endTurn() {
	if r.leaveTurn != nil {
		r.leaveTurn()
		r.leaveTurn, r.turnLimit = nil, ""
	}
}

// throttled reports whether a step was refused only for now, by a rate
// limit, an in-flight cap or a throttled backend, and how long to wait.
func throttled(err error) (time.Duration, bool) {
	var pe *problem.Error
	if !errors.As(err, &pe) || (pe.Code != problem.RateLimited && pe.Code != problem.UpstreamThrottled) {
		return 0, false
	}
	wait := pe.RetryAfter // whole seconds, as the header says
	if ref := (*ratelimit.Refused)(nil); errors.As(err, &ref) && ref.RetryAfter > 0 {
		wait = ref.RetryAfter // the limit's own, exact for a rate
	}
	return min(max(wait, 20*time.Millisecond), time.Minute), true
}

// waitTurn waits before a step is tried again after a rate limit, costing
// nothing: the step's intent is in the journal, and the wait shows in the
// task's events (once per wait, not per try).
func (r *run) waitTurn(ctx context.Context, step int, cause error, d time.Duration) error {
	limit := limitOf(cause)
	if r.leaveTurn == nil || r.turnLimit != limit {
		r.endTurn()
		var head <-chan struct{}
		head, r.leaveTurn = r.w.turns.join(limit)
		r.turnLimit = limit
		select {
		case <-head: // first come, first served among this worker's tasks
		case <-ctx.Done():
			r.endTurn()
			return ctx.Err()
		}
	}
	if r.waitingStep != step {
		r.waitingStep = step
		var pe *problem.Error
		errors.As(cause, &pe)
		if err := r.appendEvent(ctx, &Event{Type: EvWaiting, Step: step, Code: pe.Code, Detail: pe.Detail}); err != nil {
			return err
		}
	}
	// Waiters spread out, so that they do not all come back at once.
	d += time.Duration(rand.Int64N(int64(d/4) + 1))
	return sleep(ctx, d)
}

// stepFailed decides what a failed step means for the task.
func (r *run) stepFailed(ctx context.Context, err error) error {
	if cause, ok := context.Cause(ctx).(*stopCause); ok {
		return r.stopped(ctx, cause)
	}
	if ctx.Err() != nil {
		return &errRetry{ctx.Err()}
	}
	var pe *problem.Error
	if errors.As(err, &pe) {
		switch {
		case pe.Code == problem.BudgetExceeded:
			return r.limitReached(ctx, ReasonBudgetExceeded, pe.Detail)
		case pe.Code == problem.Killed:
			return r.end(ctx, Canceled, ReasonKilled, pe.Detail, nil)
		case pe.Code == problem.Unauthenticated:
			return r.end(ctx, Failed, ReasonAgentGone, pe.Detail, nil)
		case transient(err):
			return &errRetry{err}
		case pe.Status < http.StatusInternalServerError:
			return r.end(ctx, Failed, ReasonRefused, pe.Code+": "+pe.Detail, nil)
		}
		return r.end(ctx, Failed, ReasonModelError, pe.Code+": "+pe.Detail, nil)
	}
	return &errRetry{err}
}

// stops reports whether a refusal ends the task rather than being the
// call's result.
func stops(code string) bool {
	switch code {
	case problem.BudgetExceeded, problem.Killed, problem.Unauthenticated, problem.TaskEnded, problem.TaskNotFound, problem.TaskLimit:
		return true
	}
	return false
}

// transient reports whether a later attempt of the same step may succeed.
func transient(err error) bool {
	var pe *problem.Error
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case problem.SubstrateUnavailable, problem.NotReady, problem.AuditUnavailable, problem.AuditFull,
		problem.UpstreamUnavailable, problem.UpstreamTimeout, problem.Overloaded, problem.IdempotencyConflict:
		return true
	}
	return false
}

// setState records a state change that does not end the task. wake, when
// not zero, is when a worker wakes the task if nothing else has
// (Task.WakeAt).
func (r *run) setState(ctx context.Context, s State, reason, detail string, wake time.Time) error {
	if err := r.appendEvent(ctx, &Event{Type: EvState, State: s, Reason: reason, Detail: detail}); err != nil {
		return err
	}
	r.c.state = s
	wakeAt := timePtr(wake)
	_, err := r.w.store.update(context.WithoutCancel(ctx), r.task.ID, func(t *Task) error {
		t.State, t.Reason, t.Detail, t.Usage, t.WakeAt = s, reason, detail, r.c.usage, wakeAt
		return nil
	})
	if err != nil {
		return &errRetry{err}
	}
	return nil
}

// stopped ends the task as its stop cause says; a deadline escalates
// when the agent says so.
func (r *run) stopped(ctx context.Context, cause *stopCause) error {
	if cause.state == Failed {
		return r.limitReached(context.WithoutCancel(ctx), cause.reason, cause.detail)
	}
	return r.end(ctx, cause.state, cause.reason, cause.detail, nil)
}

// limitReached fails the task at a limit, or, when its agent escalates,
// parks it in input-required with the reason and what it used, for a
// person to give it more room (Service.Extend) or cancel it.
func (r *run) limitReached(ctx context.Context, reason, detail string) error {
	if !r.task.Limits.escalates(reason) {
		return r.end(ctx, Failed, reason, detail, nil)
	}
	u := r.c.usage
	detail = fmt.Sprintf("%s; used so far: %d turns, %d tool calls, %d tokens, cost %.4f; waiting for a person to extend its limits or cancel it",
		detail, u.Turns, u.ToolCalls, u.InputTokens+u.OutputTokens, u.Cost)
	if err := r.setState(context.WithoutCancel(ctx), InputRequired, reason, detail, time.Time{}); err != nil {
		return err
	}
	r.c.reason = reason
	r.logger.InfoContext(ctx, "task escalated at a limit", "task", r.task.ID, "reason", reason)
	return errParked
}

// end records the task's final state: in the journal first (the truth),
// then in its record.
func (r *run) end(ctx context.Context, s State, reason, detail string, result json.RawMessage) error {
	ctx = context.WithoutCancel(ctx)
	if err := r.appendEvent(ctx, &Event{Type: EvState, State: s, Reason: reason, Detail: detail, Result: result, Usage: &r.c.usage}); err != nil {
		return err
	}
	r.c.state, r.c.result = s, result
	if err := r.w.store.settle(ctx, r.task.ID, s, reason, detail, result, r.c.usage, r.w.now()); err != nil {
		return &errRetry{err}
	}
	r.logger.InfoContext(ctx, "task ended", "task", r.task.ID, "agent", r.task.Agent, "state", s, "reason", reason)
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
