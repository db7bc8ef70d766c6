package approval

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
)

// clock is a settable clock shared by the replicas of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type recorder struct {
	mu   sync.Mutex
	recs []*audit.Record
}

func (r *recorder) Append(_ context.Context, rec *audit.Record) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	return "audit-id", nil
}

func (r *recorder) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.recs {
		out = append(out, rec.Event)
	}
	return out
}

// start opens a store on b whose sweep runs only when the test calls it.
func start(t testing.TB, b *bus.Bus, c *clock, rec Auditor) *Store {
	t.Helper()
	return startWith(t, b, c, rec, func(*Store) {})
}

// startWith is start with setup run before the store runs.
func startWith(t testing.TB, b *bus.Bus, c *clock, rec Auditor, setup func(*Store)) *Store {
	t.Helper()
	s, err := Open(t.Context(), slog.New(slog.DiscardHandler), b, Options{Audit: rec, Now: c.Now, Sweep: time.Hour})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	setup(s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if err := s.WaitLoaded(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

func request(args string) Request {
	return Request{
		Action: Action{
			Agent: "payer", AgentUID: "u1", Principal: "alice", PrincipalIssuer: "https://idp", Kind: "tool",
			Target: "banking.send_money", ArgsDigest: "sha256:" + args,
		},
		Requester: "agent:payer", Reasons: []string{"large amount"},
		Rules: Rules{Approvers: []string{"payments-oncall"}, Quorum: 1, TTL: time.Hour},
	}
}

var (
	bob   = Human("bob", []string{"payments-oncall"})
	carol = Human("carol", []string{"payments-oncall"})
	dave  = Human("dave", []string{"marketing"})
)

func TestGateApproveExecuteOnce(t *testing.T) {
	b := bustest.Open(t)
	c := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	rec := &recorder{}
	one, two := start(t, b, c, rec), start(t, b, c, rec)
	ctx := t.Context()
	var decided atomic.Int32
	one.OnDecision(func(context.Context, Approval) { decided.Add(1) })

	a, err := one.Gate(ctx, request("aa"))
	if !errors.Is(err, ErrPending) {
		t.Fatalf("Gate = %v, want ErrPending", err)
	}
	// The same call, through another replica: the same approval.
	again, err := two.Gate(ctx, request("aa"))
	if !errors.Is(err, ErrPending) || again.ID != a.ID {
		t.Fatalf("Gate again = %s, %v; want %s pending", again.ID, err, a.ID)
	}
	// Another byte of arguments: another approval.
	other, err := one.Gate(ctx, request("ab"))
	if !errors.Is(err, ErrPending) || other.ID == a.ID {
		t.Fatalf("Gate other args = %s, %v; want a new pending approval", other.ID, err)
	}
	if _, err := two.Decide(ctx, a.ID, dave, Approve, "", "api"); !errors.Is(err, ErrNotApprover) {
		t.Fatalf("Decide(dave) = %v, want ErrNotApprover", err)
	}
	got, err := two.Decide(ctx, a.ID, bob, Approve, "ok", "api")
	if err != nil || got.State != Approved {
		t.Fatalf("Decide(bob) = %v, %v; want approved", got.State, err)
	}
	if _, err := one.Decide(ctx, a.ID, carol, Approve, "", "api"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Decide after approval = %v, want ErrClosed", err)
	}
	claimed, err := one.Gate(ctx, request("aa"))
	if err != nil || claimed.ID != a.ID || claimed.State != Executed {
		t.Fatalf("Gate after approval = %s %s, %v; want the claim", claimed.ID, claimed.State, err)
	}
	if _, err := two.Gate(ctx, request("aa")); !errors.Is(err, ErrUsed) {
		t.Fatalf("Gate replay = %v, want ErrUsed", err)
	}
	if err := one.Finish(ctx, a.ID, Execution{AuditID: "x1", Status: "ok"}); err != nil {
		t.Fatal(err)
	}
	if err := one.Finish(ctx, other.ID, Execution{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Finish of a pending approval = %v, want ErrClosed", err)
	}
	// Decided on two: hooks run where the decision was recorded.
	if decided.Load() != 0 {
		t.Errorf("OnDecision on the other replica ran %d times", decided.Load())
	}
	fin, _, _ := one.read(ctx, a.ID)
	if fin.Execution == nil || fin.Execution.AuditID != "x1" {
		t.Errorf("execution = %+v, want audit id x1", fin.Execution)
	}
	want := []string{"approval.requested", "approval.requested", "approval.refused", "approval.approve", "approval.approved", "approval.refused", "approval.executed"}
	if got := rec.events(); len(got) != len(want) {
		t.Errorf("audit events = %v, want %v", got, want)
	}
}

func TestFourEyesAndQuorum(t *testing.T) {
	b := bustest.Open(t)
	c := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := start(t, b, c, nil)
	ctx := t.Context()
	var decided []Approval
	s.OnDecision(func(_ context.Context, a Approval) { decided = append(decided, a) })
	req := request("q")
	req.Rules.Quorum = 2
	req.Rules.Approvers = nil
	a, _ := s.Gate(ctx, req)

	alice := User("https://idp", "alice", []string{"payments-oncall"})
	if _, err := s.Decide(ctx, a.ID, alice, Approve, "", "api"); !errors.Is(err, ErrOwnAction) {
		t.Fatalf("the principal approving = %v, want ErrOwnAction", err)
	}
	if got, err := s.Decide(ctx, a.ID, bob, Approve, "", "api"); err != nil || got.State != Pending {
		t.Fatalf("first of two = %v, %v; want still pending", got.State, err)
	}
	if _, err := s.Decide(ctx, a.ID, bob, Approve, "", "api"); !errors.Is(err, ErrAlreadyDecided) {
		t.Fatalf("bob twice = %v, want ErrAlreadyDecided", err)
	}
	if _, err := s.Gate(ctx, req); !errors.Is(err, ErrPending) {
		t.Fatalf("Gate with one of two = %v, want pending", err)
	}
	if got, err := s.Decide(ctx, a.ID, carol, Approve, "", "api"); err != nil || got.State != Approved {
		t.Fatalf("second of two = %v, %v; want approved", got.State, err)
	}
	if len(decided) != 1 || decided[0].State != Approved {
		t.Errorf("OnDecision saw %v, want one approved", decided)
	}

	d, _ := s.Gate(ctx, request("deny"))
	if got, err := s.Decide(ctx, d.ID, bob, Deny, "no", "api"); err != nil || got.State != Denied {
		t.Fatalf("deny = %v, %v", got.State, err)
	}
	if _, err := s.Gate(ctx, request("deny")); !errors.Is(err, ErrDenied) {
		t.Fatalf("Gate after deny = %v, want ErrDenied", err)
	}
}

func TestExpiryAcrossReplicasAndRestart(t *testing.T) {
	b := bustest.Open(t)
	c := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	one := start(t, b, c, nil)
	ctx := t.Context()
	a, _ := one.Gate(ctx, request("exp"))
	c.Add(2 * time.Hour)
	// A replica started now (a restart) sweeps once loaded: it finds the
	// approval due and expires it, once, however many replicas sweep.
	var n atomic.Int32
	two := startWith(t, b, c, nil, func(s *Store) {
		s.OnDecision(func(_ context.Context, a Approval) {
			if a.State == Expired {
				n.Add(1)
			}
		})
	})
	deadline := time.Now().Add(time.Minute) // generous: CI runs loaded, with the race detector
	for n.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for _, s := range []*Store{one, two} {
		if k, err := s.Sweep(ctx); err != nil || k != 0 {
			t.Fatalf("Sweep after the expiry = %d, %v; want 0", k, err)
		}
	}
	if _, err := one.Decide(ctx, a.ID, bob, Approve, "", "api"); !errors.Is(err, ErrExpired) {
		t.Fatalf("approving an expired approval = %v, want ErrExpired", err)
	}
	if _, err := one.Gate(ctx, request("exp")); !errors.Is(err, ErrExpired) {
		t.Fatalf("Gate after expiry = %v, want ErrExpired", err)
	}
	if n.Load() != 1 {
		t.Errorf("expiry hooks ran %d times, want 1", n.Load())
	}
	// Past retention it is pruned, and the same call asks again.
	c.Add(DefaultRetention + time.Minute)
	if _, err := one.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := one.Get(a.ID); ok {
		t.Errorf("approval %s kept past retention", a.ID)
	}
	n2, err := one.Gate(ctx, request("exp"))
	if !errors.Is(err, ErrPending) || n2.ID == a.ID {
		t.Errorf("Gate after pruning = %s, %v; want a new pending approval", n2.ID, err)
	}
}

func TestConcurrentGateOneApproval(t *testing.T) {
	b := bustest.Open(t)
	c := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	one, two := start(t, b, c, nil), start(t, b, c, nil)
	ctx := t.Context()
	ids := make(chan string, 8)
	var wg sync.WaitGroup
	for i := range 8 {
		s := one
		if i%2 == 1 {
			s = two
		}
		wg.Go(func() {
			a, err := s.Gate(ctx, request("race"))
			if !errors.Is(err, ErrPending) {
				t.Errorf("Gate = %v", err)
			}
			ids <- a.ID
		})
	}
	wg.Wait()
	close(ids)
	first := ""
	for id := range ids {
		if first == "" {
			first = id
		}
		if id != first {
			t.Errorf("two approvals for one call: %s and %s", first, id)
		}
	}
	// Two claims at once: exactly one executes.
	if _, err := one.Decide(ctx, first, bob, Approve, "", "api"); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	for i := range 8 {
		s := one
		if i%2 == 1 {
			s = two
		}
		wg.Go(func() {
			if _, err := s.Gate(ctx, request("race")); err == nil {
				runs.Add(1)
			} else if !errors.Is(err, ErrUsed) {
				t.Errorf("Gate = %v", err)
			}
		})
	}
	wg.Wait()
	if runs.Load() != 1 {
		t.Errorf("%d executions claimed, want 1", runs.Load())
	}
}

func TestDecideHostile(t *testing.T) {
	b := bustest.Open(t)
	c := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := start(t, b, c, nil)
	ctx := t.Context()
	for _, id := range []string{"", "../a", "a.b", "x*", string(make([]byte, 100))} {
		if _, err := s.Decide(ctx, id, bob, Approve, "", "api"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Decide(%q) = %v, want ErrNotFound", id, err)
		}
	}
	if _, err := s.Decide(ctx, "nosuch", bob, Approve, "", "api"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Decide(nosuch) = %v, want ErrNotFound", err)
	}
	a, _ := s.Gate(ctx, request("h"))
	if _, err := s.Decide(ctx, a.ID, Person{}, Approve, "", "api"); !errors.Is(err, ErrNotApprover) {
		t.Errorf("nobody deciding = %v, want ErrNotApprover", err)
	}
	if _, err := s.Decide(ctx, a.ID, bob, "maybe", "", "api"); err == nil {
		t.Errorf("verdict maybe accepted")
	}
}

func TestReleaseGivesTheClaimBack(t *testing.T) {
	b := bustest.Open(t)
	c := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := start(t, b, c, nil)
	ctx := t.Context()
	a, _ := s.Gate(ctx, request("rel"))
	if _, err := s.Decide(ctx, a.ID, bob, Approve, "", "api"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Gate(ctx, request("rel")); err != nil {
		t.Fatalf("claim = %v", err)
	}
	if err := s.Release(ctx, a.ID); err != nil {
		t.Fatalf("Release = %v", err)
	}
	if _, err := s.Gate(ctx, request("rel")); err != nil {
		t.Fatalf("claim after release = %v", err)
	}
	if err := s.Finish(ctx, a.ID, Execution{AuditID: "x", Status: "ok"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, a.ID); !errors.Is(err, ErrClosed) {
		t.Errorf("Release of a finished execution = %v, want ErrClosed", err)
	}
}
