package budget

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/config"
)

// Status is one budget's use against its limits, for `corral budgets`.
type Status struct {
	Budget string             `json:"budget"`
	Scope  config.BudgetScope `json:"scope"`
	Window string             `json:"window"`
	Limit  config.BudgetLimit `json:"limit"`
	// Key is the current window's key (2026-11-21 for a day window, total);
	// empty for task windows, whose counters are per task.
	Key string `json:"key,omitempty"`
	// Used is what the current window has used; nil for task windows.
	Used *Usage `json:"used,omitempty"`
	// ResetsAt is when the current window ends; zero for task and total.
	ResetsAt time.Time `json:"resets_at,omitzero"`
	// Tasks are, for task windows, the counters of the tasks that used the
	// budget most recently, newest first; TaskCount counts them all.
	Tasks     []TaskUsage `json:"tasks,omitempty"`
	TaskCount int         `json:"task_count,omitempty"`
	// Error says why the budget is not enforced; empty when it is.
	Error string `json:"error,omitempty"`
}

// TaskUsage is one task's counters of a task-window budget.
type TaskUsage struct {
	// Task is the task's id; ids too long to keep in a key show as their
	// key token, "==" and a digest.
	Task    string    `json:"task"`
	Used    Usage     `json:"used"`
	Updated time.Time `json:"updated"`
}

// StatusTasks is how many tasks' counters Status shows per task-window
// budget: the most recently updated.
const StatusTasks = 5

// Status reports every budget, by name, with what its current window used.
func (b *Budgets) Status(ctx context.Context) ([]Status, error) {
	now := b.now()
	set := *b.set.Load()
	out := make([]Status, 0, len(set))
	for _, bg := range set {
		st, err := b.status(ctx, bg, now, true)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// status reports one budget; the tasks of a task window only withTasks,
// since finding them reads every task's counter.
func (b *Budgets) status(ctx context.Context, bg *budget, now time.Time, withTasks bool) (Status, error) {
	st := Status{Budget: bg.name, Scope: bg.spec.Scope, Window: bg.spec.Window, Limit: bg.spec.Limit}
	if bg.err != nil {
		st.Error = "not enforced: " + bg.err.Error()
		return st, nil
	}
	if bg.spec.Window == config.WindowTask {
		if !withTasks {
			return st, nil
		}
		tasks, count, err := b.recentTasks(ctx, bg.name)
		if err != nil {
			return Status{}, err
		}
		st.Tasks, st.TaskCount = tasks, count
		return st, nil
	}
	key, resetAt, _ := windowKey(bg.spec.Window, now, "")
	st.Key, st.ResetsAt = key, resetAt
	used, err := b.read(ctx, bg.name+"."+key)
	if err != nil {
		return Status{}, err
	}
	st.Used = &used
	return st, nil
}

// read returns a counter as the stream's leader holds it; zero if it does
// not exist. A follower may answer a direct get with a value it has not
// caught up on yet (a node just back after a failure): an operator, and the
// chaos test comparing the budget with what the upstream saw, would read one
// call short of what was counted.
func (b *Budgets) read(ctx context.Context, key string) (Usage, error) {
	var u Usage
	e, err := b.readCounter(ctx, key, true)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return u, nil
	}
	if err != nil {
		return u, fmt.Errorf("budget: read counter %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), &u); err != nil {
		return u, fmt.Errorf("budget: counter %s is unreadable: %w", key, err)
	}
	return u, nil
}

// recentTasks reads the counters of every task of a task-window budget and
// returns the StatusTasks most recently updated, and how many there are.
func (b *Budgets) recentTasks(ctx context.Context, name string) ([]TaskUsage, int, error) {
	prefix := name + "." + taskPrefix
	w, err := b.kv.Watch(ctx, prefix+">", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, 0, fmt.Errorf("budget: list tasks of %s: %w", name, err)
	}
	defer func() { _ = w.Stop() }()
	var out []TaskUsage
	count := 0
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("budget: list tasks of %s: %w", name, ctx.Err())
		case e = <-w.Updates():
		}
		if e == nil { // every current entry delivered
			break
		}
		token := strings.TrimPrefix(e.Key(), prefix)
		task, err := parseTaskToken(token)
		if err != nil {
			task = token
		}
		t := TaskUsage{Task: task, Updated: e.Created().UTC()}
		if err := json.Unmarshal(e.Value(), &t.Used); err != nil {
			b.logger.WarnContext(ctx, "budget: skipping an unreadable task counter", "key", e.Key(), "err", err)
			continue
		}
		count++
		out = append(out, t)
		if len(out) > 4*StatusTasks { // keep memory bounded however many tasks there are
			out = newestTasks(out)
		}
	}
	return newestTasks(out), count, nil
}

// newestTasks keeps the StatusTasks most recently updated, newest first.
func newestTasks(ts []TaskUsage) []TaskUsage {
	slices.SortFunc(ts, func(x, y TaskUsage) int {
		return cmp.Or(y.Updated.Compare(x.Updated), cmp.Compare(x.Task, y.Task))
	})
	return ts[:min(len(ts), StatusTasks)]
}
