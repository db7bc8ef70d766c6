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
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/internal/llm"
	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/problem"
)

// Exit codes of the commands that wait for a task (corral run, corral
// tasks events --follow); 1 stays every other error. docs/tasks.md
// lists them.
const (
	exitFailed        = 2
	exitCanceled      = 3
	exitRejected      = 4
	exitInputRequired = 5
	exitInterrupted   = 130
)

// taskExit ends corral with the exit code of how a task ended, or of why
// corral stopped waiting for it.
type taskExit struct {
	code int
	msg  string
}

func (e taskExit) Error() string { return e.msg }
func (e taskExit) ExitCode() int { return e.code }

// endOf is the error that a task in state t ends the command with: nil
// when it completed.
func endOf(t *orchestrator.Task) error {
	what := fmt.Sprintf("task %s %s", t.ID, stateText(t.State, t.Reason, t.Detail))
	switch t.State {
	case orchestrator.Completed:
		return nil
	case orchestrator.Failed:
		return taskExit{exitFailed, what}
	case orchestrator.Canceled:
		return taskExit{exitCanceled, what}
	case orchestrator.Rejected:
		return taskExit{exitRejected, what}
	case orchestrator.InputRequired:
		return taskExit{exitInputRequired, fmt.Sprintf("task %s waits for input: %s\nanswer with: corral tasks answer %s \"...\"", t.ID, t.Detail, t.ID)}
	}
	return taskExit{1, what}
}

// Stream limits: an event's data at most maxEventBytes (the server keeps
// large tool results in its object store, so events are small); after a
// break, reconnect at most maxReconnects times in a row before giving up.
const (
	maxEventBytes = 4 << 20
	maxReconnects = 8
)

// follower follows a task's events to its end.
type follower struct {
	// c calls the server without a time limit: a task may run for days.
	c  *client
	id string
	// onEvent sees each event once, in order.
	onEvent func(orchestrator.Event)
	// note says something of corral's own to the person watching (a
	// reconnect); nil says nothing.
	note func(string)
	// ask asks the person for the answer a task waits for, or is nil when
	// there is nobody to ask: follow then ends with the task waiting.
	ask func(ctx context.Context, question string) (string, error)
	// after is the last event already seen: following starts after it.
	after uint64
	// retryWait is the first pause before a reconnect, doubled each time.
	retryWait time.Duration
	// poll is how often the task is read while its question waits.
	poll time.Duration
	// once reads the events stored so far (?follow=false) instead of
	// following the task until it ends.
	once bool
}

// follow returns the task once it has ended, or once it waits for input
// and there is nobody to ask. Events stream from a goroutine that follow
// owns: it is stopped and waited for before follow returns.
func (f *follower) follow(ctx context.Context) (*orchestrator.Task, error) {
	ctx, cancel := context.WithCancel(ctx)
	events := make(chan orchestrator.Event)
	streamErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(events)
		streamErr <- f.stream(ctx, events)
	})
	defer func() {
		cancel()
		for range events { // let the stream see the cancel and end
		}
		wg.Wait()
	}()

	var (
		question string
		check    <-chan time.Time // while a question waits: when to read the task
	)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				if err := <-streamErr; err != nil {
					if ctx.Err() != nil {
						return nil, f.interrupted()
					}
					return nil, err
				}
				if f.once {
					var t orchestrator.Task
					if err := f.c.do(ctx, "GET", "/v1/tasks/"+url.PathEscape(f.id), nil, &t); err != nil {
						return nil, f.orInterrupted(ctx, err)
					}
					return &t, nil
				}
				return f.settled(ctx)
			}
			f.onEvent(ev)
			// The worker writes nothing after parking a task: any event
			// after the question means it was answered.
			question, check = "", nil
			if ev.Type == orchestrator.EvState && ev.State == orchestrator.InputRequired {
				question, check = cmpOr(ev.Detail, "the agent asks for input"), time.After(0)
			}
		case <-check:
			// The journal says the task waits; its record says so a moment
			// later, or an answer is already on its way in the stream.
			var t orchestrator.Task
			if err := f.c.do(ctx, "GET", "/v1/tasks/"+url.PathEscape(f.id), nil, &t); err != nil {
				return nil, f.orInterrupted(ctx, err)
			}
			if t.State != orchestrator.InputRequired {
				check = time.After(f.poll)
				continue
			}
			if f.ask == nil {
				return &t, nil
			}
			answer, err := f.ask(ctx, question)
			if err != nil {
				return nil, f.orInterrupted(ctx, err)
			}
			if strings.TrimSpace(answer) == "" {
				return &t, nil // the person chose to leave it waiting
			}
			if err := f.answer(ctx, answer); err != nil {
				return nil, f.orInterrupted(ctx, err)
			}
			question, check = "", nil
		case <-ctx.Done():
			return nil, f.interrupted()
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// answer posts the person's answer, with a key of its own so that a
// retried post is one answer.
func (f *follower) answer(ctx context.Context, text string) error {
	h := http.Header{"Idempotency-Key": {"corral-answer-" + rand.Text()}}
	err := f.c.send(ctx, "POST", "/v1/tasks/"+url.PathEscape(f.id)+"/messages", h, map[string]string{"message": text}, nil)
	var ae *apiError
	if errors.As(err, &ae) && ae.Code == problem.Conflict {
		// Someone else answered first; the stream shows what happens next.
		if f.note != nil {
			f.note("not sent: " + ae.Detail)
		}
		return nil
	}
	return err
}

// settled reads the task after its final event: its record is written
// just after the journal, so it may take a moment to say so.
func (f *follower) settled(ctx context.Context) (*orchestrator.Task, error) {
	for i := 0; ; i++ {
		var t orchestrator.Task
		if err := f.c.do(ctx, "GET", "/v1/tasks/"+url.PathEscape(f.id), nil, &t); err != nil {
			return nil, f.orInterrupted(ctx, err)
		}
		if t.State.Final() || i >= 50 {
			return &t, nil
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return nil, f.interrupted()
		}
	}
}

func (f *follower) orInterrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return f.interrupted()
	}
	return err
}

func (f *follower) interrupted() error {
	return taskExit{exitInterrupted, fmt.Sprintf("stopped following task %s; it goes on without you: follow it with 'corral tasks events %s --follow', stop it with 'corral tasks cancel %s'", f.id, f.id, f.id)}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stream sends the task's events to out until its final state, resuming
// after the last event it sent whenever the stream breaks.
func (f *follower) stream(ctx context.Context, out chan<- orchestrator.Event) error {
	last, failures := f.after, 0
	wait := f.retryWait
	for {
		final, got, err := f.streamOnce(ctx, last, out)
		if got > last {
			last, failures, wait = got, 0, f.retryWait
		}
		if final {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !retryable(err) {
			return err
		}
		if failures++; failures > maxReconnects {
			return fmt.Errorf("the event stream of task %s broke off %d times in a row: %w", f.id, failures, cmpErr(err, io.ErrUnexpectedEOF))
		}
		if f.note != nil {
			f.note(fmt.Sprintf("the event stream broke off; reconnecting after event %d", last))
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func cmpErr(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

// retryable reports whether a failed stream is worth opening again: no
// answer at all, or a server (or a proxy before it) briefly unable to.
func retryable(err error) bool {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status >= 500 || ae.Code == problem.SubstrateUnavailable
	}
	var un unreachable
	var broke streamBroke
	return errors.As(err, &un) || errors.As(err, &broke)
}

// streamBroke is a stream that ended before the task did.
type streamBroke struct{ err error }

func (e streamBroke) Error() string { return "the event stream broke off: " + e.err.Error() }
func (e streamBroke) Unwrap() error { return e.err }

// streamOnce reads one connection's events. It returns whether the final
// state came, and the last event sent.
func (f *follower) streamOnce(ctx context.Context, after uint64, out chan<- orchestrator.Event) (final bool, last uint64, err error) {
	last = after
	path := "/v1/tasks/" + url.PathEscape(f.id) + "/events"
	if f.once {
		path += "?follow=false" // ends with an "end" event at the last one stored
	}
	req, err := http.NewRequestWithContext(ctx, "GET", f.c.base+path, nil)
	if err != nil {
		return false, last, fmt.Errorf("--server %q: %w", f.c.base, err)
	}
	req.Header.Set("Authorization", "Bearer "+f.c.token)
	req.Header.Set("Accept", "text/event-stream")
	if after > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(after, 10))
	}
	resp, err := f.c.http.Do(req)
	if err != nil {
		return false, last, unreachable{f.c.base, err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return false, last, decodeProblem(resp, data)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return false, last, fmt.Errorf("GET /v1/tasks/%s/events answered %q, not an event stream: is --server a corral?", f.id, ct)
	}
	return readEvents(ctx, resp.Body, last, out)
}

// readEvents reads server-sent events from r and sends each task event
// after last to out, in order, until the task's final state.
func readEvents(ctx context.Context, r io.Reader, last uint64, out chan<- orchestrator.Event) (final bool, seen uint64, err error) {
	seen = last
	sse := llm.NewSSEReader(bufio.NewReader(r), maxEventBytes)
	for {
		typ, data, err := sse.Next()
		if err != nil {
			if errors.Is(err, llm.ErrEventTooLarge) {
				return false, seen, err
			}
			return false, seen, streamBroke{err}
		}
		if typ == "end" {
			return true, seen, nil // ?follow=false: every event stored was sent
		}
		if typ == "error" {
			var p problem.Details
			_ = json.Unmarshal(data, &p)
			return false, seen, streamBroke{fmt.Errorf("%s (code %s)", cmpOr(p.Detail, "the server ended the stream"), cmpOr(p.Code, "unknown"))}
		}
		var ev orchestrator.Event
		if err := json.Unmarshal(data, &ev); err != nil {
			return false, seen, fmt.Errorf("event after %d is not a task event: %w", seen, err)
		}
		if ev.Seq <= seen {
			continue // sent again after a reconnect
		}
		if ev.Type == "" {
			ev.Type = typ
		}
		select {
		case out <- ev:
		case <-ctx.Done():
			return false, seen, ctx.Err()
		}
		seen = ev.Seq
		if ev.Type == orchestrator.EvState && ev.State.Final() {
			return true, seen, nil
		}
	}
}
