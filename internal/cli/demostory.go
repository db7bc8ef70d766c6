package cli

// The six steps of the port-strike story, as `corral demo` tells them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/approval"
	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/demo"
	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/telemetry"
)

// strike: the webhook starts the monitor's task.
func (r *storyRun) strike(ctx context.Context) error {
	r.step(1, "A strike closes the port of Rotterdam: the shipping API tells corral")
	var root string
	if r.trig {
		url := r.c.base + "/hooks/port-events"
		var hook struct {
			Event, Outcome, Task string
		}
		post := func(secret string) (int, []byte, error) {
			return demo.PostWebhook(ctx, url, []byte(secret), "port_disruption", []byte(demo.StrikeEvent))
		}
		err := r.await(ctx, "the webhook to be taken", 20*time.Second, func() (bool, error) {
			status, body, err := post(r.webhookSecret)
			if err != nil || status == http.StatusNotFound || status == http.StatusServiceUnavailable {
				return false, nil // the trigger is still loading
			}
			if status != http.StatusAccepted {
				return false, fmt.Errorf("POST /hooks/port-events: HTTP %d %s", status, body)
			}
			return true, json.Unmarshal(body, &hook)
		})
		if err != nil {
			return err
		}
		r.sum.Webhook.Accepted++
		root = hook.Task
		r.say("POST /hooks/port-events, signed with the shared secret (X-Hub-Signature-256, GitHub's scheme) -> 202: event %s started task %s of Agent/monitor.", short(hook.Event, 20), root)
		if t, err := r.task(ctx, root); err == nil {
			var ce struct{ Type, Source string }
			if json.Unmarshal(t.Input, &ce) == nil && ce.Type != "" {
				r.say("The task's input is the event as a CloudEvent (type %s, source %s).", ce.Type, ce.Source)
			}
		}
		// The same delivery again (a sender's retry) starts nothing new.
		if status, body, err := post(r.webhookSecret); err == nil && status == http.StatusAccepted {
			var again struct{ Outcome, Task string }
			_ = json.Unmarshal(body, &again)
			r.sum.Webhook.Duplicate = again.Task == root
			r.say("The same delivery again -> 202 %s, the same task: one task per event, however often a sender retries.", again.Outcome)
		}
		status, body, err := post("not-the-secret")
		if err != nil {
			return err
		}
		var p struct{ Code string }
		_ = json.Unmarshal(body, &p)
		r.sum.Webhook.BadStatus, r.sum.Webhook.BadCode = status, p.Code
		r.refusal(p.Code)
		r.say("A forged delivery (wrong signature) -> HTTP %d %s: refused, counted, nothing started.", status, p.Code)
		r.see("corral triggers list")
	} else {
		var t storyTask
		if err := r.c.do(ctx, "POST", "/v1/tasks", api.TaskRequest{Agent: demo.Monitor, Input: json.RawMessage(demo.StrikeEvent)}, &t); err != nil {
			return err
		}
		root = t.ID
		r.say("The shipping API's event starts task %s of Agent/monitor (POST /v1/tasks; this build has no webhook triggers).", root)
	}
	r.ids[demo.Monitor] = root
	t, err := completed(r.finish(ctx, root))
	if err != nil {
		return err
	}
	r.say("monitor asked the logistics API which shipments are held (SHP-17, 72 h) and %s.", map[bool]string{true: "handed off to impact", false: "ended with a brief for impact"}[r.feat.Agents])
	if r.trig {
		r.say("Why it matters: work starts only from an event corral verified, once per event, and every call the agent makes goes through corral's pipeline.")
	} else {
		r.say("Why it matters: every call the agent makes goes through corral's pipeline: identity, policy, budgets, audit.")
	}
	r.see("corral tasks events " + root)
	r.done(t.State == string(orchestrator.Completed))
	return nil
}

func short(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (r *storyRun) impact(ctx context.Context) error {
	r.step(2, "impact reads the ERP through governed tools")
	prev, err := r.task(ctx, r.ids[demo.Monitor])
	if err != nil {
		return err
	}
	t, err := r.begin(ctx, demo.Impact, resultText(prev.Result))
	if err != nil {
		return err
	}
	if t, err = completed(r.finish(ctx, t.ID)); err != nil {
		return err
	}
	r.say("Task %s called erp.list_orders and erp.get_customer (twice): each call checked by policy and against the tool's schema, then sent to the ERP with corral's credentials, never the agent's.", t.ID)
	r.say("Delayed: ORD-1001 (1,200 EUR, Ana Lima) and ORD-1002 (860 EUR, Ben Okafor).")
	if r.feat.State != "" {
		keys, err := r.sharedState(ctx, t.ID)
		if err != nil {
			return err
		}
		r.say("impact wrote them to the task tree's shared state (%s), where the next agents read them.", strings.Join(keys, ", "))
		r.see("curl -H \"Authorization: Bearer $CORRAL_TOKEN\" " + r.c.base + "/v1/tasks/" + r.ids[demo.Monitor] + "/state")
	} else {
		r.say("It passes them on in its brief (this build has no shared task state).")
	}
	r.see("corral tasks events " + t.ID)
	r.done(t.State == string(orchestrator.Completed))
	return nil
}

func (r *storyRun) negotiation(ctx context.Context) error {
	r.step(3, "negotiation, in region "+storyRegion+" on its own model, finds another route")
	prev, err := r.task(ctx, r.ids[demo.Impact])
	if err != nil {
		return err
	}
	t, err := r.begin(ctx, demo.Negotiation, resultText(prev.Result))
	if err != nil {
		return err
	}
	if !r.feat.Agents {
		// Without agents calling agents, the demo starts the helpers
		// negotiation would have delegated to.
		for _, helper := range []string{demo.Chaser, demo.Broker} {
			if _, err := r.begin(ctx, helper, json.RawMessage(`"SHP-17: ORD-1001 and ORD-1002"`)); err != nil {
				return err
			}
		}
	}
	if t, err = completed(r.finish(ctx, t.ID)); err != nil {
		return err
	}
	if r.feat.State != "" {
		if _, err := r.sharedState(ctx, t.ID); err != nil {
			return err
		}
	}
	r.sum.Redaction.Placement = t.Placement["region"]
	r.sum.Redaction.WorkerSeen = t.Worker
	r.say("Placed at region=%s: only a worker labelled so runs it (here, this demo's; in production `corral worker --labels region=%s` where the data may go).", t.Placement["region"], storyRegion)
	evs, err := r.events(ctx, t.ID)
	if err != nil {
		return err
	}
	got := ""
	for _, ev := range evs {
		if ev.Type == "model.answer" {
			var m struct {
				Content string `json:"content"`
			}
			_ = json.Unmarshal(ev.Message, &m)
			if strings.Contains(m.Content, "@") {
				got = m.Content
			}
		}
		if ev.Type == "tool.result" && ev.Code != "" {
			r.refusal(ev.Code)
			if ev.Code == "agent_cycle" {
				r.cycle = ev.Content
			}
		}
	}
	r.sum.Redaction.AgentGot = got
	if !r.models.real {
		saw := ""
		for _, m := range r.world.Models.Received(demo.Negotiation) {
			if m.Role == "user" {
				saw = m.Content.String()
				break
			}
		}
		r.sum.Redaction.ModelSaw = saw
		r.sum.Redaction.Redacted = saw != "" && !strings.Contains(saw, demo.AnaEmail) && strings.Contains(saw, "<EMAIL_1>")
		r.sum.Redaction.Restored = strings.Contains(got, demo.AnaEmail)
		said := ""
		for _, a := range r.world.Models.Answered(demo.Negotiation) {
			if strings.Contains(a, "<EMAIL_1>") {
				said = a
			}
		}
		r.say("Its model is another provider's (redact: reversible). What that provider received of impact's brief:")
		r.say("    %s", saw)
		r.say("What it answered:")
		r.say("    %s", said)
		r.say("What the agent got, the values restored:")
		r.say("    %s", got)
	}
	r.say("It asked the carriers (carriers.list_alternatives, carriers.get_quote): rail via Antwerp, one day late, 190 EUR an order; and handed the proposal to execution.")
	r.say("Why it matters: customer e-mails, cards and IBANs never reach the third-party model; the agent loses nothing.")
	r.see("corral audit --agent negotiation   (each model call: the values redacted, by type)")
	r.done(t.State == string(orchestrator.Completed) && (r.models.real || r.sum.Redaction.Redacted && r.sum.Redaction.Restored))
	return nil
}

// execution: the approval, then the crash in the middle of notifying.
func (r *storyRun) execution(ctx context.Context) error {
	r.step(4, "execution writes the system of record, after a person approves")
	r.world.Notifications.HoldFirst()
	prev, err := r.task(ctx, r.ids[demo.Negotiation])
	if err != nil {
		return err
	}
	t, err := r.begin(ctx, demo.Execution, resultText(prev.Result))
	if err != nil {
		return err
	}
	var pending *approval.Approval
	err = r.await(ctx, "execution's write to park for approval", 60*time.Second, func() (bool, error) {
		var list api.ApprovalList
		if err := r.c.do(ctx, "GET", "/v1/approvals?state=pending", nil, &list); err != nil {
			return false, err
		}
		for _, a := range list.Items {
			if a.Action.Target == "erp.reroute_orders" {
				pending = &a
				return true, nil
			}
		}
		t, err = r.task(ctx, t.ID)
		return t.final(), err // a real model may never write
	})
	if err != nil {
		return err
	}
	if pending == nil {
		r.say("Task %s ended %s (%s) without writing to the ERP: nothing to approve.", t.ID, t.State, t.Reason)
		r.see("corral tasks events " + t.ID)
		r.done(false)
		return nil
	}
	decided, err := r.approve(ctx, t, *pending)
	if err != nil {
		return err
	}
	if err := r.crash(ctx, t.ID); err != nil {
		return err
	}
	if t, err = r.finish(ctx, t.ID); err != nil {
		return err
	}
	if r.sum.Restart.Done {
		evs, err := r.events(ctx, t.ID)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.Type == "started" && ev.Time.After(r.restarted) {
				r.sum.Restart.Resumed = true
			}
		}
	}
	r.say("Task %s %s, taken over from its journal after the restart: %d customers told, %d invoices issued.", t.ID, t.State, len(r.world.Notifications.Sent()), len(r.world.Billing.Invoices()))
	r.see("corral tasks events " + t.ID + "   ('taken over from its journal')")
	if err := r.c.do(ctx, "GET", "/v1/approvals/"+pending.ID, nil, &decided); err != nil {
		return err
	}
	r.sum.Approval.State = string(decided.State)
	status, _ := r.world.ERP.Order("ORD-1001")
	r.done(t.State == string(orchestrator.Completed) && decided.State == approval.Executed && status == "rerouted")
	return nil
}

// approve shows the parked write and has it decided: by dana through the
// API, or, with --keep, by the user.
func (r *storyRun) approve(ctx context.Context, t storyTask, pending approval.Approval) (approval.Approval, error) {
	var decided approval.Approval
	r.sum.Approval.ID = pending.ID
	t, err := r.task(ctx, t.ID)
	if err != nil {
		return decided, err
	}
	r.say("erp.reroute_orders %s -> 202 approval_pending: Policy/system-of-record says %q.", compactJSON(pending.Action.Arguments), strings.Join(pending.Reasons, "; "))
	r.say("Approval %s waits for a person of %s; task %s is %s (%s), holding no worker. Nothing reached the ERP.", pending.ID, strings.Join(pending.Approvers, " or "), t.ID, t.State, t.Reason)
	var human api.HumanCreated
	if err := r.c.do(ctx, "POST", "/v1/humans", api.HumanRequest{Name: "dana", Groups: []string{"logistics-leads"}}, &human); err != nil {
		return decided, err
	}
	if r.keep {
		keyPath := filepath.Join(r.cfg.DataDir, "dana.key")
		if err := os.WriteFile(keyPath, []byte(human.Key+"\n"), 0o600); err != nil {
			return decided, err
		}
		r.say("Your turn: you are dana, a logistics lead (corral humans create dana --groups logistics-leads). In another shell:")
		r.say("    CORRAL_SERVER=%s CORRAL_TOKEN=$(cat %s) corral approvals approve %s --comment \"rail via Antwerp is fine\"", r.c.base, keyPath, pending.ID)
		if r.sum.Features.Console {
			r.say("or open %s/ui/, sign in with that key, and approve it there. The story waits.", r.c.base)
		}
	} else {
		dana := newClient(r.c.base, human.Key)
		if err := dana.do(ctx, "POST", "/v1/approvals/"+pending.ID+"/approve", api.DecisionRequest{Comment: "rail via Antwerp is fine"}, nil); err != nil {
			return decided, err
		}
		r.say("dana, a logistics lead (a corral human the demo created), approves it through the API: POST /v1/approvals/%s/approve.", pending.ID)
	}
	err = r.await(ctx, "the approval to be decided", 24*time.Hour, func() (bool, error) {
		if err := r.c.do(ctx, "GET", "/v1/approvals/"+pending.ID, nil, &decided); err != nil {
			return false, err
		}
		return decided.State != approval.Pending, nil
	})
	if err != nil {
		return decided, err
	}
	r.sum.Approval.State = string(decided.State)
	if len(decided.Decisions) > 0 {
		r.sum.Approval.By = decided.Decisions[0].Name
	}
	r.say("Decided: %s by %s. The same call runs now, once.", decided.State, r.sum.Approval.By)
	r.see("corral approvals show " + pending.ID)
	return decided, nil
}

// crash kills corral once the first notification has left and before its
// answer comes back, and starts it again on the same data directory.
func (r *storyRun) crash(ctx context.Context, id string) error {
	// A real model may never notify anyone: watch for the task's end too.
	wctx, stopWatching := context.WithCancel(ctx)
	ended, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		if t, err := r.finish(wctx, id); err == nil && t.final() {
			close(ended)
		}
	}()
	defer func() { stopWatching(); <-watched }()
	select {
	case <-r.world.Notifications.Held():
	case <-ended:
		r.say("The task ended without notifying anyone: nothing to interrupt.")
		return nil
	case <-time.After(60 * time.Second):
		return errors.New("demo: execution sent no notification within 60s")
	case <-ctx.Done():
		return ctx.Err()
	}
	r.say("")
	r.say("✗ corral is killed now, in the middle of execution's step: the first notification left, its answer never came back.")
	// corral lets a tool call that has left finish rather than cut it in
	// half; the notification service drops the held connection once corral
	// is going down, as a network would.
	go func() {
		time.Sleep(200 * time.Millisecond)
		r.world.Notifications.Release()
	}()
	stopWatching()
	<-watched
	if err := r.corral.stop(); err != nil {
		r.logger.Warn("corral stopped with an error", "err", err)
	}
	cfg := r.cfg
	cfg.HTTPAddr = strings.TrimPrefix(r.c.base, "http://")
	var err error
	if r.corral, err = startCorral(ctx, r.logger, cfg); err != nil {
		cfg.HTTPAddr = "127.0.0.1:0" // the port was taken meanwhile
		if r.corral, err = startCorral(ctx, r.logger, cfg); err != nil {
			return err
		}
	}
	r.c = newClient(r.corral.a.URL(), r.token)
	r.sum.Restart.Done = true
	r.restarted = time.Now()
	r.say("↻ corral started again on the same data directory (%s); its worker takes the task over from its journal.", r.corral.a.URL())
	return nil
}

// resilience: what the crash did not repeat, and the three refusals.
func (r *storyRun) resilience(ctx context.Context) error {
	r.step(5, "What held along the way")
	r.sum.Notifications = r.world.Notifications.Counts()
	r.sum.Invoices = r.world.Billing.Counts()
	r.sum.ERPWrites = r.world.ERP.Writes()
	ok := true
	for _, c := range r.sum.Notifications {
		ok = ok && c.Effects == 1
	}
	sent, again := len(r.world.Notifications.Sent()), 0
	for _, c := range r.sum.Notifications {
		again += c.Requests - 1
	}
	r.say("The crash: the notification service got %d request(s) for %d messages; the repeat carried the same Idempotency-Key and sent nothing twice (%d sent).", sent+again, len(r.sum.Notifications), sent)
	if !r.models.real {
		r.sum.ModelCalls = r.world.Models.Calls()
		repeats := 0
		for _, c := range r.sum.ModelCalls {
			repeats += c.Requests - 1
		}
		ok = ok && repeats == 0
		r.say("The model server answered %d model calls, %d of them twice: steps done before the crash were replayed from the journal, not paid again.", len(r.sum.ModelCalls), repeats)
	}
	all, err := r.tasks(ctx)
	if err != nil {
		return err
	}
	for _, t := range all {
		switch t.Agent {
		case demo.Chaser, demo.Broker:
			r.ids[t.Agent] = t.ID
			if t.Reason != "" {
				r.refusal(t.Reason)
			}
		}
	}
	chaser, broker := r.helper(ctx, demo.Chaser), r.helper(ctx, demo.Broker)
	r.say("chaser asked for the same ETA again and again: its third identical call was stopped by its limits (repeatedCalls: 3), the carrier asked %d times; task %s %s (%s): %s", r.world.Carriers.ETAs(), chaser.ID, chaser.State, chaser.Reason, short(chaser.Detail, 140))
	if r.feat.Agents {
		if r.sum.Refusals["agent_cycle"] > 0 {
			r.say("negotiation tried to delegate back to impact, already in its chain: refused before any task was made, and told so (%s); it went on another way.", short(r.cycle, 160))
		} else {
			ok = false
			r.say("negotiation's delegation back to impact was not refused.")
		}
	} else {
		r.say("(A delegation back up the chain, refused with agent_cycle, needs agents calling agents, which this build lacks.)")
		r.sum.Steps[len(r.sum.Steps)-1].Skipped = "agent_cycle: no agents calling agents in this build"
	}
	r.say("Budget/broker-spot allows the broker 2 calls (model or tool): its third was refused before it left; task %s %s (%s): %s", broker.ID, broker.State, broker.Reason, short(broker.Detail, 140))
	r.say("Why it matters: a crash neither loses work nor repeats a side effect; runaway agents are stopped by corral, not by their own good sense.")
	r.see("corral tasks list --state failed   corral budgets")
	ok = ok && chaser.Reason == "loop_detected" && broker.Reason == "budget_exceeded" && r.sum.Restart.Resumed
	r.done(ok || r.models.real)
	return nil
}

// treeIndent draws a task's place in its tree.
func treeIndent(depth int) string {
	if depth == 0 {
		return ""
	}
	return strings.Repeat("  ", depth-1) + "└ "
}

// helper is the story's task of a helper agent, or a task in state
// "never started" when nothing started one (a real model may not).
func (r *storyRun) helper(ctx context.Context, agent string) storyTask {
	if id := r.ids[agent]; id != "" {
		if t, err := r.task(ctx, id); err == nil {
			return t
		}
	}
	return storyTask{Agent: agent, State: "never started"}
}

// record: the tree, a trace, the audit.
func (r *storyRun) record(ctx context.Context) error {
	r.step(6, "The record: tasks with usage and cost, a trace, the audit verified")
	all, err := r.tasks(ctx)
	if err != nil {
		return err
	}
	children := map[string][]storyTask{}
	var roots []storyTask
	known := map[string]bool{}
	for _, t := range all {
		known[t.ID] = true
	}
	var total orchestrator.Usage
	for _, t := range all {
		if t.Parent != "" && known[t.Parent] {
			children[t.Parent] = append(children[t.Parent], t)
		} else {
			roots = append(roots, t)
		}
		total.ModelCalls += t.Usage.ModelCalls
		total.ToolCalls += t.Usage.ToolCalls
		total.InputTokens += t.Usage.InputTokens
		total.OutputTokens += t.Usage.OutputTokens
		total.Cost += t.Usage.Cost
		r.sum.Tasks = append(r.sum.Tasks, taskOutcome{ID: t.ID, Agent: t.Agent, Parent: t.Parent, State: t.State, Reason: t.Reason,
			ModelCalls: t.Usage.ModelCalls, ToolCalls: t.Usage.ToolCalls, Tokens: t.Usage.InputTokens + t.Usage.OutputTokens, Cost: t.Usage.Cost, Attempts: t.Attempts})
	}
	tw := tabwriter.NewWriter(r.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  AGENT\tSTATE\tTASK\tMODEL CALLS\tTOOL CALLS\tTOKENS\tCOST")
	var print func(t storyTask, depth int)
	print = func(t storyTask, depth int) {
		state := t.State
		if t.Reason != "" {
			state += " (" + t.Reason + ")"
		}
		fmt.Fprintf(tw, "  %s%s\t%s\t%s\t%d\t%d\t%d\t%.4f\n", treeIndent(depth), t.Agent, state, t.ID,
			t.Usage.ModelCalls, t.Usage.ToolCalls, t.Usage.InputTokens+t.Usage.OutputTokens, t.Usage.Cost)
		for _, c := range children[t.ID] {
			print(c, depth+1)
		}
	}
	for _, t := range roots {
		print(t, 0)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	r.say("in all: %d model calls, %d tool calls, %d tokens, cost %.4f (priced by each Model's pricing per million tokens).", total.ModelCalls, total.ToolCalls, total.InputTokens+total.OutputTokens, total.Cost)
	if r.feat.Agents {
		r.see("corral tasks list --tree " + r.ids[demo.Monitor] + "   corral tasks get ID")
	} else {
		r.see("corral tasks list   corral tasks get ID")
	}

	// Every step of a task tree is in one trace (orchestrator.TraceID);
	// without agents calling agents each agent's task is a tree of its own,
	// and the demo shows execution's.
	root := r.ids[demo.Monitor]
	if !r.feat.Agents {
		root = r.ids[demo.Execution]
	}
	if root != "" {
		id := orchestrator.TraceID(root).String()
		var trace api.TraceResponse
		_ = r.await(ctx, "the trace to be stored", 10*time.Second, func() (bool, error) {
			err := r.c.do(ctx, "GET", "/v1/traces/"+id, nil, &trace)
			var ae *apiError
			if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
				return false, nil
			}
			// Spans are written about a second after their action ends.
			return slices.ContainsFunc(trace.Spans, func(s telemetry.Span) bool { return strings.Contains(s.Name, "billing.create_invoice") }), err
		})
		tasks, actions := map[any]bool{}, 0
		for _, sp := range trace.Spans {
			if sp.ParentSpanID == "" || sp.Attributes[string(telemetry.AttrTask)] != nil {
				if t := sp.Attributes[string(telemetry.AttrTask)]; t != nil {
					tasks[t] = true
					actions++
				}
			}
		}
		r.sum.Trace.ID, r.sum.Trace.Spans, r.sum.Trace.Tasks = id, len(trace.Spans), len(tasks)
		what := "the whole story"
		if !r.feat.Agents {
			what = "execution's task"
		}
		r.say("The trace of %s: %d spans, %d model and tool calls of %s, each with its stages (policy, budget, redaction, approval, the upstream call), across the restart.", what, len(trace.Spans), actions, plural(len(tasks), "task"))
		r.see("corral trace " + id)
	}

	var rep audit.Report
	if err := r.c.do(ctx, "GET", "/v1/audit/verify?since=1h", nil, &rep); err != nil {
		return err
	}
	r.sum.Audit.OK, r.sum.Audit.Records = rep.OK, rep.Records
	verdict := "intact"
	if !rep.OK {
		verdict = "BROKEN"
	}
	r.say("corral audit verify: %d hash-chained records, %s (the call cut by the crash shows as an intent without an outcome).", rep.Records, verdict)
	r.see("corral audit verify   corral audit --since 1h")
	r.done(rep.OK)
	return nil
}

// sharedState reads the members of the shared state of a task's tree and
// notes them in the summary.
func (r *storyRun) sharedState(ctx context.Context, id string) ([]string, error) {
	var doc map[string]json.RawMessage
	if err := r.c.do(ctx, "GET", "/v1/tasks/"+id+"/state", nil, &doc); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	r.sum.SharedState = keys
	return keys, nil
}
