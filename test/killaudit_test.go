package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// seenUpstream is an upstream that remembers every item id it was asked
// for, and takes a while to answer, so that calls are in flight when corral
// is killed.
type seenUpstream struct {
	addr string
	mu   sync.Mutex
	seen map[int]bool
}

func startSeenUpstream(t *testing.T) *seenUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &seenUpstream{addr: ln.Addr().String(), seen: map[int]bool{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var id int
		if _, err := fmt.Sscanf(r.URL.Path, "/items/%d", &id); err == nil {
			u.mu.Lock()
			u.seen[id] = true
			u.mu.Unlock()
		}
		time.Sleep(15 * time.Millisecond) // an upstream doing work
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id": %d, "name": "crate"}`, id)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return u
}

func (u *seenUpstream) ids() []int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]int, 0, len(u.seen))
	for id := range u.seen {
		out = append(out, id)
	}
	return out
}

// argsDigest is the audit's args_digest of {"id": id}: sha256 of the
// canonical arguments (docs/audit.md).
func argsDigest(id int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, `{"id":%d}`, id))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TestKillDuringCallsLosesNoAudit runs a few hundred tool calls from eight
// clients through the real binary, kills it with SIGKILL mid-run, restarts
// it on the same data directory, and counts at the far side: every call the
// upstream saw is in the audit, with its outcome or as an intent whose
// outcome is unknown, every answered call's audit_id is stored, and the
// chain verifies. At d7dc022 the calls in flight at the kill reached the
// upstream and left no record (issue 12.8).
func TestKillDuringCallsLosesNoAudit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the corral binary; -short skips it")
	}
	up := startSeenUpstream(t)
	a := startCorral(t)
	dir := t.TempDir()
	spec := writeFile(t, dir, "inventory.yaml", inventorySpec)
	if stdout, stderr, exit := runCLI(t, a.env(), "tools", "import", "openapi", spec, "--name", "inventory", "--base-url", "http://"+up.addr, "--apply"); exit != 0 {
		t.Fatalf("tools import --apply: exit %d\n%s%s", exit, stdout, stderr)
	}
	agent := writeFile(t, dir, "agent.yaml", "apiVersion: corral.dev/v1\nkind: Agent\nmetadata: {name: impact}\nspec: {tools: [inventory.getItem]}\n")
	if stdout, stderr, exit := runCLI(t, a.env(), "apply", "-f", agent); exit != 0 {
		t.Fatalf("apply: exit %d\n%s%s", exit, stdout, stderr)
	}
	keyJSON, stderr, exit := runCLI(t, a.env(), "keys", "create", "--agent", "impact", "-o", "json")
	var key struct {
		Key string `json:"key"`
	}
	if exit != 0 || json.Unmarshal([]byte(keyJSON), &key) != nil {
		t.Fatalf("keys create: exit %d %s %s", exit, keyJSON, stderr)
	}
	if !waitFor(startTimeout, func() bool { return invoke(t, a, key.Key, "inventory.getItem", `{"id": 1}`).status == http.StatusOK }) {
		t.Fatal("the tool never answered")
	}

	// Three rounds: calls from eight clients, SIGKILL after a number of
	// answers that differs each round, restart on the same data.
	ids := map[string]int{} // audit_id of each 200 answer -> item id
	var answered int64
	p := a
	for round, killAfter := range []int64{150, 60, 110} {
		from := 2 + round*400
		n := killRound(t, p, key.Key, from, from+399, killAfter, ids)
		answered += n
		p = startCorral(t, "--data", a.Data)
		// A restarted corral may refuse calls while it loads (issue 20.3).
		if !waitFor(startTimeout, func() bool { return invoke(t, p, key.Key, "inventory.getItem", `{"id": 1}`).status == http.StatusOK }) {
			t.Fatalf("round %d: the tool never answered after the restart", round)
		}
	}
	b := p
	var records struct {
		Records []struct {
			ID, Status, Phase, Intent string
			ArgsDigest                string `json:"args_digest"`
		}
	}
	r := request(t, "GET", b.URL+"/v1/audit?agent=impact&limit=10000", b.Token, "")
	if r.status != http.StatusOK || json.Unmarshal(r.body, &records) != nil {
		t.Fatalf("GET /v1/audit: HTTP %d %s", r.status, r.body)
	}
	audited, stored, unknown := map[string]bool{}, map[string]bool{}, 0
	for _, rec := range records.Records {
		audited[rec.ArgsDigest] = true
		stored[rec.ID] = true
		if rec.Phase == "intent" && rec.Status == "unknown" {
			unknown++
		}
	}
	seen := up.ids()
	var missing []int
	for _, id := range seen {
		if !audited[argsDigest(id)] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("the upstream saw %d calls; %d of them are not in the audit: %v", len(seen), len(missing), missing)
	}
	for auditID, id := range ids {
		if !stored[auditID] {
			t.Errorf("call %d was answered 200 with audit id %s, which the audit does not hold", id, auditID)
		}
	}
	var rep struct {
		OK             bool `json:"ok"`
		OutcomeUnknown int  `json:"outcome_unknown"`
	}
	r = request(t, "GET", b.URL+"/v1/audit/verify", b.Token, "")
	if r.status != http.StatusOK || json.Unmarshal(r.body, &rep) != nil || !rep.OK {
		t.Errorf("verify after the kill: HTTP %d %s", r.status, r.body)
	}
	t.Logf("over three kills, the upstream saw %d calls and %d were answered; the audit holds %d records, %d with outcome unknown (verify counts %d)",
		len(seen), answered, len(records.Records), unknown, rep.OutcomeUnknown)
}

// killRound sends calls for item ids from..to from eight clients to p and
// kills p with SIGKILL once killAfter calls were answered. It notes each
// answer's audit id in ids and returns how many calls were answered.
func killRound(t *testing.T, p *proc, key string, from, to int, killAfter int64, ids map[string]int) int64 {
	t.Helper()
	var (
		next     atomic.Int64
		answered atomic.Int64
		mu       sync.Mutex
		wg       sync.WaitGroup
		killed   atomic.Bool
	)
	next.Store(int64(from) - 1)
	client := &http.Client{Timeout: httpClient.Timeout} // a kill answers at once (a reset); this bounds a hang
	for range 8 {
		wg.Go(func() {
			for {
				id := int(next.Add(1))
				if id > to {
					return
				}
				req, _ := http.NewRequest("POST", p.URL+"/v1/tools/inventory.getItem/invoke", strings.NewReader(fmt.Sprintf(`{"arguments": {"id": %d}}`, id)))
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					return // corral is gone
				}
				var out struct {
					AuditID string `json:"audit_id"`
				}
				_ = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					continue
				}
				if out.AuditID == "" {
					t.Errorf("call %d answered 200 without an audit id", id)
				}
				mu.Lock()
				ids[out.AuditID] = id
				mu.Unlock()
				if answered.Add(1) == killAfter && killed.CompareAndSwap(false, true) {
					_ = p.cmd.Process.Kill() // SIGKILL
				}
			}
		})
	}
	wg.Wait()
	if !killed.Load() {
		t.Fatalf("only %d calls answered; corral was never killed", answered.Load())
	}
	p.wait(t)
	return answered.Load()
}
