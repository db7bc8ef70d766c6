// Command approvals measures corral with many pending approvals (issue 15,
// bench/README.md "Pending approvals") and prints one JSON line.
//
// Replica A runs in this process as `corral up --nats-listen` would: an
// embedded JetStream in a temporary directory, HTTP on loopback, its
// defaults (audit on). The bench parks -n approvals on it, each a distinct
// action (its arguments digest differs), from -concurrency goroutines:
//
//   - -via gate: through the approval store's Gate, the call the
//     pipeline's approval stage makes for a call policy wants approved (a
//     read of the call index, an atomic two-key write, an audit record),
//     without the HTTP request and the pipeline's other stages in front;
//     about 150 a second on two cores, all of it nats-server's atomic
//     batch work;
//   - -via seed (the default): the same two records Gate writes, put
//     straight into the bucket over a NATS connection of the bench's own,
//     so that 100,000 take seconds rather than minutes.
//
// Then it measures:
//
//   - the process's resident memory (VmRSS) and Go heap, replica A alone;
//
//   - GET /v1/approvals?state=pending&limit=50 as a person in
//     payments-oncall, -lists times one after the other: median and p99;
//
//   - replica B (same process, its own data directory, on A's NATS) is
//     started and loads the approvals; a person approves on A with POST
//     /v1/approvals/{id}/approve, -decisions times, and the bench times
//     from sending the decision to the approved state being in B's mirror
//     (what B's API, its Prefer: wait and its tasks read).
//
//     go run ./bench/approvals -n 100000
//     CORRAL_BENCH_LOG=1 go run ./bench/approvals -n 1000
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/corral-dev/corral/internal/app"
	"github.com/corral-dev/corral/internal/approval"
	"github.com/corral-dev/corral/internal/identity"
)

func main() {
	var o options
	fs := flag.NewFlagSet("approvals", flag.ExitOnError)
	fs.IntVar(&o.n, "n", 100000, "pending approvals to create")
	fs.IntVar(&o.concurrency, "concurrency", 64, "goroutines creating approvals (with -via gate, more than 50 wait on nats-server's limit on atomic batches open on a stream)")
	fs.IntVar(&o.lists, "lists", 100, "GET /v1/approvals?state=pending&limit=50 calls to time")
	fs.StringVar(&o.via, "via", "seed", "how approvals are created: gate (approval.Store.Gate, the pipeline's path) or seed (the records Gate writes, put straight into the bucket)")
	fs.IntVar(&o.decisions, "decisions", 20, "decisions on replica A to time until replica B has them")
	prof := fs.String("cpuprofile", "", "write a CPU profile of the creates to this file")
	_ = fs.Parse(os.Args[1:])
	if *prof != "" {
		f, err := os.Create(*prof)
		if err == nil {
			_ = pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if o.n < o.decisions || o.concurrency < 1 || o.lists < 1 || (o.via != "gate" && o.via != "seed") {
		fmt.Fprintln(os.Stderr, "approvals: want -n >= -decisions, -concurrency >= 1, -lists >= 1 and -via gate or seed")
		os.Exit(2)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "approvals:", err)
		os.Exit(1)
	}
}

type options struct {
	n, concurrency, lists, decisions int
	via                              string
}

// report is the JSON line the bench prints.
type report struct {
	N            int     `json:"n"`
	Via          string  `json:"via"`
	CreateSecs   float64 `json:"create_seconds"`
	CreatePerSec float64 `json:"creates_per_second"`
	RSSMiB       float64 `json:"rss_mib"`
	HeapMiB      float64 `json:"heap_mib"`
	ListP50Ms    float64 `json:"list_p50_ms"`
	ListP99Ms    float64 `json:"list_p99_ms"`
	ListItems    int     `json:"list_items"`
	LoadSecs     float64 `json:"replica_b_load_seconds"`
	DecideP50Ms  float64 `json:"decision_on_b_p50_ms"`
	DecideMaxMs  float64 `json:"decision_on_b_max_ms"`
	Cores        int     `json:"cores"`
}

// replica is a corral in this process.
type replica struct {
	app  *app.App
	url  string
	stop func() error
}

func start(ctx context.Context, cfg app.Config) (*replica, error) {
	ctx, cancel := context.WithCancel(ctx)
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("CORRAL_BENCH_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	cfg.HTTPAddr, cfg.Version = "127.0.0.1:0", "bench"
	cfg.NoWorker = true
	a, err := app.New(ctx, logger, cfg)
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("corral stopped before it was ready: %w", err)
	}
	return &replica{app: a, url: a.URL(), stop: func() error { cancel(); return <-done }}, nil
}

func run(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "corral-bench-approvals-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		return err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	a, err := start(ctx, app.Config{DataDir: filepath.Join(dir, "a"), NATSListen: listen})
	if err != nil {
		return fmt.Errorf("replica A: %w", err)
	}
	defer func() { _ = a.stop() }()
	path, _ := a.app.AdminToken()
	admin, err := identity.ReadToken(path)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var human struct{ Key string }
	if err := call(ctx, client, "POST", a.url+"/v1/humans", admin, `{"name": "alice", "groups": ["payments-oncall"]}`, http.StatusCreated, &human); err != nil {
		return err
	}

	password, err := os.ReadFile(filepath.Join(dir, "a", "nats.password"))
	if err != nil {
		return err
	}
	natsURL := "nats://corral:" + strings.TrimSpace(string(password)) + "@" + listen

	r := report{N: o.n, Via: o.via, Cores: runtime.NumCPU()}
	began := time.Now()
	var ids []string
	if o.via == "gate" {
		ids, err = park(ctx, a.app.Approvals(), o)
	} else {
		ids, err = seed(ctx, natsURL, o)
	}
	if err != nil {
		return err
	}
	if !waitFor(time.Minute, func() bool { _, ok := a.app.Approvals().Get(ids[len(ids)-1]); return ok }) {
		return errors.New("replica A's mirror lacks the last approval a minute after it was written")
	}
	r.CreateSecs = time.Since(began).Seconds()
	r.CreatePerSec = float64(o.n) / r.CreateSecs
	fmt.Fprintf(os.Stderr, "approvals: %d pending in %.1f s\n", o.n, r.CreateSecs)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.RSSMiB, r.HeapMiB = float64(rss())/(1<<20), float64(ms.HeapAlloc)/(1<<20)

	lat := make([]time.Duration, 0, o.lists)
	for range o.lists {
		var page struct{ Items []json.RawMessage }
		t0 := time.Now()
		if err := call(ctx, client, "GET", a.url+"/v1/approvals?state=pending&limit=50", human.Key, "", http.StatusOK, &page); err != nil {
			return err
		}
		lat = append(lat, time.Since(t0))
		r.ListItems = len(page.Items)
	}
	r.ListP50Ms, r.ListP99Ms = pct(lat, 50), pct(lat, 99)

	t0 := time.Now()
	b, err := start(ctx, app.Config{DataDir: filepath.Join(dir, "b"), NATSURL: natsURL,
		SecretsKey: filepath.Join(dir, "a", "secrets.key")})
	if err != nil {
		return fmt.Errorf("replica B: %w", err)
	}
	defer func() { _ = b.stop() }()
	if err := b.app.Approvals().WaitLoaded(ctx); err != nil {
		return err
	}
	if _, ok := b.app.Approvals().Get(ids[len(ids)-1]); !ok {
		return errors.New("replica B loaded without the last approval")
	}
	r.LoadSecs = time.Since(t0).Seconds()

	var seen []time.Duration
	for _, id := range ids[:o.decisions] {
		d, err := decideSeen(ctx, client, a.url, human.Key, b.app.Approvals(), id)
		if err != nil {
			return err
		}
		seen = append(seen, d)
	}
	r.DecideP50Ms, r.DecideMaxMs = pct(seen, 50), pct(seen, 100)
	return json.NewEncoder(os.Stdout).Encode(r)
}

// park creates o.n pending approvals and returns their ids.
func park(ctx context.Context, store *approval.Store, o options) ([]string, error) {
	ids := make([]string, o.n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.concurrency)
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.n {
					return
				}
				ap, err := store.Gate(ctx, request(i))
				if !errors.Is(err, approval.ErrPending) {
					errs <- fmt.Errorf("approval %d: %v, want pending", i, err)
					return
				}
				ids[i] = ap.ID
			}
		}()
	}
	wg.Wait()
	close(errs)
	return ids, <-errs
}

// seed writes o.n pending approvals as Gate would (the approval under
// a.<id>, the call index under call.<binding>), with plain puts on a NATS
// connection of its own.
func seed(ctx context.Context, url string, o options) ([]string, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, approval.Bucket)
	if err != nil {
		return nil, err
	}
	ids := make([]string, o.n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.concurrency)
	now := time.Now().UTC()
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.n {
					return
				}
				req := request(i)
				a := approval.Approval{ID: nuid.Next(), State: approval.Pending, Action: req.Action, Requester: req.Requester,
					Reasons: req.Reasons, Approvers: req.Rules.Approvers, Quorum: 1, Created: now.Add(time.Duration(i) * time.Microsecond),
					Expires: now.Add(req.Rules.TTL)}
				data, _ := json.Marshal(a)
				if _, err := kv.Put(ctx, "call."+a.Action.Binding(), []byte(a.ID)); err != nil {
					errs <- err
					return
				}
				if _, err := kv.Put(ctx, "a."+a.ID, data); err != nil {
					errs <- err
					return
				}
				ids[i] = a.ID
			}
		}()
	}
	wg.Wait()
	close(errs)
	return ids, <-errs
}

// request is the i-th parked payment.
func request(i int) approval.Request {
	args := fmt.Sprintf(`{"to_iban":"DE89 3704 0044 0532 0130 00","amount":%d,"currency":"EUR","reference":"invoice %d"}`, 1001+i%9000, i)
	sum := sha256.Sum256([]byte(args))
	return approval.Request{
		Action: approval.Action{Agent: fmt.Sprintf("treasurer-%d", i%10), Kind: "tool", Target: "banking.send_money", Source: "banking",
			ArgsDigest: fmt.Sprintf("sha256:%x", sum), Arguments: json.RawMessage(args)},
		Requester: fmt.Sprintf("agent:treasurer-%d", i%10), Reasons: []string{"payments over 1,000 EUR need payments-oncall"},
		Rules: approval.Rules{Approvers: []string{"payments-oncall"}, Quorum: 1, TTL: 4 * time.Hour},
	}
}

func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// decideSeen approves id on replica A and returns how long until replica
// B's mirror has it approved.
func decideSeen(ctx context.Context, client *http.Client, url, key string, b *approval.Store, id string) (time.Duration, error) {
	ch, stop := b.Subscribe(1 << 16)
	defer stop()
	t0 := time.Now()
	if err := call(ctx, client, "POST", url+"/v1/approvals/"+id+"/approve", key, `{"comment": "bench"}`, http.StatusOK, nil); err != nil {
		return 0, err
	}
	if ap, ok := b.Get(id); ok && ap.State == approval.Approved {
		return time.Since(t0), nil
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ap, ok := <-ch:
			if !ok {
				return 0, errors.New("replica B's subscription fell behind")
			}
			if ap.ID == id && ap.State == approval.Approved {
				return time.Since(t0), nil
			}
		case <-timeout:
			return 0, fmt.Errorf("approval %s not approved on replica B 10 s after the decision on A", id)
		}
	}
}

func call(ctx context.Context, client *http.Client, method, url, token, body string, want int, out any) error {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: HTTP %d %s", method, url, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// pct is the p-th percentile of d in milliseconds.
func pct(d []time.Duration, p int) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p)/100)
	return float64(s[i].Microseconds()) / 1000
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// rss is the process's resident memory in bytes (Linux).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
