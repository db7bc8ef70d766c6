package secret_test

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/corral-dev/corral/internal/secret"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "nested")
	path := filepath.Join(dir, "secrets.key")

	s, created, err := secret.LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreateKey(new) = %v, %v, want created", created, err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode = %#o, want 0600", perm)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if info, err := os.Stat(d); err != nil || info.Mode().Perm() != 0o700 {
			t.Errorf("created directory %s: mode %v, %v, want 0700", d, info.Mode().Perm(), err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data))); err != nil || len(key) != secret.KeySize {
		t.Errorf("key file holds %d bytes (%v), want %d in base64", len(key), err, secret.KeySize)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(leftovers) > 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}

	again, created, err := secret.LoadOrCreateKey(path)
	if err != nil || created {
		t.Fatalf("LoadOrCreateKey(existing) = %v, %v, want loaded", created, err)
	}
	if again.KeyID() != s.KeyID() {
		t.Errorf("reloaded key id = %s, want %s", again.KeyID(), s.KeyID())
	}
	sealed := mustSeal(t, s, "x", "v")
	if got, err := again.Open("x", sealed); err != nil || got != "v" {
		t.Errorf("reloaded key Open = %q, %v, want v", got, err)
	}
}

func TestLoadOrCreateKeyRefuses(t *testing.T) {
	valid := base64.StdEncoding.EncodeToString(make([]byte, secret.KeySize)) + "\n"
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    []string // substrings of the error
	}{
		{"world readable", valid, 0o644, []string{"chmod 600", "readable by group or others"}},
		{"group readable", valid, 0o640, []string{"chmod 600"}},
		{"group writable", valid, 0o620, []string{"chmod 600"}},
		{"not base64", "not a key\n", 0o600, []string{"not a secrets key"}},
		{"short key", base64.StdEncoding.EncodeToString(make([]byte, 16)), 0o600, []string{"not a secrets key"}},
		{"empty", "", 0o600, []string{"not a secrets key"}},
		{"huge", strings.Repeat("A", 4096), 0o600, []string{"larger than"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "secrets.key")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil { // past the umask
				t.Fatal(err)
			}
			_, _, err := secret.LoadOrCreateKey(path)
			if err == nil {
				t.Fatal("LoadOrCreateKey err = nil, want an error")
			}
			for _, want := range append(tt.want, path) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("LoadOrCreateKey err = %q, want it to contain %q", err, want)
				}
			}
			if got, _ := os.ReadFile(path); string(got) != tt.content {
				t.Error("LoadOrCreateKey changed a key file it refused")
			}
		})
	}
}

func TestLoadOrCreateKeyDirectory(t *testing.T) {
	if _, _, err := secret.LoadOrCreateKey(t.TempDir()); err == nil {
		t.Error("LoadOrCreateKey(a directory) err = nil, want an error")
	}
}

// TestLoadOrCreateKeyRace starts several servers on one empty directory at
// once: all must end up with the one key that is in the file.
func TestLoadOrCreateKeyRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets.key")
	const n = 8
	var (
		wg      sync.WaitGroup
		ids     [n]string
		created [n]bool
		errs    [n]error
	)
	for i := range n {
		wg.Go(func() {
			var s *secret.Sealer
			s, created[i], errs[i] = secret.LoadOrCreateKey(path)
			if s != nil {
				ids[i] = s.KeyID()
			}
		})
	}
	wg.Wait()
	final, _, err := secret.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	winners := 0
	for i := range n {
		if errs[i] != nil {
			t.Errorf("LoadOrCreateKey #%d: %v", i, errs[i])
		}
		if ids[i] != final.KeyID() {
			t.Errorf("LoadOrCreateKey #%d has key %s, the file has %s", i, ids[i], final.KeyID())
		}
		if created[i] {
			winners++
		}
	}
	if winners != 1 {
		t.Errorf("%d callers report they created the key, want 1", winners)
	}
}
