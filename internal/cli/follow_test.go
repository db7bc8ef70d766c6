package cli

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/orchestrator"
)

// TestEventsOnceReadsPastACut: `tasks events` without --follow reads what is
// stored (?follow=false), which the server ends with an "end" event. A
// stream cut before it (a proxy's timeout, a replica going away) is read
// again from the last event seen, so no stored event is silently left out;
// before the end event, a quiet second ended the command with what it had.
func TestEventsOnceReadsPastACut(t *testing.T) {
	const id = "task_01jd8x0000000000000000000a"
	var connections atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/tasks/" + id + "/events":
			if r.URL.Query().Get("follow") != "false" {
				t.Errorf("events read with %q, want follow=false", r.URL.RawQuery)
			}
			w.Header().Set("Content-Type", "text/event-stream")
			event := func(seq int) {
				fmt.Fprintf(w, "id: %d\nevent: state\ndata: {\"seq\":%d,\"type\":\"state\",\"state\":\"working\"}\n\n", seq, seq)
			}
			if connections.Add(1) == 1 {
				event(1)
				event(2)
				return // cut: no end event
			}
			if got := r.Header.Get("Last-Event-ID"); got != "2" {
				t.Errorf("reconnected with Last-Event-ID %q, want 2", got)
			}
			event(3)
			fmt.Fprint(w, "event: end\ndata: {\"last\":3}\n\n")
		case "/v1/tasks/" + id:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":%q,"state":"working"}`, id)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	var seen []uint64
	f := &follower{c: newClient(srv.URL, "token"), id: id, once: true, retryWait: time.Millisecond, poll: time.Millisecond,
		onEvent: func(ev orchestrator.Event) { seen = append(seen, ev.Seq) }}
	task, err := f.follow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []uint64{1, 2, 3}) || task.State != orchestrator.Working {
		t.Errorf("read events %v and task %s, want 1, 2, 3 of a working task", seen, task.State)
	}
	if n := connections.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (one cut, one read to its end)", n)
	}
}
