package trigger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// runKafka consumes the trigger's topic in a consumer group shared by
// every replica (Kafka assigns each partition to one), and commits a
// record's offset once its task is stored. A record over maxConcurrent or
// whose task could not be stored is retried in place (a partition is
// ordered): the partition waits. A replica that dies before committing
// leaves the records to the next owner of the partition, and their task
// ids find their tasks.
func (m *Manager) runKafka(ctx context.Context, r *runner) error {
	spec := r.spec.Kafka
	group := cmpOr(spec.Group, "corral-trigger-"+r.name)
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(spec.Brokers...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(spec.Topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(time.Second),
		kgo.ClientID("corral-trigger-"+r.name),
	)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	// Close leaves the group, which waits for a rebalance that a poll
	// still blocks: allow it first (deferred calls run last in, first out).
	defer cl.AllowRebalance()
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka brokers %s: %w", strings.Join(spec.Brokers, ","), err)
	}
	r.setState(StateRunning, "", m.now())
	for ctx.Err() == nil {
		fetches := cl.PollRecords(ctx, 64)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return nil
		}
		var ferr error
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				ferr = fmt.Errorf("fetch %s[%d]: %w", topic, p, err)
			}
		})
		if ferr != nil {
			cl.AllowRebalance()
			return ferr
		}
		fetches.EachRecord(func(rec *kgo.Record) {
			if ctx.Err() != nil {
				return
			}
			if m.kafkaRecord(ctx, r, rec) {
				if err := cl.CommitRecords(ctx, rec); err != nil && ctx.Err() == nil {
					m.logger.WarnContext(ctx, "commit of a started event lost; it will come again as a duplicate", "trigger", r.name, "err", err)
				}
			}
		})
		cl.AllowRebalance()
	}
	return nil
}

// kafkaRecord starts a record's task, retrying while the trigger is busy
// or the substrate does not answer; it reports whether the record may be
// committed (false only when ctx ended).
func (m *Manager) kafkaRecord(ctx context.Context, r *runner, rec *kgo.Record) bool {
	header := func(name string) string {
		// The Kafka binding of CloudEvents names headers ce_id, ce_type...
		key := "ce_" + strings.TrimPrefix(strings.ToLower(name), "ce-")
		for _, h := range rec.Headers {
			if h.Key == key || strings.EqualFold(h.Key, name) {
				return string(h.Value)
			}
		}
		return ""
	}
	contentType := header("content-type")
	m.count(r.name, Received)
	src := "/triggers/" + r.name + "/kafka/" + rec.Topic
	id := fmt.Sprintf("%s/%d/%d", rec.Topic, rec.Partition, rec.Offset)
	ev, err := normalise(raw{ID: id, Source: src, Type: "dev.corral.kafka", Time: rec.Timestamp, ContentType: contentType, Data: rec.Value, Header: header})
	if err != nil {
		if ev, _ = normalise(raw{ID: id, Source: src, Type: "dev.corral.kafka", Time: rec.Timestamp, Data: rec.Value}); ev == nil {
			return true
		}
		for {
			if _, err := m.deadLetter(ctx, r, ev, "not a CloudEvent: "+err.Error()); err == nil {
				return true
			}
			if !sleep(ctx, time.Second) {
				return false
			}
		}
	}
	for attempt := 1; ; attempt++ {
		_, err := m.deliver(ctx, r, ev, attempt >= maxDeliveries)
		if err == nil {
			return true
		}
		if errors.Is(err, errBusy) {
			attempt--
		} else {
			m.logger.WarnContext(ctx, "event not started; trying again", "trigger", r.name, "event", ev.ID(), "attempt", attempt, "err", err)
		}
		if !sleep(ctx, time.Second) {
			return false
		}
	}
}

// sleep waits d, or until ctx ends: it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
