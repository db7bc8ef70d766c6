package identity_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/bus"
	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/identity"
)

// start opens a Store on b and mirrors the bucket until the test ends.
func start(t *testing.T, b *bus.Bus) *identity.Store {
	t.Helper()
	a, err := identity.Open(t.Context(), slog.New(slog.DiscardHandler), b)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(t.Context()) }()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if err := a.WaitLoaded(t.Context()); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAdminToken(t *testing.T) {
	admins := start(t, bustest.Open(t))
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
		if got := admins.VerifyAdmin(tt.token); got != tt.want {
			t.Errorf("VerifyAdmin(%q) = %v, want %v", tt.token, got, tt.want)
		}
	}
}

// TestAdminTokenSharedByReplicas: a token created by one replica is accepted
// by another on the same substrate, though its data directory has no copy.
func TestAdminTokenSharedByReplicas(t *testing.T) {
	b := bustest.Open(t)
	a1, a2 := start(t, b), start(t, b)
	path, _, err := a1.Ensure(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	token, _ := identity.ReadToken(path)
	deadline := time.Now().Add(time.Minute) // generous: CI runs loaded, with the race detector
	for !a2.VerifyAdmin(token) {
		if time.Now().After(deadline) {
			t.Fatal("the other replica did not accept the token within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEmptyTokenFile(t *testing.T) {
	admins := start(t, bustest.Open(t))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := admins.Ensure(t.Context(), dir); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("Ensure with an empty token file err = %v, want it named", err)
	}
}

// TestAdminTokenLifecycle: admin tokens are listed, expire when asked and
// are revoked on every replica, the data directory's own included, which
// a restart does not bring back.
func TestAdminTokenLifecycle(t *testing.T) {
	b := bustest.Open(t)
	a1, a2 := start(t, b), start(t, b)
	dir := t.TempDir()
	path, _, err := a1.Ensure(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	fileToken, _ := identity.ReadToken(path)

	ci, _, err := a1.CreateAdminToken(t.Context(), "ci", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	short, _, err := a1.CreateAdminToken(t.Context(), "short", time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	if !a1.VerifyAdmin(ci) {
		t.Error("VerifyAdmin(new token) = false")
	}
	if a1.VerifyAdmin(short) {
		t.Error("VerifyAdmin(expired token) = true")
	}
	if _, _, err := a1.CreateAdminToken(t.Context(), "bad", -time.Second); err == nil {
		t.Error("CreateAdminToken(negative ttl) = nil error")
	}

	list := a1.AdminTokens()
	names := map[string]identity.AdminToken{}
	for _, tok := range list {
		names[tok.Name] = tok
	}
	if len(list) != 3 || names["admin.token"].Expires != nil || names["ci"].Expires == nil || !names["short"].Expired || names["ci"].Expired {
		t.Fatalf("AdminTokens() = %+v, want admin.token (no expiry), ci (live) and short (expired)", list)
	}
	for _, tok := range list {
		if len(tok.ID) != 12 || strings.Contains(ci, tok.ID) {
			t.Errorf("listing shows %q, want a 12-digit id that is no part of the token", tok.ID)
		}
	}

	if _, err := a1.RevokeAdminToken(t.Context(), names["ci"].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a1.RevokeAdminToken(t.Context(), names["admin.token"].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a1.RevokeAdminToken(t.Context(), names["ci"].ID); !errors.Is(err, identity.ErrAdminTokenNotFound) {
		t.Errorf("revoking twice: %v, want ErrAdminTokenNotFound", err)
	}
	if _, err := a1.RevokeAdminToken(t.Context(), "abc"); !errors.Is(err, identity.ErrAdminTokenNotFound) {
		t.Errorf("revoking a short id: %v, want ErrAdminTokenNotFound", err)
	}
	deadline := time.Now().Add(time.Minute) // generous: CI runs loaded, with the race detector
	for a2.VerifyAdmin(ci) || a2.VerifyAdmin(fileToken) {
		if time.Now().After(deadline) {
			t.Fatal("the other replica still accepts revoked tokens after a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if a1.VerifyAdmin(ci) || a1.VerifyAdmin(fileToken) {
		t.Error("revoked tokens still accepted")
	}
	// A restart finds the file's token revoked and keeps it so.
	if _, created, err := a1.Ensure(t.Context(), dir); err != nil || created {
		t.Fatalf("Ensure after revocation: created %v, %v", created, err)
	}
	if a1.VerifyAdmin(fileToken) {
		t.Error("a restart brought the revoked file token back")
	}
	if got := len(a1.AdminTokens()); got != 1 {
		t.Errorf("AdminTokens() after revocations has %d, want 1 (short)", got)
	}
}
