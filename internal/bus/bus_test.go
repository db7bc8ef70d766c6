package bus_test

import (
	"net"
	"strings"
	"testing"

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
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":4222") {
		t.Fatalf("ClientURL() = %q, want a free loopback port", url)
	}
	// Another client (a second replica, the nats CLI) reaches it over TCP.
	other := bustest.OpenWith(t, bus.Options{URL: url})
	if err := other.Ping(t.Context()); err != nil {
		t.Errorf("Ping over TCP: %v", err)
	}
	if _, err := net.Dial("tcp", strings.TrimPrefix(url, "nats://")); err != nil {
		t.Errorf("dial %s: %v", url, err)
	}
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
}
