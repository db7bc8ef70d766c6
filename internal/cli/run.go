package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/corral-dev/corral/internal/api"
	"github.com/corral-dev/corral/internal/orchestrator"
)

func newRun(s streams) *cobra.Command {
	var (
		cf                      clientFlags
		jsonInput, wait, detach bool
		key                     string
	)
	cmd := &cobra.Command{
		Use:   "run AGENT|workflow/NAME INPUT",
		Short: "Give an agent a task, or start a workflow, and watch it work",
		Long: `'corral run' starts a durable task for an agent (POST /v1/tasks) and shows its
steps live, one line each, as they happen: what the model says (its first
line), each tool call with its arguments and whether it worked, and each
change of state with its reason. On a terminal a spinner runs while a model
thinks or a tool works. When the task ends, its result is printed.

'corral run workflow/NAME INPUT' starts a run of a Workflow instead (a task
too: the same events, cancel and limits; docs/workflows.md), and shows its
steps as they start, end, fail, retry and are compensated.

The steps go to standard error and the result to standard output, so
'corral run impact "..." > result.txt' keeps only the result.

INPUT is text, '-' to read it from standard input, or with --json-input any
JSON value (an object, say), which the agent's model is given as JSON.

If the agent asks a question (it calls request_input), corral prints it and,
when standard input and standard error are a terminal, asks you for the
answer and sends it; an empty answer leaves the task waiting. Without a
terminal, 'corral run' stops with exit code 5 and says how to answer:
'corral tasks answer ID "..."'.

The task is the server's, not this command's: Ctrl-C stops watching, not the
task ('corral tasks cancel ID' stops it). A broken connection is resumed
where it broke off. The request that starts the task carries an
Idempotency-Key, so retrying it after a network error starts no second task;
--idempotency-key sets your own, to make a retry of the whole command safe.

--token may be the admin token, or an agent's key or corral token: an agent
starts and follows tasks of its own only.

Modes:
  (default)      follow live, print the result
  --wait         print nothing until the end, then the result; with -o json
                 the finished task as JSON
  --detach       print the task's id and return at once; with -o json the
                 task as created. -o json without --wait does the same.

Exit codes: 0 completed (or detached), 1 corral refused or could not be
reached, 2 failed, 3 canceled, 4 rejected, 5 waits for input with nobody to
ask, 130 interrupted (the task goes on).`,
		Example: `  corral run impact "which orders to Rotterdam are late?"
  corral run impact --json-input '{"order": 42, "check": "delay"}'
  corral run workflow/order --json-input '{"sku": "A-42", "qty": 3}'
  echo "summarise yesterday's refunds" | corral run impact -
  corral run impact "which orders are late?" --wait -o json | jq -r .result
  id=$(corral run impact "nightly check" --detach); corral tasks events "$id" --follow`,
		Args: cobra.ExactArgs(2),
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&jsonInput, "json-input", false, "INPUT is JSON, given to the agent as it is")
	cmd.Flags().BoolVar(&wait, "wait", false, "show no steps; print the result (or, with -o json, the task) when the task ends")
	cmd.Flags().BoolVar(&detach, "detach", false, "print the task id (or, with -o json, the task) and return without waiting")
	cmd.Flags().StringVar(&key, "idempotency-key", "", "the key of the start request: the same key starts the same task once (default: a new one)")
	output := outputFlag(cmd, "text", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if wait && detach {
			return usageError{cmd, errors.New("--wait and --detach: give one, not both")}
		}
		input, err := taskInput(s.in, args[1], jsonInput)
		if err != nil {
			return usageError{cmd, err}
		}
		if key == "" {
			key = "corral-run-" + rand.Text()
		} else if len(key) > 255 || strings.ContainsFunc(key, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			return usageError{cmd, fmt.Errorf("--idempotency-key: at most 255 printable ASCII characters, no spaces")}
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		req := api.TaskRequest{Agent: args[0], Input: input}
		if name, ok := strings.CutPrefix(args[0], "workflow/"); ok {
			req = api.TaskRequest{Workflow: name, Input: input}
		}
		t, err := createTask(cmd.Context(), c, req, key)
		if err != nil {
			return err
		}
		if detach || (*output == "json" && !wait) {
			if *output == "json" {
				return writeJSON(s.out, t)
			}
			fmt.Fprintln(s.out, t.ID)
			return nil
		}
		tty := isTerminal(s.err)
		f := &follower{c: c.untimed(), id: t.ID, onEvent: func(orchestrator.Event) {}, retryWait: 250 * time.Millisecond, poll: 200 * time.Millisecond}
		var view *liveView
		if !wait {
			if t.Workflow != "" {
				fmt.Fprintf(s.err, "task %s: Workflow/%s as Agent/%s\n", t.ID, t.Workflow, t.Agent)
			} else {
				fmt.Fprintf(s.err, "task %s: Agent/%s\n", t.ID, t.Agent)
			}
			if !t.Hosted {
				fmt.Fprintf(s.err, "  Agent/%s is external (it has no spec.model): the task goes on when the agent acts in it with a token bound to the task\n", t.Agent)
			}
			view = &liveView{w: s.err, r: newRenderer(termWidth(s.err)), tty: tty}
			f.onEvent, f.note = view.show, view.note
		}
		if tty && isTerminal(s.in) {
			f.ask = promptAnswer(s.in, s.err, view)
		}
		end, err := followWithSpinner(cmd.Context(), f, view)
		if err != nil {
			return err
		}
		if *output == "json" {
			if err := writeJSON(s.out, end); err != nil {
				return err
			}
		} else if end.State == orchestrator.Completed {
			if err := writeResult(s.out, end.Result, isTerminal(s.out)); err != nil {
				return err
			}
		}
		return endOf(end)
	}
	return cmd
}

// taskInput is INPUT as the JSON of a task's input: text becomes a JSON
// string; with --json-input it must be JSON already.
func taskInput(stdin io.Reader, arg string, isJSON bool) (json.RawMessage, error) {
	text := arg
	if arg == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, orchestrator.MaxInput+1))
		if err != nil {
			return nil, fmt.Errorf("read INPUT from standard input: %w", err)
		}
		if len(b) > orchestrator.MaxInput {
			return nil, fmt.Errorf("INPUT: over the limit of %d bytes", orchestrator.MaxInput)
		}
		text = string(b)
	}
	if strings.TrimSpace(text) == "" {
		return nil, errors.New("INPUT is empty: give the task's input as text, '-' to read it from standard input, or JSON with --json-input")
	}
	if isJSON {
		if !json.Valid([]byte(text)) {
			var v any
			err := json.Unmarshal([]byte(text), &v)
			return nil, fmt.Errorf("--json-input: INPUT is not JSON: %v", err)
		}
		if strings.TrimSpace(text) == "null" {
			return nil, errors.New("--json-input: INPUT is null: give the task something to do")
		}
		return json.RawMessage(text), nil
	}
	b, err := json.Marshal(text)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// createTask starts a task. The request is sent again, with the same
// Idempotency-Key, when it got no answer or the server was briefly
// unavailable: the server answers a repeat with the task the first one
// made.
func createTask(ctx context.Context, c *client, req api.TaskRequest, key string) (*orchestrator.Task, error) {
	h := http.Header{"Idempotency-Key": {key}}
	wait := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		var t orchestrator.Task
		err := c.send(ctx, "POST", "/v1/tasks", h, req, &t)
		if err == nil {
			return &t, nil
		}
		if !retryable(err) || attempt >= 4 || ctx.Err() != nil {
			return nil, err
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return nil, err
		}
		wait *= 2
	}
}

// followWithSpinner follows the task, turning the spinner of a terminal
// view while it does.
func followWithSpinner(ctx context.Context, f *follower, view *liveView) (*orchestrator.Task, error) {
	if view == nil || !view.tty {
		return f.follow(ctx)
	}
	ctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				view.tick()
			case <-ctx.Done():
				return
			}
		}
	}()
	t, err := f.follow(ctx)
	stop()
	<-done
	view.idle()
	return t, err
}

// promptAnswer asks the person at the terminal for the answer to a
// task's question. The read is not interrupted by Ctrl-C (a second one
// ends corral); an empty line or the end of input leaves the task waiting.
func promptAnswer(in io.Reader, w io.Writer, view *liveView) func(context.Context, string) (string, error) {
	lines := bufio.NewReader(in)
	return func(ctx context.Context, question string) (string, error) {
		if view != nil {
			view.idle()
		} else {
			fmt.Fprintln(w, "? "+oneLine(question, 1000))
		}
		fmt.Fprint(w, "answer (an empty line leaves the task waiting): ")
		line, err := lines.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read the answer: %w", err)
		}
		if errors.Is(err, io.EOF) {
			fmt.Fprintln(w)
		}
		return strings.TrimRight(line, "\r\n"), ctx.Err()
	}
}

// writeResult prints a task's result: text as it is, JSON indented. On a
// terminal, control characters in text are shown as '?': a model's answer
// must not drive the terminal with escape sequences.
func writeResult(w io.Writer, result json.RawMessage, terminal bool) error {
	if len(result) == 0 {
		return nil
	}
	var text string
	if json.Unmarshal(result, &text) == nil {
		if terminal {
			text = strings.Map(func(r rune) rune {
				if r != '\n' && r != '\t' && unicode.IsControl(r) {
					return '?'
				}
				return r
			}, text)
		}
		if !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		_, err := io.WriteString(w, text)
		return err
	}
	var v any
	if err := json.Unmarshal(result, &v); err != nil {
		_, err := fmt.Fprintf(w, "%s\n", result)
		return err
	}
	return writeJSON(w, v)
}

// isTerminal reports whether v is a terminal.
func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// termWidth is the width of the terminal w, else what COLUMNS says, else
// 160, generous for logs.
func termWidth(w any) int {
	if f, ok := w.(*os.File); ok {
		if width, _, err := term.GetSize(int(f.Fd())); err == nil && width > 0 {
			return width - 1 // a line as wide as the terminal wraps in some
		}
	}
	var n int
	if _, err := fmt.Sscanf(os.Getenv("COLUMNS"), "%d", &n); err == nil && n > 20 {
		return n
	}
	return 160
}
