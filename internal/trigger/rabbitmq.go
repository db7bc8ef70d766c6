package trigger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// rabbitPrefetch is how many unacknowledged messages a replica holds.
const rabbitPrefetch = 8

// runRabbitMQ consumes the trigger's queue; every replica is a competing
// consumer, so RabbitMQ gives each message to one. A message is acked once
// its task is stored; a message over maxConcurrent, or whose task could
// not be stored, is held for a moment and then handed back (nack,
// requeue). A connection lost with messages unacked has RabbitMQ deliver
// them again, and their task ids find their tasks.
func (m *Manager) runRabbitMQ(ctx context.Context, r *runner) error {
	spec := r.spec.RabbitMQ
	url, err := m.deps.Secret(ctx, spec.URL)
	if err != nil {
		return fmt.Errorf("spec.rabbitmq.url: %w", err)
	}
	conn, err := amqp.DialConfig(url, amqp.Config{Heartbeat: 10 * time.Second, Properties: amqp.Table{"connection_name": "corral trigger " + r.name}})
	if err != nil {
		return fmt.Errorf("connect to RabbitMQ: %w", redactURL(err, url))
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("channel: %w", err)
	}
	if err := ch.Qos(rabbitPrefetch, 0, false); err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	if spec.Declare {
		if _, err := ch.QueueDeclare(spec.Queue, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare queue %s: %w", spec.Queue, err)
		}
	}
	var tag [6]byte
	_, _ = rand.Read(tag[:])
	deliveries, err := ch.ConsumeWithContext(ctx, spec.Queue, "corral-"+r.name+"-"+hex.EncodeToString(tag[:]), false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume queue %s: %w", spec.Queue, err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	r.setState(StateRunning, "", m.now())
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-closed:
			if err == nil {
				return errors.New("connection closed")
			}
			return fmt.Errorf("connection lost: %w", err)
		case d, ok := <-deliveries:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("the queue's consumer was cancelled")
			}
			m.rabbitMessage(ctx, r, d)
		}
	}
}

func (m *Manager) rabbitMessage(ctx context.Context, r *runner, d amqp.Delivery) {
	header := func(name string) string {
		// The AMQP binding of CloudEvents names them cloudEvents:id or
		// cloudEvents_id; ce-id is taken too.
		key := strings.TrimPrefix(strings.ToLower(name), "ce-")
		for _, k := range []string{"cloudEvents:" + key, "cloudEvents_" + key, "ce-" + key, "ce_" + key} {
			if v, ok := d.Headers[k].(string); ok {
				return v
			}
		}
		return ""
	}
	m.count(r.name, Received)
	src := "/triggers/" + r.name + "/rabbitmq/" + r.spec.RabbitMQ.Queue
	ev, err := normalise(raw{ID: d.MessageId, Source: src, Type: cmpOr(d.Type, "dev.corral.rabbitmq"), Time: d.Timestamp,
		ContentType: d.ContentType, Data: d.Body, Header: header})
	if err != nil {
		if ev, _ = normalise(raw{ID: d.MessageId, Source: src, Type: "dev.corral.rabbitmq", Data: d.Body}); ev == nil {
			_ = d.Nack(false, false)
			return
		}
		if _, err := m.deadLetter(ctx, r, ev, "not a CloudEvent: "+err.Error()); err != nil {
			m.rabbitLater(ctx, d, time.Second)
			return
		}
		_ = d.Ack(false)
		return
	}
	attempts, _ := d.Headers["x-delivery-count"].(int64) // quorum queues count redeliveries
	_, err = m.deliver(ctx, r, ev, attempts+1 >= maxDeliveries)
	switch {
	case err == nil:
		if aerr := d.Ack(false); aerr != nil {
			m.logger.WarnContext(ctx, "ack of a started event lost; it will come again as a duplicate", "trigger", r.name, "event", ev.ID(), "err", aerr)
		}
	case errors.Is(err, errBusy):
		m.rabbitLater(ctx, d, 2*time.Second)
	default:
		m.logger.WarnContext(ctx, "event not started; handed back", "trigger", r.name, "event", ev.ID(), "err", err)
		m.rabbitLater(ctx, d, time.Second)
	}
}

// rabbitLater hands a message back to its queue after a pause: RabbitMQ
// has no delayed nack, and a message requeued at once would come straight
// back.
func (m *Manager) rabbitLater(ctx context.Context, d amqp.Delivery, after time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(after):
	}
	_ = d.Nack(false, true)
}

// redactURL keeps a URL's password out of an error.
func redactURL(err error, url string) error {
	i := strings.Index(url, "://")
	j := strings.LastIndex(url, "@")
	if i < 0 || j < i {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), url[i+3:j], "***"))
}
