package a2a

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/corral-dev/corral/internal/orchestrator"
)

// keepAlive is how often an idle stream sends a comment, so proxies keep it.
const keepAlive = 15 * time.Second

// sendStreamingMessage: the task first, then its status and artifact
// updates, until it ends or waits for its client (answer it with
// SendMessage, follow it again with SubscribeToTask).
func (s *Server) sendStreamingMessage(ctx context.Context, w http.ResponseWriter, c *call, params json.RawMessage) {
	out, err := s.send(ctx, c, params)
	if err != nil {
		writeRPC(w, c.id, nil, toRPC(err))
		return
	}
	s.stream(ctx, w, c, out.task, out.after, true)
}

// subscribe follows a task that has not ended until it ends.
func (s *Server) subscribe(ctx context.Context, w http.ResponseWriter, c *call, params json.RawMessage) {
	var p TaskIDRequest
	if e := decodeParams(params, &p); e != nil {
		writeRPC(w, c.id, nil, e)
		return
	}
	t, err := s.task(ctx, c, p.ID)
	if err == nil && t.State.Final() {
		err = rpcErr(codeUnsupported, "task_ended", fmt.Sprintf("task %s is %s: there is nothing to follow; GetTask reads it", t.ID, t.State))
	}
	if err != nil {
		writeRPC(w, c.id, nil, toRPC(err))
		return
	}
	after, err := s.lastSeq(ctx, t.ID)
	if err != nil {
		writeRPC(w, c.id, nil, toRPC(err))
		return
	}
	s.stream(ctx, w, c, t, after, false)
}

// stream writes the task, then follows its journal after the entry
// after: each state change is a statusUpdate, a result an artifactUpdate.
// It ends at the task's end, or (interrupted) when it waits for its client.
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, c *call, t *orchestrator.Task, after uint64, interrupted bool) {
	first, err := s.view(ctx, t, -1, true)
	if err != nil {
		writeRPC(w, c.id, nil, toRPC(err))
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(v StreamResponse) error {
		b, err := json.Marshal(response{JSONRPC: "2.0", ID: idOrNull(c.id), Result: v})
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := send(StreamResponse{Task: &first}); err != nil {
		return
	}
	if Terminal(first.Status.State) {
		return
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan orchestrator.Event, 64)
	done := make(chan error, 1)
	go func() {
		defer close(events)
		done <- s.tasks.Events(ctx, t.ID, after, true, func(ev orchestrator.Event) error {
			select {
			case events <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	keep := time.NewTicker(keepAlive)
	defer keep.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				if err := <-done; err != nil && ctx.Err() == nil {
					s.logger.WarnContext(ctx, "a2a stream ended early", "task", t.ID, "err", err)
					b, _ := json.Marshal(response{JSONRPC: "2.0", ID: idOrNull(c.id), Error: toRPC(err)})
					fmt.Fprintf(w, "data: %s\n\n", b)
					_ = rc.Flush()
				}
				return
			}
			if ev.Type != orchestrator.EvState {
				continue
			}
			cur, err := s.tasks.Get(ctx, t.ID)
			if err != nil {
				continue
			}
			at := *atEvent(cur, ev)
			if ev.State.Final() && len(at.Result) > 0 {
				if err := send(StreamResponse{ArtifactUpdate: &TaskArtifactUpdateEvent{TaskID: t.ID, ContextID: first.ContextID, Artifact: resultArtifact(&at)[0], LastChunk: true}}); err != nil {
					return
				}
			}
			st := status(&at, first.ContextID)
			if err := send(StreamResponse{StatusUpdate: &TaskStatusUpdateEvent{TaskID: t.ID, ContextID: first.ContextID, Status: st, Metadata: taskMetadata(&at)}}); err != nil {
				return
			}
			if Terminal(st.State) || (interrupted && Interrupted(st.State)) {
				return
			}
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			_ = rc.Flush()
		case <-ctx.Done():
			return
		}
	}
}

func idOrNull(id json.RawMessage) json.RawMessage {
	if len(id) == 0 {
		return json.RawMessage("null")
	}
	return id
}
