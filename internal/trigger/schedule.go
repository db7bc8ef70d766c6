package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/corral-dev/corral/internal/config"
)

// scheduleAttempts bounds the tries at one tick while the substrate does
// not answer; the tick is then dead-lettered.
const scheduleAttempts = 3

// runSchedule fires the trigger at each tick of its schedule. Every
// replica fires every tick; the event id is the trigger and the tick's
// time, so the task id is the same on all of them and only one task is
// made. A tick while the trigger is at maxConcurrent is skipped (counted
// deferred); ticks while no replica runs are not made up.
func (m *Manager) runSchedule(ctx context.Context, r *runner) error {
	spec := r.spec.Schedule
	sched, err := config.ParseCron(spec.Cron)
	if err != nil {
		return err
	}
	loc := time.UTC
	if spec.TimeZone != "" {
		if loc, err = time.LoadLocation(spec.TimeZone); err != nil {
			return err
		}
	}
	var data []byte
	if spec.Data != nil {
		if data, err = json.Marshal(spec.Data); err != nil {
			return err
		}
	}
	r.setState(StateRunning, "", m.now())
	for {
		tick := nextTick(sched, m.now().In(loc))
		r.setNext(tick)
		timer := time.NewTimer(time.Until(tick))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		m.fire(ctx, r, tick, data)
	}
}

// nextTick is the schedule's first tick after now. An @every schedule
// counts from the Unix epoch, not from now, so that replicas started at
// different moments agree on its ticks.
func nextTick(sched cron.Schedule, now time.Time) time.Time {
	if every, ok := sched.(cron.ConstantDelaySchedule); ok {
		d := every.Delay
		return now.Truncate(d).Add(d)
	}
	return sched.Next(now)
}

func (m *Manager) fire(ctx context.Context, r *runner, tick time.Time, data []byte) {
	ev, err := normalise(raw{
		ID:     r.name + "@" + tick.UTC().Format(time.RFC3339),
		Source: "/triggers/" + r.name,
		Type:   "dev.corral.schedule",
		Time:   tick,
		Data:   data,
	})
	if err != nil {
		m.logger.ErrorContext(ctx, "schedule tick unencodable", "trigger", r.name, "err", err)
		return
	}
	m.count(r.name, Received)
	for attempt := 1; ; attempt++ {
		_, err := m.deliver(ctx, r, ev, attempt == scheduleAttempts)
		if err == nil || errors.Is(err, errBusy) || ctx.Err() != nil {
			return
		}
		m.logger.WarnContext(ctx, "schedule tick not started; trying again", "trigger", r.name, "tick", tick, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
}
