package secret

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/corral-dev/corral/internal/config"
)

// TestResolveCacheIsBounded resolves more Secrets than the cache holds: it
// must stay within maxCache and keep answering right.
func TestResolveCacheIsBounded(t *testing.T) {
	s, err := NewSealer(bytes.Repeat([]byte{1}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	resources := map[string]config.Resource{}
	for i := range maxCache + 10 {
		name := "s" + strconv.Itoa(i)
		res, err := s.Prepare(config.Resource{Kind: "Secret", Metadata: config.Metadata{Name: name}, Spec: []byte(`{"value":"v` + strconv.Itoa(i) + `"}`)})
		if err != nil {
			t.Fatal(err)
		}
		resources[name] = res
	}
	r := NewResolver(s, func(_, name string) (config.Resource, bool) { res, ok := resources[name]; return res, ok }, nil)
	for i := range maxCache + 10 {
		ref := config.SecretValue{SecretRef: "s" + strconv.Itoa(i)}
		if got, err := r.Resolve(t.Context(), ref); err != nil || got != "v"+strconv.Itoa(i) {
			t.Fatalf("Resolve(%+v) = %q, %v, want v%d", ref, got, err, i)
		}
		if n := len(r.cache); n > maxCache {
			t.Fatalf("cache holds %d values after %d resolves, want at most %d", n, i+1, maxCache)
		}
	}
}

// TestResolveCachesOpenedValues checks that a second Resolve of an unchanged
// Secret is answered from the cache, and a changed one is not.
func TestResolveCachesOpenedValues(t *testing.T) {
	s, err := NewSealer(bytes.Repeat([]byte{1}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Prepare(config.Resource{Kind: "Secret", Metadata: config.Metadata{Name: "x"}, Spec: []byte(`{"value":"v"}`)})
	if err != nil {
		t.Fatal(err)
	}
	r := NewResolver(s, func(_, _ string) (config.Resource, bool) { return res, true }, nil)
	ref := config.SecretValue{SecretRef: "x"}
	if _, err := r.Resolve(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	// Plant a different value for the same spec: only a cache hit returns it.
	r.cache["x"] = opened{spec: string(res.Spec), value: "from cache"}
	if got, _ := r.Resolve(t.Context(), ref); got != "from cache" {
		t.Errorf("Resolve(unchanged) = %q, want the cached value", got)
	}
	res.Spec = []byte(`{"description":"changed","sealed":"` + mustSealed(t, s, "x", "w") + `"}`)
	if got, _ := r.Resolve(t.Context(), ref); got != "w" {
		t.Errorf("Resolve(changed) = %q, want w", got)
	}
}

func mustSealed(t *testing.T, s *Sealer, name, v string) string {
	t.Helper()
	out, err := s.Seal(name, v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
