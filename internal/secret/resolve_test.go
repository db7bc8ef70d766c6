package secret_test

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/secret"
)

// store is a registry stand-in: Secret resources by name, swapped whole.
type store struct {
	m atomic.Pointer[map[string]config.Resource]
}

func newStore(resources ...config.Resource) *store {
	s := &store{}
	s.set(resources...)
	return s
}

func (s *store) set(resources ...config.Resource) {
	m := map[string]config.Resource{}
	for _, r := range resources {
		m[r.Kind+"/"+r.Metadata.Name] = r
	}
	s.m.Store(&m)
}

func (s *store) get(kind, name string) (config.Resource, bool) {
	r, ok := (*s.m.Load())[kind+"/"+name]
	return r, ok
}

// sealedSecret is a Secret as the registry stores it.
func sealedSecret(t testing.TB, s *secret.Sealer, name, value string) config.Resource {
	t.Helper()
	res, err := s.Prepare(secretResource(name, `{"value":`+strconv.Quote(value)+`}`))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestResolve(t *testing.T) {
	s := sealer(t, 1)
	r := secret.NewResolver(s, newStore(
		sealedSecret(t, s, "erp-token", "erp-s3cret"),
		sealedSecret(t, sealer(t, 2), "foreign", "f0reign"),
		secretResource("clear", `{"value":"cl3ar"}`),
		config.Resource{Kind: "Agent", Metadata: config.Metadata{Name: "agent"}, Spec: []byte(`{}`)},
	).get, env(map[string]string{"ERP_TOKEN": "from-env", "EMPTY": ""}))

	tests := []struct {
		name    string
		ref     config.SecretValue
		want    string
		wantErr string // the whole message; "" for success
		is      error
	}{
		{"secret", config.SecretValue{SecretRef: "erp-token"}, "erp-s3cret", "", nil},
		{"env", config.SecretValue{Env: "ERP_TOKEN"}, "from-env", "", nil},
		{"missing secret", config.SecretValue{SecretRef: "nope"}, "", `secret "nope" does not exist`, secret.ErrNotFound},
		{"other kind", config.SecretValue{SecretRef: "agent"}, "", `secret "agent" does not exist`, secret.ErrNotFound},
		{"missing env", config.SecretValue{Env: "NOPE"}, "", "environment variable NOPE is not set", secret.ErrNotSet},
		{"empty env", config.SecretValue{Env: "EMPTY"}, "", "environment variable EMPTY is not set", secret.ErrNotSet},
		{"other key", config.SecretValue{SecretRef: "foreign"}, "", "", secret.ErrWrongKey},
		{"unsealed", config.SecretValue{SecretRef: "clear"}, "", `secret "clear" cannot be opened: it is not sealed`, nil},
		{"neither", config.SecretValue{}, "", "", nil},
		{"both", config.SecretValue{SecretRef: "erp-token", Env: "ERP_TOKEN"}, "", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Resolve(t.Context(), tt.ref)
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Errorf("Resolve(%+v) = %q, %v, want %q", tt.ref, got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Resolve(%+v) = %q, nil, want an error", tt.ref, got)
			}
			if tt.wantErr != "" && err.Error() != tt.wantErr {
				t.Errorf("Resolve(%+v) err = %q, want %q", tt.ref, err, tt.wantErr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Resolve(%+v) err = %v, want %v", tt.ref, err, tt.is)
			}
			for _, v := range []string{"s3cret", "f0reign", "cl3ar", "from-env"} {
				if strings.Contains(err.Error(), v) {
					t.Errorf("Resolve(%+v) err = %q, contains a value", tt.ref, err)
				}
			}
		})
	}
}

func TestResolveSeesRotation(t *testing.T) {
	s := sealer(t, 1)
	st := newStore(sealedSecret(t, s, "erp-token", "old"))
	r := secret.NewResolver(s, st.get, nil)
	ref := config.SecretValue{SecretRef: "erp-token"}
	if got, err := r.Resolve(t.Context(), ref); err != nil || got != "old" {
		t.Fatalf("Resolve = %q, %v, want old", got, err)
	}
	st.set(sealedSecret(t, s, "erp-token", "new"))
	if got, err := r.Resolve(t.Context(), ref); err != nil || got != "new" {
		t.Errorf("Resolve after rotation = %q, %v, want new", got, err)
	}
	st.set()
	if got, err := r.Resolve(t.Context(), ref); !errors.Is(err, secret.ErrNotFound) {
		t.Errorf("Resolve after delete = %q, %v, want ErrNotFound", got, err)
	}
}

func TestResolveUsesEnvironment(t *testing.T) {
	t.Setenv("CORRAL_TEST_SECRET", "from-os")
	r := secret.NewResolver(sealer(t, 1), newStore().get, nil)
	if got, err := r.Resolve(t.Context(), config.SecretValue{Env: "CORRAL_TEST_SECRET"}); err != nil || got != "from-os" {
		t.Errorf("Resolve(env) = %q, %v, want from-os", got, err)
	}
}

// TestResolveConcurrent resolves from many goroutines while the secrets are
// rotated: run with -race. Every answer must be a value the secret held.
func TestResolveConcurrent(t *testing.T) {
	s := sealer(t, 1)
	const names = 4
	version := func(v int) []config.Resource {
		var out []config.Resource
		for i := range names {
			out = append(out, sealedSecret(t, s, "s"+strconv.Itoa(i), "value-"+strconv.Itoa(i)+"-"+strconv.Itoa(v)))
		}
		return out
	}
	st := newStore(version(0)...)
	r := secret.NewResolver(s, st.get, nil)
	const rotations = 20
	versions := make([][]config.Resource, rotations+1)
	for v := range versions {
		versions[v] = version(v)
	}

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 8 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (g + n) % names
				got, err := r.Resolve(t.Context(), config.SecretValue{SecretRef: "s" + strconv.Itoa(i)})
				prefix := "value-" + strconv.Itoa(i) + "-"
				if err != nil || !strings.HasPrefix(got, prefix) {
					t.Errorf("Resolve(s%d) = %q, %v, want %s<version>", i, got, err, prefix)
					return
				}
			}
		})
	}
	for v := 1; v <= rotations; v++ {
		st.set(versions[v]...)
		for i := range names { // wait until the new version is seen
			if got, _ := r.Resolve(t.Context(), config.SecretValue{SecretRef: "s" + strconv.Itoa(i)}); got != "value-"+strconv.Itoa(i)+"-"+strconv.Itoa(v) {
				t.Errorf("Resolve(s%d) after rotation %d = %q", i, v, got)
			}
		}
	}
	close(stop)
	wg.Wait()
}

func BenchmarkResolve(b *testing.B) {
	s := sealer(b, 1)
	st := newStore(sealedSecret(b, s, "erp-token", strings.Repeat("t", 64)))
	ref := config.SecretValue{SecretRef: "erp-token"}
	b.Run("cached", func(b *testing.B) {
		r := secret.NewResolver(s, st.get, nil)
		for b.Loop() {
			if _, err := r.Resolve(b.Context(), ref); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("open", func(b *testing.B) {
		res, _ := st.get("Secret", "erp-token")
		var spec config.SecretSpec
		if err := json.Unmarshal(res.Spec, &spec); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := s.Open("erp-token", spec.Sealed); err != nil {
				b.Fatal(err)
			}
		}
	})
}
