package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/bus/bustest"
)

const inventorySpec = `openapi: 3.0.3
info: {title: inventory, version: "1"}
paths:
  /items/{id}:
    get:
      operationId: getItem
      parameters: [{name: id, in: path, required: true, schema: {type: integer, minimum: 1}}]
      responses:
        "200":
          description: the item
          content: {application/json: {schema: {type: object}}}
`

// Load and timing of every scenario. The outage is long enough for NATS to
// elect new leaders (a few seconds on loopback) with the load running.
const (
	clients     = 4
	pause       = 20 * time.Millisecond // between one client's calls
	warmup      = time.Second
	outage      = 6 * time.Second
	settled     = 2 * time.Second // of clean answers on both replicas
	recoverMost = 90 * time.Second
	slow        = time.Second // an answer slower than this counts as disruption
)

// harness is the deployment under test.
type harness struct {
	cluster  *bustest.Cluster
	replicas [2]*replica
	up       *upstream
	key      string
	next     atomic.Int64 // call numbers, unique over the whole test
	lost     map[int]bool // calls already reported missing from the audit
	skew     int64        // budget count minus upstream calls, after the last scenario
	// elected is when NATS had a meta leader and a leader for every stream
	// again after a node was killed (nil until then, or when none was).
	elected atomic.Pointer[time.Time]
}

// scenario kills something and returns how to bring it back.
type scenario struct {
	name string
	kill func(t *testing.T, h *harness) (restore func())
	// replicaKilled: a corral replica killed mid-call may have reserved
	// budget for calls it never sent.
	replicaKilled bool
}

var scenarios = []scenario{
	{name: "nats-follower", kill: killNode(nil)},
	{name: "meta-leader", kill: killNode(func(meta, _ string) string { return meta })},
	{name: "audit-stream-leader", kill: killNode(func(_, audit string) string { return audit })},
	{name: "corral-replica", kill: killReplica, replicaKilled: true},
	{name: "quorum-lost", kill: loseQuorum},
}

// TestChaos runs every scenario in turn against one deployment, checking
// after each that nothing the upstream saw is missing from the audit, that
// the budget counted exactly what was sent, that `corral audit verify`
// passes and that no answer lacks an audit id, and reports how long the
// disruption lasted. `make chaos` runs all of them (CORRAL_CHAOS=1); without
// it, the test is skipped; CORRAL_CHAOS=short (in `make test`) runs one
// scenario, the loss of the audit stream's leader, in under a minute;
// CORRAL_CHAOS_ONLY=name,name picks.
func TestChaos(t *testing.T) {
	mode := os.Getenv("CORRAL_CHAOS")
	if testing.Short() || mode == "" && os.Getenv("CORRAL_CHAOS_ONLY") == "" {
		// It starts five processes and kills some: `go test ./...` leaves
		// it to `make test` (the short form) and `make chaos`.
		t.Skip("starts three nats-server and two corral processes: `make test` runs its short form (CORRAL_CHAOS=short), `make chaos` all of it")
	}
	run := scenarios
	if mode == "short" {
		run = slices.DeleteFunc(slices.Clone(scenarios), func(s scenario) bool { return s.name != "audit-stream-leader" })
	}
	if only := os.Getenv("CORRAL_CHAOS_ONLY"); only != "" {
		run = slices.DeleteFunc(slices.Clone(scenarios), func(s scenario) bool { return !strings.Contains(only, s.name) })
	}
	h := deploy(t)
	for _, sc := range run {
		if !t.Run(sc.name, func(t *testing.T) { h.run(t, sc) }) {
			// A deployment left broken would make every later scenario
			// fail for the wrong reason.
			if !h.healthy(t) {
				t.Fatalf("after %s the deployment did not recover; later scenarios not run", sc.name)
			}
		}
	}
}

// deploy starts the cluster, the replicas and the upstream, applies the
// resources and waits until both replicas serve the agent's calls.
func deploy(t *testing.T) *harness {
	h := &harness{cluster: bustest.StartCluster(t, 3), up: startUpstream(t), lost: map[int]bool{}}
	nats := strings.Join(h.cluster.URLs(), ",")
	h.replicas[0] = newReplica(t, "a", "--nats", nats, "--replicas", "3")
	h.replicas[1] = newReplica(t, "b", "--nats", nats, "--replicas", "3", "--secrets-key", filepath.Join(h.replicas[0].data, "secrets.key"))

	indented := "      " + strings.ReplaceAll(inventorySpec, "\n", "\n      ")
	resources := `apiVersion: corral.dev/v1
kind: ToolSource
metadata: {name: inventory}
spec:
  openapi:
    baseURL: http://` + h.up.addr + `
    document: |
` + indented + `
---
apiVersion: corral.dev/v1
kind: Agent
metadata: {name: chaos}
spec: {tools: ["inventory.*"]}
---
apiVersion: corral.dev/v1
kind: Budget
metadata: {name: chaos-calls}
spec: {scope: {agent: chaos}, window: total, limit: {calls: 100000000}}
`
	if out, code := cli(t, h.replicas[0], resources, "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	out, code := cli(t, h.replicas[0], "", "keys", "create", "--agent", "chaos")
	if code != 0 {
		t.Fatalf("keys create: exit %d\n%s", code, out)
	}
	h.key = strings.TrimSpace(out)
	if !h.healthy(t) {
		t.Fatal("the deployment never served the agent's calls on both replicas")
	}
	return h
}

// healthy waits until a call succeeds on each replica.
func (h *harness) healthy(t *testing.T) bool {
	deadline := time.Now().Add(recoverMost)
	for _, r := range h.replicas {
		for {
			a := h.call(t.Context(), r)
			if a.status == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Logf("replica %s still answers %d %s %s", r.name, a.status, a.code, a.err)
				return false
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return true
}

// answer is what a client saw for one call.
type answer struct {
	id         int
	replica    string
	start, end time.Time
	status     int // 0: no HTTP answer
	code       string
	auditID    string
	err        string
}

func (a answer) String() string {
	s := fmt.Sprintf("call %d on %s at %s (%v): ", a.id, a.replica, a.start.Format("15:04:05.000"), a.end.Sub(a.start).Round(time.Millisecond))
	if a.status == 0 {
		return s + "no answer: " + a.err
	}
	return s + fmt.Sprintf("HTTP %d %s audit_id %q", a.status, a.code, a.auditID)
}

// call invokes inventory.getItem with the next call number as its id and
// its request id.
func (h *harness) call(ctx context.Context, r *replica) answer {
	id := int(h.next.Add(1))
	a := answer{id: id, replica: r.name, start: time.Now()}
	defer func() { a.end = time.Now() }()
	body := `{"arguments": {"id": ` + strconv.Itoa(id) + `}}`
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL()+"/v1/tools/inventory.getItem/invoke", strings.NewReader(body))
	if err != nil {
		a.err = err.Error()
		return a
	}
	req.Header.Set("Authorization", "Bearer "+h.key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", requestID(id))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.err = err.Error()
		a.end = time.Now()
		return a
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var got struct {
		AuditID string `json:"audit_id"`
		Code    string `json:"code"`
	}
	_ = json.Unmarshal(data, &got)
	a.status, a.code, a.auditID, a.end = resp.StatusCode, got.Code, got.AuditID, time.Now()
	return a
}

func requestID(id int) string { return "chaos-" + strconv.Itoa(id) }

// load runs clients that alternate replicas until stop is called, which
// returns every answer.
func (h *harness) load(ctx context.Context) (stop func() []answer) {
	ctx, cancel := context.WithCancel(ctx)
	var (
		mu  sync.Mutex
		all []answer
		wg  sync.WaitGroup
	)
	for c := range clients {
		wg.Go(func() {
			for i := c; ctx.Err() == nil; i++ {
				a := h.call(context.WithoutCancel(ctx), h.replicas[i%2])
				mu.Lock()
				all = append(all, a)
				mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(pause):
				}
			}
		})
	}
	return func() []answer {
		cancel()
		wg.Wait()
		return all
	}
}

// run is one scenario: load, kill, restore, settle, then the checks.
func (h *harness) run(t *testing.T, sc scenario) {
	stop := h.load(t.Context())
	time.Sleep(warmup)
	h.elected.Store(nil)
	killed := time.Now()
	restore := sc.kill(t, h)
	time.Sleep(outage)
	restore()
	restored := time.Now()
	ok := h.healthy(t)
	time.Sleep(settled)
	answers := stop()
	if !ok {
		t.Errorf("not serving on both replicas %v after the restore", recoverMost)
	}
	h.report(t, sc, answers, killed, restored)
	h.checkAudit(t, sc, answers)
	h.checkBudget(t, sc, answers)
	if out, code := cli(t, h.replicas[0], "", "audit", "verify"); code != 0 {
		t.Errorf("corral audit verify: exit %d\n%s", code, out)
	}
}

// report logs the disruption: failed and slow answers after the kill, and
// the recovery time (from the kill to the end of the last of them).
func (h *harness) report(t *testing.T, sc scenario, answers []answer, killed, restored time.Time) {
	codes := map[string]int{}
	var last time.Time
	var longest time.Duration
	for _, a := range answers {
		took := a.end.Sub(a.start)
		longest = max(longest, took)
		if a.end.Before(killed) || a.status == http.StatusOK && took < slow {
			continue
		}
		if a.status == http.StatusOK {
			codes["slow 200"]++
		} else if a.status == 0 {
			codes["no answer"]++
		} else {
			codes[strconv.Itoa(a.status)+" "+a.code]++
		}
		if a.end.After(last) {
			last = a.end
		}
	}
	recovery := time.Duration(0)
	if !last.IsZero() {
		recovery = last.Sub(killed)
	}
	// NATS's own part: the time until it had leaders again. corral's part
	// is what recovery adds to it (the aim: at most a second).
	election := "n/a"
	if e := h.elected.Load(); e != nil {
		took := e.Sub(killed)
		election = fmt.Sprintf("%v (recovery minus election: %v)", took.Round(time.Millisecond), (recovery - took).Round(time.Millisecond))
	}
	t.Logf("FIGURES %s: %d calls; disrupted answers %v; slowest %v; recovery %v after the kill (restored after %v); NATS election %s",
		sc.name, len(answers), codes, longest.Round(time.Millisecond), recovery.Round(time.Millisecond), restored.Sub(killed).Round(time.Millisecond), election)
}

// record is the part of a stored audit record the checks read.
type record struct {
	ID        string `json:"id"`
	RequestID string `json:"request_id"`
	Decision  string `json:"decision"`
	Code      string `json:"code"`
}

// auditByRequest exports the whole audit and indexes it by request id.
func (h *harness) auditByRequest(t *testing.T) map[string][]record {
	t.Helper()
	var out map[string][]record
	var lastErr error
	ok := waitUntil(recoverMost, func() bool {
		out, lastErr = h.exportAudit(t.Context())
		return lastErr == nil
	})
	if !ok {
		t.Fatalf("audit export never succeeded: %v", lastErr)
	}
	return out
}

func (h *harness) exportAudit(ctx context.Context) (map[string][]record, error) {
	r := h.replicas[0]
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/v1/audit/export", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.adminToken())
	resp, err := plainClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("HTTP %d %s", resp.StatusCode, b)
	}
	out := map[string][]record{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var rec record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("record %q: %w", sc.Bytes(), err)
		}
		if rec.RequestID != "" {
			out[rec.RequestID] = append(out[rec.RequestID], rec)
		}
	}
	return out, sc.Err()
}

// checkAudit: every call the upstream saw has an audit record, and every
// answer carries an audit id, except a 503 that says the call was not made.
func (h *harness) checkAudit(t *testing.T, sc scenario, answers []answer) {
	audit := h.auditByRequest(t)
	byID := map[int]answer{}
	for _, a := range answers {
		byID[a.id] = a
	}
	var missing []string
	for id := range h.up.calls() {
		if len(audit[requestID(id)]) == 0 && !h.lost[id] {
			h.lost[id] = true
			missing = append(missing, describe(id, byID))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%d calls reached the upstream and are not in the audit:\n%s", len(missing), strings.Join(missing, "\n"))
	}
	var noID []string
	for _, a := range answers {
		if a.status != 0 && a.auditID == "" && a.status != http.StatusServiceUnavailable {
			noID = append(noID, a.String())
		}
	}
	if len(noID) > 0 {
		t.Errorf("%d answers without an audit id:\n%s", len(noID), strings.Join(noID, "\n"))
	}
}

func describe(id int, byID map[int]answer) string {
	if a, ok := byID[id]; ok {
		return a.String()
	}
	return fmt.Sprintf("call %d (a probe of whether a replica serves)", id)
}

// checkBudget: the budget's calls counter grew by the number of calls the
// upstream saw. When a replica was killed, calls it had reserved and not yet
// sent stay counted (a reservation is charged up front): at most the calls
// that got no answer. Each scenario is judged by what it added, so one
// miscount is reported once.
func (h *harness) checkBudget(t *testing.T, sc scenario, answers []answer) {
	var list struct {
		Items []struct {
			Budget string `json:"budget"`
			Used   *struct {
				Calls int64 `json:"calls"`
			} `json:"used"`
		} `json:"items"`
	}
	r := h.replicas[0]
	var err error
	if !waitUntil(recoverMost, func() bool {
		err = getJSON(t.Context(), r.URL()+"/v1/budgets", r.adminToken(), &list)
		return err == nil
	}) {
		t.Fatalf("GET /v1/budgets: %v", err)
	}
	var used int64
	for _, it := range list.Items {
		if it.Budget == "chaos-calls" && it.Used != nil {
			used = it.Used.Calls
		}
	}
	sent := int64(len(h.up.calls()))
	unanswered, unknown := int64(0), int64(0)
	for _, a := range answers {
		switch {
		case a.status == 0:
			unanswered++
		case a.status == 503 && (a.code == "substrate_unavailable" || a.code == "overloaded"):
			// The call was refused because a budget counter's write could
			// not be confirmed: it may have been stored (an over-count,
			// never an under-count; docs/budgets.md).
			unknown++
		}
	}
	skew := used - sent - h.skew
	h.skew = used - sent
	switch {
	case skew == 0:
	case sc.replicaKilled && skew > 0 && skew <= unanswered:
		t.Logf("budget counts %d calls, the upstream saw %d: %d reserved by the killed replica and never sent", used, sent, skew)
	case skew > 0 && skew <= unknown:
		t.Logf("budget counts %d calls, the upstream saw %d: %d refused while the substrate could not confirm a counter write, counted to be safe", used, sent, skew)
	default:
		t.Errorf("budget chaos-calls counts %d calls, the upstream saw %d distinct calls: this scenario added %+d to the difference (%d answers had no HTTP answer)", used, sent, skew, unanswered)
	}
}

// waitUntil polls cond until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return true
}

// killNode kills one NATS node: the leader pick names, or, without pick, a
// node that leads neither the meta group nor the audit stream.
func killNode(pick func(meta, audit string) string) func(t *testing.T, h *harness) func() {
	return func(t *testing.T, h *harness) func() {
		var meta, audit string
		if !waitUntil(recoverMost, func() bool {
			meta, audit = leaders(t.Context(), h.cluster, "CORRAL_AUDIT")
			return meta != "" && audit != ""
		}) {
			t.Fatalf("no meta leader (%q) or CORRAL_AUDIT leader (%q) at /jsz", meta, audit)
		}
		var victim *bustest.Node
		if pick != nil {
			victim = h.cluster.Node(pick(meta, audit))
		} else {
			for _, n := range h.cluster.Nodes() {
				if n.Name != meta && n.Name != audit {
					victim = n
					break
				}
			}
		}
		if victim == nil {
			t.Fatalf("no node to kill (meta leader %q, audit leader %q)", meta, audit)
		}
		t.Logf("kill -9 %s (meta leader %s, CORRAL_AUDIT leader %s)", victim.Name, meta, audit)
		killed := time.Now()
		h.cluster.Kill(victim)
		var back atomic.Bool
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.watchElection(t, victim, &back, killed)
		}()
		t.Cleanup(func() { <-done })
		return func() {
			h.cluster.Start(victim)
			back.Store(true)
		}
	}
}

// watchElection records in h.elected when NATS has leaders again: a meta
// leader, and a leader for every stream (the audit's, and the buckets' the
// calls read and write: keys, budgets, idempotency, ...). It polls every
// 25 ms for at most recoverMost; until the victim is back (back) it wants
// leaders other than the victim, after it any (it may lead again).
func (h *harness) watchElection(t *testing.T, victim *bustest.Node, back *atomic.Bool, killed time.Time) {
	ctx, logged := t.Context(), false
	for time.Since(killed) < recoverMost {
		restarted := back.Load()
		ok := func(leader string) bool { return leader != "" && (restarted || leader != victim.Name) }
		meta, streams, led := "", map[string]bool{}, map[string]bool{}
		for _, n := range h.cluster.Nodes() {
			if n == victim && !restarted {
				continue
			}
			var j jsz
			if getJSON(ctx, n.Monitor+"/jsz?accounts=true&streams=true", "", &j) != nil {
				continue
			}
			if ok(j.Meta.Leader) {
				meta = j.Meta.Leader
			}
			for _, a := range j.Accounts {
				for _, s := range a.Streams {
					streams[s.Name] = true
					if ok(s.Cluster.Leader) {
						led[s.Name] = true
					}
				}
			}
		}
		if restarted && !logged && len(streams) > 0 {
			var missing []string
			for name := range streams {
				if !led[name] {
					missing = append(missing, name)
				}
			}
			t.Logf("when %s came back, NATS had not yet elected leaders for %v (meta leader %q)", victim.Name, missing, meta)
			logged = true
		}
		if meta != "" && streams["CORRAL_AUDIT"] && len(led) == len(streams) {
			now := time.Now()
			h.elected.Store(&now)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// killReplica kills corral replica b with SIGKILL and starts it again.
func killReplica(t *testing.T, h *harness) func() {
	r := h.replicas[1]
	t.Logf("kill -9 corral replica %s", r.name)
	r.kill()
	return func() { r.start(t) }
}

// loseQuorum kills two of the three nodes, then brings both back.
func loseQuorum(t *testing.T, h *harness) func() {
	nodes := h.cluster.Nodes()[:2]
	t.Logf("kill -9 %s and %s: no quorum", nodes[0].Name, nodes[1].Name)
	for _, n := range nodes {
		h.cluster.Kill(n)
	}
	return func() {
		for _, n := range nodes {
			h.cluster.Start(n)
		}
	}
}
