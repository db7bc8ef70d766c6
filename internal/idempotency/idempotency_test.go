package idempotency

import (
	"errors"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/bus/bustest"
)

func TestBeginFinishReplay(t *testing.T) {
	s, err := Open(t.Context(), bustest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	key := Key("impact", "erp.cancel", "k1")
	rec, claim, err := s.Begin(ctx, key, "d1", time.Minute)
	if err != nil || rec != nil || claim == nil {
		t.Fatalf("first Begin = %v, %v, %v; want a claim", rec, claim, err)
	}
	if _, _, err := s.Begin(ctx, key, "d1", time.Minute); !errors.Is(err, ErrInProgress) {
		t.Errorf("Begin while running: err = %v, want ErrInProgress", err)
	}
	if _, _, err := s.Begin(ctx, key, "d2", time.Minute); !errors.Is(err, ErrConflict) {
		t.Errorf("Begin with other arguments while running: err = %v, want ErrConflict", err)
	}
	if err := s.Finish(ctx, claim, []byte(`{"ok":true}`), "a1"); err != nil {
		t.Fatal(err)
	}
	rec, claim, err = s.Begin(ctx, key, "d1", time.Minute)
	if err != nil || claim != nil || rec == nil || string(rec.Result) != `{"ok":true}` || rec.AuditID != "a1" {
		t.Fatalf("Begin after Finish = %+v, %v, %v; want the recorded result", rec, claim, err)
	}
	if _, _, err := s.Begin(ctx, key, "d2", time.Minute); !errors.Is(err, ErrConflict) {
		t.Errorf("Begin with other arguments after Finish: err = %v, want ErrConflict", err)
	}
	if Key("notifier", "erp.cancel", "k1") == key || Key("impact", "erp.other", "k1") == key {
		t.Error("Key is the same for another agent or tool")
	}
}

func TestAbandonAndTakeOver(t *testing.T) {
	s, err := Open(t.Context(), bustest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	_, claim, err := s.Begin(ctx, "k", "d", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Abandon(ctx, claim); err != nil {
		t.Fatal(err)
	}
	if _, claim, err = s.Begin(ctx, "k", "d", time.Minute); err != nil || claim == nil {
		t.Fatalf("Begin after Abandon = %v, %v; want a new claim", claim, err)
	}
	// The holder dies: once its lease is over, a retry takes the claim over.
	now := time.Now()
	s.now = func() time.Time { return now.Add(2 * time.Minute) }
	_, taken, err := s.Begin(ctx, "k", "d", time.Minute)
	if err != nil || taken == nil {
		t.Fatalf("Begin after the lease = %v, %v; want the claim taken over", taken, err)
	}
	if err := s.Finish(ctx, claim, nil, ""); err == nil {
		t.Error("Finish by the old holder succeeded after a take-over, want an error")
	}
}
