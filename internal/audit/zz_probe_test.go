package audit

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/corral-dev/corral/internal/bus/bustest"
)

func TestProbeScan(t *testing.T) {
	l := open(t, bustest.Open(t))
	for i := range 10000 {
		r := call("impact", fmt.Sprintf("crm.op%d", i%50))
		if _, err := l.Append(t.Context(), &r); err != nil {
			t.Fatal(err)
		}
	}
	for _, opts := range [][]jetstream.PullMessagesOpt{nil, {jetstream.PullMaxMessages(2000)}} {
		cons, _ := l.js.OrderedConsumer(t.Context(), Stream, jetstream.OrderedConsumerConfig{})
		start := time.Now()
		msgs, _ := cons.Messages(opts...)
		n := 0
		var first time.Duration
		for n < 10000 {
			_, err := msgs.Next()
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				first = time.Since(start)
			}
			n++
		}
		t.Logf("opts %d: first %v, 10000 in %v", len(opts), first, time.Since(start))
		msgs.Stop()
	}
	start := time.Now()
	l.Query(t.Context(), Filter{Tool: "crm.*"})
	t.Logf("query %v", time.Since(start))
}
