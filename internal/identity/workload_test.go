package identity

import (
	"testing"

	"github.com/corral-dev/corral/internal/config"
	"github.com/corral-dev/corral/internal/identity/oidctest"
)

// TestIssuerUse keeps users' and workloads' issuers apart: a service
// account's token never passes for a user's, nor a user's for an agent's.
func TestIssuerUse(t *testing.T) {
	users, workloads := oidctest.Start(t), oidctest.Start(t)
	clk := newClock()
	is := newTestIssuers(t, clk,
		issuerResource(t, "corp", config.IssuerSpec{Issuer: users.URL(), Audience: testAudience}),
		issuerResource(t, "k8s", config.IssuerSpec{Issuer: workloads.URL(), Audience: testAudience, Use: config.IssuerWorkloads}),
	)
	now := clk.now()
	user := users.Token(t, userClaims(users, now))
	sa := userClaims(workloads, now)
	sa["sub"] = "system:serviceaccount:logistics:impact"
	workload := workloads.Token(t, sa)

	if !is.Workload(workloads.URL()) || is.Workload(users.URL()) || is.Workload("https://evil.test") {
		t.Errorf("Workload(k8s, corp, evil) = %v, %v, %v; want true, false, false",
			is.Workload(workloads.URL()), is.Workload(users.URL()), is.Workload("https://evil.test"))
	}
	if w, err := is.VerifyWorkload(t.Context(), workload); err != nil || w.IssuerName != "k8s" || w.Subject != "system:serviceaccount:logistics:impact" {
		t.Errorf("VerifyWorkload(service account) = %+v, %v; want k8s's subject", w, err)
	}
	if _, err := is.Verify(t.Context(), workload); ReasonOf(err) != ReasonWrongIssuer {
		t.Errorf("Verify(service account's token) = %v, want %s", err, ReasonWrongIssuer)
	}
	if _, err := is.VerifyWorkload(t.Context(), user); ReasonOf(err) != ReasonWrongIssuer {
		t.Errorf("VerifyWorkload(user's token) = %v, want %s", err, ReasonWrongIssuer)
	}
	if _, err := is.Verify(t.Context(), user); err != nil {
		t.Errorf("Verify(user's token) = %v, want it accepted", err)
	}
}
