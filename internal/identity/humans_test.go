package identity_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/bus/bustest"
	"github.com/corral-dev/corral/internal/identity"
)

func TestHumans(t *testing.T) {
	b := bustest.Open(t)
	s, other := start(t, b), start(t, b)
	ctx := t.Context()

	secret, h, err := s.CreateHuman(ctx, identity.Human{Name: "payments-lead", Groups: []string{"payments-oncall", "ops", "ops"}, SlackUser: "U0123ABCD"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "corral_hk_") || h.Created.IsZero() || len(h.Groups) != 2 {
		t.Fatalf("CreateHuman = %q, %+v; want a corral_hk_ key and two groups", secret, h)
	}
	if got, ok := s.VerifyHuman(secret); !ok || got.Name != "payments-lead" {
		t.Errorf("VerifyHuman = %+v, %v", got, ok)
	}
	for _, bad := range []string{secret + "x", "corral_hk_nope", ""} {
		if _, ok := s.VerifyHuman(bad); ok {
			t.Errorf("VerifyHuman(%q) accepted", bad)
		}
	}
	// A human's key is neither an agent key nor an admin token.
	if _, ok := s.VerifyKey(secret); ok || s.VerifyAdmin(secret) {
		t.Error("a human's key verified as an agent key or admin token")
	}
	if _, _, err := other.CreateHuman(ctx, identity.Human{Name: "payments-lead"}); !errors.Is(err, identity.ErrHumanExists) {
		t.Errorf("CreateHuman twice = %v, want ErrHumanExists", err)
	}
	waitFor(t, func() bool { _, ok := other.VerifyHuman(secret); return ok })
	if got, ok := other.HumanBySlack("U0123ABCD"); !ok || got.Name != "payments-lead" {
		t.Errorf("HumanBySlack = %+v, %v", got, ok)
	}
	if _, err := other.RevokeHuman(ctx, "payments-lead"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := s.VerifyHuman(secret); return !ok })
	if _, err := s.RevokeHuman(ctx, "payments-lead"); !errors.Is(err, identity.ErrHumanNotFound) {
		t.Errorf("RevokeHuman twice = %v, want ErrHumanNotFound", err)
	}
	// The name is free again.
	if _, _, err := s.CreateHuman(ctx, identity.Human{Name: "payments-lead"}); err != nil {
		t.Errorf("CreateHuman after revoke = %v", err)
	}
}

func TestHumanCheck(t *testing.T) {
	for _, h := range []identity.Human{
		{Name: ""}, {Name: "Bad Name"}, {Name: strings.Repeat("a", 100)},
		{Name: "ok", Groups: []string{"has space"}}, {Name: "ok", Groups: []string{""}},
		{Name: "ok", SlackUser: "not-an-id"}, {Name: "ok", Groups: make([]string, 40)},
	} {
		if err := h.Check(); !errors.Is(err, identity.ErrInvalidHuman) {
			t.Errorf("Check(%+v) = %v, want ErrInvalidHuman", h, err)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // generous: CI runs loaded, with the race detector
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(2 * time.Millisecond)
	}
}
