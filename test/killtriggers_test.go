package test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/trigger/rabbittest"
)

const hookSecret = "a shipping line's signing secret"

// webhookTriggerYAML is an external agent monitor and a GitHub-signed
// webhook trigger port-events starting its tasks.
const webhookTriggerYAML = `apiVersion: corral.dev/v1
kind: Secret
metadata: {name: shipping-hook}
spec: {value: "` + hookSecret + `"}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: monitor}
spec: {description: watches the ports}
---
apiVersion: corral.dev/v1
kind: Trigger
metadata: {name: port-events}
spec:
  start: {agent: monitor}
  webhook: {secret: {secretRef: shipping-hook}, signature: github}
`

// TestKillWebhookTriggerStartsEachEventOnce has eight senders send signed
// webhook events, each one again until it is answered 202 (as GitHub
// does), while corral is killed with SIGKILL and restarted on
// its data, five times; they stop after the last restart. Some requests are cut off,
// now and then one after corral stored the task and before it answered.
// Counted afterwards: exactly one task per event sent.
func TestKillWebhookTriggerStartsEachEventOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the corral binary and kills it five times; -short skips it")
	}
	const kills = 5
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 17))
	t.Logf("seed %d", seed)

	p := startCorral(t)
	data := p.Data
	apply(t, p, webhookTriggerYAML)
	var mu sync.Mutex
	current := p
	url := func() string {
		mu.Lock()
		defer mu.Unlock()
		return current.URL
	}
	if !waitFor(startTimeout, func() bool {
		return request(t, "GET", url()+"/v1/triggers/port-events", p.Token, "").status == http.StatusOK
	}) {
		t.Fatal("trigger port-events never ran")
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var next atomic.Int64 // events handed to senders
	var done atomic.Bool  // set once the kills are over
	var (
		wg                     sync.WaitGroup
		cut, duplicates, taken int
		tasks                  = map[string]int{} // task id -> event
	)
	client := &http.Client{Timeout: 5 * time.Second}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() {
				i := int(next.Add(1) - 1)
				body := fmt.Sprintf(`{"port":"Rotterdam","berth":%d,"note":"strike day %d"}`, i, i%7)
				mac := hmac.New(sha256.New, []byte(hookSecret))
				mac.Write([]byte(body))
				sig := "sha256=" + hex.EncodeToString(mac.Sum(nil))
				for ctx.Err() == nil {
					req, _ := http.NewRequestWithContext(ctx, "POST", url()+"/hooks/port-events", strings.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("X-Hub-Signature-256", sig)
					req.Header.Set("X-GitHub-Event", "issues")
					resp, err := client.Do(req)
					if err != nil {
						mu.Lock()
						cut++
						mu.Unlock()
						time.Sleep(50 * time.Millisecond)
						continue
					}
					var got struct{ Outcome, Task string }
					_ = json.NewDecoder(resp.Body).Decode(&got)
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						time.Sleep(50 * time.Millisecond) // 503 while starting: again
						continue
					}
					mu.Lock()
					taken++
					if got.Outcome == "duplicate" {
						duplicates++
					}
					if prev, ok := tasks[got.Task]; ok && prev != i {
						t.Errorf("events %d and %d got one task %s", prev, i, got.Task)
					}
					tasks[got.Task] = i
					mu.Unlock()
					time.Sleep(5 * time.Millisecond)
					break
				}
			}
		}()
	}
	for k := range kills {
		time.Sleep(time.Duration(100+rng.IntN(200)) * time.Millisecond)
		mu.Lock()
		victim := current
		mu.Unlock()
		_ = victim.cmd.Process.Kill()
		victim.wait(t)
		next := startCorral(t, "--data", data)
		mu.Lock()
		current = next
		mu.Unlock()
		t.Logf("kill %d: restarted", k+1)
	}
	time.Sleep(200 * time.Millisecond) // some events on the last incarnation too
	done.Store(true)
	wg.Wait()
	events := int(next.Load())
	mu.Lock()
	final := current
	mu.Unlock()
	list := listTasksOn(t, final, "monitor")
	inputs := map[string]bool{}
	for _, tk := range list {
		var ce struct {
			Data struct{ Berth int } `json:"data"`
			Type string              `json:"type"`
		}
		if err := json.Unmarshal(tk.Input, &ce); err != nil || ce.Type != "com.github.issues" {
			t.Errorf("task %s input %s: not the webhook's CloudEvent", tk.ID, tk.Input)
		}
		key := fmt.Sprint(ce.Data.Berth)
		if inputs[key] {
			t.Errorf("event %s started two tasks", key)
		}
		inputs[key] = true
	}
	if len(list) != events || len(tasks) != events {
		t.Errorf("%d tasks listed, %d answered, want %d: one per event", len(list), len(tasks), events)
	}
	t.Logf("%d events, %d requests cut off by kills, %d answered duplicate (stored before the kill, answered after)", events, cut, duplicates)
}

// TestKillNATSTriggerStartsEachEventOnce publishes 120 events on a
// subject a trigger consumes, in rounds, killing corral with SIGKILL in
// the middle of each round's consumption and restarting it. JetStream
// offers again what was not acknowledged; counted afterwards: exactly one
// task per event.
func TestKillNATSTriggerStartsEachEventOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds corral and nats-server and kills corral three times; -short skips it")
	}
	const rounds, perRound = 4, 30
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 19))
	t.Logf("seed %d", seed)
	natsURL := bustest.ExternalServer(t)
	p := startCorral(t, "--nats", natsURL)
	first := p
	apply(t, p, `apiVersion: corral.dev/v1
kind: Agent
metadata: {name: monitor}
spec: {description: watches the ports}
---
apiVersion: corral.dev/v1
kind: Trigger
metadata: {name: port-bus}
spec:
  start: {agent: monitor}
  nats: {subject: "shipping.ports.>"}
`)
	if !waitFor(startTimeout, func() bool {
		r := request(t, "GET", p.URL+"/v1/triggers/port-bus", p.Token, "")
		var st struct{ State string }
		return r.status == http.StatusOK && json.Unmarshal(r.body, &st) == nil && st.State == "running"
	}) {
		t.Fatal("trigger port-bus never ran")
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for round := range rounds {
		for i := range perRound {
			n := round*perRound + i
			msg := nats.NewMsg(fmt.Sprintf("shipping.ports.p%d", n%5))
			msg.Header.Set(nats.MsgIdHdr, fmt.Sprintf("evt-%d", n))
			msg.Data = fmt.Appendf(nil, `{"event":%d,"port":"Algeciras"}`, n)
			if _, err := js.PublishMsg(t.Context(), msg); err != nil {
				t.Fatal(err)
			}
		}
		if round == rounds-1 {
			break
		}
		// Kill once this round's consumption has begun, at a random moment
		// of it.
		waitFor(10*time.Second, func() bool { return len(listTasksOn(t, p, "monitor")) > round*perRound })
		time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		_ = p.cmd.Process.Kill()
		p.wait(t)
		t.Logf("kill %d", round+1)
		p = startCorral(t, "--data", first.Data, "--nats", natsURL)
	}
	total := rounds * perRound
	restarted := time.Now()
	var list []taskJSON
	if !waitFor(time.Minute, func() bool { // the 10 s ack wait, then the work, on a loaded machine
		list = listTasksOn(t, p, "monitor")
		return len(list) >= total
	}) {
		t.Fatalf("%d tasks a minute after the last restart, want %d", len(list), total)
	}
	time.Sleep(300 * time.Millisecond) // redeliveries still due would show now
	list = listTasksOn(t, p, "monitor")
	seen := map[string]bool{}
	for _, tk := range list {
		var ce struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(tk.Input, &ce)
		if seen[ce.ID] {
			t.Errorf("event %s started two tasks", ce.ID)
		}
		seen[ce.ID] = true
	}
	if len(list) != total {
		t.Errorf("%d tasks, want %d: one per event", len(list), total)
	}
	t.Logf("%d events, one task each; the last took %v after the last restart: messages a killed replica had fetched and not acknowledged come back after the ack wait", total, time.Since(restarted).Round(time.Millisecond))
}

// TestKillRabbitMQTriggerStartsEachEventOnce is the NATS test's twin on
// the machine's RabbitMQ: messages unacked when corral is killed are
// delivered again, and start nothing twice.
func TestKillRabbitMQTriggerStartsEachEventOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds corral and kills it three times; -short skips it")
	}
	amqpURL := rabbittest.URL(t)
	const rounds, perRound = 4, 30
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 23))
	t.Logf("seed %d", seed)
	queue := fmt.Sprintf("corral-kill-%d", time.Now().UnixNano())
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = ch.QueueDelete(queue, false, false, false) })

	p := startCorral(t)
	first := p
	apply(t, p, `apiVersion: corral.dev/v1
kind: Secret
metadata: {name: rabbit}
spec: {value: "`+amqpURL+`"}
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: impact}
spec: {description: assesses delayed orders}
---
apiVersion: corral.dev/v1
kind: Trigger
metadata: {name: erp-orders}
spec:
  start: {agent: impact}
  rabbitmq: {url: {secretRef: rabbit}, queue: `+queue+`}
`)
	for round := range rounds {
		for i := range perRound {
			n := round*perRound + i
			pub := amqp.Publishing{MessageId: fmt.Sprintf("order-%d", n), ContentType: "application/json", DeliveryMode: amqp.Persistent,
				Body: fmt.Appendf(nil, `{"order":%d,"customer":"Müller GmbH"}`, n)}
			if err := ch.PublishWithContext(t.Context(), "", queue, false, false, pub); err != nil {
				t.Fatal(err)
			}
		}
		if round == rounds-1 {
			break
		}
		waitFor(10*time.Second, func() bool { return len(listTasksOn(t, p, "impact")) > round*perRound })
		time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		_ = p.cmd.Process.Kill()
		p.wait(t)
		t.Logf("kill %d", round+1)
		p = startCorral(t, "--data", first.Data)
	}
	total := rounds * perRound
	var list []taskJSON
	if !waitFor(time.Minute, func() bool { // the 10 s ack wait, then the work, on a loaded machine
		list = listTasksOn(t, p, "impact")
		return len(list) >= total
	}) {
		t.Fatalf("%d tasks a minute after the last restart, want %d", len(list), total)
	}
	time.Sleep(300 * time.Millisecond)
	if list = listTasksOn(t, p, "impact"); len(list) != total {
		t.Errorf("%d tasks, want %d: one per message", len(list), total)
	}
}
