package trigger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxDeliveries is how many times a source offers an event that fails for
// a transient reason before it is dead-lettered.
const maxDeliveries = 5

// natsAckWait is how long JetStream waits for a message's ack before it
// offers the message again (to this replica or another).
const natsAckWait = 10 * time.Second

// StreamName is the work-queue stream corral makes for a NATS trigger
// without spec.nats.stream.
func StreamName(trigger string) string {
	return "TRIGGER_" + strings.ToUpper(strings.ReplaceAll(trigger, "-", "_"))
}

// ConsumerName is the durable consumer every replica shares for a NATS
// trigger: JetStream gives each message to one of them.
func ConsumerName(trigger string) string { return "corral-trigger-" + trigger }

// runNATS consumes the trigger's subject through a durable pull consumer
// shared by every replica, and acknowledges each message once its task is
// stored. A message over maxConcurrent is handed back with a delay.
func (m *Manager) runNATS(ctx context.Context, r *runner) error {
	spec := r.spec.NATS
	var js jetstream.JetStream
	if spec.URL == nil {
		if m.deps.Bus == nil {
			return errors.New("no substrate to consume from")
		}
		js = m.deps.Bus.JetStream()
	} else {
		url, err := m.deps.Secret(ctx, *spec.URL)
		if err != nil {
			return fmt.Errorf("spec.nats.url: %w", err)
		}
		nc, err := nats.Connect(url, nats.Name("corral-trigger-"+r.name), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second))
		if err != nil {
			return fmt.Errorf("connect to the trigger's NATS: %w", err)
		}
		defer nc.Close()
		if js, err = jetstream.New(nc); err != nil {
			return err
		}
	}
	streamName := spec.Stream
	if streamName == "" {
		streamName = StreamName(r.name)
		cfg := jetstream.StreamConfig{Name: streamName, Subjects: []string{spec.Subject}, Retention: jetstream.WorkQueuePolicy,
			MaxAge: 7 * 24 * time.Hour, Duplicates: 2 * time.Minute, Description: "events of corral trigger " + r.name}
		var err error
		if spec.URL == nil {
			_, err = m.deps.Bus.Stream(ctx, cfg)
		} else {
			cfg.Storage = jetstream.FileStorage
			_, err = js.CreateOrUpdateStream(ctx, cfg)
		}
		if err != nil {
			return fmt.Errorf("stream for subject %s: %w", spec.Subject, err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, streamName, jetstream.ConsumerConfig{
		Durable: ConsumerName(r.name), FilterSubject: spec.Subject, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: natsAckWait, MaxAckPending: 256, Description: "corral trigger " + r.name,
	})
	if err != nil {
		return fmt.Errorf("consumer on stream %s: %w", streamName, err)
	}
	r.setState(StateRunning, "", m.now())
	for ctx.Err() == nil {
		batch, err := cons.Fetch(16, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("fetch: %w", err)
		}
		for msg := range batch.Messages() {
			m.natsMessage(ctx, r, msg)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			return fmt.Errorf("fetch: %w", err)
		}
	}
	return nil
}

func (m *Manager) natsMessage(ctx context.Context, r *runner, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return
	}
	h := msg.Headers()
	id := h.Get(nats.MsgIdHdr)
	if id == "" {
		id = fmt.Sprintf("%s:%d", md.Stream, md.Sequence.Stream)
	}
	m.count(r.name, Received)
	ev, err := normalise(raw{ID: id, Source: "/triggers/" + r.name + "/nats/" + msg.Subject(), Type: "dev.corral.nats",
		Time: md.Timestamp, ContentType: h.Get("Content-Type"), Data: msg.Data(), Header: h.Get})
	if err != nil {
		ev, _ = normalise(raw{ID: id, Source: "/triggers/" + r.name + "/nats/" + msg.Subject(), Type: "dev.corral.nats", Time: md.Timestamp, Data: msg.Data()})
		if ev == nil {
			_ = msg.Term()
			return
		}
		if _, err := m.deadLetter(ctx, r, ev, "not a CloudEvent: "+err.Error()); err != nil {
			_ = msg.NakWithDelay(time.Second)
			return
		}
		_ = msg.DoubleAck(ctx)
		return
	}
	_, err = m.deliver(ctx, r, ev, md.NumDelivered >= maxDeliveries)
	switch {
	case err == nil:
		// Acknowledged only now that the task is stored; a crash before
		// the ack makes JetStream offer the message again, and the
		// event's task id finds the task (duplicate).
		if aerr := msg.DoubleAck(ctx); aerr != nil {
			m.logger.WarnContext(ctx, "ack of a started event lost; it will come again as a duplicate", "trigger", r.name, "event", ev.ID(), "err", aerr)
		}
	case errors.Is(err, errBusy):
		_ = msg.NakWithDelay(2 * time.Second)
	default:
		m.logger.WarnContext(ctx, "event not started; offered again", "trigger", r.name, "event", ev.ID(), "delivery", md.NumDelivered, "err", err)
		_ = msg.NakWithDelay(time.Duration(md.NumDelivered) * time.Second)
	}
}
