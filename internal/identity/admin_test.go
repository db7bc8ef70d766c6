package identity_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/identity"
)

func TestAdminToken(t *testing.T) {
	b := bustest.Open(t)
	admins, err := identity.OpenAdmins(t.Context(), b)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path, created, err := admins.Ensure(t.Context(), dir)
	if err != nil || !created || path != filepath.Join(dir, "admin.token") {
		t.Fatalf("Ensure = %q, %v, %v; want a new token in %s", path, created, err, dir)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("token file mode = %o, want 600", mode)
	}
	token, err := identity.ReadToken(path)
	if err != nil {
		t.Fatal(err)
	}

	// A second start keeps the same token.
	_, created, err = admins.Ensure(t.Context(), dir)
	if err != nil || created {
		t.Fatalf("second Ensure created = %v, err = %v; want the existing token kept", created, err)
	}
	if again, _ := identity.ReadToken(path); again != token {
		t.Error("second Ensure replaced the token")
	}

	for _, tt := range []struct {
		token string
		want  bool
	}{
		{token, true},
		{token + "x", false},
		{strings.TrimPrefix(token, "corral_admin_"), false},
		{"", false},
	} {
		if got, err := admins.Verify(t.Context(), tt.token); got != tt.want || err != nil {
			t.Errorf("Verify(%q) = %v, %v, want %v", tt.token, got, err, tt.want)
		}
	}
}

// TestAdminTokenSharedByReplicas: a token created by one replica is accepted
// by another on the same substrate, though its data directory has no copy.
func TestAdminTokenSharedByReplicas(t *testing.T) {
	b := bustest.Open(t)
	a1, _ := identity.OpenAdmins(t.Context(), b)
	a2, _ := identity.OpenAdmins(t.Context(), b)
	path, _, err := a1.Ensure(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	token, _ := identity.ReadToken(path)
	if ok, err := a2.Verify(t.Context(), token); !ok || err != nil {
		t.Errorf("other replica Verify = %v, %v, want true", ok, err)
	}
}

func TestEmptyTokenFile(t *testing.T) {
	b := bustest.Open(t)
	admins, _ := identity.OpenAdmins(t.Context(), b)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := admins.Ensure(t.Context(), dir); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("Ensure with an empty token file err = %v, want it named", err)
	}
}
