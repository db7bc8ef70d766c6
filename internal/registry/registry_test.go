package registry_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/registry"
	"github.com/corral-dev/corral/internal/secret"
)

func agent(name, description string) config.Resource {
	return config.Resource{
		APIVersion: config.APIVersion,
		Kind:       "Agent",
		Metadata:   config.Metadata{Name: name},
		Spec:       []byte(`{"description":"` + description + `"}`),
	}
}

// start opens a registry on b and runs its watch until the test ends.
func start(t *testing.T, b *bus.Bus) *registry.Registry {
	t.Helper()
	r, err := registry.Open(t.Context(), slog.New(slog.DiscardHandler), b)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(t.Context()) }()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if err := r.WaitLoaded(t.Context()); err != nil {
		t.Fatal(err)
	}
	return r
}

func results(applied []registry.Applied) []registry.Result {
	var out []registry.Result
	for _, a := range applied {
		out = append(out, a.Result)
	}
	return out
}

func TestApplyResults(t *testing.T) {
	r := start(t, bustest.Open(t))
	ctx := t.Context()

	got, err := r.Apply(ctx, []config.Resource{agent("a", "one"), agent("b", "two")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]registry.Result{registry.Created, registry.Created}, results(got)); diff != "" {
		t.Errorf("first apply (-want +got):\n%s", diff)
	}
	firstRev := got[0].Resource.Metadata.Revision
	if firstRev == 0 {
		t.Error("applied resource has no revision")
	}

	got, err = r.Apply(ctx, []config.Resource{agent("a", "one"), agent("b", "changed")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]registry.Result{registry.Unchanged, registry.Configured}, results(got)); diff != "" {
		t.Errorf("second apply (-want +got):\n%s", diff)
	}
	if got[0].Resource.Metadata.Revision != firstRev {
		t.Errorf("unchanged resource revision = %d, want %d", got[0].Resource.Metadata.Revision, firstRev)
	}

	// Reads on this replica see the write at once.
	b, ok := r.Get("Agent", "b")
	if !ok || string(b.Spec) != `{"description":"changed"}` {
		t.Errorf("Get(Agent, b) = %s, %v, want the configured spec", b.Spec, ok)
	}
	if names := len(r.List("Agent")); names != 2 {
		t.Errorf("List(Agent) has %d resources, want 2", names)
	}
	if diff := cmp.Diff(map[string]int{"Agent": 2}, r.Count()); diff != "" {
		t.Errorf("Count (-want +got):\n%s", diff)
	}
}

func TestApplyRevisionConflictStoresNothing(t *testing.T) {
	r := start(t, bustest.Open(t))
	ctx := t.Context()
	got, err := r.Apply(ctx, []config.Resource{agent("a", "one")})
	if err != nil {
		t.Fatal(err)
	}
	stale := agent("a", "stale edit")
	stale.Metadata.Revision = got[0].Resource.Metadata.Revision + 5
	_, err = r.Apply(ctx, []config.Resource{agent("new", "x"), stale})
	if !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("Apply(stale revision) err = %v, want ErrConflict", err)
	}
	if _, ok := r.Get("Agent", "new"); ok {
		t.Error("Agent/new was stored although the set was refused")
	}

	// The current revision is accepted.
	fresh := agent("a", "fresh edit")
	fresh.Metadata.Revision = got[0].Resource.Metadata.Revision
	if _, err := r.Apply(ctx, []config.Resource{fresh}); err != nil {
		t.Fatalf("Apply(current revision): %v", err)
	}
}

func TestDelete(t *testing.T) {
	r := start(t, bustest.Open(t))
	ctx := t.Context()
	if err := r.Delete(ctx, "Agent", "missing"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Delete(missing) err = %v, want ErrNotFound", err)
	}
	if _, err := r.Apply(ctx, []config.Resource{agent("a", "one")}); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(ctx, "Agent", "a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Get("Agent", "a"); ok {
		t.Error("Get after Delete found the resource")
	}
	// Re-creating a deleted resource is "created" again.
	got, err := r.Apply(ctx, []config.Resource{agent("a", "again")})
	if err != nil || got[0].Result != registry.Created {
		t.Fatalf("Apply after delete = %v, %v, want created", got, err)
	}
}

func TestSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	b, err := bus.Open(t.Context(), slog.New(slog.DiscardHandler), bus.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	r, err := registry.Open(t.Context(), slog.New(slog.DiscardHandler), b)
	if err != nil {
		t.Fatal(err)
	}
	applied, err := r.Apply(t.Context(), []config.Resource{agent("kept", "across restarts")})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()

	r2 := start(t, bustest.OpenWith(t, bus.Options{DataDir: dir}))
	got, ok := r2.Get("Agent", "kept")
	if !ok {
		t.Fatal("resource lost across restart")
	}
	want := applied[0].Resource
	if !got.SameContent(want) || got.Metadata.Revision != want.Metadata.Revision || !got.Metadata.Updated.Equal(want.Metadata.Updated) {
		t.Errorf("after restart got %+v, want %+v", got, want)
	}
}

// TestReplicasSeeEachOthersWrites runs two registries, as two replicas would,
// on one substrate: what one applies or deletes reaches the other's memory.
func TestReplicasSeeEachOthersWrites(t *testing.T) {
	b := bustest.Open(t)
	a, other := start(t, b), start(t, b)
	ctx := t.Context()
	if _, err := a.Apply(ctx, []config.Resource{agent("shared", "v1")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		res, ok := other.Get("Agent", "shared")
		return ok && string(res.Spec) == `{"description":"v1"}`
	})
	if err := a.Delete(ctx, "Agent", "shared"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, ok := other.Get("Agent", "shared")
		return !ok
	})
}

// waitFor polls cond until it holds. The promised bound is a second; the
// black-box test checks that. Here a generous limit keeps a loaded machine
// from failing a correctness test.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReadersSeeWholeResources reads a resource from a second replica while
// it is rewritten: every read must be one complete version, its label and
// spec from the same write, never a mix.
func TestReadersSeeWholeResources(t *testing.T) {
	b := bustest.Open(t)
	writer, reader := start(t, b), start(t, b)
	version := func(i int) config.Resource {
		v := strconv.Itoa(i)
		r := agent("torn", "v"+v)
		r.Metadata.Labels = map[string]string{"v": v}
		return r
	}
	if _, err := writer.Apply(t.Context(), []config.Resource{version(0)}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var reads, bad atomic.Int64
	go func() {
		defer close(done)
		for i := 1; i <= 50; i++ {
			if _, err := writer.Apply(t.Context(), []config.Resource{version(i)}); err != nil {
				t.Errorf("Apply: %v", err)
				return
			}
		}
	}()
	for {
		select {
		case <-done:
			if bad.Load() > 0 {
				t.Errorf("%d of %d reads saw a mix of two versions", bad.Load(), reads.Load())
			}
			return
		default:
		}
		if r, ok := reader.Get("Agent", "torn"); ok {
			reads.Add(1)
			if string(r.Spec) != `{"description":"v`+r.Metadata.Labels["v"]+`"}` {
				bad.Add(1)
			}
		}
	}
}

func TestChangedSignalsEveryChange(t *testing.T) {
	r := start(t, bustest.Open(t))
	changed := r.Changed()
	select {
	case <-changed:
		t.Fatal("Changed is closed before any change")
	default:
	}
	if _, err := r.Apply(t.Context(), []config.Resource{agent("a", "one")}); err != nil {
		t.Fatal(err)
	}
	<-changed // Apply records its own write before returning
	next := r.Changed()
	if err := r.Delete(t.Context(), "Agent", "a"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-next:
	case <-time.After(time.Minute):
		t.Fatal("Changed was not closed by a delete")
	}
}

func secretRes(name, spec string) config.Resource {
	return config.Resource{
		APIVersion: config.APIVersion,
		Kind:       "Secret",
		Metadata:   config.Metadata{Name: name},
		Spec:       []byte(spec),
	}
}

func sealer(t *testing.T, b byte) *secret.Sealer {
	t.Helper()
	s, err := secret.NewSealer(bytes.Repeat([]byte{b}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPrepareSealsSecrets applies Secrets through a registry that seals them:
// the value is stored only sealed, and applying the same value again, or the
// sealed form that reads return, is "unchanged".
func TestPrepareSealsSecrets(t *testing.T) {
	const value = "pl41ntext-b34rer-t0ken"
	b := bustest.Open(t)
	r := start(t, b)
	s := sealer(t, 1)
	r.SetPrepare(s.Prepare)
	ctx := t.Context()
	in := secretRes("erp-token", `{"description":"ERP","value":"`+value+`"}`)

	first, err := r.Apply(ctx, []config.Resource{in})
	if err != nil {
		t.Fatal(err)
	}
	stored := first[0].Resource
	if first[0].Result != registry.Created || strings.Contains(string(stored.Spec), value) || !strings.Contains(string(stored.Spec), `"sealed":"v1:`) {
		t.Fatalf("Apply(secret) = %s %s, want created and sealed", first[0].Result, stored.Spec)
	}
	if string(in.Spec) != `{"description":"ERP","value":"`+value+`"}` {
		t.Errorf("Apply changed the caller's resource: %s", in.Spec)
	}

	asRead, _ := r.Get("Secret", "erp-token")
	for _, again := range []config.Resource{in, asRead} {
		got, err := r.Apply(ctx, []config.Resource{again})
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Result != registry.Unchanged || got[0].Resource.Metadata.Revision != stored.Metadata.Revision {
			t.Errorf("Apply(%s) again = %s at revision %d, want unchanged at %d", again.Spec, got[0].Result, got[0].Resource.Metadata.Revision, stored.Metadata.Revision)
		}
	}

	rotated, err := r.Apply(ctx, []config.Resource{secretRes("erp-token", `{"description":"ERP","value":"n3w-`+value+`"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if rotated[0].Result != registry.Configured {
		t.Errorf("Apply(new value) = %s, want configured", rotated[0].Result)
	}

	// What the substrate holds, every revision of it, never has the value.
	kv, err := b.JetStream().KeyValue(ctx, registry.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	history, err := kv.History(ctx, "Secret.erp-token")
	if err != nil {
		t.Fatal(err)
	}
	if len(history) != 2 {
		t.Errorf("stored revisions = %d, want 2 (created, rotated)", len(history))
	}
	for _, e := range history {
		if bytes.Contains(e.Value(), []byte(value)) || !bytes.Contains(e.Value(), []byte(`"sealed":"v1:`+s.KeyID()+`:`)) {
			t.Errorf("stored revision %d = %s, want sealed and without the value", e.Revision(), e.Value())
		}
	}
}

func TestPrepareErrorStoresNothing(t *testing.T) {
	b := bustest.Open(t)
	r := start(t, b)
	r.SetPrepare(sealer(t, 1).Prepare)
	foreign, err := sealer(t, 2).Seal("erp-token", "t0ken")
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Apply(t.Context(), []config.Resource{
		agent("a", "one"),
		secretRes("fine", `{"value":"v"}`),
		secretRes("erp-token", `{"sealed":"`+foreign+`"}`),
	})
	var invalid *registry.InvalidError
	if !errors.As(err, &invalid) {
		t.Fatalf("Apply(secret sealed with another key) err = %v, want an *InvalidError", err)
	}
	if invalid.Resource != "Secret/erp-token" || invalid.Index != 2 || !errors.Is(err, secret.ErrWrongKey) {
		t.Errorf("Apply err = %+v, want Secret/erp-token at index 2 wrapping ErrWrongKey", invalid)
	}
	if !strings.HasPrefix(err.Error(), "Secret/erp-token: ") {
		t.Errorf("Apply err = %q, want it to start with the resource", err)
	}
	for _, k := range [][2]string{{"Agent", "a"}, {"Secret", "fine"}} {
		if _, ok := r.Get(k[0], k[1]); ok {
			t.Errorf("%s/%s was stored although the apply was refused", k[0], k[1])
		}
	}
	kv, err := b.JetStream().KeyValue(t.Context(), registry.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n := st.Values(); n != 0 {
		t.Errorf("bucket holds %d values, want 0", n)
	}
}

func TestPrepareMustKeepKindAndName(t *testing.T) {
	r := start(t, bustest.Open(t))
	r.SetPrepare(func(res config.Resource) (config.Resource, error) {
		res.Metadata.Name += "-renamed"
		return res, nil
	})
	if _, err := r.Apply(t.Context(), []config.Resource{agent("a", "one")}); err == nil {
		t.Error("Apply with a renaming prepare hook err = nil, want an error")
	}
	if _, ok := r.Get("Agent", "a-renamed"); ok {
		t.Error("the renamed resource was stored")
	}
}

// TestApplyOnClusterReadsItsOwnWrites: on a three-node JetStream cluster,
// every apply answers with what it stored. The read-back after the write
// once was a direct get that a follower could answer before applying the
// write: "registry: read back Agent/probe-5: nats: key not found" for 7 of
// 40 creates, though all were stored (issue 20.4). Three registries, each
// connected to its own node first, apply, update and delete concurrently so
// that followers lag. On loopback the followers rarely lag enough for the old
// read-back to fail here (it did under the chaos load); the test guards that
// reads through the leader keep every answer whole.
func TestApplyOnClusterReadsItsOwnWrites(t *testing.T) {
	urls := bustest.ExternalCluster(t, 3)
	var regs []*registry.Registry
	for i := range urls {
		order := append(append([]string{}, urls[i:]...), urls[:i]...)
		regs = append(regs, start(t, bustest.OpenWith(t, bus.Options{URL: strings.Join(order, ","), Replicas: 3})))
	}
	ctx := t.Context()
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := range 20 {
				r, other := regs[(w+i)%len(regs)], regs[(w+i+1)%len(regs)]
				name := "probe-" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
				for round := range 2 { // create, then update
					got, err := r.Apply(ctx, []config.Resource{agent(name, "round "+strconv.Itoa(round))})
					if err != nil {
						t.Errorf("Apply %s round %d: %v", name, round, err)
						return
					}
					if got[0].Resource.Metadata.Revision == 0 || got[0].Resource.Metadata.Updated.IsZero() {
						t.Errorf("Apply %s answered %+v, want the stored revision and time", name, got[0].Resource.Metadata)
					}
				}
				if err := other.Delete(ctx, "Agent", name); err != nil {
					t.Errorf("Delete %s on another replica: %v", name, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// laggingFollower is a substrate whose key-value reads are answered by a
// follower that has not applied the latest writes: every direct get says the
// key is not there. Reads through the stream's leader (bus.Last,
// bus.GetRevision) are the real ones.
type laggingFollower struct{ *bus.Bus }

func (l laggingFollower) KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := l.Bus.KeyValue(ctx, cfg)
	return staleKV{kv}, err
}

type staleKV struct{ jetstream.KeyValue }

func (staleKV) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	return nil, jetstream.ErrKeyNotFound
}

func (staleKV) GetRevision(context.Context, string, uint64) (jetstream.KeyValueEntry, error) {
	return nil, jetstream.ErrKeyNotFound
}

// TestApplyReadsBackFromTheLeader is the deterministic form of the test
// above: with a follower that has not yet applied the write answering every
// direct get, Apply still answers with what it stored, because its read-back
// goes to the stream's leader. Before d9af3b1 this failed on every apply
// ("registry: read back Agent/a: nats: key not found").
func TestApplyReadsBackFromTheLeader(t *testing.T) {
	r, err := registry.Open(t.Context(), slog.New(slog.DiscardHandler), laggingFollower{bustest.Open(t)})
	if err != nil {
		t.Fatal(err)
	}
	for round, desc := range []string{"one", "two"} {
		got, err := r.Apply(t.Context(), []config.Resource{agent("a", desc), agent("b", desc)})
		if err != nil {
			t.Fatalf("round %d: Apply with a lagging follower: %v", round, err)
		}
		for _, a := range got {
			if a.Resource.Metadata.Revision == 0 || !strings.Contains(string(a.Resource.Spec), desc) {
				t.Errorf("round %d: Apply answered %s at revision %d, want the stored %q", round, a.Resource.Spec, a.Resource.Metadata.Revision, desc)
			}
		}
	}
	if err := r.Delete(t.Context(), "Agent", "a"); err != nil {
		t.Errorf("Delete with a lagging follower: %v", err)
	}
}
