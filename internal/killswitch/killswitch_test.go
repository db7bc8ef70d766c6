package killswitch

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/corral-dev/corral/internal/audit"
	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
)

// start opens switches on b, runs their watch until the test ends and waits
// until they are loaded.
func start(t testing.TB, b *bus.Bus) *Switches {
	t.Helper()
	s, err := Open(t.Context(), slog.New(slog.DiscardHandler), b)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
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

// eventually polls cond until it holds or a minute has passed. The promise
// is that a change reaches every replica within a second, but under the race
// detector on a loaded CI machine a watch can take longer: a generous limit
// keeps load from failing a correctness test.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestKillReachesOtherReplicas(t *testing.T) {
	b := bustest.Open(t)
	one, two := start(t, b), start(t, b)
	ctx := t.Context()

	if sw, ok := two.Killed("impact"); ok {
		t.Fatalf("Killed(impact) before any kill = %v, true; want false", sw)
	}
	killed, err := one.Kill(ctx, Target{Agent: "impact"}, "looping on refunds", "")
	if err != nil {
		t.Fatal(err)
	}
	if killed.Agent != "impact" || killed.Reason != "looping on refunds" || killed.By != By || killed.At.IsZero() {
		t.Errorf("Kill = %+v, want the switch with reason, by and at", killed)
	}
	// Effective at once where it was set, and soon everywhere.
	if sw, ok := one.Killed("impact"); !ok || sw != killed {
		t.Errorf("Killed(impact) on the same replica = %+v, %v; want %+v, true", sw, ok, killed)
	}
	eventually(t, "kill seen by the second replica", func() bool {
		sw, ok := two.Killed("impact")
		return ok && sw.Reason == "looping on refunds" && sw.At.Equal(killed.At)
	})
	if _, ok := two.Killed("mailer"); ok {
		t.Errorf("Killed(mailer) = true; only impact was killed")
	}

	// The global switch wins over the agent's own.
	all, err := two.Kill(ctx, Target{All: true}, "incident 42", "")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "global kill seen by the first replica", func() bool {
		sw, ok := one.Killed("impact")
		return ok && sw.All && sw.Reason == "incident 42"
	})
	if sw, ok := one.Killed("mailer"); !ok || !sw.All {
		t.Errorf("Killed(mailer) under the global switch = %+v, %v; want the global switch", sw, ok)
	}
	want := []Switch{all, killed}
	for name, s := range map[string]*Switches{"one": one, "two": two} {
		if diff := cmp.Diff(want, s.List()); diff != "" {
			t.Errorf("%s.List() (-want +got):\n%s", name, diff)
		}
	}

	// Unkill the global switch: the agent's own still holds.
	if err := one.Unkill(ctx, Target{All: true}, "", ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "global unkill seen by the second replica", func() bool {
		sw, ok := two.Killed("impact")
		return ok && !sw.All
	})
	if _, ok := two.Killed("mailer"); ok {
		// Checked after the line above: the second replica has seen the unkill.
		t.Errorf("Killed(mailer) after the global unkill = true, want false")
	}
	if err := two.Unkill(ctx, Target{Agent: "impact"}, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := two.Killed("impact"); ok {
		t.Errorf("Killed(impact) on the replica that unkilled = true, want false at once")
	}
	eventually(t, "unkill seen by the first replica", func() bool {
		_, ok := one.Killed("impact")
		return !ok
	})
	if got := one.List(); len(got) != 0 {
		t.Errorf("List() after unkilling everything = %v, want none", got)
	}
	// Unkilling what is not killed says so, from either replica.
	for _, tgt := range []Target{{All: true}, {Agent: "impact"}, {Agent: "never"}} {
		if err := one.Unkill(ctx, tgt, "", ""); !errors.Is(err, ErrNotKilled) {
			t.Errorf("Unkill(%v) again = %v, want ErrNotKilled", tgt, err)
		}
	}
}

func TestInvalidTargets(t *testing.T) {
	s := start(t, bustest.Open(t))
	tests := []struct {
		name string
		t    Target
	}{
		{"nothing", Target{}},
		{"both", Target{All: true, Agent: "impact"}},
		{"dot in name", Target{Agent: "a.b"}},
		{"wildcard", Target{Agent: "*"}},
		{"upper case", Target{Agent: "Impact"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Kill(t.Context(), tt.t, "x", ""); !errors.Is(err, ErrInvalidTarget) {
				t.Errorf("Kill(%+v) = %v, want ErrInvalidTarget", tt.t, err)
			}
			if err := s.Unkill(t.Context(), tt.t, "", ""); !errors.Is(err, ErrInvalidTarget) {
				t.Errorf("Unkill(%+v) = %v, want ErrInvalidTarget", tt.t, err)
			}
		})
	}
}

func TestRestartKeepsSwitches(t *testing.T) {
	dir := t.TempDir()
	first, err := bus.Open(t.Context(), slog.New(slog.DiscardHandler), bus.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), slog.New(slog.DiscardHandler), first)
	if err != nil {
		t.Fatal(err)
	}
	killed, err := s.Kill(t.Context(), Target{Agent: "impact"}, "before restart", "")
	if err != nil {
		t.Fatal(err)
	}
	first.Close()

	again := start(t, bustest.OpenWith(t, bus.Options{DataDir: dir}))
	sw, ok := again.Killed("impact")
	if !ok || !sw.At.Equal(killed.At) || sw.Reason != killed.Reason {
		t.Errorf("Killed(impact) after restart = %+v, %v; want %+v, true", sw, ok, killed)
	}
}

func TestNotLoadedRefuses(t *testing.T) {
	s, err := Open(t.Context(), slog.New(slog.DiscardHandler), bustest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	if sw, ok := s.Killed("impact"); !ok || !sw.All || !strings.Contains(sw.Reason, "loading") {
		t.Errorf("Killed(impact) before loading = %+v, %v; want a refusal saying it is loading", sw, ok)
	}
	if s.Loaded() {
		t.Errorf("Loaded() = true before Run")
	}
}

// fakeEntry is a watch event made up by the test.
type fakeEntry struct {
	key   string
	value string
	rev   uint64
	op    jetstream.KeyValueOp
}

func (e fakeEntry) Bucket() string                  { return Bucket }
func (e fakeEntry) Key() string                     { return e.key }
func (e fakeEntry) Value() []byte                   { return []byte(e.value) }
func (e fakeEntry) Revision() uint64                { return e.rev }
func (e fakeEntry) Created() time.Time              { return time.Unix(0, 0) }
func (e fakeEntry) Delta() uint64                   { return 0 }
func (e fakeEntry) Operation() jetstream.KeyValueOp { return e.op }

func TestLateEventsDoNotUndo(t *testing.T) {
	s, err := Open(t.Context(), slog.New(slog.DiscardHandler), bustest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	s.isLoaded = true
	put := func(key, reason string, rev uint64) fakeEntry {
		return fakeEntry{key: key, value: `{"reason":"` + reason + `","by":"admin","at":"2026-01-02T03:04:05Z"}`, rev: rev, op: jetstream.KeyValuePut}
	}
	del := func(key string, rev uint64) fakeEntry {
		return fakeEntry{key: key, rev: rev, op: jetstream.KeyValueDelete}
	}
	type check struct {
		agent  string
		killed bool
		reason string
	}
	tests := []struct {
		name   string
		events []fakeEntry
		want   check
	}{
		{"newer put wins", []fakeEntry{put("agent.a", "old", 1), put("agent.a", "new", 2)}, check{"a", true, "new"}},
		{"older put after newer ignored", []fakeEntry{put("agent.b", "new", 5), put("agent.b", "old", 3)}, check{"b", true, "new"}},
		{"older delete after newer put ignored", []fakeEntry{put("agent.c", "kill", 7), del("agent.c", 6)}, check{"c", true, "kill"}},
		{"replayed put after delete ignored", []fakeEntry{put("agent.d", "kill", 8), del("agent.d", 9), put("agent.d", "kill", 8)}, check{"d", false, ""}},
		{"purge counts as off", []fakeEntry{put("agent.e", "kill", 10), {key: "agent.e", rev: 11, op: jetstream.KeyValuePurge}}, check{"e", false, ""}},
		{"unreadable value still kills", []fakeEntry{{key: "agent.f", value: "{", rev: 12, op: jetstream.KeyValuePut}}, check{"f", true, "unreadable kill switch record"}},
		{"unknown key ignored", []fakeEntry{put("agent.Bad_Name", "kill", 13), put("other", "kill", 14)}, check{"Bad_Name", false, ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, e := range tt.events {
				s.observe(t.Context(), e)
			}
			sw, ok := s.Killed(tt.want.agent)
			if ok != tt.want.killed || sw.Reason != tt.want.reason {
				t.Errorf("Killed(%s) = %+v, %v; want reason %q, %v", tt.want.agent, sw, ok, tt.want.reason, tt.want.killed)
			}
		})
	}

	// An unkill recorded here is not undone by the watch replaying the put
	// it deleted, but a later kill from elsewhere is taken.
	s.observe(t.Context(), put("all", "stop", 20))
	s.forget(Target{All: true}, 20)
	s.observe(t.Context(), put("all", "stop", 20))
	if sw, ok := s.Killed("z"); ok {
		t.Errorf("Killed(z) after forget and a replayed put = %+v, true; want false", sw)
	}
	s.observe(t.Context(), put("all", "again", 22))
	if sw, ok := s.Killed("z"); !ok || sw.Reason != "again" {
		t.Errorf("Killed(z) after a newer kill = %+v, %v; want reason again", sw, ok)
	}
	// forget never erases a newer kill it has not caused.
	s.forget(Target{All: true}, 21)
	if _, ok := s.Killed("z"); !ok {
		t.Errorf("Killed(z) after forgetting an older revision = false, want true")
	}
}

func TestCollector(t *testing.T) {
	s := start(t, bustest.Open(t))
	for _, tgt := range []Target{{All: true}, {Agent: "a"}, {Agent: "b"}} {
		if _, err := s.Kill(t.Context(), tgt, "test", ""); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(s))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "corral_killswitches_active" {
			t.Errorf("metric %s, want only corral_killswitches_active", f.GetName())
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				got[l.GetName()+"="+l.GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	if diff := cmp.Diff(map[string]float64{"scope=all": 1, "scope=agent": 2}, got); diff != "" {
		t.Errorf("corral_killswitches_active (-want +got):\n%s", diff)
	}
}

func TestKilledDoesNotAllocate(t *testing.T) {
	s := start(t, bustest.Open(t))
	if _, err := s.Kill(t.Context(), Target{Agent: "impact"}, "test", ""); err != nil {
		t.Fatal(err)
	}
	for _, agent := range []string{"impact", "mailer"} {
		if n := testing.AllocsPerRun(100, func() { s.Killed(agent) }); n != 0 {
			t.Errorf("Killed(%s) allocates %v times per call, want 0", agent, n)
		}
	}
}

func BenchmarkKilled(b *testing.B) {
	s := start(b, bustest.Open(b))
	if _, err := s.Kill(b.Context(), Target{Agent: "impact"}, "bench", ""); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Killed("mailer")
		}
	})
}

// recorder is an Auditor that keeps what it is given.
type recorder struct{ records []*audit.Record }

func (r *recorder) Append(_ context.Context, rec *audit.Record) (string, error) {
	r.records = append(r.records, rec)
	return "a" + strconv.Itoa(len(r.records)), nil
}

// TestKillsAreAudited: a kill and an unkill each leave one record naming
// the switch, who and why; an unkill that finds nothing on leaves none;
// a kill by nobody in particular is the admin's.
func TestKillsAreAudited(t *testing.T) {
	rec := &recorder{}
	s := start(t, bustest.Open(t)).WithAudit(rec)
	ctx := t.Context()
	if _, err := s.Kill(ctx, Target{Agent: "impact"}, "looping", "human:carol"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unkill(ctx, Target{Agent: "impact"}, "fixed", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Unkill(ctx, Target{Agent: "impact"}, "again", ""); !errors.Is(err, ErrNotKilled) {
		t.Fatalf("Unkill again = %v, want ErrNotKilled", err)
	}
	var got []string
	for _, r := range rec.records {
		got = append(got, strings.Join([]string{r.Kind, r.Event, r.Agent, r.Target, r.Reason, string(r.Detail)}, " | "))
	}
	want := []string{
		`killswitch | killswitch.kill | impact | Agent/impact | looping | {"agent":"impact","by":"human:carol","scope":"agent"}`,
		`killswitch | killswitch.unkill | impact | Agent/impact | fixed | {"agent":"impact","by":"admin","scope":"agent","was":{"at":"` +
			`AT","by":"human:carol","reason":"looping"}}`,
	}
	if len(got) == 2 {
		// The time the switch went on is its own; the rest is fixed.
		var d struct{ Was struct{ At string } }
		_ = json.Unmarshal(rec.records[1].Detail, &d)
		want[1] = strings.Replace(want[1], "AT", d.Was.At, 1)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit records (-want +got):\n%s", diff)
	}
}
