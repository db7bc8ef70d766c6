package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/problem"
)

// StateBucket holds each task tree's shared state: one JSON document per
// tree, keyed by the root task's id; the entry's revision is its version.
const StateBucket = "corral_task_state"

// MaxState bounds a tree's shared state document, in bytes.
const MaxState = 64 << 10

// AnyVersion, given as the version a change expects, changes the state
// whatever its version is.
const AnyVersion = -1

// EvStateChanged is the event of a change of the tree's shared state, in
// the journal of the task that made it: Detail says the version, Content
// holds the merge patch.
const EvStateChanged = "state.changed"

// Auditor appends audit records: the changes of shared state.
type Auditor interface {
	Append(ctx context.Context, r *audit.Record) (string, error)
}

// SetAudit makes every change of shared state an audit record.
func (s *Store) SetAudit(a Auditor) { s.auditor = a }

// SharedState is a tree's shared state.
type SharedState struct {
	// Document is the JSON document; {} when nothing was written.
	Document json.RawMessage `json:"state"`
	// Version changes with every change; 0 before the first.
	Version uint64 `json:"version"`
}

// State returns the shared state of the tree task id belongs to.
func (s *Service) State(ctx context.Context, id string) (*SharedState, error) {
	t, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	st, err := s.store.readState(ctx, rootOf(t))
	if err != nil {
		return nil, s.substrate(err)
	}
	return st, nil
}

func (s *Store) readState(ctx context.Context, root string) (*SharedState, error) {
	rev, e, err := s.bus.Last(ctx, s.states, root)
	if err != nil {
		return nil, fmt.Errorf("orchestrator: read state of %s: %w", root, err)
	}
	if e == nil {
		return &SharedState{Document: json.RawMessage(`{}`), Version: rev}, nil
	}
	return &SharedState{Document: e.Value(), Version: rev}, nil
}

// PatchState applies a JSON merge patch (RFC 7386) to the shared state of
// the tree task id belongs to, if its version is expect (or whatever it
// is, with AnyVersion). by names who changes it ("agent:impact",
// "admin"); key, when set, makes a repeat of the same change (a step
// resumed after a crash) one event. The change is an event of the task
// and an audit record.
func (s *Service) PatchState(ctx context.Context, id string, patch json.RawMessage, expect int64, by, key string) (*SharedState, error) {
	t, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.patchState(ctx, t, patch, expect, by, func(ev *Event) error {
		msgID := ""
		if key != "" {
			msgID = t.ID + "/state/" + key
		}
		_, err := s.store.append(ctx, t.ID, ev, anySeq, msgID)
		return err
	})
}

// patchState is PatchState for task t; journal writes the change's event
// (a hosted task's run writes it under its journal's guard).
func (s *Service) patchState(ctx context.Context, t *Task, patch json.RawMessage, expect int64, by string, journal func(*Event) error) (*SharedState, error) {
	if len(patch) > MaxState {
		return nil, problem.New(http.StatusRequestEntityTooLarge, problem.StateTooLarge, fmt.Sprintf("the patch is %d bytes, over the state's cap of %d", len(patch), MaxState))
	}
	root := rootOf(t)
	for range 8 {
		cur, err := s.store.readState(ctx, root)
		if err != nil {
			return nil, s.substrate(err)
		}
		if expect != AnyVersion && uint64(expect) != cur.Version {
			return nil, problem.New(http.StatusPreconditionFailed, problem.StateVersionMismatch,
				fmt.Sprintf("the shared state is at version %d, not %d: read it again and redo the change", cur.Version, expect))
		}
		doc, err := MergePatch(cur.Document, patch)
		if err != nil {
			return nil, problem.New(http.StatusBadRequest, problem.InvalidRequest, "the merge patch: "+err.Error())
		}
		if len(doc) > 0 && doc[0] != '{' {
			return nil, problem.New(http.StatusBadRequest, problem.InvalidRequest, "the merge patch would make the state something other than a JSON object")
		}
		if len(doc) > MaxState {
			return nil, problem.New(http.StatusRequestEntityTooLarge, problem.StateTooLarge, fmt.Sprintf("the change would make the state %d bytes, over its cap of %d", len(doc), MaxState))
		}
		var rev uint64
		if cur.Version == 0 {
			rev, err = s.store.states.Create(ctx, root, doc)
		} else {
			rev, err = s.store.states.Update(ctx, root, doc, cur.Version)
		}
		if wrongRevision(err) {
			if expect != AnyVersion {
				return nil, problem.New(http.StatusPreconditionFailed, problem.StateVersionMismatch,
					fmt.Sprintf("the shared state changed meanwhile (it was at version %d): read it again and redo the change", cur.Version))
			}
			continue
		}
		if err != nil {
			return nil, s.substrate(fmt.Errorf("orchestrator: write state of %s: %w", root, err))
		}
		s.stateChanged(ctx, t, patch, rev, by, journal)
		return &SharedState{Document: doc, Version: rev}, nil
	}
	return nil, problem.New(http.StatusConflict, problem.Conflict, "the shared state keeps changing; retry")
}

// stateChanged records a change: an event of the task, an audit record.
func (s *Service) stateChanged(ctx context.Context, t *Task, patch json.RawMessage, version uint64, by string, journal func(*Event) error) {
	ctx = context.WithoutCancel(ctx)
	ev := &Event{Type: EvStateChanged, Detail: "version " + strconv.FormatUint(version, 10), Content: string(patch), Agent: by}
	if err := journal(ev); err != nil {
		s.logger.WarnContext(ctx, "the event of a state change is lost; the audit has it", "task", t.ID, "err", err)
	}
	if s.store.auditor == nil {
		return
	}
	rec := &audit.Record{Time: s.now().UTC(), Kind: "task", Event: EvStateChanged, Target: rootOf(t), Task: t.ID, Edge: "task", Decision: "allowed", Status: "ok",
		Reason: fmt.Sprintf("shared state of tree %s changed to version %d by %s", rootOf(t), version, by)}
	if agent, ok := strings.CutPrefix(by, "agent:"); ok {
		rec.Agent = agent
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.store.auditor.Append(actx, rec); err != nil {
		s.logger.WarnContext(ctx, "the audit record of a state change is lost; the task's event has it", "task", t.ID, "err", err)
	}
}

// openStates makes the bucket of shared states.
func (s *Store) openStates(ctx context.Context) error {
	var err error
	s.states, err = s.bus.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       StateBucket,
		Description:  "corral shared task state: one JSON document per task tree, keyed by the root task's id",
		MaxValueSize: MaxState + 1024,
	})
	if err != nil {
		return fmt.Errorf("orchestrator: %w", err)
	}
	return nil
}
