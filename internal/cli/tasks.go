package cli

import (
	"cmp"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/orchestrator"
)

func newTasks(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tasks",
		Short: "List, inspect, follow, answer and cancel tasks",
		Long: `A task is one piece of an agent's work: 'corral run' starts one, and so can
an agent through POST /v1/tasks. Tasks are durable: they survive a restart
of corral, and every step is kept in the task's journal, which 'corral tasks
events' shows.`,
		Example: `  corral tasks list --state working
  corral tasks get task_01jd8x...
  corral tasks events task_01jd8x... --follow
  corral tasks answer task_01jd8x... "yes, refund it"
  corral tasks cancel task_01jd8x... --reason "wrong customer"`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newTasksList(s), newTasksGet(s), newTasksEvents(s), newTasksCancel(s), newTasksAnswer(s), newTasksExtend(s))
	return cmd
}

// taskPath is the API path of task id, refusing what cannot be a task id
// before it is sent.
func taskPath(cmd *cobra.Command, id, rest string) (string, error) {
	if !orchestrator.ValidID(id) {
		return "", usageError{cmd, fmt.Errorf("%q is not a task id (task_ and 26 letters and digits, as 'corral tasks list' shows)", oneLine(id, 60))}
	}
	return "/v1/tasks/" + url.PathEscape(id) + rest, nil
}

func newTasksList(s streams) *cobra.Command {
	var (
		cf                  clientFlags
		agent, state, since string
		tree                string
		limit               int
	)
	cmd := &cobra.Command{
		Use:   "list [--agent NAME] [--state STATE] [--since 1h] [--tree TASK] [--limit N]",
		Short: "List tasks, newest first",
		Long: `'corral tasks list' prints the newest tasks (--limit, 50 by default, at most
1000), newest first: their agent, state and the reason inside it, the turns
(model calls) and tool calls they used, and their age.

--state is one of submitted, working, input-required, completed, failed,
canceled, rejected. --since takes a duration before now (30m, 2h) or an
RFC 3339 time. --tree lists the tasks of a task tree: the root task and
every task delegated or handed off under it (docs/agents.md).

-o json prints the server's answer, {"items": [...], "next": "..."}.`,
		Example: `  corral tasks list
  corral tasks list --agent impact --state failed --since 24h
  corral tasks list --state input-required -o json | jq -r '.items[].id'
  corral tasks list --tree task_01jd8x...`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&agent, "agent", "", "only this agent's tasks")
	cmd.Flags().StringVar(&state, "state", "", "only tasks in this state")
	cmd.Flags().StringVar(&since, "since", "", "only tasks created since: a duration before now (1h) or an RFC 3339 time")
	cmd.Flags().StringVar(&tree, "tree", "", "only the tasks of the tree whose root is this task")
	cmd.Flags().IntVar(&limit, "limit", 50, "the most tasks shown, the newest (at most 1000)")
	output := outputFlag(cmd, "table", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if tree != "" && !orchestrator.ValidID(tree) {
			return usageError{cmd, fmt.Errorf("--tree %q: want a task id (task_ and 26 letters and digits)", oneLine(tree, 60))}
		}
		if limit < 1 || limit > 1000 {
			return usageError{cmd, fmt.Errorf("--limit %d: want 1 to 1000", limit)}
		}
		if state != "" {
			if _, err := orchestrator.ParseState(state); err != nil {
				return usageError{cmd, fmt.Errorf("--state: %w", err)}
			}
		}
		if since != "" {
			if _, err := time.ParseDuration(since); err != nil {
				if _, err := time.Parse(time.RFC3339, since); err != nil {
					return usageError{cmd, fmt.Errorf("--since %q: want a duration before now (1h, 30m) or an RFC 3339 time (2026-05-01T00:00:00Z)", oneLine(since, 60))}
				}
			}
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		for name, v := range map[string]string{"agent": agent, "state": state, "since": since, "root": tree} {
			if v != "" {
				q.Set(name, v)
			}
		}
		var list api.TaskList
		if err := c.do(cmd.Context(), "GET", "/v1/tasks?"+q.Encode(), nil, &list); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, list)
		}
		if len(list.Items) == 0 {
			fmt.Fprintln(s.err, "no tasks; start one with 'corral run AGENT \"input\"'")
			return nil
		}
		if err := writeTaskTable(s.out, time.Now(), list.Items); err != nil {
			return err
		}
		if list.Next != "" {
			fmt.Fprintf(s.err, "showing the newest %d; --limit shows more, --since, --agent and --state narrow them\n", len(list.Items))
		}
		return nil
	}
	return cmd
}

func writeTaskTable(w io.Writer, now time.Time, items []*orchestrator.Task) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAGENT\tSTATE\tREASON\tTURNS\tTOOLS\tAGE")
	for _, t := range items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", t.ID, oneLine(t.Agent, 63), t.State,
			cmp.Or(oneLine(t.Reason, 30), "-"), t.Usage.Turns, t.Usage.ToolCalls, age(now, t.Created))
	}
	return tw.Flush()
}

func newTasksGet(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show a task: its state, result, usage and limits",
		Long: `'corral tasks get' prints a task: its agent and input, its state with the
reason and detail, its result when it has one, what it used against its
limits, and when it was created, started and ended.

-o json prints the task as the server keeps it.`,
		Example: `  corral tasks get task_01jd8x...
  corral tasks get task_01jd8x... -o json | jq .usage`,
		Args: cobra.ExactArgs(1),
	}
	cf.register(cmd)
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		path, err := taskPath(cmd, args[0], "")
		if err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var t orchestrator.Task
		if err := c.do(cmd.Context(), "GET", path, nil, &t); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, t)
		}
		return writeTask(s.out, time.Now(), &t)
	}
	return cmd
}

// writeTask prints a task for people, one field a line.
func writeTask(w io.Writer, now time.Time, t *orchestrator.Task) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(name, value string) { fmt.Fprintf(tw, "%s:\t%s\n", name, value) }
	row("ID", t.ID)
	row("Agent", oneLine(t.Agent, 63))
	row("State", oneLine(stateText(t.State, t.Reason, t.Detail), 300))
	row("Input", oneLine(string(t.Input), 300))
	if len(t.Result) > 0 {
		row("Result", oneLine(string(t.Result), 300))
	}
	u, l := t.Usage, t.Limits
	row("Turns", fmt.Sprintf("%d of %d", u.Turns, l.MaxTurns))
	row("Tool calls", fmt.Sprintf("%d of %d", u.ToolCalls, l.MaxToolCalls))
	row("Tokens", fmt.Sprintf("%d in, %d out", u.InputTokens, u.OutputTokens))
	if u.Cost > 0 {
		row("Cost", formatAmount(u.Cost))
	}
	if t.Principal != nil {
		row("For", oneLine(t.Principal.Subject, 100))
	}
	if t.Parent != "" {
		kind := "delegated by"
		if t.Handoff {
			kind = "handed off by"
		}
		row("Parent", fmt.Sprintf("%s (%s %s)", t.Parent, kind, oneLine(orchestrator.FormatChain(t.Chain), 300)))
	}
	if t.Root != "" && t.Root != t.ID && t.Root != t.Parent {
		row("Tree", t.Root)
	}
	if t.WaitingOn != "" {
		row("Waiting on", t.WaitingOn)
	}
	if t.TraceID != "" {
		row("Trace", t.TraceID) // corral trace ID shows it
	}
	row("Created", fmt.Sprintf("%s (%s ago) by %s", t.Created.Local().Format(auditTimeLayout), age(now, t.Created), oneLine(t.CreatedBy, 80)))
	if t.Ended != nil {
		row("Ended", t.Ended.Local().Format(auditTimeLayout))
	} else if t.Deadline != nil {
		row("Deadline", t.Deadline.Local().Format(auditTimeLayout))
	}
	if t.Worker != "" {
		row("Worker", fmt.Sprintf("%s (attempts: %d)", oneLine(t.Worker, 80), t.Attempts))
	}
	return tw.Flush()
}

func newTasksEvents(s streams) *cobra.Command {
	var (
		cf     clientFlags
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "events ID [--follow]",
		Short: "Show a task's steps: every model call, tool call and change of state",
		Long: `'corral tasks events' prints a task's journal, one line per step, as 'corral
run' shows it live. --follow keeps printing the steps as they happen until
the task ends, and then exits like 'corral run': 0 completed, 2 failed,
3 canceled, 4 rejected, 5 waiting for input. (It does not ask for the input:
'corral tasks answer' gives it.)

Without --follow, the command prints the steps stored so far: it stops at the
task's end, or at the last event stored (the API's ?follow=false).

-o json prints each event as the server sent it, one JSON object a line.`,
		Example: `  corral tasks events task_01jd8x...
  corral tasks events task_01jd8x... --follow
  corral tasks events task_01jd8x... -o json | jq -c 'select(.type == "tool.result")'`,
		Args: cobra.ExactArgs(1),
	}
	cf.register(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing steps until the task ends")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if _, err := taskPath(cmd, args[0], ""); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		f := &follower{c: c.untimed(), id: args[0], retryWait: 250 * time.Millisecond, poll: 200 * time.Millisecond}
		var view *liveView
		if *output == "json" {
			enc := json.NewEncoder(s.out)
			enc.SetEscapeHTML(false)
			f.onEvent = func(ev orchestrator.Event) { _ = enc.Encode(ev) }
		} else {
			view = &liveView{w: s.out, r: newRenderer(termWidth(s.out)), tty: follow && isTerminal(s.out)}
			f.onEvent = view.show
			f.note = view.note
		}
		f.once = !follow
		end, err := followWithSpinner(cmd.Context(), f, view)
		if err != nil {
			if !follow && errors.As(err, new(taskExit)) {
				return nil // interrupted while reading what is stored
			}
			return err
		}
		if !follow {
			return nil
		}
		return endOf(end)
	}
	return cmd
}

func newTasksCancel(s streams) *cobra.Command {
	var (
		cf     clientFlags
		reason string
	)
	cmd := &cobra.Command{
		Use:   "cancel ID [--reason TEXT]",
		Short: "Stop a task",
		Long: `'corral tasks cancel' ends a task in state canceled. A task no worker holds
ends at once; a running one within moments, when its worker sees the request:
a model or tool call already sent is let finish and recorded, and no other
starts. Canceling a task that has ended changes nothing, and says how it
ended.

To stop every task of an agent, and its calls, use 'corral kill --agent'.`,
		Example: `  corral tasks cancel task_01jd8x...
  corral tasks cancel task_01jd8x... --reason "wrong customer"`,
		Args: cobra.ExactArgs(1),
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why, kept in the task's detail")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		path, err := taskPath(cmd, args[0], "/cancel")
		if err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var t orchestrator.Task
		if err := c.do(cmd.Context(), "POST", path, api.CancelRequest{Reason: reason}, &t); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, t)
		}
		switch {
		case t.State == orchestrator.Canceled:
			fmt.Fprintf(s.out, "task %s canceled\n", t.ID)
		case t.State.Final():
			fmt.Fprintf(s.out, "task %s had already ended: %s\n", t.ID, stateText(t.State, t.Reason, ""))
		default:
			fmt.Fprintf(s.out, "task %s is being canceled: its worker stops it within moments ('corral tasks get %s' shows when)\n", t.ID, t.ID)
		}
		return nil
	}
	return cmd
}

func newTasksAnswer(s streams) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "answer ID MESSAGE",
		Short: "Answer a task that waits for input",
		Long: `A hosted agent can ask its user a question; its task then waits in state
input-required ('corral tasks list --state input-required' finds them, 'corral
tasks get' shows the question). 'corral tasks answer' sends the answer, and
the agent goes on. MESSAGE '-' reads the answer from standard input.

A task that does not wait for input refuses the answer with conflict.`,
		Example: `  corral tasks answer task_01jd8x... "yes, refund order 42"
  corral tasks answer task_01jd8x... - < answer.txt`,
		Args: cobra.ExactArgs(2),
	}
	cf.register(cmd)
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		path, err := taskPath(cmd, args[0], "/messages")
		if err != nil {
			return err
		}
		message := args[1]
		if message == "-" {
			b, err := io.ReadAll(io.LimitReader(s.in, orchestrator.MaxInput+1))
			if err != nil {
				return fmt.Errorf("read MESSAGE from standard input: %w", err)
			}
			message = string(b)
		}
		if strings.TrimSpace(message) == "" {
			return usageError{cmd, errors.New("MESSAGE is empty: give the answer to the task's question")}
		}
		if len(message) > orchestrator.MaxInput {
			return usageError{cmd, fmt.Errorf("MESSAGE: over the limit of %d bytes", orchestrator.MaxInput)}
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		var t orchestrator.Task
		h := http.Header{"Idempotency-Key": {"corral-answer-" + rand.Text()}}
		if err := c.send(cmd.Context(), "POST", path, h, api.MessageRequest{Message: message}, &t); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, t)
		}
		fmt.Fprintf(s.out, "task %s answered; it goes on ('corral tasks events %s --follow' shows it)\n", t.ID, t.ID)
		return nil
	}
	return cmd
}

func newTasksExtend(s streams) *cobra.Command {
	var (
		cf               clientFlags
		turns, toolCalls int
		deadline         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "extend ID [--turns N] [--tool-calls N] [--deadline D]",
		Short: "Give a task that escalated at a limit more room",
		Long: `An agent with limits.onExceeded: escalate does not fail a task at a limit
(max turns, max tool calls, its deadline, a loop, a budget): the task waits in
input-required with the reason and what it used ('corral tasks list --state
input-required'). 'corral tasks extend' gives it more room, once, and it goes
on where it stopped; 'corral tasks cancel' ends it instead.

Without flags it gets as much again as it had: twice the turns, the tool
calls and the deadline. People in the agent's limits.escalateTo groups
(their corral human key or identity provider token as --token) and the admin
token extend; an agent cannot extend its own task.`,
		Example: `  corral tasks extend task_01jd8x...
  corral tasks extend task_01jd8x... --turns 5 --deadline 10m`,
		Args: cobra.ExactArgs(1),
	}
	cf.register(cmd)
	cmd.Flags().IntVar(&turns, "turns", 0, "model calls to add (default: as many as the task had)")
	cmd.Flags().IntVar(&toolCalls, "tool-calls", 0, "tool calls to add (default: as many as the task had)")
	cmd.Flags().DurationVar(&deadline, "deadline", 0, "time to add to the deadline (default: as much as the task had)")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		switch {
		case turns < 0:
			return usageError{cmd, fmt.Errorf("--turns %d: more room, not less", turns)}
		case toolCalls < 0:
			return usageError{cmd, fmt.Errorf("--tool-calls %d: more room, not less", toolCalls)}
		case deadline < 0:
			return usageError{cmd, fmt.Errorf("--deadline %v: more time, not less", deadline)}
		}
		path, err := taskPath(cmd, args[0], "/extend")
		if err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		req := api.ExtendRequest{Turns: turns, ToolCalls: toolCalls}
		if deadline > 0 {
			req.Deadline = deadline.String()
		}
		var t orchestrator.Task
		if err := c.do(cmd.Context(), "POST", path, req, &t); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, t)
		}
		fmt.Fprintf(s.out, "task %s goes on: up to %d turns, %d tool calls, deadline %s\n", t.ID, t.Limits.MaxTurns, t.Limits.MaxToolCalls, t.Limits.Deadline)
		return nil
	}
	return cmd
}
