package bus_test

import (
	"bytes"
	"errors"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
)

func TestEmbeddedListensOnNoPort(t *testing.T) {
	b := bustest.Open(t)
	if !b.Embedded() {
		t.Fatal("Embedded() = false for a bus opened without a URL")
	}
	if url := b.ClientURL(); url != "" {
		t.Errorf("ClientURL() = %q, want no TCP listener by default", url)
	}
	if err := b.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestEmbeddedKeepsDataAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	b, err := bus.Open(t.Context(), discard(), bus.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := b.KeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(t.Context(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	b.Close()

	b2 := bustest.OpenWith(t, bus.Options{DataDir: dir})
	kv2, err := b2.KeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "t"})
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv2.Get(t.Context(), "k")
	if err != nil || string(e.Value()) != "v" {
		t.Fatalf("after restart Get(k) = %v, %v, want v", e, err)
	}
}

func TestDataDirIsLocked(t *testing.T) {
	dir := t.TempDir()
	bustest.OpenWith(t, bus.Options{DataDir: dir})
	_, err := bus.Open(t.Context(), discard(), bus.Options{DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "in use by another corral process") {
		t.Fatalf("second Open on one data dir: err = %v, want in use", err)
	}
}

func TestEmbeddedListen(t *testing.T) {
	b := bustest.OpenWith(t, bus.Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	url := b.ClientURL()
	u, err := neturl.Parse(url)
	if err != nil || u.Hostname() != "127.0.0.1" || u.Port() == "4222" || u.Port() == "" {
		t.Fatalf("ClientURL() = %q, want a free loopback port", url)
	}
	// Another client (a second replica, the nats CLI) reaches it over TCP.
	other := bustest.OpenWith(t, bus.Options{URL: url})
	if err := other.Ping(t.Context()); err != nil {
		t.Errorf("Ping over TCP: %v", err)
	}
}

// TestEmbeddedListenNeedsPassword: once the embedded server listens, only
// clients with the password from the data directory get in; without it,
// anyone on the network could rewrite resources or mint an admin token.
func TestEmbeddedListenNeedsPassword(t *testing.T) {
	dir := t.TempDir()
	b := bustest.OpenWith(t, bus.Options{DataDir: dir, Listen: "127.0.0.1:0"})
	u, err := neturl.Parse(b.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	password, _ := u.User.Password()
	stored, err := os.ReadFile(filepath.Join(dir, "nats.password"))
	if err != nil || strings.TrimSpace(string(stored)) != password || password == "" {
		t.Fatalf("nats.password = %q, %v; want the URL's password %q", stored, err, password)
	}
	if info, _ := os.Stat(filepath.Join(dir, "nats.password")); info.Mode().Perm() != 0o600 {
		t.Errorf("nats.password mode = %v, want 0600", info.Mode().Perm())
	}
	for _, tt := range []struct{ name, url string }{
		{"no credentials", "nats://" + u.Host},
		{"wrong password", "nats://corral:wrong@" + u.Host},
	} {
		if _, err := bus.Open(t.Context(), discard(), bus.Options{URL: tt.url}); err == nil || !strings.Contains(err.Error(), "uthorization") {
			t.Errorf("Open(%s) err = %v, want an authorization failure", tt.name, err)
		}
	}
}

// TestListenPortTaken fails fast, names the problem, and leaves the data
// directory usable.
func TestListenPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	start := time.Now()
	_, err = bus.Open(t.Context(), discard(), bus.Options{DataDir: dir, Listen: taken.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Open on a taken port err = %v, want address already in use", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Open on a taken port took %v; it should not wait for readiness", d)
	}
	bustest.OpenWith(t, bus.Options{DataDir: dir}) // the lock was released
}

func TestReplicasNeedCluster(t *testing.T) {
	_, err := bus.Open(t.Context(), discard(), bus.Options{DataDir: t.TempDir(), Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "needs a NATS cluster") {
		t.Fatalf("Open(replicas 3, embedded) err = %v, want needs a NATS cluster", err)
	}
}

func TestBadListenAddress(t *testing.T) {
	_, err := bus.Open(t.Context(), discard(), bus.Options{DataDir: t.TempDir(), Listen: "localhost"})
	if err == nil || !strings.Contains(err.Error(), "--nats-listen") {
		t.Fatalf("Open(listen localhost) err = %v, want an error naming --nats-listen", err)
	}
}

func TestExternalServer(t *testing.T) {
	url := bustest.ExternalServer(t)
	b := bustest.OpenWith(t, bus.Options{URL: url})
	if b.Embedded() {
		t.Error("Embedded() = true for an external URL")
	}
	// Buckets are created, then updated idempotently, as every start does.
	for range 2 {
		if _, err := b.KeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "t", History: 3}); err != nil {
			t.Fatalf("KeyValue: %v", err)
		}
	}
}

func TestExternalUnreachable(t *testing.T) {
	_, err := bus.Open(t.Context(), discard(), bus.Options{URL: "nats://127.0.0.1:1"})
	if err == nil || !strings.Contains(err.Error(), "nats://127.0.0.1:1") {
		t.Fatalf("Open(unreachable) err = %v, want an error naming the URL", err)
	}
}

// TestExternalClusterReplicas runs a three-node JetStream cluster as three
// nats-server processes and checks that --replicas reaches the buckets.
func TestExternalClusterReplicas(t *testing.T) {
	urls := bustest.ExternalCluster(t, 3)
	b := bustest.OpenWith(t, bus.Options{URL: strings.Join(urls, ","), Replicas: 3})
	kv, err := b.KeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "replicated"})
	if err != nil {
		t.Fatal(err)
	}
	status, err := kv.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	info := status.(*jetstream.KeyValueBucketStatus).StreamInfo()
	if got := info.Config.Replicas; got != 3 {
		t.Errorf("bucket replicas = %d, want 3", got)
	}
	if _, err := kv.PutString(t.Context(), "k", "v"); err != nil {
		t.Errorf("put on the replicated bucket: %v", err)
	}

	// Atomic batches work on a replicated bucket, stale guards included.
	if _, err := b.UpdateAll(t.Context(), kv, []bus.Update{{Key: "x", Value: []byte("1")}, {Key: "k", Value: []byte("2"), Revision: 999}}); !errors.Is(err, bus.ErrWrongRevision) {
		t.Errorf("UpdateAll with a stale revision on R3 err = %v, want ErrWrongRevision", err)
	}
	if _, err := b.UpdateAll(t.Context(), kv, []bus.Update{{Key: "x", Value: []byte("1")}, {Key: "y", Value: []byte("2")}}); err != nil {
		t.Errorf("UpdateAll on R3: %v", err)
	}

	// A replica started with a smaller --replicas must not reduce it.
	small := bustest.OpenWith(t, bus.Options{URL: strings.Join(urls, ","), Replicas: 1})
	if _, err := small.KeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "replicated"}); err == nil || !strings.Contains(err.Error(), "has 3 replicas but --replicas is 1") {
		t.Errorf("KeyValue with fewer replicas err = %v, want a refusal", err)
	}
}

func TestUpdateAllIsAtomic(t *testing.T) {
	b := bustest.Open(t)
	ctx := t.Context()
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: "atomic", History: 5})
	if err != nil {
		t.Fatal(err)
	}
	revs, err := b.UpdateAll(ctx, kv, []bus.Update{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("1")}})
	if err != nil || len(revs) != 2 || revs[1] != revs[0]+1 {
		t.Fatalf("UpdateAll(new a, b) = %v, %v, want two consecutive revisions", revs, err)
	}
	for i, k := range []string{"a", "b"} {
		last, e, err := b.Last(ctx, kv, k)
		if err != nil || e == nil || last != revs[i] || string(e.Value()) != "1" {
			t.Errorf("Last(%s) = %d, %v, %v; want revision %d with value 1", k, last, e, err, revs[i])
		}
	}

	// One stale guard fails the batch, and the other write is not stored.
	_, err = b.UpdateAll(ctx, kv, []bus.Update{{Key: "c", Value: []byte("new")}, {Key: "a", Value: []byte("2"), Revision: revs[0] - 1}})
	if !errors.Is(err, bus.ErrWrongRevision) {
		t.Fatalf("UpdateAll with a stale revision err = %v, want ErrWrongRevision", err)
	}
	if _, err := kv.Get(ctx, "c"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("c after a refused batch: Get err = %v, want not found", err)
	}
	if e, _ := kv.Get(ctx, "a"); string(e.Value()) != "1" {
		t.Errorf("a after a refused batch = %q, want 1", e.Value())
	}
	// "Must not exist" is a guard too.
	if _, err := b.UpdateAll(ctx, kv, []bus.Update{{Key: "a", Value: []byte("x")}}); !errors.Is(err, bus.ErrWrongRevision) {
		t.Errorf("UpdateAll(create existing a) err = %v, want ErrWrongRevision", err)
	}

	// A deleted key's last revision is its delete marker; writing on it recreates the key.
	if err := kv.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	last, e, err := b.Last(ctx, kv, "b")
	if err != nil || e != nil || last <= revs[1] {
		t.Fatalf("Last(deleted b) = %d, %v, %v; want the delete marker's revision and no entry", last, e, err)
	}
	if _, err := b.UpdateAll(ctx, kv, []bus.Update{{Key: "b", Value: []byte("again"), Revision: last}}); err != nil {
		t.Errorf("UpdateAll(recreate b): %v", err)
	}
}

// TestUpdateAllBurst: more writers at once than the server keeps atomic
// batches open on one stream (50 by default) all succeed: a batch refused
// as one too many is sent again.
func TestUpdateAllBurst(t *testing.T) {
	b := bustest.Open(t)
	ctx := t.Context()
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: "burst"})
	if err != nil {
		t.Fatal(err)
	}
	const writers = 200
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := strconv.Itoa(i)
			_, err := b.UpdateAll(ctx, kv, []bus.Update{{Key: "call." + k, Value: []byte(k)}, {Key: "a." + k, Value: []byte(k)}})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("UpdateAll in a burst of %d: %v", writers, err)
		}
	}
}

// TestGetRevision reads revisions back from the stream's leader: a put is
// found with its value and time; a delete marker, another key's revision and
// one never written are not found.
func TestGetRevision(t *testing.T) {
	b := bustest.Open(t)
	ctx := t.Context()
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: "readback", History: 5})
	if err != nil {
		t.Fatal(err)
	}
	revs, err := b.UpdateAll(ctx, kv, []bus.Update{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := b.GetRevision(ctx, kv, "a", revs[0])
	if err != nil || string(e.Value()) != "1" || e.Revision() != revs[0] || e.Created().IsZero() || e.Key() != "a" {
		t.Fatalf("GetRevision(a, %d) = %v, %v; want value 1 with its revision and time", revs[0], e, err)
	}
	if _, err := b.GetRevision(ctx, kv, "a", revs[1]); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("GetRevision(a, b's revision) err = %v, want ErrKeyNotFound", err)
	}
	if _, err := b.GetRevision(ctx, kv, "a", revs[1]+100); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("GetRevision(a, unwritten) err = %v, want ErrKeyNotFound", err)
	}
	if err := kv.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	last, _, err := b.Last(ctx, kv, "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetRevision(ctx, kv, "b", last); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("GetRevision(b's delete marker) err = %v, want ErrKeyNotFound", err)
	}
}

// operationCases are stored messages' headers and the KV operation each says.
var operationCases = []struct {
	hdrs string
	want jetstream.KeyValueOp
}{
	{"", jetstream.KeyValuePut},
	{"NATS/1.0\r\n\r\n", jetstream.KeyValuePut},
	{"NATS/1.0\r\nKV-Operation: DEL\r\n\r\n", jetstream.KeyValueDelete},
	{"NATS/1.0\r\nKV-Operation: PURGE\r\nNats-Rollup: sub\r\n\r\n", jetstream.KeyValuePurge},
	{"NATS/1.0\r\nNats-Batch-Id: x\r\n\r\n", jetstream.KeyValuePut},
}

func TestOperation(t *testing.T) {
	for _, c := range operationCases {
		if got, err := bus.Operation([]byte(c.hdrs)); err != nil || got != c.want {
			t.Errorf("Operation(%q) = %v, %v; want %v", c.hdrs, got, err, c.want)
		}
	}
}

// FuzzOperation: headers read back from the substrate never panic the
// reader, and only a KV-Operation header makes a message other than a put.
func FuzzOperation(f *testing.F) {
	for _, c := range operationCases {
		f.Add([]byte(c.hdrs))
	}
	f.Fuzz(func(t *testing.T, hdrs []byte) {
		op, err := bus.Operation(hdrs)
		if err == nil && op != jetstream.KeyValuePut && !bytes.Contains(bytes.ToLower(hdrs), []byte("kv-operation")) {
			t.Errorf("Operation(%q) = %v without a KV-Operation header", hdrs, op)
		}
	})
}

// A publish whose acknowledgement never comes (the stream's leader died with
// it) must not stay pending for ever: once a JetStream context holds 4,000 of
// those, every asynchronous publish through it is refused as stalled, and a
// replica that lived through a few leader changes could no longer write its
// audit (the chaos test saw one stuck for over 90 s). A core subscriber that
// never answers stands in for the dead leader.
func TestLostAcknowledgementsExpire(t *testing.T) {
	b := bustest.Open(t)
	ctx := t.Context()
	nc := b.JetStream().Conn()
	sub, err := nc.SubscribeSync("lost.acks")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if _, err := b.Stream(ctx, jetstream.StreamConfig{Name: "KEPT", Subjects: []string{"kept"}}); err != nil {
		t.Fatal(err)
	}

	shared := b.JetStream()
	var futures []jetstream.PubAckFuture
	for i := range 4000 {
		f, err := shared.PublishAsync("lost.acks", []byte("x"))
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		futures = append(futures, f)
	}

	// Another component's context is not held up by this one's stall.
	own, err := b.Publisher()
	if err != nil {
		t.Fatal(err)
	}
	f, err := own.PublishAsync("kept", []byte("y"))
	if err != nil {
		t.Fatalf("a context of its own: publish while another is stalled: %v", err)
	}
	select {
	case <-f.Ok():
	case err := <-f.Err():
		t.Fatalf("a context of its own: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("a context of its own: no acknowledgement in 10 s")
	}

	// The lost acknowledgements expire, and free the shared context.
	for i, f := range futures {
		select {
		case <-f.Ok():
			t.Fatalf("publish %d acknowledged by a subscriber that never answers", i)
		case err := <-f.Err():
			if !errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
				t.Fatalf("publish %d: %v, want ErrAsyncPublishTimeout", i, err)
			}
		case <-time.After(bus.AsyncAckTimeout + 10*time.Second):
			t.Fatalf("publish %d still pending %s after it was sent", i, bus.AsyncAckTimeout+10*time.Second)
		}
	}
	if _, err := shared.PublishAsync("kept", []byte("z")); err != nil {
		t.Fatalf("the shared context after its lost acknowledgements expired: %v", err)
	}
}

// TestKeyValueAppliesRetention: a bucket opened again with another TTL gets
// it (an update is not skipped because the rest is as wanted), keeps what
// it holds, and still allows atomic batches.
func TestKeyValueAppliesRetention(t *testing.T) {
	b := bustest.Open(t)
	ctx := t.Context()
	kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: "kept", Description: "d"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []time.Duration{48 * time.Hour, time.Hour, 0} {
		kv, err := b.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: "kept", Description: "d", TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		s, err := b.JetStream().Stream(ctx, "KV_kept")
		if err != nil {
			t.Fatal(err)
		}
		if c := s.CachedInfo().Config; c.MaxAge != ttl || !c.AllowAtomicPublish {
			t.Errorf("KeyValue(TTL %v): stream max age %v, atomic %v; want %v, true", ttl, c.MaxAge, c.AllowAtomicPublish, ttl)
		}
		if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
			t.Errorf("KeyValue(TTL %v): the entry = %v, %v; want it kept", ttl, e, err)
		}
	}
}
