package trigger

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/robfig/cron/v3"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/orchestrator"
	"github.com/corral-dev/corral/internal/trigger/rabbittest"
)

// TestScheduleOncePerTickWithTwoReplicas runs a schedule of a tick a
// second on two replicas over one substrate: every tick fires on both,
// and makes one task.
func TestScheduleOncePerTickWithTwoReplicas(t *testing.T) {
	b := bustest.Open(t)
	res := newResources()
	a, c := newEnvOn(t, b, res), newEnvOn(t, b, res)
	spec := config.TriggerSpec{Start: config.TriggerStart{Agent: "monitor"},
		Schedule: &config.ScheduleSource{Cron: "@every 1s", TimeZone: "Asia/Kolkata", Data: map[string]any{"check": "port status"}}}
	res.put("Trigger", "tick", spec)
	a.waitFor(patience, "four ticks on both replicas", func() bool {
		return a.count("tick", Received) >= 4 && c.count("tick", Received) >= 4
	})
	// Count between ticks (a tick is delivered in milliseconds, a second
	// apart): every tick received by both replicas made one task, started
	// by one and a duplicate for the other. Counted while a tick is in
	// flight, or after stopping the schedule cut one off, the outcomes
	// would lag what was received.
	var started, dups, received int
	var tasks map[string]*orchestrator.Task
	a.waitFor(patience, "a moment between ticks where every tick has its outcome", func() bool {
		received = a.count("tick", Received) + c.count("tick", Received)
		started = a.count("tick", Started) + c.count("tick", Started)
		dups = a.count("tick", Duplicate) + c.count("tick", Duplicate)
		tasks = a.started("tick")
		return started+dups == received && len(tasks) == started &&
			received == a.count("tick", Received)+c.count("tick", Received)
	})
	res.del("Trigger", "tick")
	a.waitFor(patience, "schedule stopped", func() bool {
		_, okA := a.m.Lookup("tick")
		_, okC := c.m.Lookup("tick")
		return !okA && !okC
	})
	if dups < 3 {
		t.Errorf("duplicate = %d: the replicas did not fire the same ticks", dups)
	}
	ticks := map[string]bool{}
	for _, task := range tasks {
		var ce struct {
			ID   string         `json:"id"`
			Time time.Time      `json:"time"`
			Data map[string]any `json:"data"`
			Type string         `json:"type"`
		}
		if err := json.Unmarshal(task.Input, &ce); err != nil {
			t.Fatal(err)
		}
		if ticks[ce.ID] {
			t.Errorf("tick %s made two tasks", ce.ID)
		}
		ticks[ce.ID] = true
		if ce.Type != "dev.corral.schedule" || ce.Data["check"] != "port status" || ce.Time.Nanosecond() != 0 {
			t.Errorf("tick event = %s", task.Input)
		}
	}
}

func TestNextTickAligned(t *testing.T) {
	every, _ := config.ParseCron("@every 10m")
	paris, _ := time.LoadLocation("Europe/Paris")
	daily, _ := config.ParseCron("30 8 * * *")
	tests := []struct {
		sched cron.Schedule
		now   time.Time
		want  time.Time
	}{
		{every, time.Date(2026, 3, 29, 0, 3, 7, 0, time.UTC), time.Date(2026, 3, 29, 0, 10, 0, 0, time.UTC)},
		{every, time.Date(2026, 3, 29, 0, 10, 0, 0, time.UTC), time.Date(2026, 3, 29, 0, 20, 0, 0, time.UTC)},
		// The spring change in Paris: 08:30 local is 06:30 UTC after it.
		{daily, time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC).In(paris), time.Date(2026, 3, 29, 6, 30, 0, 0, time.UTC)},
		{daily, time.Date(2026, 3, 28, 1, 0, 0, 0, time.UTC).In(paris), time.Date(2026, 3, 28, 7, 30, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		if got := nextTick(tt.sched, tt.now); !got.Equal(tt.want) {
			t.Errorf("nextTick(%v) = %v, want %v", tt.now, got.UTC(), tt.want)
		}
	}
}

// TestNATSOneTaskPerEvent publishes on corral's own substrate: each
// message starts one task; a message published twice with one CloudEvent
// id, and one sent again under the same Nats-Msg-Id, start nothing more.
func TestNATSOneTaskPerEvent(t *testing.T) {
	e := newEnv(t)
	e.apply("ports", config.TriggerSpec{Start: config.TriggerStart{Agent: "monitor"}, NATS: &config.NATSSource{Subject: "ports.events.>"}})
	nc := natsConn(t, e.bus)
	for i := range 5 {
		msg := nats.NewMsg(fmt.Sprintf("ports.events.%d", i))
		msg.Data = fmt.Appendf(nil, `{"port":"Le Havre","berth":%d}`, i)
		msg.Header.Set("ce-id", fmt.Sprintf("strike-%d", i))
		msg.Header.Set("ce-type", "com.example.port.strike")
		msg.Header.Set("ce-source", "/shipping")
		msg.Header.Set("Content-Type", "application/json")
		for range 2 { // delivered twice (a publisher's retry)
			if err := nc.PublishMsg(msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	plain := nats.NewMsg("ports.events.x")
	plain.Data = []byte("strike at Gdańsk, 3 days")
	plain.Header.Set(nats.MsgIdHdr, "plain-1")
	for range 2 {
		if err := nc.PublishMsg(plain); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	e.waitFor(patience, "6 tasks", func() bool { return len(e.started("ports")) == 6 && e.count("ports", Received) >= 11 })
	time.Sleep(200 * time.Millisecond) // nothing more comes
	if n := len(e.started("ports")); n != 6 {
		t.Errorf("started %d tasks, want 6", n)
	}
	for _, task := range e.started("ports") {
		in := string(task.Input)
		if !strings.Contains(in, `"type":"com.example.port.strike"`) && !strings.Contains(in, `"data":"strike at Gdańsk, 3 days"`) {
			t.Errorf("task input = %s", in)
		}
	}
	if got := e.count("ports", Duplicate); got != 5 {
		t.Errorf("duplicate = %d, want 5", got)
	}
}

// natsConn connects to the embedded substrate's in-process server.
func natsConn(t *testing.T, b *bus.Bus) *nats.Conn {
	t.Helper()
	js := b.JetStream()
	return js.Conn()
}

// TestRabbitMQOneTaskPerEvent consumes a queue on the machine's RabbitMQ
// with two replicas (competing consumers): each message starts one task,
// a message sent twice under one message id starts one.
func TestRabbitMQOneTaskPerEvent(t *testing.T) {
	url := rabbitURL(t)
	b := bustest.Open(t)
	res := newResources()
	a, c := newEnvOn(t, b, res), newEnvOn(t, b, res)
	queue := fmt.Sprintf("corral-test-%d", time.Now().UnixNano())
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	secrets["RABBIT_URL"] = url
	res.put("Trigger", "rabbit", config.TriggerSpec{Start: config.TriggerStart{Agent: "impact"},
		RabbitMQ: &config.RabbitMQSource{URL: config.SecretValue{Env: "RABBIT_URL"}, Queue: queue}})
	a.waitFor(patience, "both consumers", func() bool {
		sa, _ := a.m.Lookup("rabbit")
		sc, _ := c.m.Lookup("rabbit")
		return sa.State == StateRunning && sc.State == StateRunning
	})
	const n = 20
	for i := range n {
		pub := amqp.Publishing{MessageId: fmt.Sprintf("order-%d", i), ContentType: "application/json", Timestamp: time.Unix(1767225600, 0),
			Body: fmt.Appendf(nil, `{"order":%d,"delayed_days":3}`, i)}
		copies := 1
		if i%4 == 0 {
			copies = 2
		}
		for range copies {
			if err := ch.PublishWithContext(t.Context(), "", queue, false, false, pub); err != nil {
				t.Fatal(err)
			}
		}
	}
	a.waitFor(patience, fmt.Sprint(n, " tasks"), func() bool {
		return len(a.started("rabbit")) == n && a.count("rabbit", Received)+c.count("rabbit", Received) == n+n/4
	})
	if got := a.count("rabbit", Duplicate) + c.count("rabbit", Duplicate); got != n/4 {
		t.Errorf("duplicate = %d, want %d", got, n/4)
	}
	t.Logf("replica a took %d, c took %d", a.count("rabbit", Received), c.count("rabbit", Received))
}

// rabbitURL is the machine's RabbitMQ, started if it is not running.
func rabbitURL(t *testing.T) string { return rabbittest.URL(t) }

// TestKafkaOneTaskPerEvent consumes a topic of franz-go's in-process
// Kafka (kfake) in a consumer group: each record starts one task; a record
// produced twice with one ce_id starts one.
func TestKafkaOneTaskPerEvent(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "port-events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close) // after the manager's cleanup, which runs first
	e := newEnv(t)
	e.apply("kafka", config.TriggerSpec{Start: config.TriggerStart{Agent: "monitor"},
		Kafka: &config.KafkaSource{Brokers: cluster.ListenAddrs(), Topic: "port-events"}})
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	const n = 8
	for i := range n {
		rec := &kgo.Record{Topic: "port-events", Key: []byte(fmt.Sprint(i)), Value: fmt.Appendf(nil, `{"vessel":"MSC %d"}`, i),
			Headers: []kgo.RecordHeader{{Key: "ce_id", Value: fmt.Appendf(nil, "vessel-%d", i)}, {Key: "ce_type", Value: []byte("com.example.vessel.delayed")}}}
		copies := 1
		if i%2 == 0 {
			copies = 2
		}
		for range copies {
			if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.waitFor(patience, fmt.Sprint(n, " tasks"), func() bool {
		return len(e.started("kafka")) == n && e.count("kafka", Received) == n+n/2
	})
	if got := e.count("kafka", Duplicate); got != n/2 {
		t.Errorf("duplicate = %d, want %d", got, n/2)
	}
}

// TestNATSExternalServer consumes a subject on a NATS other than corral's
// own substrate (spec.nats.url), into a stream the trigger creates there.
func TestNATSExternalServer(t *testing.T) {
	url := bustest.ExternalServer(t)
	secrets["EXTERNAL_NATS"] = url
	e := newEnv(t)
	e.apply("partner", config.TriggerSpec{Start: config.TriggerStart{Agent: "impact"},
		NATS: &config.NATSSource{Subject: "partner.orders", URL: &config.SecretValue{Env: "EXTERNAL_NATS"}}})
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for i := range 3 {
		msg := nats.NewMsg("partner.orders")
		msg.Header.Set(nats.MsgIdHdr, fmt.Sprint("order-", i))
		msg.Data = fmt.Appendf(nil, `{"order":"PO-%d","qty":12}`, i)
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	e.waitFor(patience, "3 tasks", func() bool { return len(e.started("partner")) == 3 })
	if st, _ := e.m.Lookup("partner"); st.Events[Started] != 3 {
		t.Errorf("status events = %v, want 3 started", st.Events)
	}
}

// TestNATSHostileMessages: a message that can never start its task (a
// broken structured CloudEvent, a body over a task's input limit, a chain
// past the cap) is dead-lettered and acknowledged, not offered for ever,
// and the messages behind it still start theirs.
func TestNATSHostileMessages(t *testing.T) {
	e := newEnv(t)
	e.apply("ports", config.TriggerSpec{Start: config.TriggerStart{Agent: "monitor"}, NATS: &config.NATSSource{Subject: "hostile.>"}})
	nc := natsConn(t, e.bus)
	broken := nats.NewMsg("hostile.a")
	broken.Header.Set("Content-Type", "application/cloudevents+json")
	broken.Data = []byte(`{"specversion":"1.0","id":`)
	huge := nats.NewMsg("hostile.b")
	huge.Data = []byte(`{"blob":"` + strings.Repeat("€", 100_000) + `"}`)
	deep := nats.NewMsg("hostile.c")
	deep.Header.Set("ce-corralchain", "a,b,c,d,e,f")
	deep.Data = []byte(`{}`)
	binary := nats.NewMsg("hostile.d")
	binary.Data = []byte{0xff, 0x00, 0xfe, 0x01}
	for _, m := range []*nats.Msg{broken, huge, deep, binary} {
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	e.waitFor(patience, "3 dead letters and 1 task", func() bool {
		return len(e.dead.list()) == 3 && len(e.started("ports")) == 1
	})
	for _, task := range e.started("ports") {
		if !strings.Contains(string(task.Input), `"data_base64":"/wD+AQ=="`) {
			t.Errorf("binary message's task input = %s, want data_base64", task.Input)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(e.dead.list()); n != 3 {
		t.Errorf("dead letters = %v, want 3 (each once)", e.dead.list())
	}
}

// TestNATSMaxConcurrent: over maxConcurrent a message is handed back with
// a delay, not acknowledged; once tasks end, the held messages start.
func TestNATSMaxConcurrent(t *testing.T) {
	e := newEnv(t)
	e.apply("capped", config.TriggerSpec{Start: config.TriggerStart{Agent: "monitor"}, MaxConcurrent: 2, NATS: &config.NATSSource{Subject: "capped.>"}})
	nc := natsConn(t, e.bus)
	for i := range 4 {
		msg := nats.NewMsg("capped.x")
		msg.Header.Set(nats.MsgIdHdr, fmt.Sprint("c-", i))
		msg.Data = fmt.Appendf(nil, `{"n":%d}`, i)
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	e.waitFor(patience, "2 tasks and a deferral", func() bool {
		return len(e.started("capped")) == 2 && e.count("capped", Deferred) > 0
	})
	if n := len(e.started("capped")); n != 2 {
		t.Fatalf("%d tasks at the cap, want 2", n)
	}
	for id := range e.started("capped") {
		if _, err := e.tasks.Cancel(t.Context(), id, "test", ""); err != nil {
			t.Fatal(err)
		}
	}
	e.waitFor(patience, "the held messages started", func() bool { return len(e.started("capped")) == 4 })
}
