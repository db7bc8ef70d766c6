package identity_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/identity"
)

func TestAgentKeys(t *testing.T) {
	b := bustest.Open(t)
	s, other := start(t, b), start(t, b)
	ctx := t.Context()

	secret, key, err := s.CreateKey(ctx, "impact", "uid-impact")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "corral_ak_") || len(key.ID) != 12 || key.Agent != "impact" || key.Created.IsZero() {
		t.Fatalf("CreateKey = %q, %+v; want a corral_ak_ key with a 12-digit id", secret, key)
	}
	if strings.Contains(secret, key.ID) {
		t.Errorf("the key id %s is part of the secret", key.ID)
	}
	if got, ok := s.VerifyKey(secret); !ok || got != key {
		t.Errorf("VerifyKey = %+v, %v, want %+v", got, ok, key)
	}
	for _, bad := range []string{secret + "x", "corral_ak_nope", "", strings.Replace(secret, "corral_ak_", "corral_admin_", 1)} {
		if _, ok := s.VerifyKey(bad); ok {
			t.Errorf("VerifyKey(%q) accepted", bad)
		}
	}
	// An agent key is no admin token.
	if s.VerifyAdmin(secret) {
		t.Error("VerifyAdmin accepted an agent key")
	}

	_, second, err := s.CreateKey(ctx, "mailer", "uid-mailer")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Keys(""); len(got) != 2 {
		t.Errorf("Keys(all) = %v, want 2", got)
	}
	if got := s.Keys("mailer"); len(got) != 1 || got[0] != second {
		t.Errorf("Keys(mailer) = %v, want [%v]", got, second)
	}

	// The other replica accepts the key, then stops once it is revoked.
	waitUntil(t, func() bool { _, ok := other.VerifyKey(secret); return ok })
	if _, err := s.RevokeKey(ctx, key.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.VerifyKey(secret); ok {
		t.Error("the revoking replica still accepts a revoked key")
	}
	waitUntil(t, func() bool { _, ok := other.VerifyKey(secret); return !ok })

	if _, err := s.RevokeKey(ctx, key.ID); !errors.Is(err, identity.ErrKeyNotFound) {
		t.Errorf("RevokeKey(revoked) err = %v, want ErrKeyNotFound", err)
	}
	if _, err := s.RevokeKey(ctx, key.ID[:6]); !errors.Is(err, identity.ErrKeyNotFound) {
		t.Errorf("RevokeKey(short id) err = %v, want ErrKeyNotFound: ids are exact", err)
	}
}

// waitUntil polls cond; replicas converge through the bucket's watch.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // generous: CI runs loaded, with the race detector
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
